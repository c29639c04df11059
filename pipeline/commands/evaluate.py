"""`evaluate`: the paper's 3D metrics of predictions against a verified release.

The release is verified first (`tasks.dataset.verify.verify_release`): scores against a damaged or
altered release would be silently wrong. The head model is the configured one (`[flame]`, else
the procedural stand-in, named as such in the table and the JSON).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from tasks import config
from tasks.common.atomic import write_bytes_atomic
from tasks.common.bounded import MAX_RELEASE_JSON_BYTES, read_bounded
from tasks.common.errors import PipelineInputError
from tasks.common.settings import DeviceSettings, FlameSettings
from tasks.dataset.manifest import file_name
from tasks.dataset.packing import RELEASE_MANIFEST
from tasks.dataset.verify import release_fingerprint, verify_release
from tasks.devices import torch_device
from tasks.evaluation.evaluate import evaluate as evaluate_metrics
from tasks.evaluation.evaluate import main_table, result_json
from tasks.head_model import get_head_model, user_models_dir


def release_format(release: Path) -> str | None:
    """The `[release] format` a release folder was packed in (None: an extracted tree or unknown)."""
    try:
        return json.loads(read_bounded(release / RELEASE_MANIFEST, MAX_RELEASE_JSON_BYTES)).get("format")
    except (PipelineInputError, ValueError, AttributeError):
        return None


def evaluate(args) -> int:
    release, preds = Path(args.release), Path(args.pred_dir)
    # beside the predictions it scores, never the working directory (one file per split)
    out = Path(args.out) if args.out else preds / f"result_{args.split}.json"
    if not release.is_dir():
        raise PipelineInputError(release, "is not a folder",
                                 "give the release folder (singinghead evaluate PRED_DIR --release DIR)")
    if out.is_dir() or (out.parent.exists() and not out.parent.is_dir()):   # before any work
        raise PipelineInputError(out, "is a folder" if out.is_dir() else f"{out.parent} is not a folder",
                                 "give singinghead evaluate --out the path of the JSON file to write, "
                                 "e.g. --out result.json")
    device = torch_device(args.device or config.read(DeviceSettings))
    problems = verify_release(release)
    if problems:
        raise PipelineInputError(
            release, f"does not verify ({len(problems)} problem(s); first: {problems[0]})",
            f"run `singinghead verify-release {release}` for the full list, then re-download or rebuild "
            "the release")
    if release_format(release) == "webdataset":
        raise PipelineInputError(
            release, "is a WebDataset release (training shards); evaluation reads the published tree",
            "evaluate against the same dataset packed with [release] format = tarballs or zips")
    # the procedural stand-in is generated into the user's cache, not into ./processed of the cwd
    model, record = get_head_model(config.read(FlameSettings), user_models_dir(), device)
    result = evaluate_metrics(preds, release, args.split, head_model=model, device=device,
                              masks_path=args.masks)
    # names and hashes only: the JSON is shared with others, the machine's paths are not
    result["head_model_record"] = {
        "name": record.get("name"), "kind": record.get("kind"),
        "files": [{"name": file_name(f.get("path")), "sha256": f.get("sha256")}
                  for f in record.get("files", [])],
    }
    fingerprint = release_fingerprint(release)
    if fingerprint:
        result["release_fingerprint"] = fingerprint
    if not all(v is None or math.isfinite(v) for v in result["metrics"].values()):  # None: no librosa
        raise PipelineInputError(preds, "the metrics came out NaN or infinite (nothing written)",
                                 "check the predictions' values: expression coefficients and angles in "
                                 "radians")
    print(main_table(result), end="")
    if fingerprint:
        print(f"release fingerprint {fingerprint} (sha256 of SHA256SUMS; compare with the published one)")
    write_bytes_atomic(out, result_json(result).encode("utf-8"))
    print(f"wrote {out}")
    return 0
