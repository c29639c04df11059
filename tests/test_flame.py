"""FLAME core: chumpy-free loaders, the forward pass, landmark-only evaluation, the camera and the
procedural head model."""
from __future__ import annotations

import copy
import importlib.util
import math
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from flame_fit import lbs as L
from flame_fit.camera import ndc_to_pixels, orth_project, pixels_to_ndc
from flame_fit.flame import PROCEDURAL_NAME, FlameModel, load_flame
from flame_fit.flame_io import FlameFileError, load_flame_arrays, load_landmark_embedding
from flame_fit.procedural import build_procedural_head_model, write_procedural_head_model

N_VERTS = 2000


@pytest.fixture(scope="module")
def proc_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("procedural")
    write_procedural_head_model(d, seed=0, n_vertices=N_VERTS)
    return d


@pytest.fixture(scope="module")
def source(proc_dir):
    """The procedural model's raw dicts (what the files were written from)."""
    with open(proc_dir / "generic_model.pkl", "rb") as f:
        model = pickle.load(f)
    emb = np.load(proc_dir / "landmark_embedding.npy", allow_pickle=True).item()
    return model, emb


@pytest.fixture(scope="module")
def flame(proc_dir):
    return load_flame(proc_dir / "generic_model.pkl", proc_dir / "landmark_embedding.npy")


def _params(B, seed=0, scale=1.0, yaw_deg=None):
    g = torch.Generator().manual_seed(seed)
    p = dict(shape=torch.randn(B, 100, generator=g) * scale,
             expression=torch.randn(B, 50, generator=g) * scale,
             global_orient=torch.randn(B, 3, generator=g) * 0.2 * scale,
             neck_pose=torch.randn(B, 3, generator=g) * 0.1 * scale,
             jaw_pose=torch.rand(B, 3, generator=g) * torch.tensor([0.3, 0.05, 0.05]) * scale,
             eye_pose=torch.randn(B, 6, generator=g) * 0.2 * scale)
    if yaw_deg is not None:
        p["global_orient"][:, 1] = torch.as_tensor(yaw_deg, dtype=torch.float32) * math.pi / 180
    return p


def _zeros(B=1):
    return dict(shape=torch.zeros(B, 100), expression=torch.zeros(B, 50), global_orient=torch.zeros(B, 3))


# -- chumpy-style official file formats ------------------------------------------------------------
class _FakeModules:
    """Installs fake `chumpy.ch` / `chumpy.reordering` modules while pickling, like the environment
    the official FLAME files were written in; removed afterwards so loading runs without them."""

    def __enter__(self):
        assert importlib.util.find_spec("chumpy") is None, "chumpy is installed; the test needs it absent"
        ch, reo, pkg = (types.ModuleType(n) for n in ("chumpy.ch", "chumpy.reordering", "chumpy"))

        class Ch:
            def __init__(self, x):
                self.x = np.asarray(x)
                self._dirty_vars = set()
                self._itr = None
                self._depends_on_deps = {}

            def __getstate__(self):   # chumpy drops _parents/_cache and pickles the rest of __dict__
                return dict(self.__dict__)

        class Select:
            def __init__(self, a, idxs, preferred_shape):
                self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape
                self._dirty_vars = set()

            def __getstate__(self):
                return dict(self.__dict__)

        Ch.__module__, Select.__module__ = "chumpy.ch", "chumpy.reordering"
        Ch.__qualname__, Select.__qualname__ = "Ch", "Select"
        ch.Ch, reo.Select = Ch, Select
        pkg.ch, pkg.reordering = ch, reo
        self.mods = {"chumpy": pkg, "chumpy.ch": ch, "chumpy.reordering": reo}
        sys.modules.update(self.mods)
        return Ch, Select

    def __exit__(self, *exc):
        for name in self.mods:
            sys.modules.pop(name, None)


