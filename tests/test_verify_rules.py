"""verify-release's content rules, one by one on in-memory clip files (tasks.dataset.verify): each rule
flags what breaks it and only that. The end-to-end release tests are in test_release.py."""

from __future__ import annotations

import io
import pickle

import numpy as np
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.dataset.packing import clip_files
from tasks.dataset.verify import Seen, _check_contents, check_clip_file

FRAMES, SR, FPS = 6, 16000, 30.0
SAMPLES = FRAMES * SR // 30


def _wav(subtype: str, n: int = SAMPLES, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    x = (0.25 * np.sin(np.arange(n) / 7.0)).astype(np.float32)
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


@settings(max_examples=20, deadline=None)
@given(subtype=st.sampled_from(["PCM_U8", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]))
def test_a_wav_that_is_not_16_bit_pcm_is_flagged(subtype):
    assert check_clip_file("audio_seqs/a.wav", _wav("PCM_16"), FRAMES, (SR, FPS)) is None
    why = check_clip_file("audio_seqs/a.wav", _wav(subtype), FRAMES, (SR, FPS))
    assert why is not None and "expected 16-bit PCM WAV" in why and subtype in why


def _pkl(s, e, p) -> bytes:
    return pickle.dumps({"shapecode": s, "expcodes": e, "posecodes": p}, protocol=3)


@settings(max_examples=40, deadline=None)
@given(which=st.integers(0, 2), pos=st.integers(0, 10**6), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_a_pkl_with_one_non_finite_value_is_flagged(which, pos, bad):
    arrays = [np.zeros((1, 100), np.float32), np.zeros((FRAMES, 50), np.float32),
              np.zeros((FRAMES, 9), np.float32)]
    assert check_clip_file("flame_seqs/a.pkl", _pkl(*arrays), FRAMES, (SR, FPS)) is None
    a = arrays[which].reshape(-1)
    a[pos % a.size] = bad
    assert check_clip_file("flame_seqs/a.pkl", _pkl(*arrays), FRAMES, (SR, FPS)) == \
        "pkl holds NaN or infinite values"


def test_a_clip_in_no_split_list_is_flagged_file_by_file():
    seen = Seen()
    seen.small = {"train.txt": b"idA_1_0_0\n", "val.txt": b"", "test.txt": b"idB_1_0_0\n"}
    for cid in ("idA_1_0_0", "idB_1_0_0", "idC_1_0_0"):
        for rel in clip_files(cid):
            seen.where[rel] = f"x.tar:SingingHead/{rel}"
    problems: list[str] = []
    _check_contents(seen, FRAMES, problems, "rel")
    assert sorted(problems) == sorted(f"x.tar:SingingHead/{rel}: clip idC_1_0_0 is in no split list"
                                      for rel in clip_files("idC_1_0_0"))
