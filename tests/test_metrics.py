"""The paper's 3D metrics on hand-computable cases, and against a transcription of the official code."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks.evaluation import metrics as M


def _mesh(offsets):
    """(..., 4, 3) from per-vertex x offsets (the 4-vertex mesh moves along x only)."""
    o = torch.as_tensor(offsets, dtype=torch.float32)
    v = torch.zeros(o.shape + (3,))
    v[..., 0] = o
    return v


def test_lve_max_over_lip_then_mean_over_frames_then_mean_or_min_over_samples():
    gt = _mesh([[0, 0, 0, 0], [0, 0, 0, 0]])                      # T=2, V=4
    # lip = vertices 1, 2. sample 0: frame errors max(1,3)=3, max(2,0)=2 -> 2.5
    #                      sample 1: frame errors max(0,1)=1, max(1,1)=1 -> 1.0
    pred = _mesh([[[9, 1, 3, 0], [0, 2, 0, 9]],
                  [[0, 0, 1, 0], [9, 1, 1, 9]]])                  # S=2; vertices 0, 3 are not lip
    mean, mn = M.lip_vertex_error(pred, gt, torch.tensor([1, 2]))
    assert mean == pytest.approx((2.5 + 1.0) / 2) and mn == pytest.approx(1.0)


def test_fve_reduces_over_samples_per_vertex_and_frame():
    gt = _mesh([[0, 0, 0, 0]])                                     # T=1
    pred = _mesh([[[4, 0, 2, 7]], [[0, 6, 2, 7]]])                 # S=2
    face = torch.tensor([0, 1, 2])
    mean, mn = M.face_vertex_error(pred, gt, face)
    assert mean == pytest.approx(((4 + 0) / 2 + (0 + 6) / 2 + 2) / 3)
    # per-vertex min over samples: min(4,0)=0, min(0,6)=0, min(2,2)=2 -> 2/3, although each sample
    # alone has error 2 (sample 0: (4+0+2)/3, sample 1: (0+6+2)/3 = 8/3)
    assert mn == pytest.approx(2 / 3)


def test_fdd_is_gt_minus_pred_std_of_squared_norm_over_time():
    # upper = vertex 0 twice (duplicates count twice, like concatenated forehead+eye_region) and 1
    gt = _mesh([[1, 0, 5], [3, 2, 5]])            # |v|^2 over time: v0 1,9 (std 4*sqrt2); v1 0,4 (2*sqrt2)
    pred = _mesh([[[1, 1, 0], [1, 1, 0]]])        # static -> std 0
    upper = torch.tensor([0, 0, 1])
    want = (2 * 4 * math.sqrt(2) + 2 * math.sqrt(2)) / 3
    assert M.upper_face_dynamics_deviation(pred, gt, upper) == pytest.approx(want, rel=1e-6)
    assert M.upper_face_dynamics_deviation(gt[None], gt, upper) == pytest.approx(0.0, abs=1e-6)


def test_pose_distance_mean_and_min():
    gt = torch.zeros(2, 6)
    pred = torch.zeros(2, 2, 6)
    pred[0, 0, 0] = 3.0; pred[0, 0, 1] = 4.0      # sample 0: frame norms 5, 0 -> 2.5
    pred[1, :, 5] = 1.0                            # sample 1: 1, 1 -> 1
    mean, mn = M.pose_distance(pred, gt)
    assert mean == pytest.approx((5 + 0 + 1 + 1) / 4) and mn == pytest.approx(1.0)


def test_diversity_mean_pairwise_distance_of_flattened_samples():
    a = torch.zeros(3, 2, 2)
    a[1, 0, 0] = 3.0; a[1, 1, 1] = 4.0             # |s1 - s0| = 5
    a[2, 0, 0] = 3.0                               # |s2 - s0| = 3, |s2 - s1| = 4
    assert M.diversity(a) == pytest.approx(4.0)
    assert M.diversity(a[:1]) == 0.0


def test_beat_alignment_formula_and_edge_cases():
    assert M.beat_alignment([10, 20], [10, 23]) == pytest.approx((1 + math.exp(-9 / 18)) / 2)
    assert M.beat_alignment([], [0]) == pytest.approx(1.0)          # official: no beat -> beat at 0
    assert M.beat_alignment([5], []) == 0.0


def test_motion_beats_are_local_minima_of_smoothed_velocity():
    # position moves fast-slow-fast: speed |sin|, minima of speed at multiples of 30 frames
    t = np.arange(121)
    x = np.cumsum(np.abs(np.sin(np.pi * t / 30)))
    beats, n = M.motion_beats(np.stack([x, np.zeros_like(x), np.zeros_like(x)], 1)[:, None, :])
    assert n == 120
    np.testing.assert_allclose(beats, [30, 60, 90], atol=1)
    pose_beats, _ = M.motion_beats(np.stack([x] + [np.zeros_like(x)] * 5, 1))   # (T,6) pose input
    np.testing.assert_array_equal(pose_beats, beats)


def test_audio_beats_follow_a_click_track():
    sr = 16000
    audio = np.zeros(sr * 8, np.float32)
    click = np.random.default_rng(0).normal(size=400) * np.exp(-np.arange(400) / 80)   # drum-like burst
    for k in range(16):                              # 120 bpm: one click every 0.5 s
        audio[k * sr // 2: k * sr // 2 + 400] += click
    b = M.audio_beats(audio, sr)
    assert len(b) >= 12
    # beats on the clicks, counted in onset frames of 512 samples (not in 30 fps video frames)
    np.testing.assert_allclose(b * 512 / sr, np.round(b * 512 / sr * 2) / 2, atol=0.04)
    assert np.median(np.diff(b)) == pytest.approx(sr / 2 / 512, abs=1)
    assert (M.audio_beats(audio, sr, length=100) < 100).all()


# ----------------------------------------------------------------------------- official order
class _OfficialCopy:
    """Transcribed from wsj-sjtu/SingingHead metrics/metric_3d/metrics.py (MetricCalculator),
    with 5023 replaced by the test mesh's V; used only to check reduction order and units."""

    def __init__(self, V, masks):
        self.V, self.flame_mask = V, masks

    def calculate_lve(self, pred, gt, type="mean"):
        bs, nsample, seq_len = pred.shape[0], pred.shape[1], pred.shape[2]
        pred_lip = pred.contiguous().view(bs, nsample, seq_len, self.V, 3)[:, :, :, self.flame_mask["lip"], :]
        gt_lip = gt.contiguous().view(bs, seq_len, self.V, 3)[:, :, self.flame_mask["lip"], :]
        gt_lip = gt_lip.unsqueeze(1).repeat(1, nsample, 1, 1, 1)
        l2_dist = torch.norm(pred_lip - gt_lip, p=2, dim=-1)
        l2_dist, _ = torch.max(l2_dist, dim=-1)
        l2_dist = torch.mean(l2_dist, dim=-1)
        if type == "mean":
            return torch.mean(l2_dist).item()
        l2_dist, _ = torch.min(l2_dist, dim=1)
        return torch.mean(l2_dist).item()

    def calculate_ve(self, pred, gt, type="mean"):
        bs, nsample, seq_len = pred.shape[0], pred.shape[1], pred.shape[2]
        pred_face = pred.contiguous().view(bs, nsample, seq_len, self.V, 3)[:, :, :, self.flame_mask["face"], :]
        gt_face = gt.contiguous().view(bs, seq_len, self.V, 3)[:, :, self.flame_mask["face"], :]
        gt_face = gt_face.unsqueeze(1).repeat(1, nsample, 1, 1, 1)
        l2_dist = torch.norm(pred_face - gt_face, p=2, dim=-1)
        ve = torch.mean(l2_dist, dim=1) if type == "mean" else torch.min(l2_dist, dim=1)[0]
        return torch.mean(ve).item()

    def calculate_fdd(self, pred, gt):
        bs, nsample, seq_len = pred.shape[0], pred.shape[1], pred.shape[2]
        pu = pred.contiguous().view(bs, nsample, seq_len, self.V, 3)[:, :, :, self.flame_mask["upper_face"], :]
        gu = gt.contiguous().view(bs, seq_len, self.V, 3)[:, :, self.flame_mask["upper_face"], :]
        pred_std = torch.mean(torch.std(torch.sum(pu ** 2, dim=-1), dim=-2))
        gt_std = torch.mean(torch.std(torch.sum(gu ** 2, dim=-1), dim=-2))
        return (gt_std - pred_std).item()

    def compute_diversity(self, pred):
        if pred.shape[1] == 1:
            return 0.0
        batch_size, nsample, nframe, _ = pred.shape
        pred = pred.reshape(batch_size, nsample, -1)
        return sum(F.pdist(pred[i]).mean().item() for i in range(batch_size)) / batch_size

    def compute_mindst_pose(self, pred, gt):
        pp, gp = pred[..., 50:56], gt[..., 50:56].unsqueeze(1).repeat(1, pred.shape[1], 1, 1)
        return torch.norm(pp - gp, dim=3).mean(dim=2).min(dim=1)[0].mean().item()

    def compute_meandist_pose(self, pred, gt):
        pp, gp = pred[..., 50:56], gt[..., 50:56].unsqueeze(1).repeat(1, pred.shape[1], 1, 1)
        return torch.norm(pp - gp, dim=3).mean().item()