def _official_style_pickle(model: dict, path, flame2023=False):
    """Write `model` the way the FLAME download stores it: chumpy Ch / Select objects, a scipy csc
    J_regressor, a uint placeholder in kintree_table, legacy keys, numpy referenced as numpy.core."""
    with _FakeModules() as (Ch, Select):
        sd = np.asarray(model["shapedirs"])
        pd = np.asarray(model["posedirs"])
        rng = np.random.default_rng(0)
        perm = rng.permutation(pd.size)                     # Select picks entries out of a shuffled Ch
        flat = np.empty(pd.size)
        flat[perm] = pd.ravel()
        out = {
            "v_template": (Ch(model["v_template"]) if not flame2023
                           else np.asarray(model["v_template"], np.float32)),
            "f": np.asarray(model["f"], dtype=np.uint32 if not flame2023 else np.int32),
            "shapedirs": Ch(sd),
            "posedirs": Select(Ch(flat), perm, pd.shape),
            "J_regressor": scipy.sparse.csc_matrix(np.asarray(model["J_regressor"].todense())),
            "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]],
                                      dtype=np.uint32 if flame2023 else np.int64),
            "weights": Ch(model["weights"]),
            "J": Ch(model["J"]),
            "bs_style": "lbs", "bs_type": "lrotmin",
            "weights_prior": Ch(model["weights"]), "vert_sym_idxs": np.arange(len(model["weights"])),
        }
        data = pickle.dumps(out, protocol=2)
    # Python-2 era files name numpy's old module path.
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"chumpy.ch" in data and b"chumpy.reordering" in data and b"scipy.sparse" in data
    path.write_bytes(data)


def test_loader_reads_chumpy_style_flame2020_file_without_chumpy(tmp_path, source, proc_dir):
    model, _ = source
    p = tmp_path / "generic_model.pkl"
    _official_style_pickle(model, p)
    assert "chumpy" not in sys.modules
    arrays = load_flame_arrays(p)
    assert "chumpy" not in sys.modules
    np.testing.assert_array_equal(arrays["v_template"], model["v_template"])
    np.testing.assert_array_equal(arrays["shapedirs"], model["shapedirs"])
    np.testing.assert_array_equal(arrays["posedirs"], model["posedirs"])   # Select resolved in order
    np.testing.assert_array_equal(arrays["J_regressor"], model["J_regressor"].toarray())
    np.testing.assert_array_equal(arrays["weights"], model["weights"])
    assert arrays["faces"].dtype == np.int64 and arrays["parents"].tolist() == [-1, 0, 1, 1, 1]
    assert arrays["procedural"] is False
    flame = load_flame(p, proc_dir / "landmark_embedding.npy")
    assert flame.is_real and flame.name == "FLAME"


def test_loader_reads_flame2023_style_file(tmp_path, source, proc_dir, flame):
    model, _ = source
    p = tmp_path / "flame2023.pkl"
    _official_style_pickle(model, p, flame2023=True)
    f23 = load_flame(p, proc_dir / "landmark_embedding.npy")
    assert f23.is_real and f23.name == "FLAME 2023"
    prm = _params(2, seed=3)
    a, b = f23(**prm), flame(**prm)
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-6, rtol=0)   # v_template stored as float32
    torch.testing.assert_close(a.landmarks, b.landmarks, atol=1e-6, rtol=0)


def test_landmark_embedding_with_torch_tensors_and_npz(tmp_path, source):
    _, emb = source
    deca_style = dict(emb)
    deca_style["dynamic_lmk_faces_idx"] = torch.from_numpy(emb["dynamic_lmk_faces_idx"]).long()
    deca_style["dynamic_lmk_bary_coords"] = torch.from_numpy(emb["dynamic_lmk_bary_coords"]).float()
    obj = np.empty((), dtype=object)
    obj[()] = deca_style
    p = tmp_path / "landmark_embedding.npy"
    np.save(p, obj, allow_pickle=True)
    assert b"torch" in p.read_bytes()
    got = load_landmark_embedding(p, n_faces=10 ** 6)
    np.testing.assert_array_equal(got["dynamic_lmk_faces_idx"], emb["dynamic_lmk_faces_idx"])
    np.testing.assert_allclose(got["dynamic_lmk_bary_coords"], emb["dynamic_lmk_bary_coords"], atol=1e-7)
    assert got["full_lmk_faces_idx"].shape == (68,) and got["full_lmk_bary_coords"].shape == (68, 3)
    np.savez(tmp_path / "emb.npz", **emb)
    got2 = load_landmark_embedding(tmp_path / "emb.npz")
    for k in got:
        np.testing.assert_allclose(got2[k], np.asarray(emb[k]).reshape(got2[k].shape), rtol=0, atol=1e-12)


