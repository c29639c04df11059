"""What the dataset manifest says about how it was made: models (real or stand-in), parameters, tool.

Every stage writes a JSON record beside its output; the manifest gathers those of each subject and
names the stage that wrote each one. Which stage that is comes from the Luigi tasks themselves: the
assembly stage passes {output path: stage name} of every stage task it depends on.

The manifest ships inside the dataset and the release, so it holds names and hashes only: a model
file is recorded by its file name and sha256, and any absolute path in a recorded parameter is cut
to its last component (`names_only`). The same capture built under /a and /b gives the same bytes;
where things were built lives in `build_summary.json` and `_timings.jsonl`, which are not shipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tasks.capture.raw_layout import read_json
from tasks.common.atomic import json_dumps
from tasks.common.errors import PipelineInputError
from tasks.common.settings import recorded_params

log = logging.getLogger("singinghead")


def _abs(p: Path | str) -> Path:
    return Path(os.path.abspath(p))


def stage_of_record(path: Path, rel: Path, stage_outputs: Mapping[Path, str]) -> str:
    """The stage that wrote the record at `path` (`rel`: its path under processed/<subject>/).

    The stage whose output it is; else the one stage whose outputs share its folder (a record beside
    a stage's output, e.g. frames/segment_000.json beside segment_000.npz); else the file's stem.
    """
    outputs = {_abs(p): s for p, s in stage_outputs.items()}
    path = _abs(path)
    if path in outputs:
        return outputs[path]
    beside = {s for p, s in outputs.items() if p.parent == path.parent}
    return beside.pop() if len(beside) == 1 else rel.stem


def gather_records(subject_dir: Path, done_file: Path, stage_outputs: Mapping[Path, str]) -> list[tuple[str, dict]]:
    """(stage, record) for every JSON record under a subject's processed folder that holds a model
    record or parameters (`done_file`, the subject stage's summary, left out)."""
    out = []
    for p in sorted(Path(subject_dir).rglob("*.json")):
        rel = p.relative_to(subject_dir)
        if rel.name == Path(done_file).name or rel.name.startswith("."):
            continue
        try:
            rec = read_json(p)
        except FileNotFoundError:   # removed while listing (a dangling link, a rerun cleaning up): nothing to list
            log.warning("record %s vanished while the manifest was gathered: left out", p)
            continue
        except PipelineInputError as e:
            # Our records are written atomically, so a corrupt one was damaged afterwards. Leaving it out
            # could drop the line that says a stand-in model made this data: stop and say how to remake it.
            stage = stage_of_record(p, rel, stage_outputs)
            known = stage in set(stage_outputs.values())
            raise PipelineInputError(
                p, f"stage record is not readable: {e.problem}",
                f"rerun {'the stage that wrote it' if known else 'the subject'}: singinghead rerun --subject "
                f"{Path(subject_dir).name}{f' --from {stage}' if known else ''}") from e
        if isinstance(rec, dict) and (_model_list(rec) or {"params", "parameters", "config"} & rec.keys()):
            out.append((stage_of_record(p, rel, stage_outputs), rec))
    return out


def _model_list(rec, depth: int = 0) -> list[dict]:
    """Every model record inside a stage record: a dict with 'name' and 'kind' real | stand-in, found
    under any key ('model', 'models', 'estimator', 'head_model', ...), in lists too, 4 levels deep."""
    if depth > 4:
        return []
    if isinstance(rec, dict):
        if "name" in rec and rec.get("kind") in ("real", "stand-in"):
            return [rec]
        return [m for k in sorted(rec) for m in _model_list(rec[k], depth + 1)]
    if isinstance(rec, list):
        return [m for v in rec for m in _model_list(v, depth + 1)]
    return []


def collect_provenance(records: list[tuple[str, dict]]) -> dict:
    """{'models': [...], 'stand_ins': [...], 'stage_parameters': {stage: [unique params]}}."""
    models: dict[str, dict] = {}
    params: dict[str, dict[str, dict]] = {}
    for stage, rec in records:
        for m in _model_list(rec):
            entry = {
                "name": str(m.get("name", "?")),
                "kind": m.get("kind", "unknown"),
                "files": sorted(
                    (
                        {"name": file_name(f.get("path", f.get("name"))), "sha256": f.get("sha256")}
                        for f in m.get("files", [])
                        if isinstance(f, dict)
                    ),
                    key=lambda f: (f["name"], str(f["sha256"])),
                ),
            }
            key = json.dumps(entry, sort_keys=True)
            models.setdefault(key, {**entry, "used_by": set()})["used_by"].add(stage)
        for k in ("params", "parameters", "config"):
            if isinstance(rec.get(k), dict):
                p = names_only(rec[k])
                params.setdefault(stage, {})[json.dumps(p, sort_keys=True, default=str)] = p
    model_list = sorted(
        ({**m, "used_by": sorted(m["used_by"])} for m in models.values()),
        key=lambda m: (m["name"], m["kind"], json.dumps(m["files"])),
    )
    return {
        "models": model_list,
        "stand_ins": sorted({m["name"] for m in model_list if m["kind"] != "real"}),
        "stage_parameters": {s: [v[k] for k in sorted(v)] for s, v in sorted(params.items())},
    }


def file_name(path) -> str:
    """The last component of a path as any OS writes it ('/m/x.th', 'C:\\m\\x.th' -> 'x.th')."""
    return re.split(r"[\\/]", str(path))[-1]


def is_absolute_path(s: str) -> bool:
    """POSIX, home-relative or Windows absolute path (what a build machine's records hold)."""
    return bool(re.match(r"^(/|~[/\\]|[A-Za-z]:[\\/]|\\\\)", s))


def names_only(obj):
    """A copy of a JSON-like record with every absolute path cut to its file or folder name."""
    if isinstance(obj, dict):
        return {k: names_only(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [names_only(v) for v in obj]
    if isinstance(obj, str) and is_absolute_path(obj):
        return file_name(obj.rstrip("/\\")) or obj
    return obj


def tool_version() -> str:
    try:
        return version("singinghead")
    except PackageNotFoundError:  # not installed (running from a checkout)
        cfg = Path(__file__).resolve().parents[2] / "setup.cfg"
        m = re.search(r"^version\s*=\s*(\S+)", cfg.read_text(), re.M) if cfg.exists() else None
        return m.group(1) if m else "unknown"


def config_parameters(settings: Iterable) -> dict:
    """The given luigi.cfg sections (settings objects) as the manifest records them."""
    return names_only(json.loads(json_dumps(recorded_params(*settings))))