def test_per_clip_means_equal_the_official_batched_reductions():
    g = torch.Generator().manual_seed(0)
    bs, S, T, V = 3, 4, 6, 10
    pred = torch.randn(bs, S, T, V, 3, generator=g)
    gt = torch.randn(bs, T, V, 3, generator=g)
    masks = {"lip": np.array([1, 4, 7]), "face": np.arange(2, 9),
             "upper_face": np.array([0, 2, 3, 0, 9])}
    off = _OfficialCopy(V, masks)
    lip, face, upper = (torch.as_tensor(masks[k]) for k in ("lip", "face", "upper_face"))
    per = [(M.lip_vertex_error(pred[b], gt[b], lip), M.face_vertex_error(pred[b], gt[b], face),
            M.upper_face_dynamics_deviation(pred[b], gt[b], upper), M.diversity(pred[b].reshape(S, T, -1)))
           for b in range(bs)]
    flat_p, flat_g = pred.reshape(bs, S, T, -1), gt.reshape(bs, T, -1)
    assert np.mean([p[0][0] for p in per]) == pytest.approx(off.calculate_lve(flat_p, flat_g, "mean"), rel=1e-5)
    assert np.mean([p[0][1] for p in per]) == pytest.approx(off.calculate_lve(flat_p, flat_g, "min"), rel=1e-5)
    assert np.mean([p[1][0] for p in per]) == pytest.approx(off.calculate_ve(flat_p, flat_g, "mean"), rel=1e-5)
    assert np.mean([p[1][1] for p in per]) == pytest.approx(off.calculate_ve(flat_p, flat_g, "min"), rel=1e-5)
    assert np.mean([p[2] for p in per]) == pytest.approx(off.calculate_fdd(flat_p, flat_g), rel=1e-5)
    assert np.mean([p[3] for p in per]) == pytest.approx(off.compute_diversity(flat_p), rel=1e-5)
    motion = torch.randn(bs, S, T, 59, generator=g)
    motion_gt = torch.randn(bs, T, 59, generator=g)
    pd = [M.pose_distance(motion[b, ..., 50:56], motion_gt[b, :, 50:56]) for b in range(bs)]
    assert np.mean([p[0] for p in pd]) == pytest.approx(off.compute_meandist_pose(motion, motion_gt), rel=1e-5)
    assert np.mean([p[1] for p in pd]) == pytest.approx(off.compute_mindst_pose(motion, motion_gt), rel=1e-5)


