"""A procedural head model in the file formats of FLAME 2020 and DECA/EMOCA's landmark embedding.

It stands in for FLAME when no licensed model is configured, so the whole pipeline runs and can
be tested; it is not FLAME and every record made with it says so.  The file it writes has the
keys, array layouts and joint tree of `generic_model.pkl` (plus 'procedural': True and a
'description'), and `landmark_embedding.npy` has DECA's keys and shapes (dynamic tables stored as
numpy, not torch tensors).  Both hold only numpy arrays, a scipy.sparse matrix and builtin
values, so they load through flame_io's allow-list unpickler exactly like the licensed files (the
folder they are cached in, processed/_models, is shared and writable).  Conventions as FLAME: metres, y up, face towards +z, +x = subject's
left; joints root, neck, jaw, left eye, right eye with parents [-1, 0, 1, 1, 1].

Geometry: a generalised cylinder (rings of constant height around a vertical axis, denser at the
face) shaped like an ellipsoidal skull on a neck, with radial features (nose, eye sockets, brows,
lips, chin, cheeks, ears) and two eyeballs.  Identity directions are smooth (global scalings plus
random low-frequency fields, orthogonalised, decreasing amplitude); expression directions are
localised (mouth, lips, brows, eyes, cheeks, nose) with Gaussian falloff.  Landmarks are placed by
ray casting an iBUG-68 layout onto the surface; the dynamic contour's row for each yaw is the face
outline of the head turned by that yaw (jaw line where in view, else the cheek's occluding contour).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

DESCRIPTION = ("procedural head model, not FLAME: a synthetic stand-in written in the FLAME 2020 "
               "file layout so the pipeline runs without the licensed model")
MODEL_FILE = "generic_model.pkl"
EMBEDDING_FILE = "landmark_embedding.npy"
# What this generator writes; bump when the model changes (cached copies and demo truths key on it).
# v2: landmark 30 on the nose tip, contour on the visible outline; v3: identity peaks capped.
GENERATOR_VERSION = "v3"

# Head shape (metres).
_HEAD_A, _HEAD_B, _HEAD_C = 0.076, 0.118, 0.096        # ellipsoid semi-axes x, y, z
_HEAD_YC, _HEAD_ZC = 0.012, -0.012                     # ellipsoid centre
_NECK_RX, _NECK_RZ, _NECK_ZC = 0.050, 0.056, -0.022
_NECK_TOP, _Y_BOTTOM = -0.035, -0.185
_EYE_X, _EYE_Y, _EYE_R = 0.032, 0.028, 0.0115
_JAW_JOINT_Y, _JAW_JOINT_Z = -0.012, -0.004
_Y_MOUTH, _Y_CHIN = -0.043, -0.084
_IDENTITY_PEAK_PER_RMS = 3.0    # an identity direction moves no vertex further than this x its rank's RMS target


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


# -- geometry -------------------------------------------------------------------------------------
def _profile(y):
    """Cross-section radii (rx, rz) and centre z of the bare head+neck at heights y."""
    e = np.sqrt(np.clip(1.0 - ((y - _HEAD_YC) / _HEAD_B) ** 2, 0.0, None))
    neck = _sigmoid((_NECK_TOP - y) / 0.008)
    p = 8.0  # smooth maximum of skull and neck radii
    rx = ((_HEAD_A * e) ** p + (_NECK_RX * neck) ** p) ** (1 / p)
    rz = ((_HEAD_C * e) ** p + (_NECK_RZ * neck) ** p) ** (1 / p)
    wz = (_HEAD_C * e) ** p / np.maximum((_HEAD_C * e) ** p + (_NECK_RZ * neck) ** p, 1e-30)
    cz = wz * _HEAD_ZC + (1 - wz) * _NECK_ZC
    return rx, rz, cz


def _jawline_y(phi):
    """Height of the jaw line at azimuth phi (0 = chin, +-1.4 rad = below the ears)."""
    return _Y_CHIN + (0.018 - _Y_CHIN) * (np.minimum(np.abs(phi), 1.6) / 1.4) ** 1.6


def _radial_features(phi, y):
    """Outward displacement (metres) of the surface at azimuth phi and height y: the face."""
    x = 0.08 * np.sin(phi)                      # lateral position on the face
    front = _smoothstep(0.0, 0.6, np.cos(phi))
    d = np.zeros_like(y)
    # Lower face forward (the maxilla and mandible stand in front of the skull ellipsoid).
    lower = _smoothstep(-0.10, -0.082, y) * (1 - _smoothstep(-0.02, 0.02, y))
    d += 0.026 * lower * np.cos(np.clip(phi, -np.pi / 2, np.pi / 2)) ** 1.5 * (np.abs(phi) < np.pi / 2)
    # Nose: a ridge growing from the bridge to the tip, ending at the nostrils.
    amp = np.interp(y, [-0.026, -0.018, -0.008, 0.010, 0.030, 0.045], [0, 0.013, 0.024, 0.013, 0.006, 0])
    width = 0.006 + 0.006 * _gauss(0, y, 0, -0.012, 1, 0.008)
    d += amp * np.exp(-0.5 * (x / width) ** 2) * front
    for sx in (-1, 1):
        d += -0.010 * _gauss(x, y, sx * _EYE_X, _EYE_Y, 0.013, 0.010) * front      # eye sockets
        d += 0.006 * _gauss(x, y, sx * 0.034, 0.047, 0.020, 0.006) * front        # brow ridge
        d += 0.006 * _gauss(x, y, sx * 0.045, -0.008, 0.014, 0.015) * front       # cheekbones
        d += 0.013 * _gauss(phi, y, sx * 1.66, 0.004, 0.10, 0.020)                 # ears
    d += 0.005 * _gauss(x, y, 0, -0.035, 0.020, 0.004) * front                      # upper lip
    d += 0.005 * _gauss(x, y, 0, -0.051, 0.018, 0.005) * front                      # lower lip
    d += -0.004 * _gauss(x, y, 0, _Y_MOUTH, 0.024, 0.0018) * front                  # mouth line
    d += 0.007 * _gauss(x, y, 0, -0.076, 0.016, 0.009) * front                      # chin
    return d


def _ring_heights(n_rings):
    """Ring heights from the crown down to the neck cut, denser over the face."""
    theta0 = 0.14
    ys = np.linspace(_HEAD_YC + _HEAD_B * np.cos(theta0), _Y_BOTTOM, 6000)
    rx, rz, _ = _profile(ys)
    r = 0.5 * (rx + rz)
    seg = np.hypot(np.diff(ys), np.diff(r))
    density = 1.0 + 1.6 * _gauss(0, 0.5 * (ys[1:] + ys[:-1]), 0, -0.02, 1, 0.055)
    s = np.concatenate([[0], np.cumsum(seg * density)])
    return np.interp(np.linspace(0, s[-1], n_rings), s, ys)


def _azimuths(n_az):
    """Azimuths (0 = +z, the face; +pi/2 = +x), mirror-symmetric, denser at the front."""
    t = np.linspace(-np.pi, np.pi, n_az, endpoint=False)
    return t - 0.55 * np.sin(t)


def _sphere(center, radius, n_lat=8, n_lon=12):
    """A UV sphere (vertices, faces); rings symmetric about the equator so the mean is the centre."""
    verts = [[0, radius, 0]]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for k in range(n_lon):
            ph = 2 * np.pi * k / n_lon
            verts.append([radius * np.sin(th) * np.sin(ph), radius * np.cos(th),
                          radius * np.sin(th) * np.cos(ph)])
    verts.append([0, -radius, 0])
    verts = np.asarray(verts) + center
    faces = []
    last = len(verts) - 1
    for k in range(n_lon):
        faces.append([0, 1 + k, 1 + (k + 1) % n_lon])
        base = 1 + (n_lat - 2) * n_lon
        faces.append([last, base + (k + 1) % n_lon, base + k])
    for i in range(n_lat - 2):
        for k in range(n_lon):
            a, b = 1 + i * n_lon + k, 1 + i * n_lon + (k + 1) % n_lon
            faces += [[a, a + n_lon, b + n_lon], [a, b + n_lon, b]]
    return verts, np.asarray(faces, dtype=np.int64)


def _orient_outward(verts, faces, center):
    """Flip faces whose normal points towards `center` (per component)."""
    v0, v1, v2 = (verts[faces[:, i]] for i in range(3))
    n = np.cross(v1 - v0, v2 - v0)
    out = ((v0 + v1 + v2) / 3 - center)
    flip = (n * out).sum(1) < 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _build_geometry(n_vertices):
    n_head = max(int(n_vertices) - 2 * 86 - 1, 600)
    n_az = int(2 * round(np.sqrt(n_head * 1.25) / 2))
    n_rings = max(n_head // n_az, 12)
    ys = _ring_heights(n_rings)
    phis = _azimuths(n_az)
    Y, P = np.meshgrid(ys, phis, indexing="ij")                     # (R,A)
    X, Z = _surface_xz(P, Y)
    top = np.array([[0.0, _HEAD_YC + _HEAD_B, _HEAD_ZC]])
    head = np.concatenate([top, np.stack([X, Y, Z], -1).reshape(-1, 3)])
    faces = []
    for k in range(n_az):
        faces.append([0, 1 + (k + 1) % n_az, 1 + k])
    for i in range(n_rings - 1):
        for k in range(n_az):
            a, b = 1 + i * n_az + k, 1 + i * n_az + (k + 1) % n_az
            faces += [[a, b, a + n_az], [b, b + n_az, a + n_az]]
    faces = np.asarray(faces, dtype=np.int64)
    axis_pts = np.stack([np.zeros_like(head[:, 1]), head[:, 1], np.full_like(head[:, 1], _HEAD_ZC)], 1)
    # Orient by the outward direction from the vertical axis at the face's height.
    v0 = head[faces[:, 0]]
    n = np.cross(head[faces[:, 1]] - v0, head[faces[:, 2]] - v0)
    cen = head[faces].mean(1)
    outward = cen - axis_pts[faces[:, 0]]
    outward[:, 1] = 0
    if ((n * outward).sum(1) < 0).mean() > 0.5:
        faces = faces[:, [0, 2, 1]]
    phi_v = np.concatenate([[0.0], P.ravel()])
    y_v = head[:, 1]

    # Eyeballs sit in the sockets with their fronts just out of the surface.
    eyes, eye_faces, eye_ids = [], [], []
    offset = len(head)
    for sx in (1, -1):                                               # left eye (+x) is joint 3
        z_surf = _surface_z_front(sx * _EYE_X, _EYE_Y)
        c = np.array([sx * _EYE_X, _EYE_Y, z_surf - _EYE_R + 0.003])
        sv, sf = _sphere(c, _EYE_R)
        sf = _orient_outward(sv, sf, c)
        eyes.append(sv)
        eye_faces.append(sf + offset)
        eye_ids.append(np.arange(offset, offset + len(sv)))
        offset += len(sv)
    verts = np.concatenate([head] + eyes)
    all_faces = np.concatenate([faces] + eye_faces)
    return dict(verts=verts, faces=all_faces, head_faces=faces, n_head=len(head), phi=phi_v, y=y_v,
                n_az=n_az, n_rings=n_rings, eye_ids=eye_ids,
                eye_centers=np.stack([e.mean(0) for e in eyes]))


def _surface_xz(phi, y):
    """Analytic surface point (X, Z), each shaped like phi, at azimuths phi and heights y (broadcast):
    the ellipse of `_profile` pushed out along its horizontal normal by `_radial_features`."""
    rx, rz, cz = _profile(y)
    ex, ez = rx * np.sin(phi), rz * np.cos(phi)
    nrm = np.stack(np.broadcast_arrays(ex / rx ** 2, ez / rz ** 2), -1)   # horizontal outward normal
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
    d = _radial_features(phi, y)
    return ex + d * nrm[..., 0], cz + ez + d * nrm[..., 1]


def _surface_z_front(x, y):
    """z of the face surface at lateral x, height y (front half), from the analytic profile."""
    phis = np.linspace(-1.2, 1.2, 4801)
    X, Z = _surface_xz(phis, np.full_like(phis, y))
    return float(np.interp(x, X, Z))


def _nose_tip_y(y_lo=-0.03, y_hi=0.02, step=5e-5):
    """Height of the nose tip (pronasale): the foremost point of the midline profile x = 0 between
    y_lo and y_hi.  iBUG's landmark 30 is the tip, and the detector marks it there."""
    ys = np.arange(y_lo, y_hi, step)
    _, z = _surface_xz(np.zeros_like(ys), ys)
    return float(ys[np.argmax(z)])