def test_loader_errors_name_file_and_fix(tmp_path, source, proc_dir):
    model, emb = source
    with pytest.raises(FlameFileError, match="not found"):
        load_flame_arrays(tmp_path / "missing.pkl")
    (tmp_path / "trunc.pkl").write_bytes((proc_dir / "generic_model.pkl").read_bytes()[:5000])
    with pytest.raises(FlameFileError, match="trunc.pkl.*not a readable FLAME pickle"):
        load_flame_arrays(tmp_path / "trunc.pkl")
    bad = dict(model, kintree_table=np.array([[4294967295, 0, 0, 1, 1], [0, 1, 2, 3, 4]]))
    (tmp_path / "tree.pkl").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(FlameFileError, match="parents"):
        load_flame_arrays(tmp_path / "tree.pkl")
    bad = dict(model, weights=np.asarray(model["weights"])[:-1])
    (tmp_path / "w.pkl").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(FlameFileError, match="weights"):
        load_flame_arrays(tmp_path / "w.pkl")
    short = dict(emb, static_lmk_faces_idx=emb["static_lmk_faces_idx"][:50])
    np.savez(tmp_path / "short.npz", **short)
    with pytest.raises(FlameFileError, match="static_lmk_faces_idx.*fix"):
        load_landmark_embedding(tmp_path / "short.npz")
    with pytest.raises(FlameFileError, match="outside"):
        load_landmark_embedding(proc_dir / "landmark_embedding.npy", n_faces=10)


# -- lbs building blocks ---------------------------------------------------------------------------
def test_rodrigues_matches_scipy_and_zero_is_identity():
    r = torch.randn(64, 3, dtype=torch.float64)
    want = Rotation.from_rotvec(r.numpy()).as_matrix()
    np.testing.assert_allclose(L.batch_rodrigues(r).numpy(), want, atol=1e-7)
    np.testing.assert_allclose(L.batch_rodrigues(torch.zeros(1, 3)).numpy()[0], np.eye(3), atol=1e-7)


def test_dynamic_contour_rows_follow_deca_yaw_convention():
    parents = [-1, 0, 1, 1, 1]
    chain = L.neck_kin_chain(parents)
    assert chain == [1, 0]
    yaws = torch.tensor([0.0, 10.0, 39.4, 50.0, -1.0, -10.0, -39.0, -60.0])
    pose = torch.zeros(len(yaws), 15, dtype=torch.float64)
    pose[:, 1] = yaws * math.pi / 180
    rows = L.dynamic_contour_rows(pose, chain).tolist()
    assert rows == [0, 10, 39, 39, 40, 49, 78, 78]
    # the neck's yaw adds to the root's (R_root @ R_neck)
    pose2 = torch.zeros(1, 15, dtype=torch.float64)
    pose2[0, 1], pose2[0, 4] = math.radians(7), math.radians(5)
    assert L.dynamic_contour_rows(pose2, chain).tolist() == [12]
    assert L.dynamic_contour_rows(pose2, chain, yaw_sign=-1.0).tolist() == [51]


# -- forward pass ----------------------------------------------------------------------------------
def test_zero_parameters_give_the_template(flame, source):
    model, _ = source
    out = flame(**_zeros(2))
    tmpl = torch.as_tensor(model["v_template"], dtype=torch.float32)
    assert out.vertices.shape == (2, flame.n_vertices, 3) and out.joints.shape == (2, 5, 3)
    assert out.landmarks.shape == (2, 68, 3)
    torch.testing.assert_close(out.vertices[1], tmpl, atol=1e-7, rtol=0)
    torch.testing.assert_close(out.joints[0], torch.as_tensor(model["J"], dtype=torch.float32),
                               atol=1e-7, rtol=0)
    assert flame.faces.dtype == torch.long and flame.faces.shape[1] == 3
    assert not flame.is_real and flame.name == PROCEDURAL_NAME


