"""The release's data card (README.md): Datasheets-for-Datasets sections from the dataset manifest.

Written from the manifest alone (names, counts, models, parameters), so the same dataset gives
the same card wherever it is packed. `LOADER_EXAMPLE` is the ten-line example of
`docs/loading.md` (a test keeps the two equal).
"""
from __future__ import annotations

LOADER_EXAMPLE = """\
from torch.utils.data import DataLoader
from tasks.dataset.loader import SingingHeadDataset

ds = SingingHeadDataset("processed/release", split="train", sample_rate=16000)  # release folder (make demo's)
item = ds.by_id(ds.ids[0])             # ds.ids: train.txt's clip ids, e.g. id1_1_0_0; or ds[0]
item["motion"]                         # (240,59) float32: exp 50 | global 3 | neck 3 | jaw 3
item["shape"], item["vocal"]           # (100,) FLAME shape; (128000,) float32 singing at 16 kHz
item["bgm"]                            # (128000,) float32 background music at 16 kHz
loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
motion = next(iter(loader))["motion"]  # (8,240,59)
"""

LAYOUT = {
    "tarballs": (
        "Uncompressed tar shards. Extracting every `<name>-NNN.tar` (and `<name>-sequences-NNN.tar`) "
        "gives `SingingHead/` with `train.txt`, `val.txt`, `test.txt`, `video_seqs/<id>.mp4`, "
        "`flame_seqs/<id>.pkl`, `audio_seqs/<id>.wav`, `bgm_seqs/<id>_bgm.wav`, and the extras "
        "`sequences/`, `shapes/`, `metadata.csv`, `manifest.json` and this README.md. A clip's four "
        "files are always in one shard, so any shard is usable alone; the loader reads shards in place."
    ),
    "zips": (
        "The official file set: `train.txt`, `val.txt`, `test.txt` and `video_seqs.zip`, "
        "`flame_seqs.zip`, `audio_seqs.zip`, `bgm_seqs.zip` with the files at each zip's root (stored, "
        "not deflated). The extras (`sequences/`, `shapes/`, `metadata.csv`, `manifest.json`, this "
        "README.md) are in `singinghead_extras.zip`."
    ),
    "webdataset": (
        "WebDataset training shards, one set per split (`train-000000.tar`, ...): each clip's files "
        "share its id as key: `<id>.mp4`, `<id>.pkl`, `<id>.vocal.wav`, `<id>.bgm.wav` and `<id>.json` "
        "(its metadata.csv row). Members are in id order: use a shuffle buffer when training. "
        "`train.txt`, `val.txt`, `test.txt` list the ids; the extras (`sequences/`, `shapes/`, "
        "`metadata.csv`, `manifest.json`, this README.md) are in `<name>-extras-NNN.tar`."
    ),
}


def _models(manifest: dict) -> list[str]:
    out = []
    for m in manifest.get("models", []):
        files = ", ".join(f"`{f.get('name')}` (sha256 {str(f.get('sha256'))[:12]}…)"
                          for f in m.get("files", []))
        used = ", ".join(m.get("used_by", []))
        out.append(f"- {m.get('name')} ({m.get('kind')}; used by {used or '?'})"
                   + (f": {files}" if files else ""))
    return out or ["- none recorded"]


