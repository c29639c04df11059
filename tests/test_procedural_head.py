"""flame_fit.procedural: the rules a FLAME-format head model must keep and the demo relies on.

Not the made-up head's constants: what any FLAME 2020 stand-in has to satisfy (file layout, a closed
outward-oriented surface, mirror symmetry, landmarks embedded on the surface in iBUG-68 order, a
dynamic contour that stays on the visible jaw line, orthogonal identity directions of decreasing
size, local expressions with the meaning the demo gives them, a jaw joint whose rotation opens the
mouth, rigid eyeballs) checked against independent references (open3d's ray caster, a k-d tree
mirror map, hand-written linear blend skinning).

Each test builds only the parts it needs (the geometry takes ~10 ms, the identity basis ~1 s), so
that every rule is checked by the test that states it.
"""
from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import scipy.sparse
from scipy.spatial import cKDTree

from flame_fit import procedural as P
from flame_fit.geometry import vertex_normals

N = 4000                                   # the default size: what the pipeline generates


def mirror_map(verts):
    """index m with verts[m[i]] == verts[i] mirrored at x = 0 (independent: a k-d tree search)."""
    dist, idx = cKDTree(verts).query(verts * [-1, 1, 1])
    assert dist.max() < 1e-9, f"no mirror vertex for some vertex ({dist.max():.2e} m away)"
    return idx


def ibug_mirror():
    """iBUG-68 index of each landmark's mirror partner (image left <-> right)."""
    m = list(range(16, -1, -1))                                          # jaw 0..16
    m += list(range(26, 16, -1))                                         # brows 17..26
    m += [27, 28, 29, 30]                                                # nose bridge
    m += [35, 34, 33, 32, 31]                                            # nostrils
    m += [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]                # eyes 36..47
    m += [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]                # outer lips 48..59
    m += [64, 63, 62, 61, 60, 67, 66, 65]                                # inner lips 60..67
    return np.array(m)


def points(verts, faces, fid, bary):
    """Landmarks from face ids (...) and barycentric coordinates (...,3)."""
    return (verts[faces[fid]] * bary[..., None]).sum(-2)