# -- ray casting for the landmark embedding -------------------------------------------------------
def _ray_cast(origins, dirs, tris, nearest=True):
    """First (nearest=True) or last hit of rays (N,3) on triangles (F,3,3): face ids (N,), bary (N,3).

    Every ray here is horizontal (dir y = 0), so a ray can only hit triangles whose y-range holds
    its height: rays are processed in height order against those candidates only.
    """
    assert np.all(dirs[:, 1] == 0), "rays must be horizontal"
    fid = np.full(len(origins), -1, dtype=np.int64)
    bary = np.zeros((len(origins), 3))
    tri_ymin, tri_ymax = tris[..., 1].min(1), tris[..., 1].max(1)
    order = np.argsort(origins[:, 1], kind="stable")
    for s in range(0, len(order), 16):
        sel = order[s:s + 16]
        y0, y1 = origins[sel, 1].min(), origins[sel, 1].max()
        cand = np.nonzero((tri_ymax >= y0 - 1e-12) & (tri_ymin <= y1 + 1e-12))[0]
        tri = tris[cand]
        v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        o, d = origins[sel, None], dirs[sel, None]                        # (n,1,3)
        p = np.cross(d, e2[None])
        det = (e1[None] * p).sum(-1)
        ok = np.abs(det) > 1e-14
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tv = o - v0[None]
        u = (tv * p).sum(-1) * inv
        q = np.cross(tv, e1[None])
        v = (d * q).sum(-1) * inv
        t = (e2[None] * q).sum(-1) * inv
        hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 1e-9)
        tt = np.where(hit, t, np.inf if nearest else -np.inf)
        best = np.argmin(tt, 1) if nearest else np.argmax(tt, 1)
        rows = np.arange(len(best))
        good = hit[rows, best]
        fid[sel] = np.where(good, cand[best], -1)
        uu, vv = u[rows, best], v[rows, best]
        bary[sel] = np.clip(np.stack([1 - uu - vv, uu, vv], 1), 0, 1)
    if (fid < 0).any():
        raise RuntimeError(f"{int((fid < 0).sum())} landmark rays missed the procedural surface")
    bary /= bary.sum(1, keepdims=True)
    return fid, bary