def data_card(manifest: dict, fmt: str, name: str) -> str:
    """README.md text of a release in format `fmt` ('tarballs' | 'zips' | 'webdataset')."""
    ds, counts = manifest.get("dataset", {}), manifest.get("counts", {})
    splits = manifest.get("splits", {})
    per = counts.get("clips_per_split", {})
    stand_ins = manifest.get("stand_ins", [])
    tool = manifest.get("tool", {})
    warn = (
        ["", f"**Built with STAND-IN models ({', '.join(stand_ins)}): this release tests the pipeline and "
         "is not a dataset for research use.**"] if stand_ins else []
    )
    lines = [
        f"# {name}: a 4D singing-head dataset (SingingHead layout)",
        *warn,
        "",
        f"Packed as `{fmt}` by {tool.get('name', 'singinghead')} {tool.get('version', '')}. "
        "Check it with `singinghead verify-release <this folder>` (every file is in SHA256SUMS; "
        "release_manifest.json lists every archive member with its sha256).",
        "",
        "## Motivation",
        "Synchronised singing audio, portrait video and 3D face motion (FLAME parameters) for research "
        "on singing-driven facial animation, in the layout of the published SingingHead dataset so "
        "existing loaders and its official metric code read it unchanged.",
        "",
        "## Composition",
        f"- {counts.get('subjects', '?')} subject(s), {counts.get('sequences_kept', '?')} face-stable "
        f"sequence(s) ({counts.get('sequence_frames', '?')} frames), {counts.get('clips', '?')} clip(s) of "
        f"{ds.get('clip_frames', '?')} frames at {ds.get('fps', '?')} fps.",
        f"- Splits: train {per.get('train', '?')}, val {per.get('val', '?')}, test {per.get('test', '?')} "
        f"clips (target {splits.get('target', {})}, "
        f"{'whole songs per split' if splits.get('by_song') else 'per clip'}, "
        f"seed {splits.get('seed', '?')}).",
        "- Per clip: `video_seqs/<id>.mp4` (H.264 portrait), `flame_seqs/<id>.pkl` ({'shapecode' "
        "(1,100), 'expcodes' (T,50), 'posecodes' (T,9) = global 3 | neck 3 | jaw 3}), "
        "`audio_seqs/<id>.wav` (dry "
        "singing) and `bgm_seqs/<id>_bgm.wav` (background music), both "
        f"{ds.get('audio', '16-bit PCM WAV')}.",
        f"- Ids: {ds.get('numbering', 'id<subject>_<song>_<segment>_<clip>')}.",
        "- 59-dim motion where one is needed: "
        f"{ds.get('motion_59', 'exp 0:50 | global 50:53 | neck 53:56 | jaw 56:59')}.",
        "- Extras: `sequences/<seq_id>/` (every face-stable segment uncut: video.mp4, vocal.wav, bgm.wav, "
        "motion.npz), `shapes/<subject>.npy` (FLAME shape (100,)), `metadata.csv` (one row per clip and "
        "sequence: subject, song, genre, language, gender, professional, frames, source span), "
        "`manifest.json` (tool version, models with file hashes, parameters).",
        "",
        "## Collection",
        "Lab recordings of people singing: a 4K colour video (Azure Kinect), a close microphone for the "
        "dry vocal, the original song and, where available, a light-stage head scan per subject. "
        "Subject attributes (gender, professional singer) and song attributes (genre, language) come "
        "from the capture's subject.json and song.json.",
        "",
        "## Preprocessing",
        "Face-stable segments are cropped to square portraits; the background music is separated from "
        "the original song; per-frame FLAME parameters are estimated, the subject's shape fitted to the "
        "scan, and the motion refined for landmarks and smoothness. Segments shorter than "
        f"{ds.get('min_sequence_seconds', '?')} s are dropped and each sequence is cut into clips from its "
        "start (the remainder is kept in `sequences/` only). Models used:",
        *_models(manifest),
        "",
        "## Uses",
        "Training and evaluating singing-to-face models (the paper's 3D metrics: "
        "`singinghead evaluate PRED_DIR --release DIR`). Not for identifying people, nor for "
        "biometric or surveillance uses. Loading: give the folder that holds this README.md "
        "(`processed/release` where the toolkit builds it):",
        "",
        "```python",
        LOADER_EXAMPLE.rstrip("\n"),
        "```",
        "",
        "## Distribution",
        LAYOUT[fmt],
        "Under the terms the capturing lab sets for its recordings; the subjects' consent governs reuse.",
        "",
        "## Maintenance",
        "Rebuilt from the raw captures by the singinghead pipeline: the same capture and configuration "
        "give byte-identical files. Report problems to the lab that published this release; "
        "`manifest.json` records the parameters needed to reproduce it.",
        "",
    ]
    return "\n".join(lines)