def raycast(verts, faces, origins, dirs):
    """open3d's ray caster: distance to the first hit and the hit triangle's normal."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts.astype(np.float32)),
                        o3d.core.Tensor(faces.astype(np.uint32)))
    rays = np.concatenate([origins, dirs], 1).astype(np.float32)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    return ans["t_hit"].numpy().astype(np.float64), ans["primitive_normals"].numpy().astype(np.float64)


def head_landmarks(geo, emb):
    """(68,3) landmarks of the template with the yaw-0 contour, (79,17,3) contour rows."""
    v, f = geo["verts"], geo["head_faces"]
    static = points(v, f, emb["static_lmk_faces_idx"], emb["static_lmk_bary_coords"])
    dyn = points(v, f, emb["dynamic_lmk_faces_idx"], emb["dynamic_lmk_bary_coords"])
    return np.concatenate([dyn[0], static]), dyn


def jaw_open(v, J, W, angle):
    """Vertices with the jaw joint rotated by `angle` about x (FLAME: positive opens the mouth),
    hand-written linear blend skinning (no pose correctives)."""
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return v + W[:, 2:3] * ((v - J[2]) @ R.T + J[2] - v)


@pytest.fixture
def geo():
    return P._build_geometry(N)


# -- file layout -----------------------------------------------------------------------------------
def test_model_has_flame_2020_layout():
    model, emb = P.build_procedural_head_model(seed=0, n_vertices=1500)
    V = model["v_template"].shape[0]
    assert set(model) == {"v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table",
                          "weights", "J", "bs_style", "bs_type", "procedural", "description", "seed"}
    assert model["v_template"].dtype == np.float64 and model["v_template"].shape == (V, 3)
    assert model["f"].dtype == np.uint32 and model["f"].shape[1] == 3 and model["f"].max() == V - 1
    assert model["shapedirs"].shape == (V, 3, 400) and model["shapedirs"].dtype == np.float64  # 300 + 100
    assert model["posedirs"].shape == (V, 3, 36) and model["posedirs"].dtype == np.float64     # 4 joints x 9
    assert scipy.sparse.issparse(model["J_regressor"]) and model["J_regressor"].shape == (5, V)
    Jr = model["J_regressor"].toarray()
    assert (Jr >= 0).all()
    np.testing.assert_allclose(Jr.sum(1), 1.0, atol=1e-12)               # joints are weighted means
    np.testing.assert_allclose(model["J"], Jr @ model["v_template"], atol=1e-12)
    assert model["kintree_table"].tolist() == [[2 ** 32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]
    W = model["weights"]
    assert W.shape == (V, 5) and (W >= 0).all() and (W <= 1).all()
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-12)               # a partition of unity
    assert model["bs_style"] == "lbs" and model["bs_type"] == "lrotmin"
    assert model["procedural"] is True and "not FLAME" in model["description"] and model["seed"] == 0
    # DECA's landmark_embedding.npy (numpy in place of its torch tensors)
    shapes = {"static_lmk_faces_idx": (51,), "static_lmk_bary_coords": (51, 3),
              "dynamic_lmk_faces_idx": (79, 17), "dynamic_lmk_bary_coords": (79, 17, 3),
              "full_lmk_faces_idx": (1, 68), "full_lmk_bary_coords": (1, 68, 3)}
    assert {k: np.shape(v) for k, v in emb.items()} == shapes
    for k in ("static_lmk_faces_idx", "dynamic_lmk_faces_idx", "full_lmk_faces_idx"):
        assert emb[k].dtype == np.int64
    assert emb["full_lmk_bary_coords"].dtype == np.float32
    # DECA's landmarks3d: the yaw-0 contour, then the 51 static ones
    np.testing.assert_array_equal(emb["full_lmk_faces_idx"][0],
                                  np.r_[emb["dynamic_lmk_faces_idx"][0], emb["static_lmk_faces_idx"]])
    np.testing.assert_allclose(emb["full_lmk_bary_coords"][0],
                               np.r_[emb["dynamic_lmk_bary_coords"][0], emb["static_lmk_bary_coords"]],
                               atol=1e-7)
    for k in ("static_lmk_bary_coords", "dynamic_lmk_bary_coords", "full_lmk_bary_coords"):
        assert (emb[k] >= 0).all() and np.allclose(emb[k].sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("n", [800, 816, 1004, 1500, N, 9000])     # 816, 1004: the head uses all its budget
def test_vertex_count_is_about_the_requested_one(n):
    geo = P._build_geometry(n)
    assert 0.96 * n <= len(geo["verts"]) <= n
    assert len(geo["verts"]) == geo["n_head"] + sum(len(i) for i in geo["eye_ids"])


# -- surface -----------------------------------------------------------------------------------------
def _components(n_verts, faces):
    adj = scipy.sparse.coo_matrix((np.ones(faces.size), (faces.ravel(), np.roll(faces, 1, 1).ravel())),
                                  shape=(n_verts, n_verts))
    return scipy.sparse.csgraph.connected_components(adj, directed=False)[1]


def test_surface_is_oriented_outward_and_three_pieces(geo):
    """Head and two eyeballs, as in FLAME: the head a consistently oriented surface open only at the
    neck cut (a disc), each eyeball a closed sphere; normals outward (positive signed volume, the
    head closed by a cap over the neck cut), no degenerate triangles, no unused vertices."""
    v, f = geo["verts"], geo["faces"]
    assert np.array_equal(np.unique(f), np.arange(len(v)))
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    assert area.min() > 1e-9
    labels = _components(len(v), f)
    assert labels.max() == 2
    for k, part in enumerate([np.arange(geo["n_head"])] + list(geo["eye_ids"])):
        assert len(np.unique(labels[part])) == 1
        pf = f[np.isin(f[:, 0], part)]
        directed = np.concatenate([pf[:, [0, 1]], pf[:, [1, 2]], pf[:, [2, 0]]])
        pairs = {tuple(e) for e in directed.tolist()}
        assert len(pairs) == len(directed)                              # each directed edge once
        border = np.array([(a, b) for a, b in pairs if (b, a) not in pairs]).reshape(-1, 2)
        n_edges = (len(directed) + len(border)) // 2
        if k == 0:                                                      # open at the neck cut only
            assert np.allclose(v[border, 1], v[:, 1].min()) and len(border) == geo["n_az"]
            assert len(part) - n_edges + len(pf) == 1                   # Euler characteristic of a disc
            c = v[np.unique(border)].mean(0)
            cap = np.c_[np.zeros(len(border), int), border[:, ::-1] + 1]
            tris = np.concatenate([np.r_[[c], v][cap], v[pf]])
        else:
            assert len(border) == 0 and len(part) - n_edges + len(pf) == 2   # a closed sphere
            tris = v[pf]
        vol = np.einsum("ij,ij->i", tris[:, 0], np.cross(tris[:, 1], tris[:, 2])).sum() / 6
        box = np.prod(np.ptp(v[part], axis=0))
        assert 0.3 * box < vol < box


def test_head_rings_are_simple_star_shaped_loops(geo):
    """The head is rings of vertices at one height each, from the crown down: each ring winds once
    round the vertical axis (star-shaped), so the surface cannot fold through itself (closed lips,
    nose and ears included)."""
    v, n_az, n_rings = geo["verts"], geo["n_az"], geo["n_rings"]
    rings = v[1:geo["n_head"]].reshape(n_rings, n_az, 3)
    assert np.ptp(rings[..., 1], axis=1).max() == 0
    assert (np.diff(rings[:, 0, 1]) < 0).all() and v[0, 1] > rings[0, 0, 1]
    axis = np.array([0.0, P._HEAD_ZC])
    ang = np.unwrap(np.arctan2(rings[..., 0] - axis[0], rings[..., 2] - axis[1]), axis=1)
    steps = np.diff(np.concatenate([ang, ang[:, :1] + 2 * np.pi], 1), axis=1)
    assert (steps > 0).all() and np.allclose(steps.sum(1), 2 * np.pi)
    # vertices are denser over the face: rings closer at face height, azimuths closer at the front
    ry, gap = rings[:, 0, 1], -np.diff(rings[:, 0, 1])
    mid = 0.5 * (ry[1:] + ry[:-1])
    face, rest = (mid > -0.06) & (mid < 0.03), (mid > 0.08) | (mid < -0.12)
    assert gap[face].max() < 0.75 * gap[rest].mean()
    phi = geo["phi"][1:1 + n_az]
    step = np.diff(np.r_[phi, phi[0] + 2 * np.pi])
    mid_phi = np.angle(np.exp(1j * (phi + step / 2)))
    assert step[np.abs(mid_phi) < 0.3].max() < 0.5 * step[np.abs(mid_phi) > 2.8].min()
    # the head is a head: about 15-17 cm wide, 19-22 cm deep, ~35 cm crown to neck cut (metres)
    assert 0.13 < np.ptp(v[:geo["n_head"], 0]) < 0.19 and 0.17 < np.ptp(v[:geo["n_head"], 2]) < 0.24


def test_back_of_the_skull_and_of_the_neck_are_the_designed_ellipsoid_and_cylinder():
    """Behind the face (azimuth pi, where no feature reaches) the surface is the bare design: above the
    neck the skull ellipsoid (semi-axes _HEAD_A/B/C about (0, _HEAD_YC, _HEAD_ZC)), low on the neck the
    elliptic cylinder about z = _NECK_ZC, in front (the throat) as behind; the blend between the two
    happens in between only."""
    y = np.linspace(-0.02, 0.10, 25)
    x, z = P._surface_xz(np.full_like(y, np.pi), y)
    e = np.sqrt(1 - ((y - P._HEAD_YC) / P._HEAD_B) ** 2)
    np.testing.assert_allclose(z, P._HEAD_ZC - P._HEAD_C * e, atol=1e-5)
    np.testing.assert_allclose(x, 0.0, atol=1e-12)
    yn = np.linspace(-0.18, -0.11, 15)
    _, zn = P._surface_xz(np.full_like(yn, np.pi), yn)
    np.testing.assert_allclose(zn, P._NECK_ZC - P._NECK_RZ, atol=1e-5)
    xs, _ = P._surface_xz(np.full_like(yn, np.pi / 2), yn)
    np.testing.assert_allclose(xs, P._NECK_RX, atol=1e-5)
    # the throat below the jaw is bare neck too: no face feature reaches under the chin
    yt = np.linspace(-0.18, -0.115, 14)
    _, zt = P._surface_xz(np.zeros_like(yt), yt)
    np.testing.assert_allclose(zt, P._NECK_ZC + P._NECK_RZ, atol=1e-5)


def test_the_nose_is_a_ridge_as_wide_as_a_nose():
    """Across the face at the nose tip's height and at the bridge, the part of the surface standing more
    than half the nose's height over the cheeks 2 cm to each side is one ridge 1-4 cm wide (a real nose's
    width), not a spike on the midline nor the whole face."""
    phi = np.linspace(-0.6, 0.6, 24001)
    for y in (P._nose_tip_y(), 0.0, 0.02):
        x, z = P._surface_xz(phi, np.full_like(phi, y))
        rise = z - np.interp([-0.02, 0.02], x, z).mean()
        above = x[rise >= rise.max() / 2]
        assert rise.max() > 0.008, y                                      # it stands out
        assert 0.010 < above.max() - above.min() < 0.040, (y, above.max() - above.min())
        assert np.all(np.diff(above) < 1e-3), y                           # one connected ridge


def test_template_is_mirror_symmetric(geo):
    v, f = geo["verts"], geo["faces"]
    m = mirror_map(v)
    assert np.array_equal(m[m], np.arange(len(v)))
    def edges(t):
        return {tuple(sorted(e)) for e in np.concatenate([t[:, :2], t[:, 1:], t[:, ::2]]).tolist()}

    # the quads' diagonals run one way, so only edges along rings and meridians mirror onto edges
    shared = edges(f) & edges(m[f])
    assert len(shared) > 0.6 * len(edges(f))
    left, right = geo["eye_ids"]
    assert np.array_equal(np.sort(m[left]), right)
    assert (v[left, 0] > 0).all()                                       # +x = subject's left: joint 3


def test_eyeballs_sit_in_their_sockets(geo):
    """Each eyeball's centre is inside the head and its front shows through the socket."""
    v, hf = geo["verts"], geo["head_faces"]
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(hf.astype(np.uint32)))
    for ids in geo["eye_ids"]:
        eye = v[ids]
        c = eye.mean(0)
        r = np.linalg.norm(eye - c, axis=1)
        assert np.ptp(r) < 1e-12                                        # a sphere about its vertex mean
        front = eye[np.argmax(eye[:, 2])]
        inside = scene.compute_occupancy(o3d.core.Tensor(np.stack([c, front]).astype(np.float32))).numpy()
        assert inside.tolist() == [1, 0]
        d = scene.compute_distance(o3d.core.Tensor(front[None].astype(np.float32))).numpy()[0]
        assert d < 0.5 * r[0]                                           # only just out of the socket