def _official_ba(motion, audio_beat_axis):
    """calc_db + BA of beat_align_score.py, transcribed (BA with motion_beats as argrelextrema's tuple)."""
    from scipy.ndimage import gaussian_filter
    from scipy.signal import argrelextrema
    seq = np.array(motion)
    velocity = np.mean(np.sqrt(np.sum((seq[1:] - seq[:-1]) ** 2, axis=2)), axis=1)
    velocity = gaussian_filter(velocity, 5)
    motion_beats = argrelextrema(velocity, np.less)
    music_beats = audio_beat_axis[audio_beat_axis < len(velocity)]
    if len(music_beats) == 0:
        music_beats = np.array([0], dtype=np.int64)
    ba = 0
    for bb in music_beats:
        ba += np.exp(-np.min((motion_beats[0] - bb) ** 2) / 2 / 9)
    return ba / len(music_beats)


def test_beat_alignment_score_matches_official_transcription():
    rng = np.random.default_rng(1)
    lmk = np.cumsum(rng.normal(size=(90, 68, 3)), axis=0).astype(np.float32)
    beats = np.array([3, 17, 40, 71, 88, 120])
    assert M.beat_alignment_score(lmk, None, beats=beats) == pytest.approx(_official_ba(lmk, beats))
    pose = np.cumsum(rng.normal(size=(90, 6)), axis=0)
    assert M.beat_alignment_score(pose, None, beats=beats) == pytest.approx(_official_ba(pose[:, None, :], beats))