def test_global_rotation_is_rigid_about_the_root(flame):
    prm = _zeros(1)
    prm["global_orient"] = torch.tensor([[0.3, -0.5, 0.2]])
    out = flame(**prm)
    rest = flame(**_zeros(1))
    R = L.batch_rodrigues(prm["global_orient"])[0]
    j0 = rest.joints[0, 0]
    want = (rest.vertices[0] - j0) @ R.T + j0
    torch.testing.assert_close(out.vertices[0], want, atol=2e-7, rtol=0)
    torch.testing.assert_close(out.joints[0], (rest.joints[0] - j0) @ R.T + j0, atol=2e-7, rtol=0)


@pytest.fixture(scope="module")
def rigid_flame(source):
    """The procedural model without pose correctives: pure skinning, rigid parts."""
    model, emb = source
    rigid = dict(load_flame_arrays_from(model), posedirs=np.zeros_like(model["posedirs"]))
    return FlameModel(rigid, _emb_arrays(emb), name="rigid", is_real=False)


def test_jaw_rotates_about_the_jaw_joint(flame, rigid_flame, source):
    model, _ = source
    fr = rigid_flame
    prm = _zeros(1)
    prm["jaw_pose"] = torch.tensor([[0.25, 0.0, 0.0]])
    rest, opened = fr(**_zeros(1)), fr(**prm)
    W = torch.as_tensor(model["weights"], dtype=torch.float32)
    jaw_only, head_only = W[:, 2] > 1 - 1e-6, W[:, 1] > 1 - 1e-6
    assert jaw_only.sum() > 20 and head_only.sum() > 200
    J2 = rest.joints[0, 2]
    torch.testing.assert_close(opened.joints[0], rest.joints[0], atol=1e-7, rtol=0)   # joints stay
    R = L.batch_rodrigues(prm["jaw_pose"])[0]
    want = (rest.vertices[0, jaw_only] - J2) @ R.T + J2
    torch.testing.assert_close(opened.vertices[0, jaw_only], want, atol=2e-7, rtol=0)
    torch.testing.assert_close(opened.vertices[0, head_only], rest.vertices[0, head_only], atol=1e-7, rtol=0)
    # the real model (with pose correctives): the mouth opens, the chin drops, the crown stays
    a, b = flame(**_zeros(1)), flame(**prm)
    assert (a.landmarks[0, 8, 1] - b.landmarks[0, 8, 1]) > 0.01               # chin down > 1 cm
    assert (a.landmarks[0, 57, 1] - b.landmarks[0, 57, 1]) > 0.008            # lower lip down
    assert abs(float(a.landmarks[0, 51, 1] - b.landmarks[0, 51, 1])) < 0.002  # upper lip stays
    top = int(torch.argmax(a.vertices[0, :, 1]))
    torch.testing.assert_close(a.vertices[0, top], b.vertices[0, top], atol=1e-7, rtol=0)


def load_flame_arrays_from(model):
    parents = np.asarray(model["kintree_table"][0]).astype(np.int64)
    parents[0] = -1
    return {"v_template": model["v_template"], "faces": np.asarray(model["f"], np.int64),
            "shapedirs": model["shapedirs"], "posedirs": model["posedirs"],
            "J_regressor": model["J_regressor"].toarray(), "parents": parents, "weights": model["weights"]}


def _emb_arrays(emb):
    out = {k: np.asarray(v) for k, v in emb.items()}
    out["full_lmk_faces_idx"] = out["full_lmk_faces_idx"].reshape(-1)
    out["full_lmk_bary_coords"] = out["full_lmk_bary_coords"].reshape(-1, 3)
    return out


def test_pose_correctives_use_flame_posedirs_layout(flame, source):
    """A head-only vertex under a jaw rotation moves by exactly posedirs[v, :, 9:18] @ (R_jaw - I)."""
    model, _ = source
    W, pd = model["weights"], model["posedirs"]
    cand = np.nonzero((W[:, 1] == 1.0) & (np.abs(pd[:, :, 9:18]).max(axis=(1, 2)) > 1e-4))[0]
    assert len(cand) > 10
    jaw = torch.tensor([[0.2, 0.1, -0.05]])
    prm = _zeros(1)
    prm["jaw_pose"] = jaw
    got = flame(**prm).vertices[0, cand].double().numpy()
    R = Rotation.from_rotvec(jaw[0].numpy()).as_matrix()
    want = model["v_template"][cand] + pd[cand][:, :, 9:18] @ (R - np.eye(3)).ravel()
    np.testing.assert_allclose(got, want, atol=2e-7)
    assert np.abs(got - model["v_template"][cand]).max() > 1e-5