def _ibug_static_xy():
    """Frontal (x, y) in metres of iBUG landmarks 17..67 (image-left = subject's right = -x)."""
    pts = {}
    brow = [(-0.056, 0.041), (-0.047, 0.049), (-0.037, 0.052), (-0.026, 0.051), (-0.015, 0.047)]
    for i, p in enumerate(brow):                                      # 17-21 right brow, 22-26 left
        pts[17 + i] = p
        pts[26 - i] = (-p[0], p[1])
    # 27-30: the bridge evenly from between the eyes down to the tip (30, the foremost point)
    for i, y in enumerate(np.linspace(0.032, _nose_tip_y(), 4)):
        pts[27 + i] = (0.0, float(y))
    nostrils = [(-0.013, -0.016), (-0.007, -0.018), (0.0, -0.019), (0.007, -0.018), (0.013, -0.016)]
    for i, (x, y) in enumerate(nostrils):
        pts[31 + i] = (x, y)                                         # 31-35 nostrils
    reye = [(-0.045, _EYE_Y), (-0.038, _EYE_Y + 0.0045), (-0.027, _EYE_Y + 0.0048), (-0.019, _EYE_Y),
            (-0.027, _EYE_Y - 0.0035), (-0.038, _EYE_Y - 0.0035)]     # 36-41
    for i, p in enumerate(reye):
        pts[36 + i] = p
    for a, b in ((36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)):
        pts[b] = (-pts[a][0], pts[a][1])
    outer = [(-0.025, -0.042), (-0.016, -0.036), (-0.006, -0.033), (0.0, -0.034), (0.006, -0.033),
             (0.016, -0.036), (0.025, -0.042), (0.017, -0.050), (0.007, -0.054), (0.0, -0.0545),
             (-0.007, -0.054), (-0.017, -0.050)]                      # 48-59
    for i, p in enumerate(outer):
        pts[48 + i] = p
    inner = [(-0.020, -0.042), (-0.008, -0.0405), (0.0, -0.041), (0.008, -0.0405), (0.020, -0.042),
             (0.008, -0.0445), (0.0, -0.045), (-0.008, -0.0445)]      # 60-67
    for i, p in enumerate(inner):
        pts[60 + i] = p
    return np.array([pts[i] for i in range(17, 68)])


