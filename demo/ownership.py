"""What the demo generators wrote into a raw/ folder, so that they never overwrite a lab's capture and
`demo-capture --remove` deletes only their own files.

`<truth>/demo_capture.json` records, per subject, every path the generator writes (subject.json, scan/,
songs/<song>) with a content fingerprint.  A path is recorded "pending" before it is first written (it
did not exist then, so whatever is there later is ours) and fingerprinted once written.  Generation
refuses when a target path exists that is neither; removal deletes a path only when its fingerprint
still matches, then the subject's songs/ and folder only when they are left empty.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tasks.common.atomic import file_sha256, write_json_atomic
from tasks.common.bounded import read_json_bounded
from tasks.common.errors import PipelineInputError
from tasks.common.names import check_name, remove_inside

RECORD = "demo_capture.json"
PENDING = "pending"
_MAX_RECORD_BYTES = 16 << 20


def tree_fingerprint(path: Path) -> str:
    """sha256 over a file's bytes, or over a folder's relative names, kinds, sizes and file hashes
    (links are described, never followed)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file() and not path.is_symlink():
        return "f:" + file_sha256(path)
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(dirs + files):
            p = Path(folder) / name
            rel = p.relative_to(path).as_posix()
            if p.is_symlink():
                h.update(f"l {rel} {os.readlink(p)}\n".encode())
            elif p.is_dir():
                h.update(f"d {rel}\n".encode())
            else:
                h.update(f"f {rel} {p.stat().st_size} {file_sha256(p)}\n".encode())
    return "d:" + h.hexdigest()


def target_paths(plan: list[dict], with_scan: bool) -> dict[str, list[str]]:
    """{subject: [paths relative to the subject folder the generator writes]} for a `plan_capture` plan."""
    return {s["subject_id"]: ["subject.json"] + (["scan"] if with_scan else [])
            + [f"songs/{song['song_id']}" for song in s["songs"]] for s in plan}


def read_record(truth: Path) -> dict[str, dict[str, str]]:
    """{subject: {relative path: fingerprint or PENDING}}; the older list form ({"subjects": [...]},
    no paths) reads as subjects with nothing recorded."""
    path = Path(truth) / RECORD
    if not path.is_file():
        return {}
    data = read_json_bounded(path, _MAX_RECORD_BYTES, "demo record")
    subjects = data.get("subjects", {})
    if isinstance(subjects, list):
        return {check_name(s): {} for s in subjects}
    return {check_name(s): {str(k): str(v) for k, v in paths.items()} for s, paths in subjects.items()}


def write_record(truth: Path, record: dict[str, dict[str, str]]) -> None:
    write_json_atomic(Path(truth) / RECORD, {"version": 2, "subjects": record})


def _owned(path: Path, recorded: str | None) -> bool:
    if recorded is None:
        return False
    return recorded == PENDING or recorded == tree_fingerprint(path)


def claim_targets(out: Path, truth: Path, targets: dict[str, list[str]]) -> None:
    """Refuse (PipelineInputError naming the first foreign path) when a path the generator is about to
    write exists and is not recorded as the generator's; else record the absent ones as pending."""
    out = Path(out)
    record = read_record(truth)
    for sid, rels in targets.items():
        paths = record.get(sid, {})
        for rel in rels:
            p = out / sid / rel
            if os.path.lexists(p) and not _owned(p, paths.get(rel)):
                raise PipelineInputError(p, f"subject {sid} in {out} holds files the demo generator did not "
                                         "write (a lab's capture?); it would overwrite them",
                                         "pass singinghead demo-capture a different --out (a folder of the "
                                         "demo's own) or move that subject folder out of it")
    for sid, rels in targets.items():
        paths = record.setdefault(sid, {})
        for rel in rels:
            if not os.path.lexists(out / sid / rel):
                paths[rel] = PENDING
    write_record(truth, record)


def record_written(out: Path, truth: Path, targets: dict[str, list[str]]) -> None:
    """Fingerprint every target path now written."""
    record = read_record(truth)
    for sid, rels in targets.items():
        paths = record.setdefault(sid, {})
        for rel in rels:
            p = Path(out) / sid / rel
            if p.exists() and not p.is_symlink():
                paths[rel] = tree_fingerprint(p)
    write_record(truth, record)


def remove_recorded(out: Path, truth: Path) -> tuple[list[Path], list[Path], list[str]]:
    """Delete the recorded paths whose fingerprint still matches, then each subject's songs/ and
    folder when left empty.  Returns (removed paths, kept paths with the reason in the log, subjects
    whose folder is gone entirely).  The record keeps what was not removed."""
    out = Path(out)
    record = read_record(truth)
    removed, kept, gone = [], [], []
    for sid in sorted(record):
        paths = record[sid]
        sdir = out / sid
        if not paths and os.path.lexists(sdir):      # the older record: no paths, no fingerprints
            kept.append(sdir)
            continue
        for rel in sorted(paths):
            p = sdir / rel
            if not os.path.lexists(p):
                del paths[rel]
            elif paths[rel] != PENDING and paths[rel] == tree_fingerprint(p):
                remove_inside(out, p.relative_to(out))
                removed.append(p)
                del paths[rel]
            else:
                kept.append(p)
        for folder in (sdir / "songs", sdir):
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                folder.rmdir()
        if not os.path.lexists(sdir):
            gone.append(sid)
            del record[sid]
        elif not paths:
            del record[sid]
    if record:
        write_record(truth, record)
    return removed, kept, gone
