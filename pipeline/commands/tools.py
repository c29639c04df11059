"""`make-head-model`, `separate-bgm` and `demo-capture`: tools that work on single files or folders."""
from __future__ import annotations

import logging
from pathlib import Path

from demo.capture import make_demo_capture
from flame_fit.flame import load_flame
from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from tasks import config
from tasks.common.atomic import atomic_dir
from tasks.common.progress import Progress
from tasks.common.settings import BgmSettings, DeviceSettings
from tasks.devices import torch_device
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


def demo_capture(args) -> int:
    summary = make_demo_capture(Path(args.out), Path(args.truth), width=args.width, height=args.height,
                                seconds=args.seconds, n_subjects=args.subjects, n_songs=args.songs,
                                seed=args.seed, fps=args.fps, workers=args.workers or None, force=args.force,
                                with_scan=not args.no_scan)
    n = sum(len(s["songs"]) for s in summary["subjects"])
    print(f"demo capture: {len(summary['subjects'])} subject(s), {n} song(s) under {summary['out']}; "
          f"truth under {summary['truth']}")
    return 0