_CONTOUR_PHI_MAX = 1.38          # azimuth of the frontal contour's ends (points 0 and 16), by the ears


def _frontal_contour():
    """Azimuths phi (17,) and heights y (17,) of the yaw-0 contour: the jaw line from the subject's
    right (-x, point 0) round the chin (point 8) to the left (+x, point 16)."""
    phi = np.linspace(-_CONTOUR_PHI_MAX, _CONTOUR_PHI_MAX, 17)
    return phi, _jawline_y(phi)


def _outline_azimuths(phi, y, yaw_deg, n_grid=8192):
    """Ray azimuths (17,) of the contour on the face outline of the head turned by yaw_deg (about
    y; DECA's sign: positive turns the face, +z, towards +x, so the +x side turns away).

    phi, y (17,): the frontal contour, phi as ray azimuths about the vertical axis x = 0,
    z = _HEAD_ZC (how `_landmark_embedding` casts them).  A point on the side turning away keeps
    its frontal place while that is still in view, and otherwise moves forward along its own
    height to where the ring there reaches furthest across the image (the occluding contour of
    cheek or jaw), which is what a person or a detector sees as the face's edge.  Points on the
    side turning towards the camera, and the chin, stay on the jaw line, which stays in view.

    Only the ring between the midline and the frontal point is searched: beyond it the ears would
    be the outermost point at ear height, and nobody marks the face's edge on an ear.  Along a
    horizontal ring seen horizontally (orthographic, as the truth renderer projects), the
    outermost point is exactly where the surface turns from front-facing to back-facing.
    """
    a = np.deg2rad(yaw_deg)
    side = np.sign(a)
    if side == 0:
        return phi.copy()
    # The ring at each height, densely by its ellipse parameter (not a ray azimuth): (17,G)
    param = np.broadcast_to(np.linspace(-np.pi, np.pi, n_grid), (len(phi), n_grid))
    X, Z = _surface_xz(param, np.broadcast_to(y[:, None], param.shape))
    ray = np.arctan2(X, Z - _HEAD_ZC)                                   # its ray azimuths (17,G)
    searched = (side * ray >= 0) & (side * ray <= side * phi[:, None])
    across = np.where(searched, side * (np.cos(a) * X + np.sin(a) * Z), -np.inf)   # image x, outwards
    outline = ray[np.arange(len(phi)), np.argmax(across, axis=1)]       # (17,)
    away = np.sign(phi) == side                                         # the side turning away
    # a point still in view is its own ring's outermost point searched: keep it exactly in place
    moved = away & (side * outline < side * phi - 1e-3)
    return np.where(moved, outline, phi)