def test_brow_ridge_overhangs_the_eyes(geo):
    """Above each eye the brow ridge stands well in front of the eyeball (as the supraorbital rim does,
    ~1 cm): along the vertical through the eyeball's centre, the foremost surface within 4 cm above
    it is over 5 mm ahead of the eyeball's front (open3d's ray caster on the head surface)."""
    v, hf = geo["verts"], geo["head_faces"]
    for ids in geo["eye_ids"]:
        c, front = v[ids].mean(0), v[ids, 2].max()
        ys = np.arange(c[1], c[1] + 0.04, 0.0005)
        t, _ = raycast(v, hf, np.c_[np.full(len(ys), c[0]), ys, np.ones(len(ys))],
                       np.tile([0.0, 0, -1], (len(ys), 1)))
        brow = 1.0 - t
        assert brow.max() > front + 0.005, (brow.max(), front)
        assert ys[np.argmax(brow)] > c[1] + 0.01                        # above the eye, not at it



# -- landmark embedding ------------------------------------------------------------------------------
def test_static_landmarks_are_on_the_front_surface(geo):
    """Each static landmark is where a ray from the front (-z) first meets the head surface
    (open3d's ray caster as the reference)."""
    emb = P._landmark_embedding(geo)
    lmk, _ = head_landmarks(geo, emb)
    st = lmk[17:]
    origin = np.c_[st[:, :2], np.full(len(st), 1.0)]
    t, _ = raycast(geo["verts"], geo["head_faces"], origin, np.tile([0.0, 0, -1], (len(st), 1)))
    np.testing.assert_allclose(1.0 - t, st[:, 2], atol=2e-6)
    assert (emb["static_lmk_faces_idx"] < len(geo["head_faces"])).all()


def test_static_landmarks_follow_ibug_68(geo):
    """The iBUG-68 layout on the face: mirror pairs, features in their places."""
    lmk, _ = head_landmarks(geo, P._landmark_embedding(geo))
    x, y, z = lmk.T
    np.testing.assert_allclose(lmk[ibug_mirror()] * [-1, 1, 1], lmk, atol=3e-4)   # triangles are not mirrored
    assert (x[[0, 17, 36, 39, 48, 31]] < 0).all() and (x[[16, 26, 45, 42, 54, 35]] > 0).all()
    eyes = [lmk[36:42], lmk[42:48]]
    for e, ids in zip(eyes[::-1], geo["eye_ids"]):                      # 42-47 is the left (+x) eye
        c = geo["verts"][ids].mean(0)
        np.testing.assert_allclose(e[:, :2].mean(0), c[:2], atol=0.004)  # round the eyeball
    assert y[17:27].min() > y[36:48].max()                              # brows above the eyes
    assert y[36:48].min() > y[27:36].min() > y[48:68].max()             # eyes, nose, mouth
    # the nose's base (31-35) under the tip, left to right, arching down to 33 on the midline
    assert (y[31:36] < y[30] - 0.005).all() and (np.diff(x[31:36]) > 0).all() and abs(x[33]) < 1e-9
    assert y[30] - y[33] < 0.012                                        # the columella: ~1 cm, not more
    # brows from the right's outer end (17) to the left's (26); lids: upper above, lower below the corners
    assert (np.diff(x[17:27]) > 0).all() and (x[17:22] < 0).all() and (x[22:27] > 0).all()
    for corners, upper, lower in (([36, 39], [37, 38], [41, 40]), ([42, 45], [43, 44], [47, 46])):
        assert y[upper].min() > y[corners].max() and y[lower].max() < y[corners].min()
        assert (y[upper] - y[lower]).max() < 0.012                      # an eye opening, not a gap of cm
    assert y[33] <= y[[32, 34]].min() and y[[32, 34]].max() <= y[[31, 35]].min()
    assert np.argmax(z) == 30                                           # the nose tip is foremost
    assert (np.diff(y[27:31]) < 0).all() and (np.diff(z[27:31]) > 0).all()  # the bridge runs down and out
    assert y[8] == y.min() and abs(x[8]) < 1e-9                         # chin
    # the profile: nose tip, then the lips ahead of the nose bridge, the lower lip behind the upper
    assert z[30] > z[51] > z[57] > z[8] and z[57] > z[27] > z[39]
    # closed lips: the inner lip lines do not cross (upper on top, under 6 mm apart), outer lips round them
    gap = y[[61, 62, 63]] - y[[67, 66, 65]]
    assert (gap > 0).all() and gap.max() < 0.006
    assert y[51] > y[62] and y[57] < y[66] and x[48] < x[60] and x[54] > x[64]
    # the ears: the head's widest points, on its sides between eye and mouth height, standing ~1 cm out
    head = geo["verts"][:geo["n_head"]]
    for side in (1, -1):
        ear = head[np.argmax(side * head[:, 0])]
        assert y[48] < ear[1] < y[37] and abs(ear[2] - P._HEAD_ZC) < 0.03
        assert side * ear[0] > np.abs(head[head[:, 1] > y[19], 0]).max() + 0.01


