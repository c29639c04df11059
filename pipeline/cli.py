"""The `singinghead` command line.

Each stage module that has a user command exposes `register_cli(subparsers)`; this file only
collects them and adds `run` (the whole DAG with a progress display and a timing summary).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that contribute subcommands, in the order `--help` lists them.
CLI_MODULES = (
    "demo.capture",   # demo-capture
    "tasks.validate",       # validate
    "tasks.head_model",     # make-head-model
    "tasks.bgm",            # separate-bgm
    "tasks.preview",        # preview
    "tasks.release",        # release, verify-release
    "pipeline.rerun",          # rerun
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="singinghead", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline (BuildSingingHead) or one subject")
    run.add_argument("--subject", help="only this subject (BuildSubject)")
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--raw-dir")
    run.add_argument("--processed-dir")
    run.set_defaults(func=cmd_run)
    for name in CLI_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def cmd_run(args) -> int:
    import luigi
    import pipeline
    from tasks.config import override_paths
    override_paths(args.raw_dir, args.processed_dir)
    root = pipeline.BuildSubject(subject=args.subject) if args.subject else pipeline.BuildSingingHead()
    result = luigi.build([root], local_scheduler=True, workers=args.workers, detailed_summary=True)
    print(result.summary_text, file=sys.stderr)
    return 0 if result.status in (luigi.LuigiStatusCode.SUCCESS,
                                  luigi.LuigiStatusCode.SUCCESS_WITH_RETRY) else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
