"""`python -m tasks.evaluation`: the 3D metrics for a dataset user without the capture pipeline.

Needs what `requirements-loader.txt` lists (numpy, scipy, soundfile, torch; librosa for the two
beat-alignment metrics). The head model is given as files: FLAME's `generic_model.pkl` (or
`flame2023.pkl`) with its landmark embedding and `FLAME_masks.pkl`. Unlike `singinghead evaluate`,
it does not verify the release first (that needs PyAV and the pipeline): verify a downloaded
release once with `singinghead verify-release`, or trust the extracted tree you have.

    python -m tasks.evaluation PRED_DIR --release SingingHead --flame generic_model.pkl \\
        --landmark-embedding landmark_embedding.npy --masks FLAME_masks.pkl --out result.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from flame_fit.flame import load_flame
from flame_fit.flame_io import FlameFileError
from tasks.common.atomic import write_bytes_atomic
from tasks.common.errors import PipelineInputError
from tasks.evaluation.evaluate import evaluate, main_table, result_json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks.evaluation", description=__doc__.split("\n\n")[0])
    p.add_argument("pred_dir", metavar="PRED_DIR",
                   help="folder of <clip id>.pkl predictions ('expcodes' (S,T,50), 'posecodes' (S,T,9))")
    p.add_argument("--release", required=True, metavar="DIR",
                   help="the extracted SingingHead tree, its tar shards or the official zips")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="default test")
    p.add_argument("--flame", required=True, metavar="MODEL.pkl", help="FLAME generic_model.pkl")
    p.add_argument("--landmark-embedding", required=True, metavar="FILE",
                   help="FLAME's landmark embedding (landmark_embedding.npy)")
    p.add_argument("--masks", default=None, metavar="FLAME_masks.pkl",
                   help="FLAME's region masks (required with FLAME)")
    p.add_argument("--out", default="result.json",
                   help="JSON result, written atomically (default result.json)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        device = torch.device(args.device)
        model = load_flame(args.flame, args.landmark_embedding)
        result = evaluate(args.pred_dir, args.release, args.split, head_model=model, device=device,
                          masks_path=args.masks)
    except (PipelineInputError, FlameFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(main_table(result), end="")
    out = Path(args.out)
    write_bytes_atomic(out, result_json(result).encode("utf-8"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
