"""Hostile and faulty input files (issue 18, items 7-14): FIFOs, devices, bombs, NaN, degenerate scans.

Every read of a file we did not write is bounded (regular files only, sizes checked on the bytes
read), validation refuses what a later stage would, and each failure names the file."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tasks.capture import checks
from tasks.common.errors import PipelineInputError
from tasks.media.audio_io import read_audio
from tasks.scans.scan_io import load_scan

REPO = Path(__file__).resolve().parents[1]
TETRA = "v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nv 0 0 0.1\n"


@contextlib.contextmanager
def no_hang(seconds: int = 10):
    """Fail (instead of blocking the suite) when the body does not return within `seconds`."""
    def _alarm(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def textured_tetra(scan_dir: Path) -> Path:
    """A tiny textured OBJ (with its .mtl and a PNG texture) the scan fit's loader reads."""
    import cv2
    scan_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(scan_dir / "tex.png"), np.full((8, 8, 3), 128, np.uint8))
    (scan_dir / "head.mtl").write_text("newmtl m\nKd 1 1 1\nmap_Kd tex.png\n")
    obj = scan_dir / "head.obj"
    obj.write_text("mtllib head.mtl\n" + TETRA + "vt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\nusemtl m\n"
                   "f 1/1 2/2 3/3\nf 1/1 3/3 4/4\nf 1/1 2/2 4/4\n")
    return obj


def scan_problems(subject: Path) -> list[dict]:
    problems: list[dict] = []
    with no_hang():
        checks.check_scan(subject, problems)
    return checks.errors_of(problems)


# ----------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("fifo", ["landmarks.json", "head.mtl", "tex.png", "scan.json"])
def test_a_fifo_in_the_scan_folder_is_refused_without_blocking(tmp_path, fifo):
    subject = tmp_path / "S001"
    obj = textured_tetra(subject / "scan")
    assert load_scan(obj).texture is not None           # the textured fixture loads as a textured scan
    target = obj.parent / fifo
    target.unlink(missing_ok=True)
    os.mkfifo(target)
    bad = scan_problems(subject)
    assert bad and any("FIFO" in p["problem"] for p in bad), bad
    assert any(p["path"] in (str(target), str(obj)) for p in bad)


def test_a_link_to_a_device_is_refused_by_what_it_is_not_by_its_size(tmp_path):
    from tasks.common.bounded import read_bounded
    link = tmp_path / "landmarks.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(PipelineInputError, match="character device.*not a regular file"):
        read_bounded(link, 1 << 20)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    with pytest.raises(PipelineInputError, match="2000 bytes"):
        read_bounded(big, 1000)
    assert read_bounded(big, 2000) == b" " * 2000


