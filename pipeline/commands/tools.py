"""`make-head-model`, `separate-bgm` and `demo-capture`: tools that work on single files or folders."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from demo import ownership
from demo.capture import make_demo_capture, plan_capture
from demo.truth_capture import make_truth_capture
from flame_fit.flame import load_flame
from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from pipeline.build import config_overrides
from pipeline.rerun import plan_rerun, remove_outputs
from tasks import config
from tasks.common.atomic import atomic_dir
from tasks.common.build_lock import build_lock
from tasks.common.progress import Progress
from tasks.common.settings import BgmSettings, DeviceSettings, FlameSettings
from tasks.common.names import remove_inside
from tasks.devices import torch_device
from tasks.head_model import get_head_model
from tasks.layout import Layout
from tasks.media.audio_io import read_audio, write_wav
from tasks.separation.vocals import (FALLBACK_NAME, OUTPUT_SUBTYPE, demucs_bgm, demucs_chunk_plan, load_demucs,
                                     weight_free_bgm)

log = logging.getLogger("singinghead")


def make_head_model(args) -> int:
    out = Path(args.dir)
    with atomic_dir(out) as tmp:
        write_procedural_head_model(tmp, seed=args.seed, n_vertices=args.n_vertices)
    flame = load_flame(out / MODEL_FILE, out / EMBEDDING_FILE)        # proves the files load
    print(f"wrote {out / MODEL_FILE} and {out / EMBEDDING_FILE}: {flame.name}, "
          f"{flame.n_vertices} vertices, {int(flame.faces.shape[0])} faces")
    return 0


def separate_bgm(args) -> int:
    cfg = config.read(BgmSettings)
    repo = cfg.demucs_repo if args.demucs_repo is None else args.demucs_repo
    name = args.model or cfg.demucs_model
    x, sr = read_audio(args.input)
    if repo:
        net = load_demucs(repo, name)
        dev = torch_device(config.read(DeviceSettings))
        prog = Progress(None, len(demucs_chunk_plan(-(-x.shape[0] * net.samplerate // sr), net.samplerate,
                                                    cfg.chunk_seconds)), "Demucs", bar=True)
        bgm = demucs_bgm(net, x, sr, dev, cfg.chunk_seconds, prog)
        what = f"Demucs {name} from {repo} on {dev}"
    else:
        log.warning("no Demucs model folder given: using the %s", FALLBACK_NAME)
        bgm = weight_free_bgm(x, sr)
        what = FALLBACK_NAME
    write_wav(args.output, bgm, sr, OUTPUT_SUBTYPE)
    print(f"{args.output}: {bgm.shape[0] / sr:.1f} s, {sr} Hz, {bgm.shape[1]} ch, by {what}")
    return 0


DEMO_RECORD = ownership.RECORD


def demo_capture(args) -> int:
    if args.remove:
        return remove_demo_capture(Path(args.out), Path(args.truth), args)
    common = dict(width=args.width, height=args.height, n_subjects=args.subjects,
                  n_songs=args.songs, seed=args.seed, fps=args.fps, workers=args.workers or None,
                  force=args.force, with_scan=not args.no_scan)
    if args.seconds is not None:      # else each generator's own default length
        common["seconds"] = args.seconds
    # Never over a lab's capture: every path about to be written must be absent or the generator's own.
    targets = ownership.target_paths(plan_capture(args.subjects, args.songs, args.seed), not args.no_scan)
    ownership.claim_targets(Path(args.out), Path(args.truth), targets)
    if args.photo_only:
        summary = make_demo_capture(Path(args.out), Path(args.truth), **common)
        kind = "demo capture"
    else:
        summary = make_truth_capture(Path(args.out), Path(args.truth), scan_landmarks=args.scan_landmarks,
                                     model=demo_head_model(), **common)
        kind = "truth capture"
    # What this generator wrote, so that `--remove` (make clean-demo) never touches a lab's captures.
    ownership.record_written(Path(args.out), Path(args.truth), targets)
    n = sum(len(s["songs"]) for s in summary["subjects"])
    print(f"{kind}: {len(summary['subjects'])} subject(s), {n} song(s) under {summary['out']}; "
          f"truth under {summary['truth']}")
    return 0


def demo_head_model():
    """The truth capture's head model: FLAME when `[flame] model_path` is set, else None (the
    procedural model, built in memory by demo.scan; nothing is written under processed/)."""
    flame = config.read(FlameSettings)
    if not flame.model_path:
        return None
    model, _ = get_head_model(flame, Layout.from_config().models_dir(), "cpu")
    return model


def remove_demo_capture(raw: Path, truth: Path, args) -> int:
    """Remove what the demo generator recorded in `truth/demo_capture.json` and still finds unchanged
    (fingerprints match), the outputs of subjects whose raw folder is then gone and the shared outputs
    that include them; every other capture and output stays (exit 1 when something recorded stays)."""
    record = truth / DEMO_RECORD
    if not record.is_file():
        print(f"{record} not found: no demo capture recorded there, nothing removed")
        return 0
    with config_overrides(paths={"raw_dir": raw, "processed_dir": getattr(args, "processed_dir", None)}):
        lay = Layout.from_config()
        # planned while the subjects are still in raw/ (the DAG is read off raw/); used for those gone
        plans = {s: plan_rerun([s], "validate", lay) for s in ownership.read_record(truth)
                 if (raw / s).is_dir() or lay.subject_out(s).is_dir()}
    # never under a running build (and no processed/ made where there is none)
    with build_lock(lay.processed) if lay.processed.is_dir() else contextlib.nullcontext():
        removed_raw, kept, gone = ownership.remove_recorded(raw, truth)
        present = [s for s in gone if s in plans]
        removed = removed_raw + remove_outputs([p for s in present for p in plans[s]], lay)
        for s in present:
            removed += [lay.subject_out(s)] if lay.subject_out(s).exists() else []
            remove_inside(lay.processed, lay.subject_out(s))
    for p in kept:
        print(f"{p}: kept: not as the demo generator recorded it (changed, or written by an older "
              "version) -- fix: delete it by hand if it is the demo's")
    if not kept:
        remove_inside(truth.parent, truth)
    print(f"removed the demo capture ({', '.join(gone) or 'no whole subjects'}): {len(removed)} path(s)"
          + ("" if kept else f" and {truth}"))
    return 1 if kept else 0