# ----------------------------------------------------------------------------- regions
def test_flame_masks_loader_concatenates_forehead_and_eye_region(tmp_path):
    masks = {"face": np.array([0, 1, 2, 3]), "lips": np.array([2, 3]), "forehead": np.array([0, 1]),
             "eye_region": np.array([1, 4]), "neck": np.array([5])}
    p = tmp_path / "FLAME_masks.pkl"
    p.write_bytes(pickle.dumps(masks, protocol=0))      # Python 2 style, like the published file
    r = M.load_flame_masks(p, n_vertices=6)
    np.testing.assert_array_equal(r.upper_face, [0, 1, 1, 4])
    np.testing.assert_array_equal(r.lip, [2, 3])
    with pytest.raises(Exception, match="indexes vertex 4"):
        M.load_flame_masks(p, n_vertices=4)
    del masks["lips"]
    p.write_bytes(pickle.dumps(masks, protocol=0))
    with pytest.raises(Exception, match=r"lacks the regions \['lips'\]"):
        M.load_flame_masks(p, n_vertices=6)


def test_landmark_regions_on_procedural_model(tmp_path):
    from flame_fit.flame import load_flame
    from flame_fit.procedural import write_procedural_head_model
    paths = write_procedural_head_model(tmp_path, seed=0, n_vertices=2000)
    m = load_flame(paths["model"], paths["landmark_embedding"])
    v = m.v_template.numpy()
    lmk = m.landmarks3d_static(m.v_template[None])[0].numpy()
    r = M.landmark_regions(v, lmk, m.lbs_weights.numpy())
    assert set(r.lip) <= set(r.face) and len(r.lip) >= 10
    # lips lie between the nose (landmark 33) and the chin (8), upper face above the nose tip
    assert (v[r.lip, 1] < lmk[33, 1]).all() and (v[r.lip, 1] > lmk[8, 1]).all()
    assert (v[r.upper_face, 1] > lmk[30, 1]).all()
    assert (v[r.face, 2] > 0).all()                        # front of the head only
    eyeball = m.lbs_weights.numpy()[:, 3:5].sum(1) > 0.5
    assert not eyeball[r.face].any()


