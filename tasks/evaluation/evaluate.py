"""`evaluate`: the paper's §V 3D metrics of predicted motion against a SingingHead release.

Follows SingingHead's `metrics/calculate_3d_metrics.py` (`calculate_metrics`):
  * meshes for LVE, FVE and FDD are built with global and neck pose set to zero (jaw kept, eyes
    zero), the clip's ground-truth shape for both prediction and ground truth;
  * beat alignment of landmarks, and the mesh/landmark diversities, use the full pose
    (global, neck, jaw) and DECA's 68 static 3D landmarks (`landmarks3d`);
  * beat alignment of pose and the pose distance use motion[..., 50:56] (global + neck);
  * audio: the clip's singing (audio_seqs) at 16 kHz.
Values are in the official units (FLAME's metres, radians), not rescaled. Each metric is computed
per clip and averaged over clips, equal to the official batch value when clips have equal length.

Predictions: `<pred_dir>/<clip id>.pkl`, flame_seqs-style, one per clip of the split, several
samples per clip as the official code's `motion (bs, nsample, nframe, 59)`:
  {'expcodes': (S,T,50), 'posecodes': (S,T,9)}   ((T,50)/(T,9) for a single sample), or
  {'motion': (S,T,59)}                            (exp50 | global3 | neck3 | jaw3).
A 'shapecode' in a prediction is ignored: the official evaluation uses the ground-truth shape.

Needs numpy, scipy, soundfile and torch only (`requirements-loader.txt`); the audio beats of the two
beat-alignment metrics need librosa, as the official code does: without it they are left out (None,
named in `skipped` and in the table). `python -m tasks.evaluation` runs this without the pipeline.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import torch

from tasks.dataset.flame_pickle import load_pickle_dict, motion59
from tasks.dataset.loader import SingingHeadDataset
from tasks.common.errors import PipelineInputError
from tasks.evaluation import metrics as M

AUDIO_SR = 16000           # calc_ba_score's sr, the official evaluation's audio rate
# |value| above this in a prediction is no expression coefficient or angle in radians (they stay
# within a few units); such values (3e38) would overflow the float32 meshes into inf/NaN metrics.
MAX_PREDICTION_ABS = 1e3
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# (key, label, unit) in table order; keys as in the official metric_dict where it names them.
METRICS = (
    ("lve_mean", "LVE, mean over samples", "m"),
    ("lve_min", "LVE, min over samples", "m"),
    ("ve_mean", "FVE, mean over samples", "m"),
    ("ve_min", "FVE, min over samples", "m"),
    ("fdd", "FDD (upper face, gt - pred)", "m^2"),
    ("meandist_pose", "pose distance, mean over samples", "rad"),
    ("mindist_pose", "pose distance, min over samples", "rad"),
    ("meandist", "parameter distance (59-d), mean", "-"),
    ("mindist", "parameter distance (59-d), min", "-"),
    ("ba_pose", "beat alignment, pose", "-"),
    ("ba_lmk", "beat alignment, landmarks", "-"),
    ("diversity", "diversity, 59-d parameters", "-"),
    ("diversity_pose", "diversity, global+neck pose", "rad"),
    ("diversity_lmk", "diversity, 3D landmarks", "m"),
    ("diversity_verts", "diversity, all vertices", "m"),
    ("diversity_face", "diversity, face vertices", "m"),
)


BEAT_METRICS = ("ba_pose", "ba_lmk")
NO_LIBROSA = "librosa is not installed (pip install librosa): the official audio beats need it"


def beats_available() -> bool:
    """Whether the audio beats (librosa) can be computed here."""
    return importlib.util.find_spec("librosa") is not None


def _err(path, problem, fix="write one <clip id>.pkl per clip of the split with 'expcodes' "
         "(S,T,50) and 'posecodes' (S,T,9), T = the clip's frame count"):
    return PipelineInputError(path, problem, fix)


def load_prediction(path: Path, frames: int) -> np.ndarray:
    """A prediction pickle -> motion (S,T,59) float32; errors name the file and the expected shape."""
    d = load_pickle_dict(path)
    try:
        return _prediction_motion(path, d, frames)
    except (ValueError, TypeError, OverflowError) as e:     # strings, objects, ragged lists
        raise _err(path, f"does not hold numeric arrays ({type(e).__name__}: {str(e)[:120]})") from e


def _prediction_motion(path: Path, d: dict, frames: int) -> np.ndarray:
    for k in ("motion", "expcodes", "posecodes"):
        if k in d and np.asarray(d[k]).dtype.kind not in "fiu":
            raise _err(path, f"'{k}' holds {np.asarray(d[k]).dtype} values, not numbers")
    if "motion" in d:
        m = np.asarray(d["motion"], dtype=np.float32)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[2] != 59:
            raise _err(path, f"'motion' has shape {np.shape(d['motion'])}, want (S,T,59)")
    elif "expcodes" in d and "posecodes" in d:
        e, p = np.asarray(d["expcodes"], np.float32), np.asarray(d["posecodes"], np.float32)
        if e.ndim == 2 and p.ndim == 2:
            e, p = e[None], p[None]
        if e.ndim != 3 or p.ndim != 3 or e.shape[2] != 50 or p.shape[2] != 9 or e.shape[:2] != p.shape[:2]:
            raise _err(path, f"expcodes {np.shape(d['expcodes'])} / posecodes {np.shape(d['posecodes'])}, "
                       "want (S,T,50) / (S,T,9)")     # the shapes in the file, as for 'motion'
        m = motion59({"expcodes": e, "posecodes": p})
    else:
        raise _err(path, f"holds {sorted(map(str, d))}, not 'expcodes'+'posecodes' or 'motion'")
    if m.shape[1] != frames:
        raise _err(path, f"has {m.shape[1]} frames, the ground truth clip has {frames}")
    if m.shape[0] < 1:
        raise _err(path, "holds no sample")
    if not np.isfinite(m).all():
        raise _err(path, "holds NaN or infinite values")
    if np.abs(m).max() > MAX_PREDICTION_ABS:
        raise _err(path, f"holds values up to {float(np.abs(m).max()):.3g}, far outside any expression "
                   f"coefficient or pose angle (at most {MAX_PREDICTION_ABS:g} accepted)")
    return m


def _meshes(model, shape: torch.Tensor, motion: torch.Tensor, full_pose: bool, chunk: int,
            landmarks: bool = False):
    """Vertices (N,V,3) (and static 68 landmarks (N,68,3)) of motion (N,59) with shape (100,).

    full_pose=False zeroes global and neck pose as the official LVE/FVE/FDD meshes do."""
    verts, lmks = [], []
    for a in range(0, motion.shape[0], chunk):
        m = motion[a:a + chunk]
        n = m.shape[0]
        z = torch.zeros(n, 3, dtype=m.dtype, device=m.device)
        out = model(shape=shape.expand(n, -1), expression=m[:, :50],
                    global_orient=m[:, 50:53] if full_pose else z,
                    neck_pose=m[:, 53:56] if full_pose else z, jaw_pose=m[:, 56:59])
        verts.append(out.vertices)
        if landmarks:
            lmks.append(model.landmarks3d_static(out.vertices))
    v = torch.cat(verts)
    return (v, torch.cat(lmks)) if landmarks else v


def _regions(model, masks_path) -> M.Regions:
    if masks_path:
        return M.load_flame_masks(masks_path, model.n_vertices)
    if getattr(model, "is_real", False):
        raise PipelineInputError(
            "FLAME_masks.pkl", "FLAME is configured but no region masks file was given: LVE, FVE and FDD "
            "need FLAME's lip, face, forehead and eye regions",
            "pass the masks file (FLAME_masks.pkl from the FLAME website, also in the SingingHead "
            "repository's metrics/metric_3d/FLAME/)")
    with torch.no_grad():
        v = model.v_template
        lmk = model.landmarks3d_static(v[None])[0]
    return M.landmark_regions(v.cpu().numpy(), lmk.cpu().numpy(), model.lbs_weights.cpu().numpy())


def pose_beat_alignment(pred: np.ndarray, beats: np.ndarray) -> float:
    """ba_pose of one clip: the beat alignment of the global and neck pose (columns 50:56 of the 59),
    averaged over the samples. pred (S, T, 59); beats: `M.audio_beats` of the clip's singing."""
    return float(np.mean([M.beat_alignment_score(p[:, 50:56], None, beats=beats) for p in pred]))