def _run_limited(imports: str, code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`code` in a child whose address space may grow 2 GiB past what `imports` took, for 60 s."""
    script = imports + textwrap.dedent("""
        import os, resource
        vm = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), vm + (2 << 30)))
    """) + code
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_landmarks_linked_to_dev_zero_is_refused_within_bounded_memory(tmp_path):
    """The scan fit's landmark reader (also validate's) on a landmarks.json linked to /dev/zero:
    refused for what it is, in a child that may not grow past 2 GiB (it grew to 22 GB)."""
    lm = tmp_path / "landmarks.json"
    lm.symlink_to("/dev/zero")
    r = _run_limited("from tasks.scans.scan_io import load_scan_landmarks\n", textwrap.dedent(f"""
        from tasks.common.errors import PipelineInputError
        try:
            load_scan_landmarks({str(lm)!r})
        except PipelineInputError as e:
            print("REFUSED", e)
    """), tmp_path)
    assert "REFUSED" in r.stdout and "character device" in r.stdout, r.stdout + r.stderr[-1500:]


# ----------------------------------------------------------------------------- item 9
def test_validate_refuses_what_the_scan_fit_refuses(tmp_path):
    subject = tmp_path / "S001"
    obj = textured_tetra(subject / "scan")
    assert scan_problems(subject) == []
    units = obj.parent / "scan.json"
    units.write_text('{"units": ')
    bad = scan_problems(subject)
    assert [p["path"] for p in bad] == [str(units)] and "not valid JSON" in bad[0]["problem"]
    assert '{"units": "mm"}' in bad[0]["fix"]
    units.write_text('{"units": "furlongs"}')
    assert "furlongs" in scan_problems(subject)[0]["problem"]
    units.write_text('{"units": "mm"}')
    assert scan_problems(subject) == []
    # uncoloured: the fit needs landmarks.json (no texture to find them automatically)
    obj.write_text(TETRA + "f 1 2 3\nf 1 3 4\n")
    bad = scan_problems(subject)
    lm = obj.parent / "landmarks.json"
    assert [p["path"] for p in bad] == [str(lm)] and "neither a texture nor vertex colours" in bad[0]["problem"]
    lm.write_text(json.dumps({"landmarks": np.random.default_rng(0).normal(size=(68, 3)).tolist()}))
    assert scan_problems(subject) == []


# ----------------------------------------------------------------------------- item 10
def test_nan_samples_are_named_in_validation_and_in_reading(tmp_path):
    x = np.zeros((16000, 1), np.float32)
    x[100] = np.nan
    vocal = tmp_path / "vocal.wav"
    sf.write(vocal, x, 16000, subtype="FLOAT")
    problems: list[dict] = []
    assert checks.check_audio(vocal, problems, "dry vocal recording") is None
    assert problems[0]["path"] == str(vocal) and "1 NaN or infinite sample" in problems[0]["problem"]
    with pytest.raises(PipelineInputError, match="NaN or infinite") as e:
        read_audio(vocal)
    assert e.value.path == str(vocal)
    sf.write(vocal, np.zeros((16000, 1), np.float32), 16000, subtype="FLOAT")
    problems = []
    assert checks.check_audio(vocal, problems, "dry vocal recording") is not None and problems == []


# ----------------------------------------------------------------------------- item 11
def test_a_scan_whose_triangles_have_no_area_is_refused(tmp_path):
    subject = tmp_path / "S001"
    obj = textured_tetra(subject / "scan")
    (obj.parent / "landmarks.json").write_text(json.dumps({"landmarks": [[0.0, 0.0, 0.0]] * 68}))
    obj.write_text("v 0 0 0\nv 0.1 0 0\nv 0.2 0 0\nv 0.3 0 0\nf 1 2 3\nf 2 3 4\nf 1 1 2\n")
    bad = scan_problems(subject)
    assert [p["path"] for p in bad] == [str(obj)] and "zero area" in bad[0]["problem"]


# ----------------------------------------------------------------------------- item 14
def test_a_key_given_twice_in_song_json_is_refused(tmp_path):
    song = tmp_path / "song.json"
    song.write_text('{"title": "a", "genre": "folk", "language": "en", "audio_offset_s": 0.5, '
                    '"audio_offset_s": 3.0}')
    problems: list[dict] = []
    assert checks.check_json(song, checks.SONG_KEYS, problems) is None
    assert "'audio_offset_s' is given twice" in problems[0]["problem"]
    from tasks.capture.raw_layout import read_json
    with pytest.raises(PipelineInputError, match="given twice"):
        read_json(song)


# ----------------------------------------------------------------------------- item 8
def _bomb_zip(path: Path, member: str, inflated: int) -> None:
    import zipfile
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        info = zipfile.ZipInfo(member)
        info.external_attr, info.compress_type = 0o100644 << 16, zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(inflated >> 20):
                f.write(block)


def _release_folder(folder: Path, manifest: dict) -> None:
    """SHA256SUMS over the folder's files plus a release_manifest.json (verify-release's entry)."""
    import hashlib
    (folder / "release_manifest.json").write_text(json.dumps(manifest))
    (folder / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted(folder.iterdir()) if p.name != "SHA256SUMS"))


def test_a_zip_bomb_is_refused_by_its_declared_size_before_inflating(tmp_path, monkeypatch):
    import tracemalloc
    from tasks.dataset import loader, verify
    # the bound lowered so a small bomb stands for a 4 MB zip inflating to 4 GB
    monkeypatch.setattr(loader, "MAX_CLIP_FILE_BYTES", 1 << 20)
    monkeypatch.setattr(verify, "MAX_CLIP_FILE_BYTES", 1 << 20)
    _bomb_zip(tmp_path / "flame_seqs.zip", "id0_1_0_0.pkl", 24 << 20)
    for s in ("train", "val", "test"):
        (tmp_path / f"{s}.txt").write_text("id0_1_0_0\n" if s == "train" else "")
    assert (tmp_path / "flame_seqs.zip").stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        ds = loader.SingingHeadDataset(tmp_path, split="train")
        with pytest.raises(PipelineInputError, match=r"inflates to 25165824 bytes.*at most 1048576"):
            ds.flame("id0_1_0_0")
        _release_folder(tmp_path, {"name": "SingingHead", "shards": []})
        problems = verify.verify_release(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert any("flame_seqs.zip:id0_1_0_0.pkl: declares 25165824 bytes" in p for p in problems), problems
    assert peak < 8 << 20, f"peak {peak} bytes"


def test_a_pickle_of_shared_lists_is_refused_quickly(tmp_path):
    import pickle
    rows = [0.0] * 50
    for _ in range(4):
        rows = [rows] * 200          # 1.6e9 floats when expanded, a few kB pickled
    bomb = tmp_path / "id0_1_0_0.pkl"
    bomb.write_bytes(pickle.dumps({"shapecode": [[0.0] * 100], "expcodes": rows, "posecodes": [[0.0] * 9]},
                                  protocol=3))
    r = _run_limited("from tasks.dataset.flame_pickle import load_flame_pickle\n", textwrap.dedent(f"""
        import time
        t = time.time()
        try:
            load_flame_pickle({str(bomb)!r})
        except Exception as e:
            print("REFUSED", type(e).__name__, e)
        print("SECONDS", time.time() - t)
    """), tmp_path)
    assert "REFUSED FlamePickleError" in r.stdout and "expand to more than" in r.stdout, r.stdout + r.stderr[-1500:]
    assert float(r.stdout.split("SECONDS")[1]) < 5


def test_a_prediction_linked_to_dev_zero_is_refused(tmp_path):
    """In a child capped at 2 GiB more than its imports (it was a MemoryError traceback)."""
    link = tmp_path / "id0_1_0_0.pkl"
    link.symlink_to("/dev/zero")
    r = _run_limited("from tasks.dataset.flame_pickle import load_pickle_dict\n", textwrap.dedent(f"""
        from tasks.common.errors import PipelineInputError
        try:
            load_pickle_dict({str(link)!r})
        except PipelineInputError as e:
            print("REFUSED", e)
    """), tmp_path)
    assert "REFUSED" in r.stdout and "character device" in r.stdout, r.stdout + r.stderr[-1500:]


# ----------------------------------------------------------------------------- item 14
def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    import io
    import tarfile
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_the_loader_refuses_a_member_twice_as_verify_release_does(tmp_path):
    from tasks.dataset.loader import SingingHeadDataset
    from tasks.dataset.verify import verify_release
    _tar(tmp_path / "singinghead-000.tar", [("SingingHead/train.txt", b"id0_1_0_0\n"),
                                            ("SingingHead/train.txt", b"id9_9_9_9\n")])
    with pytest.raises(PipelineInputError, match="SingingHead/train.txt.*appears twice"):
        SingingHeadDataset(tmp_path, split="train")
    _release_folder(tmp_path, {"name": "SingingHead", "shards": []})
    assert any("singinghead-000.tar:SingingHead/train.txt: appears twice" in p for p in verify_release(tmp_path))


@pytest.mark.parametrize("manifest", [
    {"name": "SingingHead", "shards": "all"},
    {"name": "SingingHead", "shards": [5, {"file": 3, "files": []}]},
    {"name": 7, "shards": [{"file": "singinghead-000.tar", "files": [{"path": "x", "sha256": 1, "size": "9"}]}]},
    {"name": "SingingHead", "shards": [], "dataset": {"clip_frames": "240", "fps": [30]}},
])
def test_verify_release_reports_a_manifest_of_wrong_types_in_one_line(tmp_path, capsys, manifest):
    from pipeline.cli import main
    _tar(tmp_path / "singinghead-000.tar", [("SingingHead/train.txt", b"")])
    _release_folder(tmp_path, manifest)
    assert main(["verify-release", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "release_manifest.json" in out or "manifest: dataset." in out
    assert "fingerprint" in out


def test_verify_release_prints_the_release_fingerprint(tmp_path, capsys):
    import hashlib
    from pipeline.cli import main
    _tar(tmp_path / "singinghead-000.tar", [("SingingHead/train.txt", b"")])
    _release_folder(tmp_path, {"name": "SingingHead", "shards": []})
    main(["verify-release", str(tmp_path)])
    want = hashlib.sha256((tmp_path / "SHA256SUMS").read_bytes()).hexdigest()
    assert f"fingerprint {want}" in capsys.readouterr().out


# ----------------------------------------------------------------------------- item 13
from test_evaluate import T as EVAL_T, TEST_IDS, _write_preds, model, release  # noqa: E402,F401 (fixtures)


@pytest.mark.parametrize("size", ["7", "0", "-4"])
def test_preview_refuses_a_panel_size_in_one_line(size, capsys):
    from pipeline.cli import main
    assert main(["preview", "S001", "001_a", "0", "--size", size]) == 2
    err = capsys.readouterr().err
    assert f"preview size {size}" in err and "singinghead preview --size" in err
    assert "even number of pixels" in err and "Traceback" not in err


def test_evaluate_refuses_bad_arguments_before_any_work(tmp_path, release, capsys, monkeypatch):
    from pipeline.cli import main
    from pipeline.commands import evaluate as cmd
    root, gt = release
    preds = _write_preds(tmp_path / "p", gt, lambda m: m[None])
    monkeypatch.setattr(cmd, "verify_release", lambda *_: pytest.fail("verified before the arguments"))
    (tmp_path / "outdir").mkdir()
    base = ["evaluate", str(preds), "--release", str(root)]
    assert main(base + ["--out", str(tmp_path / "outdir")]) == 2
    assert "outdir: is a folder" in capsys.readouterr().err
    assert main(base + ["--device", "gpu0", "--out", str(tmp_path / "r.json")]) == 2
    assert "device 'gpu0': is not a torch device name" in capsys.readouterr().err


def test_evaluate_refuses_string_and_overflowing_predictions(tmp_path, release, model):
    from tasks.evaluation.evaluate import evaluate, result_json
    root, gt = release
    strings = _write_preds(tmp_path / "s", gt, lambda m: m[None])
    import pickle
    (strings / f"{TEST_IDS[0]}.pkl").write_bytes(pickle.dumps({"motion": np.full((1, EVAL_T, 59), "a")}))
    with pytest.raises(PipelineInputError, match=r"'motion' holds <U1 values, not numbers"):
        evaluate(strings, root, "test", head_model=model)
    huge = _write_preds(tmp_path / "h", gt, lambda m: np.full((1,) + m.shape, 3e38, np.float32))
    with pytest.raises(PipelineInputError, match=r"values up to 3e\+38"):
        evaluate(huge, root, "test", head_model=model)
    with pytest.raises(ValueError):
        result_json({"metrics": {"lve_mean": float("nan")}})


def test_evaluate_keeps_the_stand_in_head_model_in_the_user_cache(tmp_path, release, monkeypatch, capsys):
    from pipeline.cli import main
    from pipeline.commands import evaluate as cmd
    root, gt = release
    preds = _write_preds(tmp_path / "p", gt, lambda m: m[None])
    monkeypatch.setattr(cmd, "verify_release", lambda *_: [])      # the fixture is a tree without videos
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("tasks.head_model.write_procedural_head_model",
                        lambda d, seed: __import__("flame_fit.procedural", fromlist=["x"])
                        .write_procedural_head_model(d, seed=seed, n_vertices=2000))
    assert main(["evaluate", str(preds), "--release", str(root), "--device", "cpu", "--out", "r.json"]) == 0
    assert sorted(p.name for p in work.iterdir()) == ["r.json"]
    assert list((tmp_path / "cache" / "singinghead" / "_models").glob("procedural_head_*/*"))


def test_a_failed_write_names_the_final_path(tmp_path):
    import errno
    from tasks.common.atomic import atomic_dir, write_bytes_atomic
    from tasks.common.errors import OutputWriteError
    final = tmp_path / "processed" / "S001" / "validation.json"
    with pytest.raises(OutputWriteError, match=f"{final}: cannot be written.*No space left"):
        with __import__("tasks.common.atomic", fromlist=["x"]).atomic_path(final) as tmp:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not final.exists() and list(final.parent.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputWriteError, match=f"{blocker / 'x.json'}: cannot be written"):
        write_bytes_atomic(blocker / "x.json", b"{}")
    with pytest.raises(OutputWriteError, match=f"{tmp_path / 'd'}: cannot be written"):
        with atomic_dir(tmp_path / "d") as tmp:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp / "a"))


# ----------------------------------------------------------------------------- item 11
def test_a_scan_fit_that_misses_its_scan_stops_the_subject_or_ships_flagged(luigi_paths, monkeypatch, tmp_path):
    import dataclasses
    from flame_fit.flame import load_flame
    from flame_fit.procedural import write_procedural_head_model
    from flame_fit.scan_fit import neutral_mesh
    from pipeline.build import config_overrides
    from test_scan_fit import SMALL
    from tasks.dataset.assembly import _scan_fit_flags
    from tasks.layout import Layout
    from tasks.scan_fit import FitScanShape
    raw, _ = luigi_paths
    files = write_procedural_head_model(tmp_path / "head", seed=0, n_vertices=2000)
    model = load_flame(files["model"], files["landmark_embedding"])
    verts, lmk = neutral_mesh(model, np.zeros(100, np.float32))
    # the scan: the model's own neutral head in mm; its landmarks those of another face (scrambled),
    # so no alignment and no shape brings them onto the scan
    scan = raw / "S1" / "scan" / "head.obj"
    scan.parent.mkdir(parents=True)
    (raw / "S1" / "songs").mkdir()
    scan.write_text("".join(f"v {x:.5f} {y:.5f} {z:.5f}\n" for x, y, z in verts * 1000)
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in model.faces.numpy()))
    (scan.parent / "scan.json").write_text('{"units": "mm"}')
    (scan.parent / "landmarks.json").write_text(json.dumps(
        {"landmarks": (lmk[[(7 * i) % 68 for i in range(68)]] * 1000).tolist()}))
    layout = Layout.from_config()
    layout.monocular_shape_npz("S1").parent.mkdir(parents=True, exist_ok=True)
    np.savez(layout.monocular_shape_npz("S1"), shape=np.zeros(100, np.float32))
    monkeypatch.setattr(FitScanShape, "fit_config", dataclasses.replace(
        SMALL, max_iters=20, min_iters=5, probe_iters=5, scale_starts=(1.0,), icp_iters=0, max_points=300))
    with config_overrides(flame={"procedural_model_dir": tmp_path / "head"}):
        with pytest.raises(PipelineInputError, match="did not fit this scan: the fitted landmarks stay") as e:
            FitScanShape(subject="S1").run()
        assert e.value.path == str(scan) and not layout.scan_shape_npy("S1").exists()
        with config_overrides(scan_fit={"on_bad_fit": "flag"}):
            FitScanShape(subject="S1").run()
    report = json.loads((layout.shape_dir("S1") / "report.json").read_text())
    assert report["flagged"] and "mm from the scan's" in report["flagged"][0]
    assert _scan_fit_flags(layout.shape_dir("S1") / "report.json") == report["flagged"]


# ----------------------------------------------------------------------------- item 12
def _video(path: Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt, s.options = "yuv420p", {"preset": "ultrafast", "crf": "10"}
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize("face_px", [0, 13])
def test_a_video_without_a_usable_face_names_the_video(tmp_path, face_px):
    import cv2
    from demo.scan import default_face_photo
    from tasks.common.settings import CropSettings
    from tasks.faces.portrait_video import crop_video
    rng = np.random.default_rng(0)
    frame = rng.integers(90, 110, (360, 640, 3), np.uint8)
    if face_px:          # a real face photo, 13 px high: below what the detector finds
        photo = default_face_photo()
        w = max(1, round(face_px * photo.shape[1] / photo.shape[0]))
        frame[100:100 + face_px, 300:300 + w] = cv2.resize(photo, (w, face_px), interpolation=cv2.INTER_AREA)
    video = _video(tmp_path / "color.mp4", [frame] * 8)
    with pytest.raises(PipelineInputError, match=r"no face was found in any of its 8 frames \(faces smaller "
                                                 r"than about 20 px high") as e:
        crop_video(video, tmp_path / "portrait", CropSettings(output_size=64, landmark_every=2))
    assert e.value.path == str(video) and "at least 20 px high" in e.value.fix
    assert not (tmp_path / "portrait" / "segments.json").exists()


# ----------------------------------------------------------------------------- item 14 / 11: the manifest
def test_links_outside_raw_and_flagged_fits_are_recorded_in_manifest_and_report(luigi_paths, tmp_path):
    from dataset_helpers import make_subject_outputs
    from tasks.assemble import AssembleDataset
    from tasks.layout import Layout
    from tasks.reporting.page import build_report
    raw, processed = luigi_paths
    make_subject_outputs(raw, processed, {"S005": {"001_art_x": [240]}})
    song = raw / "S005" / "songs" / "001_art_x"
    elsewhere = tmp_path / "other_disk" / "001_art_x"
    elsewhere.parent.mkdir()
    song.rename(elsewhere)
    song.symlink_to(elsewhere, target_is_directory=True)
    # validate says so, naming the link and where it goes (a warning: labs link on purpose)
    from tasks.capture.raw_layout import links_outside
    assert links_outside(raw, "S005") == [("S005/songs/001_art_x", elsewhere.resolve())]
    problems, _ = checks.validate_subject(raw / "S005", 30, 1.0)
    warn = [p for p in problems if p["path"] == str(song)]
    assert warn and warn[0]["level"] == "warning" and str(elsewhere) in warn[0]["problem"]
    layout = Layout.from_config()
    report = layout.shape_dir("S005") / "report.json"
    report.write_text(json.dumps({"flagged": ["the fitted landmarks stay 16.7 mm from the scan's"]}))
    manifest = AssembleDataset().assemble()
    assert manifest["flags"] == {"links_outside_raw": {"S005": ["S005/songs/001_art_x"]},
                                 "scan_fit": {"S005": ["the fitted landmarks stay 16.7 mm from the scan's"]}}
    assert str(tmp_path) not in json.dumps(manifest["flags"])
    stats = build_report(layout.dataset_root(), tmp_path / "report", layout, portrait_size=64)
    html = (tmp_path / "report" / "index.html").read_text()
    assert stats["flags"] == manifest["flags"] and "FLAGGED scan_fit of S005" in html

