"""`singinghead preview` on a tiny generated segment: a side-by-side MP4 with landmarks and the mesh."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from flame_fit.flame import load_flame
from flame_fit.procedural import EMBEDDING_FILE, MODEL_FILE, write_procedural_head_model
from flame_fit.render import render_mesh
from pipeline.build import config_overrides
from demo.synthetic_motion import MotionSpec, generate_sequence
from pipeline.cli import main
from tasks.common.errors import PipelineInputError
from tasks.head_model import _CACHE
from tasks.layout import Layout
from tasks.reporting.preview import (FigureStrip, draw_legend, head_yaw_deg, jaw_opening_deg, posed_vertices,
                                     preview_size)
from flame_fit.camera import ndc_to_pixels, orth_project
from flame_fit.refine import RefineParams, clean_landmarks
from tasks import config
from tasks.common.settings import RefineSettings
from scipy import ndimage

SIZE = 256        # portrait size of the fixture (the crop stage's output_size)


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preview_head")
    write_procedural_head_model(folder, seed=0, n_vertices=1500)
    return folder


def _cli(argv):
    """The `singinghead` command line; --debug: errors raise instead of becoming one line."""
    return main(argv + ["--debug"])


def _write_segment(model, subject="S001", song="001_test", T=6):
    """frames npz, motion npz (the truth as the 'refined' motion), segments.json and a grey portrait video."""
    layout = Layout.from_config()
    seq = generate_sequence(model, MotionSpec(frames=T, image_size=SIZE), seed=1)
    tr = seq.truth
    frames = layout.frames_npz(subject, song, 0)
    frames.parent.mkdir(parents=True)
    np.savez(frames, **seq.frames)
    motion = layout.motion_npz(subject, song, 0)
    motion.parent.mkdir(parents=True)
    np.savez(motion, expression=tr["expression"], global_orient=tr["global_orient"],
             neck_pose=tr["neck_pose"], jaw_pose=tr["jaw_pose"], cam=tr["cam"], shape=tr["shape"],
             fps=np.float32(30))
    pdir = layout.portrait_dir(subject, song)
    pdir.mkdir(parents=True)
    (pdir / "segments.json").write_text('{"segments": [{"index": 0, "start_frame": 0, "end_frame": %d, '
                                        '"video": "segment_000.mp4"}]}' % T)
    with av.open(str(pdir / "segment_000.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width = s.height = SIZE
        s.pix_fmt = "yuv420p"
        for _ in range(T):
            grey = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), 90, np.uint8), format="rgb24")
            for p in s.encode(grey):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return seq


def test_render_mesh_shades_only_where_the_head_is(head_dir):
    model = load_flame(head_dir / MODEL_FILE, head_dir / EMBEDDING_FILE)
    seq = generate_sequence(model, MotionSpec(frames=2, image_size=64), seed=0)
    tr = seq.truth
    with torch.no_grad():
        f = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        v = model(f(tr["shape"])[None], f(tr["expression"][:1]), f(tr["global_orient"][:1]),
                  f(tr["neck_pose"][:1]), f(tr["jaw_pose"][:1])).vertices[0].numpy()
    img = render_mesh(v, model.faces.numpy(), tr["cam"][0], 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    bg = np.all(img == img[0, 0], axis=-1)
    # the face's landmarks fall on shaded pixels, the corners on background
    lm = np.clip(tr["landmarks"][0].astype(int), 0, 63)
    assert (~bg[lm[:, 1], lm[:, 0]]).mean() > 0.9
    assert bg[0, 0] and bg[-1, -1]
    assert len(np.unique(img[~bg].reshape(-1, 3), axis=0)) > 20       # shading varies over the surface


def test_preview_command_writes_side_by_side_mp4(luigi_paths, head_dir, tmp_path):
    # the command previews only segments long enough to be refined: the 6-frame fixture is exactly the
    # minimum (0.2 s at 30 fps), which counts
    with config_overrides(flame={"model_path": "", "procedural_model_dir": head_dir},
                       crop={"output_size": SIZE}, dataset={"min_sequence_seconds": 0.2}):
        _CACHE.clear()
        try:
            model = load_flame(head_dir / MODEL_FILE, head_dir / EMBEDDING_FILE)
            _write_segment(model)
            out = tmp_path / "p.mp4"
            assert _cli(["preview", "S001", "001_test", "0", "--out", str(out), "--size", "128"]) == 0
            with av.open(str(out)) as c:
                frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            assert len(frames) == 6
            assert frames[0].shape == (preview_size(128)[1], 128, 3)
            top = frames[0][:128].astype(int)
            # green (detected) and red (model) dots on the grey portrait
            assert ((top[..., 1] > 150) & (top[..., 0] < 120)).sum() > 20
            assert ((top[..., 0] > 150) & (top[..., 1] < 120)).sum() > 20
            with pytest.raises(PipelineInputError, match="no segment 3"):
                _cli(["preview", "S001", "001_test", "3", "--out", str(out)])
        finally:
            _CACHE.clear()


def test_preview_overlays_the_mesh_where_it_projects(luigi_paths, head_dir, tmp_path):
    """On a plain grey portrait, the mesh tints exactly the pixels the fitted head's vertices project to
    (the camera of ARCHITECTURE.md), nothing far from them; the figures under it mark each frame."""
    panel = 128
    with config_overrides(flame={"model_path": "", "procedural_model_dir": head_dir},
                          crop={"output_size": SIZE}, dataset={"min_sequence_seconds": 0.1}):
        _CACHE.clear()
        try:
            model = load_flame(head_dir / MODEL_FILE, head_dir / EMBEDDING_FILE)
            seq = _write_segment(model)
            out = tmp_path / "p.mp4"
            assert _cli(["preview", "S001", "001_test", "0", "--out", str(out), "--size", str(panel)]) == 0
            with av.open(str(out)) as c:
                frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
        finally:
            _CACHE.clear()
    tr = seq.truth
    motion = {k: tr[k] for k in ("shape", "expression", "global_orient", "neck_pose", "jaw_pose")}
    verts = posed_vertices(model, motion, 0, len(frames))
    cams = torch.as_tensor(tr["cam"][:len(frames)], dtype=torch.float32)
    px = ndc_to_pixels(orth_project(torch.as_tensor(verts), cams), panel).numpy()
    x0, y0, x1, y1 = draw_legend(np.zeros((panel, panel, 3), np.uint8))
    outside_legend = np.ones((panel, panel), bool)
    outside_legend[y0:y1 + 2, x0:x1 + 2] = False
    yaw = head_yaw_deg(tr["global_orient"], tr["neck_pose"])
    strip = FigureStrip((("yaw", "", yaw, (255, 200, 60)), ("jaw", "", jaw_opening_deg(tr["jaw_pose"]),
                                                            (230, 110, 230))),
                        panel, preview_size(panel)[1] - panel)
    smoothed, _ = clean_landmarks(np.asarray(seq.frames["landmarks"], np.float64),
                                  np.asarray(seq.frames["landmark_ok"], bool),
                                  RefineParams(smooth_weight=config.read(RefineSettings).smooth_weight))
    for t, frame in enumerate(frames):
        top = frame[:panel]
        # the portrait is grey; the mesh's light blue, however shaded, leaves blue above red
        tinted = top[..., 2] - top[..., 0] > 8
        ij = np.round(px[t] - 0.5).astype(int)                     # pixel centres at +0.5
        ij = ij[(ij >= 0).all(1) & (ij < panel).all(1)]
        on_vertex = np.zeros((panel, panel), bool)
        on_vertex[ij[:, 1], ij[:, 0]] = True
        # the landmark dots (true, detected and smoothed-detected positions, within a few pixels of them)
        # hide the mesh; the preview smooths with [refine] smooth_weight
        dots = np.zeros((panel, panel), bool)
        for lm in (tr["landmarks"][t], seq.frames["landmarks"][t], smoothed[t]):
            d = np.clip(np.round(lm * panel / SIZE - 0.5).astype(int), 0, panel - 1)
            dots[d[:, 1], d[:, 0]] = True
        # a 7x7 square round each dot centre: a 3-step cross-shaped dilation left the anti-aliased corners
        # of the dots (drawn at three positions now that the preview smooths with smooth_weight 2) unmasked
        free = outside_legend & ~ndimage.binary_dilation(dots, structure=np.ones((3, 3), bool), iterations=3)
        assert tinted[on_vertex & free].mean() > 0.93
        # 4 px: the x264 halo of the silhouette's outline reaches 3-4 px past the outermost vertices
        # (tinted share beyond 3 px: up to 0.0073 with procedural head v1, 0.0113 with v2; beyond 4 px:
        # up to 0.0039 and 0.0047)
        near = ndimage.binary_dilation(on_vertex, iterations=4)
        assert tinted[~near & free].mean() < 0.01
        assert tinted[free].mean() > 0.1                           # a head, not a few dots
        # the figure strip: its brightest column (the cursor) is this frame's
        cursor = np.argmax((frame[panel:].min(axis=2) > 150).sum(axis=0))
        assert abs(cursor - int(strip.column(t))) <= 1


def test_figure_strip_draws_the_values():
    t = np.arange(40)
    yaw = 20 * np.sin(t / 6.0)
    jaw = np.clip(15 * np.sin(t / 4.0), 0, None)
    strip = FigureStrip((("yaw", " deg", yaw, (255, 200, 60)), ("jaw", " deg", jaw, (230, 110, 230))),
                        300, 120)
    for k in (0, 13, 39):
        img = strip.frame(k).astype(int)
        for i, (values, color) in enumerate(((yaw, (255, 200, 60)), (jaw, (230, 110, 230)))):
            x, y = int(strip.column(k)), int(strip.row(i, values[k]))
            patch = img[y - 2:y + 3, x - 2:x + 3]
            assert (np.abs(patch - color).sum(-1) < 60).any()        # the curve and marker pass there
            assert i * 60 <= y < (i + 1) * 60                        # in its own row
    # higher values higher up
    assert strip.row(0, yaw.max()) < strip.row(0, 0.0) < strip.row(0, yaw.min())
    # yaw of the whole head (global o neck), jaw opening about x
    assert head_yaw_deg(np.array([[0, 0.2, 0]]), np.array([[0, 0.1, 0]]))[0] == pytest.approx(np.degrees(0.3))
    assert jaw_opening_deg(np.array([[0.25, 0, 0]]))[0] == pytest.approx(np.degrees(0.25))


# ----------------------------------------------------------------------------- by dataset id
def _left_panels(path):
    """The portraits (the square on top) of a preview's frames."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return [f[: f.shape[1]].astype(int) for f in frames]