def prediction_ids(pred_dir: Path, split_ids: list[str], split: str) -> None:
    """Every split clip has a prediction and every prediction is a clip of the split."""
    if not pred_dir.is_dir():
        raise _err(pred_dir, "is not a folder of predictions")
    have = {p.stem for p in pred_dir.glob("*.pkl")}
    bad = sorted(i for i in have if not _ID.match(i))
    if bad:
        raise _err(pred_dir / f"{bad[0]}.pkl", "is not named after a plain clip id")
    extra = sorted(have - set(split_ids))
    if extra:
        raise _err(pred_dir / f"{extra[0]}.pkl", f"clip id {extra[0]!r} is not in the {split} split "
                   f"({len(extra)} such file(s): {extra[:5]})", f"predict the clips listed in {split}.txt only")
    missing = [i for i in split_ids if i not in have]
    if missing:
        raise _err(pred_dir, f"lacks predictions for {len(missing)} of {len(split_ids)} clips of the "
                   f"{split} split, e.g. {missing[:5]}")


def evaluate(pred_dir: str | Path, release_root: str | Path, split: str = "test", head_model=None,
             device: str | torch.device = "cpu", masks_path: str | Path | None = None,
             chunk: int = 512) -> dict:
    """The §V 3D metrics of the predictions in `pred_dir` against `split` of the release.

    head_model: a flame_fit.flame.FlameModel (FLAME, or the procedural stand-in with landmark-based
    fallback regions); masks_path: FLAME_masks.pkl (required with FLAME). Returns a JSON-ready dict
    {'split', 'clips', 'samples', 'frames', 'head_model', 'regions', 'metrics': {key: value},
    'per_clip': {id: {key: value}}}.
    """
    if head_model is None:
        raise ValueError("evaluate needs the head model (flame_fit.flame.FlameModel)")
    pred_dir, device = Path(pred_dir), torch.device(device)
    ds = SingingHeadDataset(release_root, split=split, sample_rate=AUDIO_SR)
    if not ds.ids:
        raise PipelineInputError(Path(release_root) / f"{split}.txt", "lists no clips", "choose another split")
    prediction_ids(pred_dir, ds.ids, split)
    model = head_model.to(device).eval()
    regions = _regions(model, masks_path)
    reg = regions.tensors(device)
    per_clip, n_samples, frames = {}, None, set()
    with_beats = beats_available()
    for cid in ds.ids:
        gt_d = ds.flame(cid)
        gt = torch.as_tensor(motion59(gt_d), device=device)                       # (T,59)
        T = gt.shape[0]
        pred_np = load_prediction(pred_dir / f"{cid}.pkl", T)
        if n_samples is None:
            n_samples = pred_np.shape[0]
        elif pred_np.shape[0] != n_samples:
            raise _err(pred_dir / f"{cid}.pkl", f"has {pred_np.shape[0]} samples, other clips {n_samples}",
                       "give every clip the same number of samples (the official metrics average over them)")
        frames.add(T)
        pred = torch.as_tensor(pred_np, device=device)                            # (S,T,59)
        S = pred.shape[0]
        shape = torch.as_tensor(gt_d["shapecode"].reshape(1, 100), device=device)
        audio = ds.audio(cid, "audio_seqs", AUDIO_SR) if with_beats else None
        with torch.no_grad():
            pv = _meshes(model, shape, pred.reshape(S * T, 59), False, chunk).reshape(S, T, -1, 3)
            gv = _meshes(model, shape, gt, False, chunk)
            lve = M.lip_vertex_error(pv, gv, reg["lip"])
            ve = M.face_vertex_error(pv, gv, reg["face"])
            fdd = M.upper_face_dynamics_deviation(pv, gv, reg["upper_face"])
            del pv, gv
            fv, fl = _meshes(model, shape, pred.reshape(S * T, 59), True, chunk, landmarks=True)
            fv, fl = fv.reshape(S, T, -1, 3), fl.reshape(S, T, 68, 3)
            beats = M.audio_beats(audio, AUDIO_SR) if with_beats else None
            pose = M.pose_distance(pred[..., 50:56], gt[:, 50:56])
            par = M.pose_distance(pred, gt)
            per_clip[cid] = {
                "lve_mean": lve[0], "lve_min": lve[1], "ve_mean": ve[0], "ve_min": ve[1], "fdd": fdd,
                "meandist_pose": pose[0], "mindist_pose": pose[1], "meandist": par[0], "mindist": par[1],
                "ba_pose": None if beats is None else pose_beat_alignment(pred_np, beats),
                "ba_lmk": None if beats is None else float(np.mean(
                    [M.beat_alignment_score(fl[s].cpu().numpy(), None, beats=beats) for s in range(S)])),
                "diversity": M.diversity(pred), "diversity_pose": M.diversity(pred[..., 50:56]),
                "diversity_lmk": M.diversity(fl), "diversity_verts": M.diversity(fv),
                "diversity_face": M.diversity(fv[:, :, reg["face"]]),
            }
    keys = [k for k, _, _ in METRICS]
    skipped = {} if with_beats else {k: NO_LIBROSA for k in BEAT_METRICS}
    return {
        "split": split, "clips": len(per_clip), "samples": n_samples, "frames": sorted(frames),
        "head_model": getattr(model, "name", type(model).__name__),
        "regions": regions.source, "audio": f"audio_seqs at {AUDIO_SR} Hz",
        "metrics": {k: None if k in skipped else float(np.mean([c[k] for c in per_clip.values()]))
                    for k in keys},
        "skipped": skipped,
        "per_clip": per_clip,
    }


def result_json(result: dict) -> str:
    """The result as JSON text, keys sorted (same result -> same bytes); a NaN or infinite value
    is a ValueError (JSON has none: the file would not load elsewhere)."""
    return json.dumps(result, indent=2, sort_keys=True, allow_nan=False) + "\n"


def main_table(result: dict) -> str:
    """A plain-text table of the averaged metrics."""
    skipped = result.get("skipped") or {}
    rows = [(label, "n/a" if result["metrics"][k] is None else f"{result['metrics'][k]:.6g}", unit, k)
            for k, label, unit in METRICS]
    w = [max(len(r[i]) for r in rows + [("metric", "value", "unit", "key")]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w[i]) if i != 1 else c.rjust(w[i]) for i, c in enumerate(r))
    head = (f"SingingHead 3D metrics: {result['split']} split, {result['clips']} clips x "
            f"{result['samples']} samples; head model: {result['head_model']}; regions: {result['regions']}")
    notes = [f"n/a: {', '.join(sorted(skipped))}: {why}" for why in sorted(set(skipped.values()))]
    return "\n".join([head, line(("metric", "value", "unit", "key")), line(tuple("-" * x for x in w))]
                     + [line(r) for r in rows] + notes) + "\n"
