"""BGM benchmark: quality of the weight-free vocal remover against the mix itself, and the speed of
that remover and of a full-size HTDemucs (random weights: the same cost as the trained model).

Songs are the demo capture's audio (demo.audio, mixed exactly as demo.capture mixes
original.wav: a 48 kHz vocal resampled to 44.1 kHz, +1 dB over the accompaniment), whose true
accompaniment is known; or, with --capture/--truth, the original.wav files of a demo capture on disk
and their demo_truth accompaniment.wav.

SDR here is the plain signal-to-distortion ratio over the whole stereo song,
10*log10(|ref|^2 / |ref - est|^2) in dB (no BSS-eval projection), averaged over songs.
The last line is `BENCH bgm sdr_mix=... sdr_fallback=... sdr_gain_db=... rtf_fallback=... rtf_htdemucs=...`.

    python bench/bgm.py [--seconds 30] [--genres folk rock art hip-hop] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo import audio as demo_audio  # noqa: E402
from tasks.media.audio_io import read_audio, resample  # noqa: E402
from tasks.separation.vocals import RepetParams, weight_free_bgm  # noqa: E402

SR = 44100


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est.astype(np.float64)) ** 2), 1e-20)))


def demo_song(genre: str, seed: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(original (N,2), true accompaniment part (N,2)) at 44.1 kHz, as the demo capture mixes them."""
    plan = demo_audio.song_plan(genre, seed)
    vocal = demo_audio.synth_vocal(seconds, 48000, seed, genre, plan=plan)
    acc = demo_audio.synth_accompaniment(seconds, SR, seed, genre, plan=plan)
    v44 = resample(vocal[:, None], 48000, SR)[: len(acc), 0]
    v44 = np.pad(v44, (0, len(acc) - len(v44)))
    mix, _, acc_part = demo_audio.mix_original(v44, acc, vocal_gain_db=1.0)
    return mix, acc_part


def capture_songs(raw: Path, truth: Path) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    out = []
    for acc_path in sorted(truth.glob("*/*/accompaniment.wav")):
        subject, song = acc_path.parts[-3], acc_path.parts[-2]
        orig = raw / subject / "songs" / song / "original.wav"
        if orig.is_file():
            mix, sr = read_audio(orig)
            acc, _ = read_audio(acc_path)
            n = min(len(mix), len(acc))
            out.append((f"{subject}/{song}", mix[:n], acc[:n], sr))
    return out


def htdemucs_rtf(seconds: float, device: str) -> tuple[float, int]:
    """Real-time factor of the released htdemucs architecture (random weights), shifts=0."""
    import torch
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(["drums", "bass", "other", "vocals"], channels=48, depth=4, nfft=4096, t_layers=5,
                     bottom_channels=512, dconv_mode=3, segment=7.8).eval()
    params = sum(p.numel() for p in model.parameters())
    mix = torch.randn(1, 2, int(seconds * model.samplerate)) * 0.1
    if device == "cuda":   # warm-up: cuDNN autotuning and allocator growth are not per-song costs
        apply_model(model, mix[..., : int(model.segment * model.samplerate)], shifts=0, split=True, device=device)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    apply_model(model, mix, shifts=0, split=True, overlap=0.25, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / seconds, params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each demo song")
    ap.add_argument("--genres", nargs="+", default=["folk", "rock", "art", "hip-hop"])
    ap.add_argument("--capture", type=Path, help="raw/ folder of a demo capture (with --truth)")
    ap.add_argument("--truth", type=Path, help="its demo_truth/ folder")
    ap.add_argument("--htdemucs-seconds", type=float, default=10.0)
    ap.add_argument("--device", default="cpu", help="device for HTDemucs (cpu or cuda)")
    ap.add_argument("--skip-htdemucs", action="store_true")
    args = ap.parse_args(argv)

    if args.capture and args.truth:
        songs = capture_songs(args.capture, args.truth)
        if not songs:
            print(f"no original.wav with a truth accompaniment.wav under {args.capture} / {args.truth}")
            return 1
    else:
        songs = []
        for i, g in enumerate(args.genres):
            mix, acc = demo_song(g, i, args.seconds)
            songs.append((f"{g} (seed {i})", mix, acc, SR))

    p = RepetParams()
    weight_free_bgm(songs[0][1][: 3 * songs[0][3]], songs[0][3], p)    # warm-up: librosa's numba kernels
    print(f"{'song':<24} {'seconds':>8} {'sdr_mix':>8} {'sdr_fallback':>13} {'gain_db':>8} {'rtf':>7}")
    mix_db, fb_db, proc, dur = [], [], 0.0, 0.0
    for name, mix, acc, sr in songs:
        t0 = time.perf_counter()
        est = weight_free_bgm(mix, sr, p)
        dt = time.perf_counter() - t0
        a, b = sdr(acc, mix), sdr(acc, est)
        mix_db.append(a)
        fb_db.append(b)
        proc += dt
        dur += len(mix) / sr
        print(f"{name:<24} {len(mix) / sr:8.1f} {a:8.2f} {b:13.2f} {b - a:8.2f} {dt / (len(mix) / sr):7.3f}")
    rtf_fb = proc / dur
    if args.skip_htdemucs:
        rtf_ht = float("nan")
    else:
        rtf_ht, n_params = htdemucs_rtf(args.htdemucs_seconds, args.device)
        print(f"htdemucs (random weights, {n_params / 1e6:.1f} M params, shifts=0, {args.device}): "
              f"{args.htdemucs_seconds:.0f} s of audio, RTF {rtf_ht:.3f}")
    m, f = float(np.mean(mix_db)), float(np.mean(fb_db))
    print(f"weight-free remover ({p}): mean gain {f - m:.2f} dB over the mix, RTF {rtf_fb:.3f} "
          f"({rtf_ht / rtf_fb:.1f}x faster than htdemucs; htdemucs_ft runs 4 such models)")
    print(f"BENCH bgm sdr_mix={m:.2f} sdr_fallback={f:.2f} sdr_gain_db={f - m:.2f} "
          f"rtf_fallback={rtf_fb:.3f} rtf_htdemucs={rtf_ht:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