def test_point_in_polygon_agrees_with_matplotlib_on_random_polygons():
    """The fallback regions' even-odd test against matplotlib's Path.contains_points (independent),
    on random star-shaped polygons in any orientation and points around them."""
    from matplotlib.path import Path as MplPath
    rng = np.random.default_rng(0)
    for _ in range(40):
        k = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k)) * rng.choice([1, -1])
        rad = rng.uniform(0.3, 1.0, k)
        poly = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1) * rng.uniform(0.5, 3) + rng.normal(0, 2, 2)
        pts = poly.mean(0) + rng.uniform(-1.5, 1.5, (300, 2)) * np.abs(poly - poly.mean(0)).max()
        want = MplPath(poly).contains_points(pts)
        # matplotlib's edge rule differs only on the boundary: keep points clear of every edge
        a, b = poly, np.roll(poly, -1, 0)
        t = np.clip(((pts[:, None] - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1), 0, 1)
        d = np.linalg.norm(pts[:, None] - (a + t[..., None] * (b - a)), axis=-1).min(1)
        clear = d > 1e-6
        np.testing.assert_array_equal(M._inside(poly, pts)[clear], want[clear])
        assert want[clear].any() and (~want[clear]).any()


def test_landmark_regions_follow_their_rules_on_a_grid():
    """A flat grid of vertices (z = 0 in front) with landmarks placed by hand: each region is what its
    rule in the docstring says, computed here without the polygon code."""
    xs, ys = np.meshgrid(np.linspace(-1, 1, 81), np.linspace(-1.5, 2.5, 161))
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    v[v[:, 0] > 0.95, 2] = -1.0                      # a strip behind the face: never in a region
    L = np.zeros((68, 3))
    L[0:17, 0] = np.linspace(-0.8, 0.8, 17)          # jaw contour: a V from (-0.8, 0) down to (0, -1)
    L[0:17, 1] = -1 + np.abs(L[0:17, 0]) * 1.25
    L[17:27] = np.c_[np.linspace(-0.6, 0.6, 10), np.full(10, 0.8), np.zeros(10)]     # brows at y 0.8
    L[36:48] = np.c_[np.linspace(-0.5, 0.5, 12), np.full(12, 0.5), np.zeros(12)]     # eyes at y 0.5
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)                                  # lips: an ellipse
    L[48:60] = np.c_[0.3 * np.cos(t), -0.5 + 0.1 * np.sin(t), np.zeros(12)]
    weights = np.zeros((len(v), 5))
    weights[:, 0] = 1
    eye = (np.abs(v[:, 0] - 0.3) < 0.06) & (np.abs(v[:, 1] - 0.5) < 0.06)
    weights[eye] = [0, 0, 0, 1, 0]                   # one eyeball, excluded everywhere
    r = M.landmark_regions(v, L, weights)
    x, y, front = v[:, 0], v[:, 1], v[:, 2] >= 0
    y_top = 0.8 + 2 * (0.8 - 0.5)
    def in_v(margin):                                # the contour closed at y_top, grown by margin
        return (y > -1 + np.abs(x) * 1.25 - margin) & (np.abs(x) < 0.8 + margin) & (y < y_top + margin)

    face = np.zeros(len(v), bool)
    face[r.face] = True
    # compared away from the borders, where grid points lie on an edge
    assert (face[in_v(-0.02) & front & ~eye]).all() and not face[~in_v(0.02) | ~front | eye].any()
    lip = np.zeros(len(v), bool)
    lip[r.lip] = True
    ell = (x / (0.3 * 1.15)) ** 2 + ((y + 0.5) / (0.1 * 1.15)) ** 2
    assert lip[(ell < 0.9) & front].all() and not lip[ell > 1.1].any() and lip.sum() >= 10
    upper = np.zeros(len(v), bool)
    upper[r.upper_face] = True
    forehead = face & (y > 0.8)
    eye_region = face & (y <= 0.8) & (y >= 0.5 - 0.3) & (np.abs(x) <= 0.6)
    assert (upper == (forehead | eye_region)).all()
    n_forehead = int(forehead.sum())
    np.testing.assert_array_equal(r.upper_face[:n_forehead], np.flatnonzero(forehead))  # forehead first
    assert "not FLAME_masks.pkl" in r.source


# ----------------------------------------------------------------------------- edges of the rules
def test_diversity_of_no_sample_is_an_error_not_zero():
    # no sample: an error, never a diversity of 0 that would pass for "all samples identical"
    with pytest.raises(RuntimeError):
        M.diversity(torch.zeros(0, 2, 3))


def test_beat_alignment_score_drops_music_beats_past_the_motion():
    """Music beats at or after the last velocity frame (index >= T-1) are not scored: with T = 90
    a music beat at 89 is outside the motion, one at 88 is inside."""
    t = np.arange(90)
    x = np.cumsum(np.abs(np.sin(np.pi * t / 30)))               # velocity minima near 30 and 60
    motion = np.stack([x, 0 * x, 0 * x], 1)[:, None, :]
    mb, n = M.motion_beats(motion)
    assert n == 89
    base = M.beat_alignment_score(motion, None, beats=np.array([30, 60]))
    assert M.beat_alignment_score(motion, None, beats=np.array([30, 60, 89])) == pytest.approx(base)
    with_88 = M.beat_alignment(np.array([30, 60, 88]), mb)
    assert with_88 < base
    assert M.beat_alignment_score(motion, None, beats=np.array([30, 60, 88])) == pytest.approx(with_88)


def test_beat_alignment_score_reads_audio_at_16_khz_by_default(monkeypatch):
    seen = []
    monkeypatch.setattr(M, "audio_beats", lambda audio, sr: seen.append(sr) or np.array([0]))
    M.beat_alignment_score(np.zeros((20, 6)), np.zeros(100, np.float32))
    assert seen == [16000]                        # the official evaluation's rate


def test_regions_are_immutable():
    r = M.Regions(face=np.array([0]), lip=np.array([0]), upper_face=np.array([0]), source="t")
    with pytest.raises(AttributeError):            # dataclasses.FrozenInstanceError
        r.face = np.array([1])