def _contour_table(yaws):
    """Azimuths and heights (len(yaws),17) of the dynamic contour for each yaw in degrees: the
    frontal jaw line with the points gone out of view moved onto the outline (_outline_azimuths).
    Row -a is row a mirrored, since the surface is."""
    phi0, y0 = _frontal_contour()
    phis = np.stack([_outline_azimuths(phi0, y0, a) for a in yaws])
    return phis, np.broadcast_to(y0, phis.shape).copy()


def _landmark_embedding(geo):
    verts, head_faces = geo["verts"], geo["head_faces"]
    tris = verts[head_faces]
    xy = _ibug_static_xy()
    origins = np.stack([xy[:, 0], xy[:, 1], np.full(len(xy), 1.0)], 1)
    dirs = np.tile([0.0, 0.0, -1.0], (len(xy), 1))
    static_f, static_b = _ray_cast(origins, dirs, tris, nearest=True)

    yaws = np.concatenate([np.arange(0, 40), -np.arange(1, 40)])       # row r -> yaw
    phis, ys = _contour_table(yaws)                                    # (79,17) each
    o = np.stack([np.zeros(phis.size), ys.ravel(), np.full(phis.size, _HEAD_ZC)], 1)
    d = np.stack([np.sin(phis.ravel()), np.zeros(phis.size), np.cos(phis.ravel())], 1)
    dyn_f, dyn_b = _ray_cast(o, d, tris, nearest=False)
    dyn_f, dyn_b = dyn_f.reshape(79, 17), dyn_b.reshape(79, 17, 3)
    full_f = np.concatenate([dyn_f[0], static_f])[None]
    full_b = np.concatenate([dyn_b[0], static_b])[None].astype(np.float32)
    return {"static_lmk_faces_idx": static_f.astype(np.int64), "static_lmk_bary_coords": static_b,
            "dynamic_lmk_faces_idx": dyn_f.astype(np.int64), "dynamic_lmk_bary_coords": dyn_b,
            "full_lmk_faces_idx": full_f.astype(np.int64), "full_lmk_bary_coords": full_b}


