"""The `singinghead` command line: every subcommand of the toolkit, in one place.

Parsing imports nothing heavy: each command lives in `pipeline.commands.<module>`, imported only
once the command is chosen (torch, open3d and demucs take seconds to import), so
`singinghead --help` answers at once. Errors the user can act on (a missing file, a
bad capture, a release that does not verify) print one message with the fix and exit 2;
`--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
from importlib.metadata import PackageNotFoundError, version
import logging
import sys
from pathlib import Path

import luigi.configuration

from pipeline.build import config_overrides, split_config_args
from tasks.common.errors import CaptureInvalid, PipelineInputError

EXIT_BAD_INPUT = 2


def _common(p: argparse.ArgumentParser, paths: bool = False, workers: bool = False) -> None:
    """Options every subcommand takes; `-v`/`--debug`/`--config` also work after the subcommand."""
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


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="singinghead", description=__doc__.splitlines()[0],
                                     epilog="Any luigi.cfg value can be given to any command the Luigi way, "
                                            "e.g. --crop-landmark-every 4 or --paths-raw-dir DIR.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks instead of one-line errors")
    parser.add_argument("--config", metavar="FILE",
                        help="a luigi.cfg to read (after LUIGI_CONFIG_PATH and ./luigi.cfg; later files win)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the whole pipeline (BuildSingingHead), or one subject (BuildSubject)")
    p.add_argument("--subject", help="only this subject (BuildSubject)")
    _common(p, paths=True, workers=True)
    p.set_defaults(command_impl="build:run")

    p = sub.add_parser("rerun", help="delete one subject's outputs from a stage on, then rebuild everything")
    p.add_argument("--subject", action="append", required=True, help="subject id, e.g. S012 (repeatable)")
    p.add_argument("--from", dest="from_stage", default="validate", metavar="STAGE",
                   help="first stage to redo (default: validate, the whole subject); "
                        "`singinghead stages` lists the stages")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.add_argument("--no-build", action="store_true", help="remove outputs but do not rebuild")
    _common(p, paths=True, workers=True)
    p.set_defaults(command_impl="build:rerun")

    p = sub.add_parser("stages", help="print the DAG: every task, its stage name, what it needs and writes")
    _common(p, paths=True)
    p.set_defaults(command_impl="build:stages")

    p = sub.add_parser("validate", help="check a capture against the raw/ contract; lists every problem")
    p.add_argument("raw_dir_pos", nargs="?", default=None, metavar="RAW_DIR",
                   help="capture root (default: [paths] raw_dir)")
    p.add_argument("--subject", action="append", help="only this subject (repeatable)")
    _common(p, paths=True)
    p.set_defaults(command_impl="validate:validate")

    p = sub.add_parser("release", help="assemble the dataset and pack the release (PackRelease)")
    _common(p, paths=True, workers=True)
    p.set_defaults(command_impl="build:release")

    p = sub.add_parser("verify-release", help="check a release's checksums, files, shapes and frame counts")
    p.add_argument("dir", help="a release folder (tar shards + SHA256SUMS) or an extracted dataset folder")
    _common(p)
    p.set_defaults(command_impl="verify:verify")

    p = sub.add_parser("evaluate",
                       help="the paper's 3D metrics of predicted motion against a verified release")
    p.add_argument("pred_dir", metavar="PRED_DIR",
                   help="folder of <clip id>.pkl predictions ('expcodes' (S,T,50), 'posecodes' (S,T,9))")
    p.add_argument("--release", required=True, metavar="DIR",
                   help="the release folder (tarballs or zips, verified first) or an extracted "
                        "SingingHead tree")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split to score (default test)")
    p.add_argument("--masks", default=None, metavar="FLAME_masks.pkl",
                   help="FLAME's region masks (required with FLAME; without, landmark-based regions of "
                        "the stand-in)")
    p.add_argument("--out", default=None,
                   help="JSON result to write, atomically (default: PRED_DIR/result_<split>.json, beside the "
                        "predictions it scores)")
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cpu or cuda (default: [device] torch_device)")
    _common(p)
    p.set_defaults(command_impl="evaluate:evaluate")

    p = sub.add_parser("preview", help="MP4 of a segment, a dataset sequence or one clip: the fitted head "
                                       "mesh and landmarks over the portrait, yaw and jaw opening under it",
                       description="Preview ID (a sequence or clip id of the assembled dataset, as listed in its "
                                   "metadata.csv; a clip previews only its own frames) or SUBJECT SONG SEGMENT.")
    p.add_argument("target", metavar="ID|SUBJECT",
                   help="a sequence or clip id from the dataset's metadata.csv, or the subject id (folder name)")
    p.add_argument("song", nargs="?", default=None, metavar="SONG", help="song id (folder name), after SUBJECT")
    p.add_argument("segment", nargs="?", type=int, default=None, metavar="SEGMENT",
                   help="the crop stage's segment index (segments.json), after SUBJECT SONG")
    p.add_argument("--out", help="output .mp4 (default: in the processed folder's previews/, "
                                 "<id>.mp4 or <subject>_<song>_segment_NNN.mp4)")
    p.add_argument("--size", type=int, default=512,
                   help="size of the portrait in pixels (even, 64-4096); the figures add about a third")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    _common(p, paths=True)
    p.set_defaults(command_impl="preview:preview")

    p = sub.add_parser("separate-bgm", help="remove the vocals from one song file (try a Demucs model folder)")
    p.add_argument("input", help="the original song (wav/flac/mp3)")
    p.add_argument("output", help="BGM .wav to write (float32, the input's rate and channels)")
    p.add_argument("--demucs-repo", default=None, help="folder with <sig>-<checksum>.th + <model>.yaml "
                   "(default: [bgm] demucs_repo; empty: the weight-free remover)")
    p.add_argument("--model", default=None, help="Demucs model name (default: [bgm] demucs_model)")
    _common(p)
    p.set_defaults(command_impl="tools:separate_bgm")

    p = sub.add_parser("make-head-model", help="write the procedural head model (a stand-in in FLAME's file "
                                               "layout) into DIR")
    p.add_argument("dir", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--n-vertices", type=int, default=4000, help="approximate vertex count")
    _common(p)
    p.set_defaults(command_impl="tools:make_head_model")

    p = sub.add_parser("demo-capture", help="write a synthetic demo capture in the raw/ layout (default: the "
                                            "truth capture, the head model rendered under known 3D motion)")
    p.add_argument("--out", default="raw", help="capture root (default raw/)")
    p.add_argument("--truth", default="demo_truth", help="ground truth root, kept outside raw/ (default demo_truth/)")
    p.add_argument("--width", type=int, default=3840, help="video width (default 3840)")
    p.add_argument("--height", type=int, default=2160, help="video height (default 2160)")
    p.add_argument("--seconds", type=float, default=None,
                   help="length of each song (default 21; 20 with --photo-only)")
    p.add_argument("--subjects", type=int, default=2, help="number of subjects (default 2)")
    p.add_argument("--songs", type=int, default=2, help="songs per subject (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
    p.add_argument("--workers", type=int, default=0, help="render/encode threads (0: up to 2)")
    p.add_argument("--force", action="store_true", help="rewrite songs that are already up to date")
    p.add_argument("--no-scan", action="store_true", help="write no scan/ folders")
    p.add_argument("--photo-only", action="store_true",
                   help="the older capture: a flat photograph warped in 2D (no 3D truth); default: the truth "
                        "capture (demo.truth_capture), the head model rendered under known motion")
    p.add_argument("--scan-landmarks", action="store_true",
                   help="truth capture: also write scan/landmarks.json (the scan's true 68 landmarks)")
    p.add_argument("--remove", action="store_true",
                   help="remove the demo subjects recorded in TRUTH/demo_capture.json (their raw/ and processed/ "
                        "folders and the shared outputs that include them), nothing else")
    p.add_argument("--processed-dir", help="output root of --remove (default: [paths] processed_dir)")
    _common(p)
    p.set_defaults(command_impl="tools:demo_capture")
    return parser


def _version() -> str:
    try:
        return version("singinghead")
    except PackageNotFoundError:
        return "unknown (not installed)"


def command_function(ref: str):
    """'module:function' under pipeline.commands -> the function (its module imported only now)."""
    module, func = ref.split(":")
    return getattr(importlib.import_module(f"pipeline.commands.{module}"), func)


def load_config_file(path: str) -> None:
    """Add a configuration file to Luigi's (LUIGI_CONFIG_PATH and ./luigi.cfg are read already)."""
    p = Path(path)
    if not p.is_file():
        raise PipelineInputError(p, "configuration file not found", "give the path of a luigi.cfg")
    luigi.configuration.add_config_path(str(p))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # any luigi.cfg value, the Luigi way (`--crop-landmark-every 4`), as the `luigi` command takes it
    argv, config_args = split_config_args(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "config", None):
            load_config_file(args.config)
        # Logging is configured once, above: Luigi's own handler would print every line twice.
        cfg = luigi.configuration.get_config()
        if not cfg.has_section("core"):
            cfg.add_section("core")
        cfg.set("core", "no_configure_logging", "true")
        with config_overrides(cli_args=config_args):
            return int(command_function(args.command_impl)(args) or 0)
    except Exception as exc:  # noqa: BLE001 - the project's own errors become one line; others re-raise
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
