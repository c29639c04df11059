"""Clip cutting keeps the portraits' GOP: a clip starting on a keyframe is stream-copied with its
keyframes where the source had them; a clip that is not is re-encoded with keyframes every
`[crop] keyframe_interval` from its first frame, like its neighbours (tasks.media.clips)."""

from __future__ import annotations

from dataset_helpers import write_portrait

from tasks import config
from tasks.common.settings import CropSettings, DatasetSettings
from tasks.media import clips as C


def test_clip_keyframes_follow_the_portrait_gop(tmp_path):
    src = tmp_path / "seg.mp4"
    write_portrait(src, 200, keyint=40)
    assert C.index_video(src).keyframes == [0, 40, 80, 120, 160]
    spans = [(0, 120), (40, 120), (20, 120), (80, 120)]
    dsts = [tmp_path / f"c{i}.mp4" for i in range(len(spans))]
    recs = C.cut_video_clips(src, spans, dsts, encoding=C.ClipEncoding(crf=30, preset="veryfast", keyint=40))
    assert [r["method"] for r in recs] == ["stream-copy", "stream-copy", "re-encode", "stream-copy"]
    digests = C.frame_digests(src)
    for (start, n), dst, rec in zip(spans, dsts, recs):
        idx = C.index_video(dst)
        assert idx.frames == n and idx.keyframes == [0, 40, 80], (start, rec["method"], idx.keyframes)
        if rec["method"] == "stream-copy":
            assert C.frame_digests(dst) == digests[start:start + n]


def test_the_fallback_encodes_like_the_portraits():
    crop = CropSettings()
    enc = C.ClipEncoding.of_portraits(crop)
    assert (enc.crf, enc.preset, enc.keyint) == (crop.crf, crop.preset, crop.keyframe_interval)
    assert crop.keyframe_interval == 240  # one keyframe per 8 s clip at 30 fps: every clip stream-copies
    shipped = config.read(CropSettings)  # luigi.cfg as shipped
    assert (shipped.keyframe_interval, config.read(DatasetSettings).clip_frames) == (240, 240)
