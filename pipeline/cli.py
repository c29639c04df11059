"""The `singinghead` command line: every subcommand of the toolkit, in one place.

Each command imports what it needs when it runs (torch, open3d and demucs take seconds to
import), so `singinghead --help` answers at once. Errors the user can act on (a missing file, a
bad capture, a release that does not verify) print one message with the fix and exit 2;
`--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("singinghead")

EXIT_BAD_INPUT = 2


# ----------------------------------------------------------------------------- shared options
def _common(p: argparse.ArgumentParser, paths: bool = False, workers: bool = False) -> None:
    """Options every subcommand takes; `-v`/`--debug` also work after the subcommand."""
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show Python tracebacks instead of one-line errors")
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="a luigi.cfg to read (after LUIGI_CONFIG_PATH and ./luigi.cfg; later files win)")
    if paths:
        p.add_argument("--raw-dir", help="capture root (default: [paths] raw_dir)")
        p.add_argument("--processed-dir", help="output root (default: [paths] processed_dir)")
    if workers:
        p.add_argument("--workers", type=int, default=1, help="Luigi worker processes (default 1)")


def _path_overrides(args) -> dict:
    return {"paths": {"raw_dir": getattr(args, "raw_dir", None),
                      "processed_dir": getattr(args, "processed_dir", None)}}


def _layout(args):
    from pipeline.build import config_overrides
    from tasks.layout import Layout
    with config_overrides(_path_overrides(args)):
        return Layout.from_config()


def describe_run_config(args) -> str:
    """Which configuration files and which models a run uses (printed at its start)."""
    import luigi.configuration

    from pipeline.build import config_overrides
    from tasks import config
    from tasks.common.settings import BgmSettings, EmocaSettings, FlameSettings
    parser = luigi.configuration.get_config()
    files = [p for p in getattr(parser, "_config_paths", []) if os.path.isfile(p)]
    with config_overrides(_path_overrides(args)):
        flame, emoca, bgm = config.read(FlameSettings), config.read(EmocaSettings), config.read(BgmSettings)
        lay = _layout(args)
    lines = [f"configuration: {', '.join(str(Path(f).resolve()) for f in files) or 'none found (defaults)'}",
             f"capture: {lay.raw}   outputs: {lay.processed}   release: {lay.release}",
             "head model: " + (flame.model_path or "the procedural head model (STAND-IN, not FLAME)"),
             "per-frame estimator: " + (emoca.checkpoint_dir or "the weight-free landmark fit (STAND-IN, not EMOCA)"),
             "vocal remover: " + (f"Demucs {bgm.demucs_model} from {bgm.demucs_repo}" if bgm.demucs_repo
                                  else "REPET-SIM, weight-free (STAND-IN, not Demucs)")]
    return "\n".join(lines)


def _stand_in_warning(args) -> str | None:
    text = describe_run_config(args)
    if "STAND-IN" in text:
        return ("WARNING: this build used STAND-IN models (see above and manifest.json stand_ins); "
                "it tests the pipeline and is not a dataset release.")
    return None


# ----------------------------------------------------------------------------- commands
def cmd_run(args) -> int:
    import pipeline
    from pipeline.build import build
    from pipeline.progress import BuildProgress
    print(describe_run_config(args), file=sys.stderr)
    subject = args.subject

    def roots():
        return pipeline.BuildSubject(subject=subject) if subject else pipeline.BuildSingingHead()

    with BuildProgress():
        result = build(roots, workers=args.workers, overrides=_path_overrides(args))
    print(result.summary, file=sys.stderr)
    warning = _stand_in_warning(args)
    if warning:
        print(warning, file=sys.stderr)
    return 0 if result.ok else 1


def cmd_release(args) -> int:
    from pipeline.build import build
    from tasks.release import PackRelease
    print(describe_run_config(args), file=sys.stderr)
    result = build(lambda: PackRelease(), workers=args.workers, overrides=_path_overrides(args))
    print(result.summary, file=sys.stderr)
    if result.ok:
        print(f"release: {_layout(args).release}")
    return 0 if result.ok else 1


def cmd_rerun(args) -> int:
    from pipeline.build import build, config_overrides
    from pipeline.rerun import plan_rerun, remove_outputs
    import pipeline
    overrides = _path_overrides(args)
    with config_overrides(overrides):
        lay = _layout(args)
        paths = plan_rerun(args.subject, args.from_stage, lay)
        removed = remove_outputs(paths, lay, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} output(s) of {', '.join(args.subject)} from stage {args.from_stage} on",
          file=sys.stderr)
    for p in removed:
        print(f"  {p}", file=sys.stderr)
    if args.dry_run or args.no_build:
        return 0
    print(describe_run_config(args), file=sys.stderr)
    result = build(lambda: pipeline.BuildSingingHead(), workers=args.workers, overrides=overrides)
    print(result.summary, file=sys.stderr)
    return 0 if result.ok else 1


def cmd_stages(args) -> int:
    import pipeline
    from pipeline.build import config_overrides
    from pipeline.registry import family_table, format_table, task_graph
    with config_overrides(_path_overrides(args)):
        lay = _layout(args)
        graph = task_graph(pipeline.BuildSingingHead())
        print(format_table(family_table(graph, relative_to=lay.processed)))
    return 0


def cmd_validate(args) -> int:
    from tasks import config
    from tasks.capture.checks import errors_of, format_problems, validate_capture
    from tasks.common.settings import AudioSettings, DatasetSettings
    from pipeline.build import config_overrides
    with config_overrides(_path_overrides(args)):
        raw = Path(args.raw_dir_pos) if args.raw_dir_pos else _layout(args).raw
        problems = validate_capture(raw, args.subject, config.read(DatasetSettings), config.read(AudioSettings))
    if problems:
        print(format_problems(problems))
    n_err = len(errors_of(problems))
    print(f"{raw}: {n_err} error(s), {len(problems) - n_err} warning(s)")
    return 1 if n_err else 0


def cmd_demo_capture(args) -> int:
    from demo.capture import make_demo_capture
    summary = make_demo_capture(Path(args.out), Path(args.truth), width=args.width, height=args.height,
                                seconds=args.seconds, n_subjects=args.subjects, n_songs=args.songs,
                                seed=args.seed, fps=args.fps, workers=args.workers or None, force=args.force,
                                with_scan=not args.no_scan)
    n = sum(len(s["songs"]) for s in summary["subjects"])
    print(f"demo capture: {len(summary['subjects'])} subject(s), {n} song(s) under {summary['out']}; "
          f"truth under {summary['truth']}")
    return 0


def cmd_make_head_model(args) -> int:
    from flame_fit.flame import load_flame
    from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
    from tasks.common.atomic import atomic_dir
    out = Path(args.dir)
    with atomic_dir(out) as tmp:
        write_procedural_head_model(tmp, seed=args.seed, n_vertices=args.n_vertices)
    flame = load_flame(out / MODEL_FILE, out / EMBEDDING_FILE)        # proves the files load
    print(f"wrote {out / MODEL_FILE} and {out / EMBEDDING_FILE}: {flame.name}, "
          f"{flame.n_vertices} vertices, {int(flame.faces.shape[0])} faces")
    return 0


def cmd_separate_bgm(args) -> int:
    from tasks import config
    from tasks.common.progress import Progress
    from tasks.common.settings import BgmSettings, DeviceSettings
    from tasks.devices import torch_device
    from tasks.media.audio_io import read_audio, write_wav
    from tasks.separation.vocals import (FALLBACK_NAME, OUTPUT_SUBTYPE, demucs_bgm, demucs_chunk_plan,
                                         load_demucs, weight_free_bgm)
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


def cmd_preview(args) -> int:
    from pipeline.preview import run_preview
    return run_preview(args)


def cmd_verify_release(args) -> int:
    from tasks.dataset.verify import verify_release
    folder = Path(args.dir)
    if not folder.is_dir():
        from tasks.common.errors import PipelineInputError
        raise PipelineInputError(folder, "is not a folder", "give the release folder (tar shards + SHA256SUMS)")
    problems = verify_release(folder)
    for p in problems:
        print(f"FAIL {p}")
    print(f"verify-release {args.dir}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 0 if not problems else 1


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="singinghead", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks instead of one-line errors")
    parser.add_argument("--config", metavar="FILE",
                        help="a luigi.cfg to read (after LUIGI_CONFIG_PATH and ./luigi.cfg; later files win)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline (BuildSingingHead), or one subject (BuildSubject)")
    p.add_argument("--subject", help="only this subject (BuildSubject)")
    _common(p, paths=True, workers=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("rerun", help="delete one subject's outputs from a stage on, then rebuild everything")
    p.add_argument("--subject", action="append", required=True, help="subject id, e.g. S012 (repeatable)")
    p.add_argument("--from", dest="from_stage", default="validate", metavar="STAGE",
                   help="first stage to redo (default: validate, the whole subject); "
                        "`singinghead stages` lists the stages")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--no-build", action="store_true", help="remove outputs but do not rebuild")
    _common(p, paths=True, workers=True)
    p.set_defaults(func=cmd_rerun)

    p = sub.add_parser("stages", help="print the DAG: every task, its stage name, what it needs and writes")
    _common(p, paths=True)
    p.set_defaults(func=cmd_stages)

    p = sub.add_parser("validate", help="check a capture against the raw/ contract; lists every problem")
    p.add_argument("raw_dir_pos", nargs="?", default=None, metavar="RAW_DIR",
                   help="capture root (default: [paths] raw_dir)")
    p.add_argument("--subject", action="append", help="only this subject (repeatable)")
    _common(p, paths=True)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("release", help="assemble the dataset and pack the release (PackRelease)")
    _common(p, paths=True, workers=True)
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("verify-release", help="check a release's checksums, files, shapes and frame counts")
    p.add_argument("dir", help="a release folder (tar shards + SHA256SUMS) or an extracted dataset folder")
    _common(p)
    p.set_defaults(func=cmd_verify_release)

    p = sub.add_parser("preview", help="side-by-side MP4 of a segment: landmarks on the portrait and the "
                                       "fitted head mesh")
    p.add_argument("subject", help="subject id (folder name)")
    p.add_argument("song", help="song id (folder name)")
    p.add_argument("segment", type=int, help="the crop stage's segment index (segments.json)")
    p.add_argument("--out", help="output .mp4 (default: motion/segment_NNN_preview.mp4 beside the motion)")
    p.add_argument("--size", type=int, default=512, help="height of each panel in pixels (even)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    _common(p, paths=True)
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("separate-bgm", help="remove the vocals from one song file (try a Demucs model folder)")
    p.add_argument("input", help="the original song (wav/flac/mp3)")
    p.add_argument("output", help="BGM .wav to write (float32, the input's rate and channels)")
    p.add_argument("--demucs-repo", default=None, help="folder with <sig>-<checksum>.th + <model>.yaml "
                   "(default: [bgm] demucs_repo; empty: the weight-free remover)")
    p.add_argument("--model", default=None, help="Demucs model name (default: [bgm] demucs_model)")
    _common(p)
    p.set_defaults(func=cmd_separate_bgm)

    p = sub.add_parser("make-head-model", help="write the procedural head model (a stand-in in FLAME's file "
                                               "layout) into DIR")
    p.add_argument("dir", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--n-vertices", type=int, default=4000, help="approximate vertex count")
    _common(p)
    p.set_defaults(func=cmd_make_head_model)

    p = sub.add_parser("demo-capture", help="write a synthetic demo capture in the raw/ layout")
    p.add_argument("--out", default="raw", help="capture root (default raw/)")
    p.add_argument("--truth", default="demo_truth", help="ground truth root, kept outside raw/ (default demo_truth/)")
    p.add_argument("--width", type=int, default=3840, help="video width (default 3840)")
    p.add_argument("--height", type=int, default=2160, help="video height (default 2160)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each song (default 20)")
    p.add_argument("--subjects", type=int, default=2, help="number of subjects (default 2)")
    p.add_argument("--songs", type=int, default=2, help="songs per subject (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
    p.add_argument("--workers", type=int, default=0, help="render/encode threads (0: up to 2)")
    p.add_argument("--force", action="store_true", help="rewrite songs that are already up to date")
    p.add_argument("--no-scan", action="store_true", help="write no scan/ folders")
    _common(p)
    p.set_defaults(func=cmd_demo_capture)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("singinghead")
    except PackageNotFoundError:
        return "unknown (not installed)"


def load_config_file(path: str) -> None:
    """Add a configuration file to Luigi's (LUIGI_CONFIG_PATH and ./luigi.cfg are read already)."""
    import luigi.configuration

    from tasks.common.errors import PipelineInputError
    p = Path(path)
    if not p.is_file():
        raise PipelineInputError(p, "configuration file not found", "give the path of a luigi.cfg")
    luigi.configuration.add_config_path(str(p))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "config", None):
            load_config_file(args.config)
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001 - the project's own errors become one line; others re-raise
        from tasks.common.errors import CaptureInvalid, PipelineInputError
        if debug or not isinstance(exc, (PipelineInputError, CaptureInvalid)):
            raise
        print(f"singinghead {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: outputs written so far are complete; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
