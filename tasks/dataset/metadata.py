"""metadata.csv: one row per sequence and per clip, mapping ids back to the recording."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tasks.dataset.plan import SequencePlan

METADATA_COLUMNS = (
    "id",
    "kind",
    "subject",
    "subject_number",
    "song",
    "song_number",
    "segment",
    "source_segment",
    "clip",
    "genre",
    "language",
    "professional",
    "gender",
    "frames",
    "seq_start_frame",
    "start_frame",
    "end_frame",
    "split",
    "video_method",
)


def metadata_rows(
    plans: list[SequencePlan], clip_records: dict[str, dict], split_of: dict[str, str]
) -> list[dict]:
    """One row per sequence and per clip, sorted by id then kind (sequence rows first)."""
    rows = []
    for p in plans:
        base = {
            "subject": p.subject,
            "subject_number": p.meta["subject_number"],
            "song": p.song,
            "song_number": p.meta["song_number"],
            "segment": p.segment_number,
            "source_segment": p.source_segment,
            "genre": p.meta["genre"],
            "language": p.meta["language"],
            "professional": p.meta["professional"],
            "gender": p.meta["gender"],
        }
        seq_splits = sorted({split_of[c] for c in p.clip_ids})
        rows.append(
            {
                **base,
                "id": p.seq_id,
                "kind": "sequence",
                "clip": "",
                "frames": p.frames,
                "seq_start_frame": 0,
                "start_frame": p.start_frame,
                "end_frame": p.end_frame,
                "split": seq_splits[0] if len(seq_splits) == 1 else ("mixed" if seq_splits else ""),
                "video_method": "copy",
            }
        )
        for k, cid in enumerate(p.clip_ids):
            r = clip_records[cid]
            rows.append(
                {
                    **base,
                    "id": cid,
                    "kind": "clip",
                    "clip": k,
                    "frames": r["frames"],
                    "seq_start_frame": r["seq_start_frame"],
                    "start_frame": p.start_frame + r["seq_start_frame"],
                    "end_frame": p.start_frame + r["seq_start_frame"] + r["frames"],
                    "split": split_of[cid],
                    "video_method": r["method"],
                }
            )
    return sorted(rows, key=lambda r: (r["id"], r["kind"] != "sequence"))


def metadata_csv_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in METADATA_COLUMNS})
    return buf.getvalue().encode("utf-8")


def read_metadata(root: Path) -> list[dict]:
    with open(Path(root) / "metadata.csv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