def test_eyes_and_neck_move_their_parts_only(flame, rigid_flame, source):
    model, _ = source
    W = torch.as_tensor(model["weights"], dtype=torch.float32)
    rest = flame(**_zeros(1))
    prm = _zeros(1)
    prm["eye_pose"] = torch.tensor([[0.0, 0.4, 0.0, 0.0, 0.0, 0.0]])     # left eye (joint 3) only
    out = flame(**prm)
    moved = (out.vertices[0] - rest.vertices[0]).norm(dim=1) > 1e-6
    eye = W[:, 3] > 0
    assert not (moved & ~eye).any() and moved[eye].float().mean() > 0.9   # poles on the axis stay
    prm = _zeros(1)
    prm["neck_pose"] = torch.tensor([[0.3, 0.0, 0.0]])
    rest, out = rigid_flame(**_zeros(1)), rigid_flame(**prm)
    root_only = W[:, 0] > 1 - 1e-6
    assert root_only.sum() > 20
    torch.testing.assert_close(out.vertices[0, root_only], rest.vertices[0, root_only], atol=1e-7, rtol=0)
    assert (out.landmarks - rest.landmarks).norm(dim=-1).min() > 1e-3       # the whole face turns


@pytest.mark.parametrize("which,n", [("shape", 100), ("expression", 50)])
def test_blend_shapes_are_linear(flame, which, n):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, n, generator=g), torch.randn(1, n, generator=g)
    base = flame(**_zeros(1)).vertices

    def disp(c):
        prm = _zeros(1)
        prm[which] = c
        return flame(**prm).vertices - base

    torch.testing.assert_close(disp(a + 2 * b), disp(a) + 2 * disp(b), atol=2e-7, rtol=0)
    assert disp(a).abs().max() > 1e-3


def test_landmark_only_equals_full_forward(flame):
    yaws = torch.linspace(-60, 60, 13)
    prm = _params(13, seed=5, yaw_deg=yaws)
    full = flame(**prm).landmarks
    fast = flame.landmarks(**prm)
    assert fast.shape == (13, 68, 3)
    assert (full - fast).abs().max() < 1e-5
    rows = L.dynamic_contour_rows(torch.cat([prm["global_orient"], prm["neck_pose"], prm["jaw_pose"],
                                             prm["eye_pose"]], 1), flame.kin_chain)
    assert len(set(rows.tolist())) >= 8                                    # the contour rows really vary
    assert flame.sub_vertex_ids.numel() < flame.n_vertices / 3              # and only a subset is evaluated
    # gradients flow through the fast path
    p = {k: v.clone().requires_grad_(True) for k, v in _params(2, seed=6).items()}
    flame.landmarks(**p).sum().backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in p.values())


def test_contour_slides_with_yaw_and_batch_is_independent(flame):
    prm = _params(3, seed=7, scale=0.0, yaw_deg=[0.0, 30.0, -30.0])
    lm = flame(**prm).landmarks
    # static points rotate rigidly with the head; contour points pick other faces
    assert not torch.allclose(flame.dynamic_lmk_faces_idx[0], flame.dynamic_lmk_faces_idx[30])
    for i in range(3):
        one = {k: v[i:i + 1] for k, v in prm.items()}
        torch.testing.assert_close(flame(**one).landmarks[0], lm[i], atol=1e-7, rtol=0)


def test_float64_inputs_and_wrong_shapes(flame):
    prm = {k: v.double() for k, v in _params(1).items()}
    assert flame(**prm).vertices.dtype == torch.float32
    only_jaw = flame(shape=None, expression=None, global_orient=None, jaw_pose=torch.zeros(2, 3))
    assert only_jaw.vertices.shape[0] == 2
    bad = _params(1)
    bad["shape"] = torch.zeros(1, 300)
    with pytest.raises(ValueError, match="shape"):
        flame(**bad)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="NOT RUN: this machine has no CUDA device (torch.cuda.is_available() is False), "
                           "so FLAME on the GPU is unverified here; it runs wherever a GPU is visible")