def _write_masks(path, protocol=2, **over):
    masks = {"face": np.array([0, 1, 2, 3]), "lips": np.array([2, 3]), "forehead": np.array([0, 1]),
             "eye_region": np.array([1, 4])}
    masks.update(over)
    path.write_bytes(pickle.dumps(masks, protocol=protocol))   # 4: an empty array pickles as bytes()
    return path


@pytest.mark.parametrize("bad", [np.int64(3), np.array([[0, 1], [2, 3]]), np.array([0.0, 1.0]),
                                 np.array([], dtype=np.int64)], ids=["scalar", "2d", "float", "empty"])
def test_flame_masks_refuses_a_region_that_is_not_a_1d_integer_index_array(tmp_path, bad):
    p = _write_masks(tmp_path / "FLAME_masks.pkl", protocol=4, lips=bad)
    with pytest.raises(M.FlamePickleError, match=r"region 'lips' is not a 1-D integer index array"):
        M.load_flame_masks(p, n_vertices=6)


def test_flame_masks_accepts_a_one_vertex_region_and_every_index_in_range(tmp_path):
    p = _write_masks(tmp_path / "FLAME_masks.pkl", lips=np.array([5]), forehead=np.array([0]))
    r = M.load_flame_masks(p, n_vertices=6)              # 0 and 5 = n_vertices - 1 are both valid
    np.testing.assert_array_equal(r.lip, [5])
    np.testing.assert_array_equal(r.upper_face, [0, 1, 4])


@pytest.mark.parametrize("bad, n, shown", [(np.array([-1, 2]), 6, "-1"), (np.array([0, 4]), 3, "4"),
                                           (np.array([0, 3]), 3, "3")])
def test_flame_masks_names_the_out_of_range_index(tmp_path, bad, n, shown):
    p = _write_masks(tmp_path / "FLAME_masks.pkl", face=bad, lips=np.array([0]), forehead=np.array([0]),
                     eye_region=np.array([0]))
    with pytest.raises(M.FlamePickleError, match=rf"region 'face' indexes vertex {shown}, the head model "
                                                 rf"has {n} vertices"):
        M.load_flame_masks(p, n_vertices=n)