# -- bases, joints, weights -----------------------------------------------------------------------
def _rigid_eyes(field, geo):
    """Make each eyeball move rigidly with the field at its centre (fields (V,3,K))."""
    for ids in geo["eye_ids"]:
        field[ids] = field[ids].mean(0, keepdims=True)
    return field


def _face_weight(geo):
    v = geo["verts"]
    w = _smoothstep(-0.01, 0.05, v[:, 2] - _HEAD_ZC) * _smoothstep(-0.115, -0.085, v[:, 1])
    return w * (1 - _smoothstep(0.07, 0.11, v[:, 1]))


def _identity_dirs(geo, rng, n=300):
    v = geo["verts"]
    u = (v - np.array([0.0, _HEAD_YC - 0.03, _HEAD_ZC])) / 0.2
    face = _face_weight(geo)
    lower = _smoothstep(0.0, -0.06, v[:, 1])
    nose = np.exp(-0.5 * ((v[:, 0] / 0.012) ** 2 + ((v[:, 1] + 0.005) / 0.02) ** 2)) * face
    cols = [u * [1, 0, 0], u * [0, 1, 0], u * [0, 0, 1],                            # head width/height/depth
            (u * [1, 0, 0]) * lower[:, None], (u * [0, 1, 0]) * lower[:, None],      # jaw width / face length
            nose[:, None] * [0, 0, 1.0], nose[:, None] * [0, -0.3, 0]]               # nose size
    mask = (0.4 + 0.6 * face)[:, None]
    while len(cols) < n:
        i = len(cols)
        freq = 1.0 + 6.0 * (i / n) ** 0.7
        f = np.zeros_like(v)
        for _ in range(4):
            k = rng.normal(size=3)
            k /= np.linalg.norm(k)
            f += rng.normal(size=3) * np.cos(2 * np.pi * freq * (u @ k) + rng.uniform(0, 2 * np.pi))[:, None]
        cols.append(f * mask)
    field = _rigid_eyes(np.stack(cols, -1), geo)                                    # (V,3,n)
    q, _ = np.linalg.qr(field.reshape(-1, n))
    q = q.reshape(v.shape[0], 3, n)
    rms = np.sqrt((q ** 2).sum(1).mean(0))
    target = 0.0028 / (1.0 + np.arange(n) / 4.0) ** 0.6                             # metres RMS per unit
    q = q * (target / rms)
    # A localised direction (the nose's) scaled to the RMS of a global one moves its few vertices
    # ~10x further: 17 mm per unit, so a 2-sigma head had its nose tip at mouth height. Cap each
    # direction's largest vertex displacement at 3x its rank's RMS target, a little above what a global
    # direction of that rank reaches (2.0-2.7x).
    # A capped direction then moves to its place by RMS, so the basis stays ordered like PCA's.
    peak = np.linalg.norm(q, axis=1).max(axis=0)                                    # (n,)
    q = q * np.minimum(1.0, _IDENTITY_PEAK_PER_RMS * target / peak)
    q = q[:, :, np.argsort(-np.sqrt((q ** 2).sum(1).mean(0)), kind="stable")]
    return q * np.sign(q[:, 1].sum(0) + 1e-12)[None, None]                          # deterministic sign