def test_cuda_matches_cpu(flame):
    """The GPU gives the CPU's vertices and landmarks (runs on any machine with a CUDA device)."""
    prm = _params(4, seed=9)
    cpu = flame(**prm)
    g = copy.deepcopy(flame).cuda()
    out = g(**{k: v.cuda() for k, v in prm.items()})
    torch.testing.assert_close(out.vertices.cpu(), cpu.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(g.landmarks(**{k: v.cuda() for k, v in prm.items()}).cpu(), cpu.landmarks,
                               atol=1e-5, rtol=0)


# -- camera ----------------------------------------------------------------------------------------
def test_orthographic_camera_matches_emoca_convention():
    pts = torch.tensor([[[0.1, 0.2, 0.3], [-0.05, 0.0, 1.0]]])
    cam = torch.tensor([[4.0, 0.01, -0.02]])
    xy = orth_project(pts, cam)
    want = torch.tensor([[[4 * 0.11, -4 * 0.18], [4 * -0.04, 4 * 0.02]]])
    torch.testing.assert_close(xy, want)
    px = ndc_to_pixels(xy, 224)
    torch.testing.assert_close(px[0, 0], torch.tensor([(0.44 + 1) * 112, (-0.72 + 1) * 112]))
    torch.testing.assert_close(pixels_to_ndc(px, 224), xy)
    assert ndc_to_pixels(np.array([-1.0, 1.0]), 1024).tolist() == [0.0, 1024.0]


# -- procedural model ------------------------------------------------------------------------------
def test_procedural_model_is_deterministic_and_seeded(tmp_path, proc_dir):
    write_procedural_head_model(tmp_path / "again", seed=0, n_vertices=N_VERTS)
    for name in ("generic_model.pkl", "landmark_embedding.npy"):
        assert (tmp_path / "again" / name).read_bytes() == (proc_dir / name).read_bytes()
    m0, _ = build_procedural_head_model(seed=0, n_vertices=N_VERTS)
    m1, _ = build_procedural_head_model(seed=1, n_vertices=N_VERTS)
    assert not np.allclose(m0["shapedirs"][..., 10:], m1["shapedirs"][..., 10:])
    assert m0["procedural"] is True and "not FLAME" in m0["description"]


def test_procedural_model_looks_like_a_head(source, flame):
    model, _ = source
    v = model["v_template"]
    height = v[:, 1].max() - v[:, 1].min()
    assert 0.25 < height < 0.4 and 0.14 < np.ptp(v[:, 0]) < 0.2            # metres, head plus neck
    lm = flame(**_zeros(1)).landmarks[0].numpy()
    y = lm[:, 1]
    brows, eyes, nose_tip, mouth, chin = y[17:27].mean(), y[36:48].mean(), y[30], y[48:68].mean(), y[8]
    assert brows > eyes > nose_tip > mouth > chin                        # y up
    assert lm[30, 2] > lm[36:48, 2].max()                                  # nose in front of the eyes
    assert lm[0, 0] < lm[8, 0] < lm[16, 0] and lm[36, 0] < lm[39, 0] < 0 < lm[42, 0] < lm[45, 0]
    mirror = [(36, 45), (39, 42), (48, 54), (17, 26), (31, 35), (0, 16)]
    for a, b in mirror:                                                    # symmetric layout
        np.testing.assert_allclose(lm[a] * [-1, 1, 1], lm[b], atol=1e-3)
    # identity directions: smooth, decreasing; expression directions: localised on the face
    sd = model["shapedirs"]
    rms = np.sqrt((sd ** 2).sum(1).mean(0))
    assert rms[0] > 3 * rms[299] and rms[0] > 1e-3
    crown = v[:, 1] > 0.1
    assert np.abs(sd[crown, :, 300:400]).max() < 1e-4
    assert np.abs(sd[:, :, 300]).max() > 3e-3                              # mouth open moves millimetres