def test_midline_profile_has_lips_mouth_line_and_nose(geo):
    """The face's profile (surface z along x = 0, open3d's ray caster) from the chin up: the lower lip,
    the mouth line between the inner-lip landmarks, the upper lip, the nose tip (the foremost point,
    at landmark 30), then the bridge and forehead receding up to the crown: three bumps, no others."""
    lmk, _ = head_landmarks(geo, P._landmark_embedding(geo))
    ys = np.arange(-0.1, 0.12, 0.0005)
    t, _ = raycast(geo["verts"], geo["head_faces"], np.c_[0 * ys, ys, 1 + 0 * ys],
                   np.tile([0.0, 0, -1], (len(ys), 1)))
    z = 1 - t
    tops = np.nonzero((z[1:-1] > z[:-2]) & (z[1:-1] >= z[2:]))[0] + 1
    dips = np.nonzero((z[1:-1] < z[:-2]) & (z[1:-1] <= z[2:]))[0] + 1
    assert len(tops) == 3 and len(dips) == 2
    lower_lip, upper_lip, nose = ys[tops]
    mouth, subnasale = ys[dips]
    assert lmk[57, 1] - 0.003 < lower_lip < lmk[66, 1] < mouth < lmk[62, 1] < upper_lip < lmk[51, 1] + 0.003
    assert upper_lip < subnasale < lmk[33, 1] + 0.003 and np.argmax(z) == tops[2]
    # landmark 30 (pronasale) on the tip, where a detector marks it (v1 had it 4.5 mm up the bridge)
    assert abs(nose - lmk[30, 1]) < 0.001 and abs(z.max() - lmk[30, 2]) < 0.001
    assert z[tops[0]] - z[dips[0]] > 0.0005 and z[tops[1]] - z[dips[0]] > 0.003   # lips stand out