def _expression_dirs(geo, rng, n=100):
    v = geo["verts"]
    x, y = v[:, 0], v[:, 1]
    face = _face_weight(geo)
    head = np.ones(len(v))
    for ids in geo["eye_ids"]:
        head[ids] = 0.0
    face = face * head

    def g(cx, cy, sx, sy):
        return (_gauss(x, y, cx, cy, sx, sy) * face)[:, None]

    cols = [
        # mouth open
        g(0, -0.064, 0.032, 0.020) * [0, -1, -0.3] * 0.006 + g(0, -0.035, 0.02, 0.005) * [0, 0.2, 0] * 0.006,
        # smile
        sum(g(s * 0.025, -0.042, 0.012, 0.010) * [s * 0.4, 0.7, -0.2] for s in (-1, 1)) * 0.006,
        # pucker
        g(0, -0.043, 0.020, 0.011) * np.stack([-x / 0.02 * 0.3, 0 * x, 0 * x + 1], 1) * 0.005,
        # stretch
        sum(g(s * 0.025, -0.043, 0.012, 0.010) * [s * 1.0, -0.1, -0.2] for s in (-1, 1)) * 0.005,
        # brows up
        sum(g(s * 0.034, 0.048, 0.024, 0.010) * [0, 1, 0.1] for s in (-1, 1)) * 0.005,
        # frown
        sum(g(s * 0.016, 0.044, 0.012, 0.008) * [-s * 0.5, -1, 0.2] for s in (-1, 1)) * 0.004,
        # blink
        sum(g(s * _EYE_X, _EYE_Y + 0.005, 0.012, 0.005) * [0, -1, 0.1] for s in (-1, 1)) * 0.004,
        # cheek puff
        sum(g(s * 0.045, -0.030, 0.016, 0.016) * [s * 0.7, 0, 0.7] for s in (-1, 1)) * 0.005,
        # nose wrinkle
        sum(g(s * 0.010, 0.004, 0.008, 0.010) * [0, 1, 0] for s in (-1, 1)) * 0.003,
        # upper lip up
        g(0, -0.035, 0.018, 0.006) * [0, 1, 0.3] * 0.004,
        # lower lip down
        g(0, -0.052, 0.018, 0.007) * [0, -1, 0.2] * 0.004,
        # mouth sideways
        g(0, -0.045, 0.024, 0.012) * [1, 0, 0] * 0.004,
        # left smile
        g(0.025, -0.042, 0.012, 0.010) * [0.4, 0.7, -0.2] * 0.006,
        # right smile
        g(-0.025, -0.042, 0.012, 0.010) * [-0.4, 0.7, -0.2] * 0.006,
        # left brow
        g(0.034, 0.048, 0.024, 0.010) * [0, 1, 0.1] * 0.005,
        # right brow
        g(-0.034, 0.048, 0.024, 0.010) * [0, 1, 0.1] * 0.005,
    ]
    while len(cols) < n:
        j = len(cols)
        cx, cy = rng.uniform(-0.055, 0.055), rng.uniform(-0.085, 0.06)
        s = rng.uniform(0.008, 0.02)
        dvec = rng.normal(size=3)
        amp = 0.004 / (1.0 + (j - 16) / 30.0)
        cols.append(g(cx, cy, s, s) * dvec / np.linalg.norm(dvec) * amp)
    return np.stack(cols, -1)                                                       # (V,3,n)


def _joints_regressor(geo):
    """Sparse (5,V) regressor: ring centroids for root and neck, a mirror pair for the jaw,
    eyeball vertices for the eyes.  Rows sum to 1, like FLAME's."""
    v, n_az, n_head = geo["verts"], geo["n_az"], geo["n_head"]
    ring_y = v[1:n_head:n_az, 1]
    rows = []
    for target in (-0.140, -0.060):                                                 # root, neck
        i = int(np.argmin(np.abs(ring_y - target)))
        rows.append({1 + i * n_az + k: 1.0 / n_az for k in range(n_az)})
    phi, y = geo["phi"][:n_head], v[:n_head, 1]
    side = (phi > 1.2) & (phi < 1.9)
    cost = np.where(side, np.abs(y - _JAW_JOINT_Y) + np.abs(v[:n_head, 2] - _JAW_JOINT_Z), np.inf)
    a = int(np.argmin(cost))
    ring, k = divmod(a - 1, n_az)
    mirror = 1 + ring * n_az + (n_az - k) % n_az
    assert np.allclose(v[mirror], v[a] * [-1, 1, 1], atol=1e-9)
    rows.append({a: 0.5, mirror: 0.5})
    for ids in geo["eye_ids"]:
        rows.append({int(i): 1.0 / len(ids) for i in ids})
    dense = np.zeros((5, len(v)))
    for j, r in enumerate(rows):
        for i, w in r.items():
            dense[j, i] = w
    return scipy.sparse.csc_matrix(dense)