def _white_row(img):
    """The row of the fixture portrait drawn white (frame i of a segment video has row i % 64 white)."""
    return int(np.argmax(img.min(axis=2).mean(axis=1)))


def test_preview_by_clip_or_sequence_id_from_metadata(luigi_paths, head_dir, tmp_path, capsys):
    from dataset_helpers import SIZE as PORTRAIT, make_subject_outputs
    from tasks.assemble import AssembleDataset
    from tasks.dataset.metadata import read_metadata

    raw, processed = luigi_paths
    with config_overrides(flame={"model_path": "", "procedural_model_dir": head_dir},
                          crop={"output_size": PORTRAIT}):
        _CACHE.clear()
        try:
            make_subject_outputs(raw, processed)
            AssembleDataset().assemble()
            rows = read_metadata(Layout.from_config().dataset_root())
            # ids as the dataset wrote them: a clip that starts inside its segment, and its sequence
            clip = next(r for r in rows if r["kind"] == "clip" and int(r["seq_start_frame"]) > 0)
            seq = next(r for r in rows if r["kind"] == "sequence" and r["subject"] == clip["subject"]
                       and r["song"] == clip["song"] and r["source_segment"] == clip["source_segment"])
            offset = int(clip["seq_start_frame"])
            out = tmp_path / "clip.mp4"
            assert _cli(["preview", clip["id"], "--out", str(out), "--size", str(PORTRAIT),
                         "--max-frames", "3"]) == 0
            assert f"clip {clip['id']}: frames {offset}-{offset + int(clip['frames'])}" in capsys.readouterr().out
            left = _left_panels(out)
            assert len(left) == 3
            # the clip's frames, not the segment's first ones
            assert [_white_row(f) for f in left] == [(offset + t) % PORTRAIT for t in range(3)]

            out = tmp_path / "seq.mp4"
            assert _cli(["preview", seq["id"], "--out", str(out), "--size", str(PORTRAIT), "--max-frames", "2"]) == 0
            assert [_white_row(f) for f in _left_panels(out)] == [0, 1]
            # the three-positional form previews the same segment
            out3 = tmp_path / "three.mp4"
            assert _cli(["preview", seq["subject"], seq["song"], seq["source_segment"], "--out", str(out3),
                         "--size", str(PORTRAIT), "--max-frames", "2"]) == 0
            assert out3.read_bytes() == out.read_bytes()
            # default output in previews/ (never into a stage's motion/), named after the id
            assert _cli(["preview", clip["id"], "--size", str(PORTRAIT), "--max-frames", "1"]) == 0
            lay = Layout.from_config()
            assert lay.dataset_preview(clip["id"]).is_file()
            assert lay.dataset_preview(clip["id"]).parent == lay.processed / "previews"
            assert not list(lay.motion_dir(clip["subject"], clip["song"]).glob("*.mp4"))
            # the clip's first frame
            assert [_white_row(f) for f in _left_panels(lay.dataset_preview(clip["id"]))] == [offset % PORTRAIT]

            # errors: one line naming the file and the fix, exit 2
            capsys.readouterr()
            assert main(["preview", "id999_9_9_9"]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "metadata.csv" in err and "id999_9_9_9" in err
            assert any(r["id"] in err for r in rows if r["kind"] == "sequence")  # names ids that exist
            assert any(r["id"] in err for r in rows if r["kind"] == "clip")
            with pytest.raises(PipelineInputError, match="SONG given without SEGMENT"):
                _cli(["preview", seq["subject"], seq["song"]])
            short = next((r["subject"], r["song"], s["index"]) for r in rows
                         for s in lay.load_segments(r["subject"], r["song"])
                         if s["end_frame"] - s["start_frame"] < 90)
            assert main(["preview", short[0], short[1], str(short[2])]) == 2
            assert "never refined" in capsys.readouterr().err
        finally:
            _CACHE.clear()


def test_preview_by_id_without_a_dataset_names_metadata_csv(luigi_paths, capsys):
    assert main(["preview", "id1_1_0_0"]) == 2
    err = capsys.readouterr().err
    assert "metadata.csv" in err and "no assembled dataset" in err and "SUBJECT SONG SEGMENT" in err