def turned(a_deg):
    """Rotation (3,3) of the head by yaw a_deg about y (DECA's sign: +z, the face, towards +x)."""
    a = np.deg2rad(a_deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def seen_or_on_outline(verts, faces, p, yaw, step=0.001, behind=0.005, edge_only=False):
    """(N,) bool: each point p (N,3) of the head turned by `yaw`, seen from the front (orthographic,
    along -z as the truth renderer), is either the first surface it meets (within 0.5 mm) or on an
    occluding contour: 1 mm further out on the image, the view ray misses the head or meets it more
    than 5 mm behind the point (open3d's ray caster).  edge_only: the second only."""
    R = turned(yaw)
    q = p @ R.T
    out = np.sign(q[:, 0]) + (q[:, 0] == 0)
    view = np.tile([0.0, 0.0, -1.0], (len(q), 1)) @ R
    def depth(x):
        t, _ = raycast(verts, faces, np.c_[x, q[:, 1], np.ones(len(q))] @ R, view)
        return 1.0 - t                                                  # -inf where missed
    seen = depth(q[:, 0]) < q[:, 2] + 0.0005
    edge = depth(q[:, 0] + out * step) < q[:, 2] - behind
    return edge if edge_only else seen | edge


def test_dynamic_contour_is_the_outline_of_the_turned_face(geo):
    """Row r of the (79,17) tables is used at yaw a (rows 0..39: a = r, 40..78: a = 39 - r, DECA's
    sign: the head turned towards +x).  Every contour point is on the outer surface (the first hit
    of a ray from outside towards the axis).  At each yaw, each point is where a viewer sees the
    face's edge: on the jaw line where that is in view, else on the occluding contour of the cheek
    or jaw turning away; never behind the face (v1 slid all 17 round the jaw by 0.8 x yaw and hid
    the far side's points behind the cheek from 5 degrees on).  The chin stays at the chin and the
    side turning towards the camera keeps its frontal points; row -a is row a mirrored."""
    emb = P._landmark_embedding(geo)
    lmk, dyn = head_landmarks(geo, emb)
    v, f = geo["verts"], geo["head_faces"]
    yaw = np.r_[np.arange(40), -np.arange(1, 40)]
    p = dyn.reshape(-1, 3)
    axis = np.c_[np.zeros(len(p)), p[:, 1], np.full(len(p), P._HEAD_ZC)]
    out = (p - axis) / np.linalg.norm(p - axis, axis=1, keepdims=True)
    t, n = raycast(v, f, axis + 1.0 * out, -out)
    np.testing.assert_allclose(1.0 - t, np.linalg.norm(p - axis, axis=1), atol=2e-6)
    assert (n.reshape(79, 17, 3)[0, :, 2] > 0).all()                    # yaw 0: all face the camera
    assert (emb["dynamic_lmk_faces_idx"] < len(f)).all()
    for r in range(79):
        ok = seen_or_on_outline(v, f, dyn[r], yaw[r])
        assert ok.all(), f"yaw {yaw[r]}: contour points {np.flatnonzero(~ok).tolist()} are behind the face"
        moved = np.linalg.norm(dyn[r] - dyn[0], axis=1) > 1e-6           # a moved point is on the edge
        if moved.any():
            edge = seen_or_on_outline(v, f, dyn[r][moved], yaw[r], step=0.0005, edge_only=True)
            off = np.flatnonzero(moved)[~edge].tolist()
            assert not off, f"yaw {yaw[r]}: moved points {off} off the edge"
    for r in range(1, 40):
        np.testing.assert_allclose(dyn[39 + r][::-1] * [-1, 1, 1], dyn[r], atol=6e-4)
        np.testing.assert_allclose(dyn[r][:9], dyn[0][:9], atol=1e-12)   # chin and the side turning in
    # the side turning away does move: by 20 degrees its upper points are off their frontal places
    assert (np.linalg.norm(dyn[20:40, 14:] - dyn[0, 14:], axis=-1) > 0.003).all()
    # continuous: between neighbouring rows no point moves more than 0.5 mm on the image
    for r in range(39):
        R = turned(r + 0.5)
        assert np.linalg.norm(((dyn[r + 1] - dyn[r]) @ R.T)[:, :2], axis=1).max() < 0.0005
    # yaw 0: the jaw line from the subject's right ear round the chin to the left ear, below the mouth
    c = dyn[0]
    assert (np.diff(c[:, 0]) > 0).all() and np.argmin(c[:, 1]) == 8
    assert (np.diff(c[:9, 1]) < 0).all() and (np.diff(c[8:, 1]) > 0).all()
    assert c[8, 1] < lmk[57, 1] and c[8, 2] > lmk[0, 2]


def test_outline_rule_moves_only_points_out_of_view():
    """`_outline_azimuths` on the analytic surface: yaw 0 is the frontal contour; a point moves only
    forward (towards the midline), only on the side turning away, and only once it is out of view,
    that is when its ring, turned, reaches further across the image nearer the midline."""
    phi, y = P._frontal_contour()
    np.testing.assert_array_equal(P._outline_azimuths(phi, y, 0), phi)
    for a in (5, 12, 25, 39):
        got = P._outline_azimuths(phi, y, a)
        assert (got[:9] == phi[:9]).all() and (got[9:] <= phi[9:]).all() and (got[9:] > 0).all()
        np.testing.assert_allclose(P._outline_azimuths(phi, y, -a), -got[::-1], atol=1e-12)
    moved = P._outline_azimuths(phi, y, 30) < phi - 1e-3
    assert moved[13:].all()


def test_outline_keeps_points_in_view_exactly():
    """A point still in view keeps its frontal azimuth exactly (not a grid approximation of it): a turn
    of up to 3 degrees hides none of the jaw line, and the two points next to the chin on the side
    turning away (within 20 degrees of it) stay in view up to 39 degrees."""
    phi, y = P._frontal_contour()
    for a in (1, 3, -3):
        np.testing.assert_array_equal(P._outline_azimuths(phi, y, a), phi)
    for a in (10, 25, 39):
        np.testing.assert_array_equal(P._outline_azimuths(phi, y, a)[:11], phi[:11])
        np.testing.assert_array_equal(P._outline_azimuths(phi, y, -a)[6:], phi[6:])


# -- bases -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def identity_1500():
    """(geometry, identity basis (V,3,300)) of a 1500-vertex head, seed 0: built once for the module
    (the basis takes ~1 s); tests only read them."""
    geo = P._build_geometry(1500)
    return geo, P._identity_dirs(geo, np.random.default_rng(0))


def test_identity_basis_is_orthogonal_decreasing_symmetric_and_eyes_rigid(identity_1500):
    geo, q = identity_1500
    V = len(geo["verts"])
    assert q.shape == (V, 3, 300)
    flat = q.reshape(-1, 300)
    gram = flat.T @ flat
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-9 * np.diag(gram).max()               # orthogonal directions
    rms = np.sqrt((q ** 2).sum(1).mean(0))
    assert (np.diff(rms) < 0).all()                                     # decreasing, like PCA components
    assert 0.001 < rms[0] < 0.005 and rms[-1] > 0.02 * rms[0]           # millimetres per unit, as FLAME
    assert (q[:, 1].sum(0) >= 0).all()                                  # the sign rule
    for ids in geo["eye_ids"]:
        assert np.ptp(q[ids], axis=0).max() < 1e-15                     # eyeballs move rigidly
    m = mirror_map(geo["verts"])
    # the seven designed directions are mirror-symmetric, the random fields are not: the five global
    # ones lead, the two of the nose (capped, so of less RMS) sit later, in RMS order
    mirrored = q[m] * [[-1], [1], [1]]
    symmetric = [k for k in range(300) if np.allclose(mirrored[..., k], q[..., k], atol=1e-12)]
    assert symmetric[:5] == [0, 1, 2, 3, 4] and len(symmetric) == 7 and symmetric[5] > 20, symmetric
    # no direction moves a vertex further than 3x the leading RMS per unit (a localised one is capped):
    # at 2 sigma the nose, a few vertices, moves under a centimetre instead of reaching the mouth
    peak = np.linalg.norm(q, axis=1).max(axis=0)
    assert peak.max() <= 3.0 * rms[0] and peak[symmetric[5:]].max() < 0.006, peak[symmetric]
    # the first three are the head's width, height and depth: displacement along one axis, linear in it
    v = geo["verts"][:geo["n_head"]] - [0.0, P._HEAD_YC - 0.03, P._HEAD_ZC]
    for k in range(3):
        d = q[:geo["n_head"], :, k]
        assert np.abs(np.delete(d, k, axis=1)).max() < 1e-15
        c = (d[:, k] @ v[:, k]) / (v[:, k] @ v[:, k])
        np.testing.assert_allclose(d[:, k], c * v[:, k], atol=1e-12)
    # smooth and from coarse to fine, like the leading components of a head PCA: roughness (uniform graph
    # Laplacian relative to the field) low for the first fifty, rising towards that of noise at the end
    rough = roughness(geo["faces"], V)
    r = np.array([rough(q[:, :, k]) for k in range(300)])
    noise = rough(np.random.default_rng(1).normal(size=(V, 3)))
    assert r[:57].mean() < 0.25 * noise and r[7:57].mean() < 0.35 * r[250:].mean()
    assert r[250:].mean() > 0.7 * noise                                 # the finest nearly as rough as noise
    assert not np.allclose(P._identity_dirs(geo, np.random.default_rng(1))[..., 7:], q[..., 7:])


def test_identity_variation_is_largest_on_the_face(identity_1500):
    """The random identity directions (after the 7 designed ones) change the face more than the back
    of the head (faces differ most between people, and the landmarks that drive the fits are there),
    but the skull's shape varies too: RMS displacement over the face's vertices 1.25-3x that over the
    back of the skull, same heights."""
    geo, q = identity_1500
    v = geo["verts"]
    band = (v[:, 1] > -0.09) & (v[:, 1] < 0.06)
    front, back = band & (v[:, 2] > P._HEAD_ZC + 0.05), band & (v[:, 2] < P._HEAD_ZC - 0.03)
    size = (q[:, :, 7:] ** 2).sum(1)                                    # (V,293)
    ratio = np.sqrt(size[front].mean(0) / size[back].mean(0))
    assert (ratio > 1).mean() > 0.9 and 1.25 < np.median(ratio) < 3, np.median(ratio)   # the skull varies too


def test_random_identity_directions_move_vertices_every_way(identity_1500):
    """A random identity direction is a smooth field of displacements pointing every which way, not
    one fixed axis for every vertex: the largest eigenvalue of its 3x3 displacement second moment
    holds well under all of it (typically ~2/3; a field along a single axis would hold 100 %)."""
    _, q = identity_1500
    C = np.einsum("vik,vjk->kij", q[:, :, 7:], q[:, :, 7:])             # (293,3,3)
    ev = np.linalg.eigvalsh(C)
    share = ev[:, -1] / ev.sum(1)
    assert np.median(share) < 0.8 and (share < 0.95).mean() > 0.9, np.median(share)


def test_jaw_width_direction_widens_the_lower_face(identity_1500):
    """The two designed directions after the global scalings move vertices along one axis each: the
    face's length along y and the jaw's width along x; the jaw's width moves the face below the mouth
    (RMS) well over 1.5x as much as the cranium above the brows."""
    geo, q = identity_1500
    v = geo["verts"]
    x_only = [k for k in (3, 4) if np.abs(q[:, 1:, k]).max() < 1e-15]
    y_only = [k for k in (3, 4) if np.abs(q[:, ::2, k]).max() < 1e-15]   # the other: the face's length
    assert len(x_only) == 1 and len(y_only) == 1
    size = (q[:, :, x_only[0]] ** 2).sum(1)
    assert np.sqrt(size[v[:, 1] < P._Y_MOUTH].mean() / size[v[:, 1] > 0.06].mean()) > 1.5


def test_nose_identity_directions_change_the_nose(identity_1500):
    """The two designed local directions (the mirror-symmetric ones after the five global ones) are
    the nose's size: each moves the nose tip (the head's foremost vertex) most, keeps most of its
    motion within 3 cm of it, one pushes the tip along z (nose length), the other along y."""
    geo, q = identity_1500
    v = geo["verts"]
    head = v[:geo["n_head"]]
    tip = head[np.argmax(head[:, 2])]
    m = mirror_map(v)
    mirrored = q[m] * [[-1], [1], [1]]
    local = [k for k in range(5, 300) if np.allclose(mirrored[..., k], q[..., k], atol=1e-12)]
    assert len(local) == 2
    near = np.linalg.norm(v - tip, axis=1) < 0.03
    axes = []
    for k in local:
        size = np.linalg.norm(q[:, :, k], axis=1)
        peak = np.argmax(size)
        assert np.linalg.norm(v[peak] - tip) < 0.015, (k, v[peak])
        assert (size[near] ** 2).sum() > 0.5 * (size ** 2).sum()
        d = q[peak, :, k] / size[peak]
        assert np.abs(d).max() > 0.9
        axes.append(int(np.argmax(np.abs(d))))
    assert sorted(axes) == [1, 2]


def test_expression_basis_is_local_with_the_named_meanings(geo):
    """Expressions move the face only (never the eyeballs, the back of the head or the neck cut), by
    millimetres per unit; the named ones (the demo drives 0, 2 and 4 with the voice) do what their
    names say, symmetric ones symmetrically."""
    E = P._expression_dirs(geo, np.random.default_rng(0))
    v = geo["verts"]
    assert E.shape == (len(v), 3, 100)
    for ids in geo["eye_ids"]:
        assert not E[ids].any()
    assert not E[v[:, 2] < P._HEAD_ZC - 0.01].any() and not E[v[:, 1] < -0.115].any()
    assert not E[v[:, 1] > 0.11].any()                                  # nor the crown (the top 2 cm)
    mag = np.linalg.norm(E, axis=1).max(0)
    assert (mag > 0.0005).all() and (mag < 0.012).all()
    m = mirror_map(v)
    sym = E[m] * [[-1], [1], [1]]
    np.testing.assert_allclose(sym[..., :11], E[..., :11], atol=1e-12)    # symmetric expressions
    np.testing.assert_allclose(sym[..., 11], -E[..., 11], atol=1e-12)     # mouth sideways
    np.testing.assert_allclose(sym[..., [12, 14]], E[..., [13, 15]], atol=1e-12)   # left/right pairs
    emb = P._landmark_embedding(geo)
    f = geo["head_faces"]

    def moved(k):
        """(68,3) landmark displacement of expression k at +1."""
        d = points(E[..., k], f, emb["full_lmk_faces_idx"][0], emb["full_lmk_bary_coords"][0].astype(float))
        return d

    upper, lower = np.r_[17:27, 36:48], np.r_[0:17, 48:68]              # brows and eyes; jaw line and lips
    for k in (0, 1, 2, 3, 7, 9, 10, 11, 12, 13):                        # mouth, cheeks: not brows, eyes
        assert np.abs(moved(k)[upper]).max() < 5e-5, k
        assert np.abs(moved(k)[27:30]).max() < 5e-5, k                 # nor the bridge of the nose
    for k in (4, 5, 6, 8, 14, 15):                                      # brows, eyes, nose leave the mouth
        assert np.abs(moved(k)[lower]).max() < 5e-5, k
    def gap(d):
        return d[66, 1] - d[62, 1]                                      # lower minus upper lip

    d = moved(0)                                                        # mouth open
    assert gap(d) < -0.0005 and d[8, 1] < -0.002
    # the chin goes down and back, the way the jaw's rotation about its hinge (behind, above) takes it
    J = np.asarray(P._joints_regressor(geo) @ v)
    chin = points(v, f, emb["full_lmk_faces_idx"][0], emb["full_lmk_bary_coords"][0].astype(float))[8]
    swing = np.cross([1.0, 0, 0], chin - J[2])                           # velocity of +x rotation
    assert d[8] @ swing / np.linalg.norm(d[8]) / np.linalg.norm(swing) > 0.8
    d = moved(1)                                                        # smile: corners up, out and back
    assert d[48, 1] > 0.001 and d[54, 1] > 0.001 and d[54, 0] > 0 > d[48, 0]
    assert d[48, 2] < 0 and d[54, 2] < 0                                # drawn towards the cheekbones
    d = moved(2)                                                        # pucker: lips forward, narrower
    assert (d[48:68, 2] > 0).all() and d[54, 0] < 0 < d[48, 0]
    assert d[48, 0] - d[54, 0] > 0.001                                  # the mouth > 1 mm narrower per unit
    d = moved(3)                                                        # stretch: corners out
    assert d[54, 0] > 0.002 and d[48, 0] < -0.002 and np.abs(d[[48, 54], 1]).max() < 0.5 * d[54, 0]
    d = moved(4)                                                        # brows up
    assert (d[17:27, 1] > 0.001).all()
    d = moved(5)                                                        # frown: inner brows down, together
    assert d[21, 1] < 0 and d[22, 1] < 0 and d[22, 0] < 0 < d[21, 0]
    d = moved(6)                                                        # blink: upper lids down
    assert (d[[37, 38, 43, 44], 1] < -0.001).all()
    d = moved(7)                                                        # cheeks puffed out
    assert d[54, 0] > 0 > d[48, 0]
    d = moved(9)                                                        # upper lip up
    assert d[51, 1] > 0.001 and d[51, 1] > abs(d[57, 1])
    d = moved(10)                                                       # lower lip down
    assert d[57, 1] < -0.001 and -d[57, 1] > abs(d[51, 1])
    d = moved(11)                                                       # mouth sideways to +x
    assert (d[48:68, 0] > 0).all()
    d = moved(12)                                                       # left smile: the +x corner
    assert d[54, 1] > 0.001 and abs(d[48, 1]) < 0.1 * d[54, 1] and d[54, 2] < 0
    d = moved(14)                                                       # left brow
    assert (d[22:27, 1] > 0.001).all() and np.abs(d[17:22, 1]).mean() < 0.2 * d[22:27, 1].mean()


@pytest.mark.parametrize("seed", [0, 1])
def test_random_expressions_cover_the_whole_face(geo, seed):
    """Beyond the 16 named ones, the expression directions are local bumps spread over the whole face:
    as many on the subject's left as on the right (a fit of an asymmetric expression has both sides to
    work with) and from the chin up to the brows. Located by where each moves the vertices (its
    displacement-weighted centroid), not by the generator's random centres."""
    E = P._expression_dirs(geo, np.random.default_rng(seed))[..., 16:]
    x, y = geo["verts"][:, 0], geo["verts"][:, 1]
    e = (E ** 2).sum(1)                                                 # (V,84) squared displacement
    cx, cy = (e * x[:, None]).sum(0) / e.sum(0), (e * y[:, None]).sum(0) / e.sum(0)
    assert 0.3 < (cx > 0).mean() < 0.7, cx
    assert 1 / 3 < e[x > 0].sum() / e[x < 0].sum() < 3
    assert (cy < P._Y_MOUTH).mean() > 0.2 and (cy > P._EYE_Y).mean() > 0.1, cy


def test_sliding_expressions_move_along_the_face_surface(geo):
    """Smile, stretch, frown and mouth-sideways slide skin and lips over the skull and teeth: where
    they move the face most, the motion is mostly tangent to the surface (|d.n| under 0.4 |d| on
    average, vertex normals of the mesh), while cheek puff and pucker push the surface out."""
    E = P._expression_dirs(geo, np.random.default_rng(0))
    vn = vertex_normals(geo["verts"], geo["faces"])

    def normal_part(k):
        size = np.linalg.norm(E[:, :, k], axis=1)
        big = size > 0.5 * size.max()
        return (E[big, :, k] * vn[big]).sum(1) / size[big]             # signed, per moved vertex

    for k in (1, 3, 5, 11, 12, 13):                                     # smile, stretch, frown, sideways
        assert np.abs(normal_part(k)).mean() < 0.4, k
    for k in (2, 7):                                                    # pucker, cheek puff
        assert normal_part(k).mean() > 0.6, k


def test_pose_correctives_are_small_local_and_spare_the_eyes(geo):
    Pd = P._pose_dirs(geo, np.random.default_rng(0))
    v = geo["verts"]
    assert Pd.shape == (len(v), 3, 36)
    assert not Pd[geo["n_head"]:].any()                                 # rigid eyes, as FLAME's
    assert not Pd[:, :, 18:].any()                                      # no correctives for the eyes' joints
    assert not Pd[v[:, 1] > -0.02][:, :, :9].any()                      # neck ones below the face
    assert not Pd[v[:, 2] < P._HEAD_ZC - 0.01][:, :, 9:18].any()        # jaw ones on the face
    jaw = np.linalg.norm(Pd[:, :, 9:18], axis=1)                        # (V,9)
    assert (jaw[v[:, 1] > 0.02].max(0) < 0.1 * jaw.max(0)).all()          # round the jaw, not the eyes
    mag = np.linalg.norm(Pd, axis=1).max(0)
    assert (mag[:18] > 1e-4).all() and (mag[:18] < 0.01).all()


def roughness(faces, n_verts):
    """field (V,3) -> |L field| / |sqrt(deg) field| with L the uniform graph Laplacian of the mesh:
    ~0 for a smooth field, ~2.7 for white noise."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    A = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_verts, n_verts)).tocsr()
    A = ((A + A.T) > 0).astype(float)
    deg = np.asarray(A.sum(1)).ravel()
    L = scipy.sparse.diags(deg) - A
    return lambda field: np.linalg.norm(L @ field) / np.linalg.norm(np.sqrt(deg)[:, None] * field)


@pytest.mark.parametrize("seed", [0, 1])
def test_pose_correctives_are_smooth_and_independent(geo, seed):
    """Each pose feature of the neck and the jaw has its own smooth corrective: the fields are far
    smoother than noise, and the nine of a joint are well conditioned (no two nearly alike), as
    correctives regressed per pose feature are."""
    Pd = P._pose_dirs(geo, np.random.default_rng(seed))
    rough = roughness(geo["faces"], len(geo["verts"]))
    noise = rough(np.random.default_rng(1).normal(size=(len(geo["verts"]), 3)))
    assert max(rough(Pd[:, :, k]) for k in range(18)) < 0.15 * noise
    for j in (0, 1):
        s = np.linalg.svd(Pd[:, :, 9 * j:9 * j + 9].reshape(-1, 9), compute_uv=False)
        assert s[0] / s[-1] < 20, (j, s[0] / s[-1])


# -- joints and skinning -----------------------------------------------------------------------------
def test_joints_sit_where_flame_puts_them(geo):
    Jr = P._joints_regressor(geo)
    v = geo["verts"]
    J = np.asarray(Jr @ v)
    lmk, _ = head_landmarks(geo, P._landmark_embedding(geo))
    assert np.abs(J[:3, 0]).max() < 1e-12                               # root, neck, jaw on the mid-plane
    for j, ids in zip((3, 4), geo["eye_ids"]):                          # eye joints: eyeball centres
        np.testing.assert_allclose(J[j], v[ids].mean(0), atol=1e-12)
    assert J[3, 0] > 0 > J[4, 0]
    assert v[:, 1].min() < J[0, 1] < J[1, 1] < J[2, 1]                  # root, neck, then the jaw hinge
    # the jaw hinge: between the ears, below the eyes and above the mouth, behind the face
    assert lmk[62, 1] < J[2, 1] < lmk[36, 1] and J[2, 2] < lmk[0, 2]
    assert Jr.shape == (5, len(v)) and np.allclose(Jr.sum(1), 1)


@pytest.mark.parametrize("n", [900, 1800, N])
def test_jaw_hinge_is_in_front_of_the_ears(n):
    """The jaw joint is the temporomandibular joint: in front of the ears (the head's widest vertices,
    found independently of the regressor), not behind them, below the eyes and above the mouth line,
    at every mesh size."""
    geo = P._build_geometry(n)
    v = geo["verts"]
    J = np.asarray(P._joints_regressor(geo) @ v)
    head = v[:geo["n_head"]]
    for side in (1, -1):
        ear = head[np.argmax(side * head[:, 0])]
        assert ear[2] < J[2, 2] < ear[2] + 0.04, (ear, J[2])
    assert P._Y_MOUTH < J[2, 1] < min(v[ids, 1].mean() for ids in geo["eye_ids"])


def test_jaw_rotation_opens_the_mouth_and_moves_only_the_jaw(geo):
    """Skinning weights: a partition of unity, mirror-symmetric; the jaw joint carries the chin and
    lower lip and not the upper lip, nose, eyes or brows, so rotating it (FLAME: +x opens, as the
    demo's singer does) opens the mouth; eyeballs follow their eye joints only."""
    v = geo["verts"]
    J = np.asarray(P._joints_regressor(geo) @ v)
    W = P._skin_weights(geo, J)
    np.testing.assert_allclose(W.sum(1), 1.0, atol=1e-12)
    assert (W >= 0).all()
    m = mirror_map(v)
    np.testing.assert_allclose(W[m][:, [0, 1, 2, 4, 3]], W, atol=1e-12)
    emb = P._landmark_embedding(geo)
    f = geo["head_faces"]
    fid, bary = emb["full_lmk_faces_idx"][0], emb["full_lmk_bary_coords"][0].astype(float)
    w = (W[f[fid], 2] * bary).sum(1)                                    # jaw weight at each landmark
    assert (w[6:11] > 0.99).all() and (w[55:60] > 0.99).all() and (w[65:68] > 0.7).all()
    assert (w[[0, 16]] < 1e-9).all() and (w[17:48] < 1e-9).all()        # ears, brows, nose, eyes
    assert (w[49:54] < 1e-9).all() and (w[61:64] < 0.1).all() and (w[[48, 54, 60, 64]] < 0.3).all()
    lmk = points(v, f, fid, bary)
    gaps = []
    for angle in (0.0, 0.1, 0.2, 0.3):
        opened = points(jaw_open(v, J, W, angle), f, fid, bary)
        gaps.append(opened[66, 1] - opened[62, 1])
        keep = np.r_[17:48, 49:54]                                      # brows, eyes, nose, upper lip
        np.testing.assert_allclose(opened[keep], lmk[keep], atol=1e-12)
    assert np.all(np.diff(gaps) < -0.002)                               # lower lip goes down with the jaw
    assert gaps[-1] < -0.01
    opened = jaw_open(v, J, W, 0.3)
    cut = np.isclose(v[:, 1], v[:, 1].min())
    np.testing.assert_allclose(opened[cut], v[cut], atol=1e-12)         # the neck cut does not move
    assert (W[cut, 0] == 1.0).all()                                     # it hangs on the root
    assert W[0, 1] == 1.0                                               # the crown: the neck joint
    for j, ids in zip((3, 4), geo["eye_ids"]):
        assert (W[ids, j] == 1.0).all()                                 # eyeballs: their eye joints


def test_throat_does_not_follow_the_jaw(geo):
    """Below the jaw line the skin belongs to the neck: the front of the neck 1.5-3 cm under the chin
    (the throat) has no jaw weight, so opening the mouth does not drag it along."""
    v = geo["verts"]
    J = np.asarray(P._joints_regressor(geo) @ v)
    W = P._skin_weights(geo, J)
    throat = (np.abs(v[:, 0]) < 0.02) & (v[:, 2] > P._HEAD_ZC) & (v[:, 1] < P._Y_CHIN - 0.015) \
        & (v[:, 1] > P._Y_CHIN - 0.03)
    assert throat.sum() >= 5
    assert W[throat, 2].max() < 0.1, W[throat, 2]


def test_jaw_weight_rises_towards_the_hinge_at_the_sides(geo):
    """The jaw's part of the skin follows the mandible: at the front it ends at the mouth line, on the
    sides (azimuth ~55 degrees) it rises over a centimetre above it towards the hinge (the ramus)."""
    v = geo["verts"][:geo["n_head"]]
    J = np.asarray(P._joints_regressor(geo) @ geo["verts"])
    W = P._skin_weights(geo, J)[:geo["n_head"], 2]
    az = np.abs(np.arctan2(v[:, 0], v[:, 2] - P._HEAD_ZC))
    front, side = (az < 0.3) & (W > 0.5), (az > 0.9) & (az < 1.05) & (W > 0.5)
    assert v[front, 1].max() < P._Y_MOUTH
    assert P._Y_MOUTH + 0.01 < v[side, 1].max() < J[2, 1]


def test_root_and_neck_joints_are_centres_of_neck_cross_sections(geo):
    """Root and neck joints sit on the neck's axis: each is the mean of one whole horizontal ring of
    the neck (all its vertices, equal weights), root below neck."""
    v = geo["verts"]
    Jr = P._joints_regressor(geo).toarray()
    for j in (0, 1):
        ring = np.flatnonzero(Jr[j])
        assert np.ptp(v[ring, 1]) == 0 and np.allclose(Jr[j, ring], 1 / len(ring))
        assert len(ring) == np.isclose(v[:geo["n_head"], 1], v[ring[0], 1], atol=0).sum()
    assert v[np.flatnonzero(Jr[0])[0], 1] < v[np.flatnonzero(Jr[1])[0], 1] < P._Y_MOUTH


def test_same_seed_same_model_and_files(tmp_path):
    a = P.write_procedural_head_model(tmp_path / "a", seed=2, n_vertices=800)
    b = P.write_procedural_head_model(tmp_path / "b" / "not made yet", seed=2, n_vertices=800)  # makes it
    assert set(a) == {"model", "landmark_embedding"}
    for k in a:
        assert a[k].read_bytes() == b[k].read_bytes()
    assert a["model"].name == P.MODEL_FILE and a["landmark_embedding"].name == P.EMBEDDING_FILE
    emb = np.load(a["landmark_embedding"], allow_pickle=True)[()]
    assert isinstance(emb, dict) and emb["static_lmk_faces_idx"].shape == (51,)


def test_ray_cast_reports_misses():
    tri = np.array([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    o = np.array([[0.2, 0.2, 1.0], [0.2, 0.2, 2.0]])
    d = np.tile([0.0, 0, -1], (2, 1))
    fid, bary = P._ray_cast(o, d, tri)
    assert fid.tolist() == [0, 0]
    np.testing.assert_allclose(bary, [[0.6, 0.2, 0.2]] * 2)
    with pytest.raises(RuntimeError, match="1 landmark rays missed"):
        P._ray_cast(np.array([[0.2, 0.2, 1.0], [2.0, 2.0, 1.0]]), d, tri)
    # two triangles on one ray: the nearest hit by default, the farthest on request (the contour's rays)
    stacked = np.concatenate([tri + [0.0, 0, -0.5], tri])
    assert P._ray_cast(o[:1], d[:1], stacked)[0].tolist() == [1]
    assert P._ray_cast(o[:1], d[:1], stacked, nearest=False)[0].tolist() == [0]
    # the count is of the misses only, hits on any face (here face 1) not counted
    two = np.concatenate([tri, tri + [5.0, 0, 0]])
    with pytest.raises(RuntimeError, match="^1 landmark rays missed"):
        rays = np.array([[5.2, 0.2, 1.0], [5.3, 0.1, 1.0], [2.0, 2.0, 1.0]])
        P._ray_cast(rays, np.tile([0.0, 0, -1], (3, 1)), two)
    for dy in (0.1, -0.1):                  # the candidate search by height holds for horizontal rays only
        with pytest.raises(AssertionError, match="rays must be horizontal"):
            P._ray_cast(o, d + [0.0, dy, 0.0], tri)


def test_writer_and_builder_default_to_the_same_model():
    """`write_procedural_head_model(folder)` (what the pipeline caches) writes the model that
    `build_procedural_head_model()` returns: same default seed and size."""
    import inspect
    w = inspect.signature(P.write_procedural_head_model).parameters
    b = inspect.signature(P.build_procedural_head_model).parameters
    defaults = [(p["seed"].default, p["n_vertices"].default) for p in (w, b)]
    assert defaults == [(0, N), (0, N)]