def test_point_in_polygon_boundary_is_half_open():
    """Points on edges and corners (integer points of integer polygons, any shape, even self-crossing)
    take the side of the point nudged right by 1e-6 and up by 1e-12, by matplotlib (independent)."""
    from matplotlib.path import Path as MplPath
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(np.arange(-5, 6), np.arange(-5, 6)), -1).reshape(-1, 2).astype(float)
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)       # [0, 2) x [0, 2) by hand
    got = M._inside(square, grid)
    assert sorted(map(tuple, grid[got].astype(int).tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for _ in range(100):
        poly = rng.integers(-4, 5, (int(rng.integers(3, 9)), 2)).astype(float)
        want = MplPath(poly).contains_points(grid + [1e-6, 1e-12])
        np.testing.assert_array_equal(M._inside(poly, grid), want)


def _dyadic_head():
    """A flat head (z = 0) on a grid of eighths, so that every rule's bound falls exactly on grid
    points, with landmarks chosen so that a wrong landmark range, centre or bound changes a region."""
    xs, ys = np.meshgrid(np.arange(-10, 11) / 8, np.arange(-14, 21) / 8)
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    L = np.zeros((68, 3))
    L[0:17, 0] = np.arange(-8, 9) / 8                                  # jaw: V from (-1, 0) to (0, -1)
    L[0:17, 1] = -1 + np.abs(L[0:17, 0])
    L[17:27, 0] = np.linspace(-0.625, 0.625, 10)                       # brows: an arc, top at y 0.75
    L[17:27, 1] = [0.5, 0.625, 0.75, 0.625, 0.5, 0.5, 0.625, 0.75, 0.625, 0.5]
    L[36:48, 0] = [-0.5, -0.375, -0.25, -0.125, -0.25, -0.375, 0.125, 0.25, 0.375, 0.5, 0.375, 0.25]
    # eyes: mean y 0.5 exactly, lowest 0.375; the first (36) and the last (47) off the mean
    L[36:48, 1] = [0.375, 0.625, 0.625, 0.5, 0.5, 0.375, 0.5, 0.625, 0.625, 0.5, 0.375, 0.375]
    # lips: a triangle, flat on top, pointed below (not symmetric about its centre)
    top = np.c_[np.linspace(-0.5, 0.5, 5), np.full(5, -0.25)]
    right = np.c_[np.linspace(0.375, 0.125, 3), np.linspace(-0.375, -0.625, 3)]
    tip = np.array([[0.0, -0.75]])
    left = np.c_[np.linspace(-0.125, -0.375, 3), np.linspace(-0.625, -0.375, 3)]
    L[48:60, :2] = np.concatenate([top, right, tip, left])
    return v, L


def test_landmark_regions_bounds_on_an_exact_grid():
    v, L = _dyadic_head()
    rng = np.random.default_rng(0)
    L[27:36] = rng.uniform(-3, 3, (9, 3))              # nose and inner lips: no part in any region
    L[60:68] = rng.uniform(-3, 3, (8, 3))
    n = len(v)
    # extra vertices behind the lips: 5 mm and exactly 1 cm behind (in), 2 cm and 30 cm (out)
    behind = np.array([[0.0, -0.5, -0.005], [0.125, -0.375, -0.01], [0.0, -0.5, -0.02], [0.0, -0.375, -0.3]])
    v = np.concatenate([v, behind])
    w = np.zeros((len(v), 5))
    w[:, 0] = 1
    x, y, z = v.T
    eye = (np.abs(x - 0.25) < 0.2) & (np.abs(y - 0.5) < 0.2)
    w[eye] = [0, 0, 0, 0.25, 0.75]                     # an eyeball: in no region
    jaw = y < -0.2
    w[jaw] = [0, 0, 1, 0, 0]                           # the jaw's vertices (lips included) are face
    half = (x == -0.25) & (y == 0.5)
    w[half] = [0.5, 0, 0, 0.5, 0]                      # half on the eyes: not an eyeball
    r = M.landmark_regions(v, L, w)

    def mask(ids):
        m = np.zeros(len(v), bool)
        m[ids] = True
        return m
    face, lip = mask(r.face), mask(r.lip)
    eyeball = w[:, 3:].sum(1) > 0.5
    assert eyeball.sum() == 9 and not (face | lip)[eyeball].any()
    assert face[jaw & (z == 0) & (y > -1 + np.abs(x) + 0.01)].all() and face[half].all()
    # face: the jaw contour closed at y_top = 0.75 + 2 * (0.75 - 0.5) = 1.25
    from matplotlib.path import Path as MplPath
    poly = np.concatenate([L[0:17, :2], [[1, 1.25], [-1, 1.25]]])
    np.testing.assert_array_equal(face, MplPath(poly).contains_points(v[:, :2] + [1e-6, 1e-12])
                                  & (z >= 0) & ~eyeball)
    # lip: the triangle grown by 15 % about its centre
    c = L[48:60, :2].mean(0)
    grown = c + 1.15 * (L[48:60, :2] - c)
    want_lip = MplPath(grown).contains_points(v[:, :2] + [1e-6, 1e-12]) & (z >= -0.01) & ~eyeball
    np.testing.assert_array_equal(lip, want_lip)
    assert lip[n:].tolist() == [True, True, False, False]
    assert not lip[(y > -0.125) | (y < -0.875)].any() and lip.sum() >= 10
    # forehead above y 0.75; eye region from 0.375 - 0.25 = 0.125 up to 0.75, x within +-0.625;
    # a vertex at the brow height is in the eye region only
    forehead = face & (y > 0.75)
    eye_region = face & (y <= 0.75) & (y >= 0.125) & (np.abs(x) <= 0.625)
    assert eye_region[(y == 0.75) & (x == 0)].all() and eye_region[(y == 0.125) & (x == 0.625)].all()
    np.testing.assert_array_equal(r.upper_face, np.concatenate([np.flatnonzero(forehead),
                                                                np.flatnonzero(eye_region)]))


def test_landmark_regions_refuse_an_empty_region():
    v, L = _dyadic_head()
    L[48:60, :2] = 0.0625 + 0.01 * np.c_[np.cos(np.arange(12)), np.sin(np.arange(12))]  # between grid points
    w = np.zeros((len(v), 5))
    w[:, 0] = 1
    with pytest.raises(ValueError, match=r"regions \['lip'\] are empty"):
        M.landmark_regions(v, L, w)