def _skin_weights(geo, J):
    v, n_head = geo["verts"], geo["n_head"]
    phi, y = geo["phi"][:n_head], v[:n_head, 1]
    aphi = np.abs(phi)
    y_up = _Y_MOUTH + (J[2, 1] - _Y_MOUTH) * _smoothstep(0.45, 1.35, aphi)
    y_low = _jawline_y(phi) - 0.012
    # Compact blend zones (smoothstep), so most vertices belong to one joint only, as in FLAME.
    jaw = (_smoothstep(y_up + 0.002, y_up - 0.002, y) * _smoothstep(y_low - 0.006, y_low + 0.006, y)
           * _smoothstep(1.62, 1.48, aphi))
    root = _smoothstep(-0.115, -0.135, y)
    W = np.zeros((len(v), 5))
    W[:n_head, 0] = root
    W[:n_head, 1] = (1 - root) * (1 - jaw)
    W[:n_head, 2] = (1 - root) * jaw
    for j, ids in zip((3, 4), geo["eye_ids"]):
        W[ids, j] = 1.0
    return W / W.sum(1, keepdims=True)


def _pose_dirs(geo, rng):
    """Small smooth corrective fields (V,3,36): neck features around the neck, jaw features around
    the mouth and jaw, none for the eyes (as in FLAME, they are rigid)."""
    v = geo["verts"]
    u = (v - np.array([0.0, -0.02, 0.0])) / 0.2
    neck_mask = _smoothstep(-0.02, -0.09, v[:, 1])
    jaw_mask = _gauss(v[:, 0], v[:, 1], 0, -0.06, 0.05, 0.03) * _face_weight(geo)
    P = np.zeros((len(v), 3, 36))
    for j, mask in ((0, neck_mask), (1, jaw_mask)):
        for e in range(9):
            k = rng.normal(size=3)
            amp = rng.normal(size=3)
            wave = np.cos(2 * np.pi * 1.2 * (u @ (k / np.linalg.norm(k))) + rng.uniform(0, 6.3))
            f = amp * wave[:, None]
            P[:, :, 9 * j + e] = 0.0015 * f * mask[:, None]
    P[geo["n_head"]:] = 0.0
    return P


# -- writer ---------------------------------------------------------------------------------------
def build_procedural_head_model(seed: int = 0, n_vertices: int = 4000) -> tuple[dict, dict]:
    """(model dict in the generic_model.pkl layout, landmark embedding dict), deterministic per seed."""
    rng = np.random.default_rng(seed)
    geo = _build_geometry(n_vertices)
    shapedirs = np.concatenate([_identity_dirs(geo, rng), _expression_dirs(geo, rng)], axis=2)
    J_regressor = _joints_regressor(geo)
    J = np.asarray(J_regressor @ geo["verts"])
    model = {
        "v_template": geo["verts"].astype(np.float64),
        "f": geo["faces"].astype(np.uint32),
        "shapedirs": shapedirs.astype(np.float64),
        "posedirs": _pose_dirs(geo, rng).astype(np.float64),
        "J_regressor": J_regressor,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "weights": _skin_weights(geo, J),
        "J": J,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "procedural": True,
        "description": DESCRIPTION,
        "seed": int(seed),
    }
    return model, _landmark_embedding(geo)


def write_procedural_head_model(out_dir: str | Path, seed: int = 0,
                                n_vertices: int = 4000) -> dict[str, Path]:
    """Write `generic_model.pkl` and `landmark_embedding.npy` into out_dir (plain files; callers
    that need atomicity write into a temporary folder and rename it).  Returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, emb = build_procedural_head_model(seed, n_vertices)
    paths = {"model": out_dir / MODEL_FILE, "landmark_embedding": out_dir / EMBEDDING_FILE}
    with open(paths["model"], "wb") as f:
        pickle.dump(model, f, protocol=2)
    obj = np.empty((), dtype=object)
    obj[()] = emb
    with open(paths["landmark_embedding"], "wb") as f:
        np.save(f, obj, allow_pickle=True)
    return paths
