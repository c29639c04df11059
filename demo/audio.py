"""Synthetic singing for the demo capture and the BGM benchmark: a dry sung vocal, a genre-dependent
accompaniment (drums, bass, chords), and the vocal's loudness envelope per video frame.

Everything is a plain function of (duration, sample rate, seed, genre), so the demo's true stems are
known exactly. The synthesis is hand-written (additive voice with formant weighting, simple drum
and bass models) because no installed library synthesises singing; numpy/scipy do the numerics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

GENRES = ("art", "country", "hip-hop", "rock", "folk", "rnb", "theater", "march")

# Tempo (BPM) and groove per genre: (bpm, swing 0..1, hat subdivisions per beat, kick pattern per bar
# in 8th notes, snare pattern per bar in 8th notes).
_GENRE_STYLE = {
    "art":     (72, 0.0, 1, (1, 0, 0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0, 0, 0)),
    "country": (104, 0.0, 2, (1, 0, 0, 0, 1, 0, 0, 0), (0, 0, 1, 0, 0, 0, 1, 0)),
    "hip-hop": (90, 0.35, 4, (1, 0, 0, 1, 0, 1, 0, 0), (0, 0, 1, 0, 0, 0, 1, 0)),
    "rock":    (132, 0.0, 2, (1, 0, 1, 0, 1, 0, 1, 0), (0, 0, 1, 0, 0, 0, 1, 0)),
    "folk":    (86, 0.15, 2, (1, 0, 0, 0, 1, 0, 0, 0), (0, 0, 0, 0, 0, 0, 1, 0)),
    "rnb":     (76, 0.3, 4, (1, 0, 0, 1, 0, 0, 1, 0), (0, 0, 1, 0, 0, 0, 1, 0)),
    "theater": (110, 0.0, 2, (1, 0, 0, 0, 1, 0, 0, 0), (0, 0, 1, 0, 0, 0, 1, 1)),
    "march":   (120, 0.0, 2, (1, 0, 1, 0, 1, 0, 1, 0), (0, 1, 1, 1, 0, 1, 1, 1)),
}
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
# Diatonic chord roots (scale degrees) of a few common progressions.
_PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 4), (5, 3, 0, 4))
# Vowel formants (Hz) and bandwidths: a, e, i, o, u (sung, roughly soprano/alto).
_VOWELS = np.array([[800, 1150, 2900], [400, 1600, 2700], [350, 2300, 3000],
                    [450, 800, 2830], [325, 700, 2530]], dtype=np.float64)
_FORMANT_BW = np.array([80.0, 90.0, 120.0])
_FORMANT_GAIN = np.array([1.0, 0.5, 0.25])


@dataclass(frozen=True)
class SongPlan:
    """The musical skeleton shared by vocal and accompaniment: tempo, key, chords."""
    genre: str
    bpm: float
    key_midi: int           # tonic of the major key (MIDI note of the vocal range)
    progression: tuple      # scale degrees, one chord per bar
    swing: float


def song_plan(genre: str, seed: int) -> SongPlan:
    """Tempo from the genre (+-4 BPM jitter), key and progression from the seed."""
    if genre not in _GENRE_STYLE:
        raise ValueError(f"unknown genre {genre!r}; expected one of {GENRES}")
    rng = np.random.default_rng([seed, 101])
    bpm, swing = _GENRE_STYLE[genre][0], _GENRE_STYLE[genre][1]
    return SongPlan(genre=genre, bpm=float(bpm + rng.integers(-4, 5)), key_midi=int(57 + rng.integers(0, 8)),
                    progression=_PROGRESSIONS[int(rng.integers(0, len(_PROGRESSIONS)))], swing=float(swing))


def _midi_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def _scale_note(plan: SongPlan, degree: int, octave: int = 0) -> int:
    o, d = divmod(int(degree), 7)
    return plan.key_midi + 12 * (o + octave) + int(_MAJOR[d])


# ----------------------------------------------------------------------------- vocal
def vocal_notes(plan: SongPlan, duration: float, seed: int) -> list[tuple[float, float, int, int]]:
    """The melody as (start_s, dur_s, midi, vowel) notes: 2-bar phrases separated by rests.

    Phrases start on a bar, fill 5-7 beats with notes of 1/2 to 2 beats, then rest for the remaining
    1-3 beats (the singer breathes), so the loudness envelope has clear silences.
    """
    rng = np.random.default_rng([seed, 202])
    beat = 60.0 / plan.bpm
    notes = []
    t = beat * float(rng.integers(1, 4))          # a short instrumental lead-in
    bar = 0
    while t < duration:
        sung_beats = float(rng.integers(5, 8))
        end = t + sung_beats * beat
        chord_root = plan.progression[bar % len(plan.progression)]
        degree = chord_root + int(rng.choice([0, 2, 4]))
        while t < min(end, duration):
            d = beat * float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
            d = min(d, end - t)
            degree = int(np.clip(degree + rng.choice([-2, -1, -1, 0, 1, 1, 2]), -3, 9))
            notes.append((t, d, _scale_note(plan, degree), int(rng.integers(0, len(_VOWELS)))))
            t += d
        t = end + beat * float(8 - sung_beats)    # rest to the next 2-bar boundary
        bar += 2
    return notes


def synth_vocal(duration: float, sr: int, seed: int, genre: str = "folk",
                plan: SongPlan | None = None) -> np.ndarray:
    """A dry sung vocal: (N,) float32 mono in [-1, 1], N = round(duration * sr).

    Additive voice: harmonics of a gliding f0 (portamento between notes, delayed vibrato 5-6 Hz, slow
    drift), each weighted by three vowel formants that change per note; note envelopes with attack
    and release; a little breath noise while singing. Rests are silent.
    """
    plan = plan or song_plan(genre, seed)
    n = int(round(duration * sr))
    rng = np.random.default_rng([seed, 303])
    notes = vocal_notes(plan, duration, seed)
    hop = 64                                     # control rate for f0, loudness and formants
    nc = n // hop + 2
    tc = np.arange(nc) * hop / sr
    midi = np.full(nc, np.nan)
    amp = np.zeros(nc)
    vowel = np.zeros((nc, 3))
    vowel[:] = _VOWELS[0]
    onset = np.zeros(nc)                         # time since note start (for vibrato onset)
    for (t0, d, m, v) in notes:
        sel = (tc >= t0) & (tc < t0 + d)
        midi[sel] = m
        onset[sel] = tc[sel] - t0
        vowel[sel] = _VOWELS[v]
        att, rel = 0.04, min(0.12, 0.4 * d)
        x = tc[sel] - t0
        env = np.minimum(1.0, x / att) * np.clip((t0 + d - tc[sel]) / rel, 0.0, 1.0) ** 0.7
        accent = 0.4 + 0.6 * rng.random()       # note-to-note dynamics (up to -8 dB)
        amp[sel] = np.maximum(amp[sel], env * accent)
    # Hold the last pitch through rests so the glide into the next note starts somewhere sensible.
    valid = ~np.isnan(midi)
    if valid.any():
        idx = np.where(valid, np.arange(nc), 0)
        np.maximum.accumulate(idx, out=idx)
        midi = np.where(valid, midi, midi[idx])
        midi[np.isnan(midi)] = midi[valid][0]
    else:
        midi[:] = plan.key_midi
    # Portamento: a one-pole glide (~40 ms) in the pitch domain.
    b, a = signal.butter(1, 1.0 / (0.04 * sr / hop) / np.pi)
    midi = signal.filtfilt(b, a, midi)
    vib_depth = 0.35 * np.clip((onset - 0.25) / 0.3, 0.0, 1.0)        # semitones, after 250 ms
    vib = vib_depth * np.sin(2 * np.pi * (5.5 + 0.3 * np.sin(tc * 0.7)) * tc)
    drift = 0.08 * np.sin(2 * np.pi * 0.23 * tc + rng.random() * 6)
    f0c = _midi_hz(midi + vib + drift)
    amp = signal.filtfilt(*signal.butter(2, min(0.99, 2 * 30.0 * hop / sr)), amp)   # 30 Hz smoothing
    amp = np.clip(amp, 0.0, None)
    vowel = signal.filtfilt(*signal.butter(1, min(0.99, 2 * 12.0 * hop / sr)), vowel, axis=0)

    ts = np.arange(n) / sr
    f0 = np.interp(ts, tc, f0c)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(n)
    n_harm = int(min(40, (0.45 * sr) // f0c.max()))
    for k in range(1, n_harm + 1):
        fk = k * f0c
        gain = np.zeros(nc)
        for j in range(3):
            gain += _FORMANT_GAIN[j] / (1.0 + ((fk - vowel[:, j]) / _FORMANT_BW[j]) ** 2)
        gain = (gain + 0.02) / k ** 0.6 * (fk < 0.45 * sr)
        out += np.interp(ts, tc, gain) * np.sin(k * phase)
    env = np.interp(ts, tc, amp)
    breath = signal.lfilter(*signal.butter(2, [2000 / (sr / 2), 6000 / (sr / 2)], "band"),
                            rng.standard_normal(n))
    out = env * (out + 0.04 * breath)
    peak = np.abs(out).max()
    if peak > 0:
        out *= 0.5 / peak
    return out.astype(np.float32)


def loudness_envelope(x: np.ndarray, sr: int, fps: float, n_frames: int, start_s: float = 0.0,
                      floor_db: float = -40.0, top_db: float = -2.0) -> np.ndarray:
    """Per video frame loudness in [0, 1]: (n_frames,) float32.

    Frame t covers samples [round((start_s + t/fps) * sr), round((start_s + (t+1)/fps) * sr)) of `x`
    ((N,) or (N, C)); its RMS in dB relative to the signal's peak RMS is mapped linearly from
    [floor_db, top_db] to [0, 1]. Frames outside the signal are 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    edges = np.round((start_s + np.arange(n_frames + 1) / fps) * sr).astype(np.int64)
    edges = np.clip(edges, 0, len(x))
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    rms = np.sqrt(np.maximum(c[edges[1:]] - c[edges[:-1]], 0.0) / counts)
    rms[edges[1:] <= edges[:-1]] = 0.0
    ref = rms.max() if rms.max() > 0 else 1.0
    db = 20 * np.log10(np.maximum(rms / ref, 1e-9))
    return np.clip((db - floor_db) / (top_db - floor_db), 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- accompaniment
def _place(track: np.ndarray, sound: np.ndarray, start: int) -> None:
    if start >= len(track) or start < 0:
        return
    m = min(len(sound), len(track) - start)
    track[start:start + m] += sound[:m]


def _kick(sr):
    t = np.arange(int(0.35 * sr)) / sr
    f = 50 + 90 * np.exp(-t / 0.03)
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / 0.12)


def _snare(sr, rng):
    t = np.arange(int(0.25 * sr)) / sr
    noise = signal.lfilter(*signal.butter(2, [1500 / (sr / 2), 8000 / (sr / 2)], "band"),
                           rng.standard_normal(len(t)))
    return (0.7 * noise * np.exp(-t / 0.06) + 0.4 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.04))


def _hat(sr, rng):
    t = np.arange(int(0.06 * sr)) / sr
    noise = signal.lfilter(*signal.butter(2, 7000 / (sr / 2), "high"), rng.standard_normal(len(t)))
    return noise * np.exp(-t / 0.015)


def _tone(freq, dur, sr, harmonics=6, decay=None, bright=1.0):
    t = np.arange(int(dur * sr)) / sr
    y = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        if k * freq < 0.45 * sr:
            y += np.sin(2 * np.pi * k * freq * t) / k ** (1.6 / bright)
    env = np.minimum(1.0, t / 0.01) * np.minimum(1.0, (dur - t) / 0.03).clip(0, 1)
    if decay:
        env = env * np.exp(-t / decay)
    return y * env


def synth_accompaniment(duration: float, sr: int, seed: int, genre: str = "folk",
                        plan: SongPlan | None = None) -> np.ndarray:
    """Drums, bass and chords at the genre's tempo: (N, 2) float32 stereo, N = round(duration * sr).

    Kick and bass are centred; hats lean right, snare slightly left; chord voices are spread left and
    right with a short inter-channel delay so the accompaniment has stereo width (a centred vocal can
    then be told apart from it).
    """
    plan = plan or song_plan(genre, seed)
    _, _, hat_div, kick_pat, snare_pat = _GENRE_STYLE[plan.genre]
    n = int(round(duration * sr))
    rng = np.random.default_rng([seed, 404])
    beat = 60.0 / plan.bpm
    left, right = np.zeros(n), np.zeros(n)
    kick, hat = _kick(sr), _hat(sr, rng)
    snares = [_snare(sr, rng) for _ in range(4)]
    n_bars = int(np.ceil(duration / (4 * beat))) + 1
    for bar in range(n_bars):
        t_bar = bar * 4 * beat
        degree = plan.progression[bar % len(plan.progression)]
        for e in range(8):                       # 8th-note grid with swing on the off-beats
            t = t_bar + e * beat / 2 + (plan.swing * beat / 6 if e % 2 else 0.0)
            s = int(round(t * sr))
            if kick_pat[e]:
                _place(left, 0.9 * kick, s)
                _place(right, 0.9 * kick, s)
            if snare_pat[e]:
                sn = snares[(bar + e) % 4] * (0.45 if plan.genre == "march" and e % 2 else 0.6)
                _place(left, 0.7 * sn, s)
                _place(right, 0.5 * sn, s)
        for h in range(4 * hat_div):
            t = t_bar + h * beat / hat_div + (plan.swing * beat / 6 if (h % 2 and hat_div > 1) else 0.0)
            g = 0.18 * (1.0 if h % hat_div == 0 else 0.6) * (0.85 + 0.3 * rng.random())
            s = int(round(t * sr))
            _place(left, 0.4 * g * hat, s)
            _place(right, g * hat, s)
        # Bass: root on beats (root-fifth for march/country), an octave below the chord.
        root = _scale_note(plan, degree, octave=-2)
        for b in range(4):
            note = root + (7 if plan.genre in ("march", "country") and b % 2 else 0)
            tone = 0.5 * _tone(_midi_hz(note), beat * 0.9, sr, harmonics=5, decay=beat * 0.8)
            s = int(round((t_bar + b * beat) * sr))
            _place(left, tone, s)
            _place(right, tone, s)
        # Chords: a triad, re-struck on each half bar, voices panned apart with a Haas delay.
        for half in range(2):
            s = int(round((t_bar + half * 2 * beat) * sr))
            for v, deg in enumerate((degree, degree + 2, degree + 4)):
                tone = 0.16 * _tone(_midi_hz(_scale_note(plan, deg, octave=-1)), 2 * beat, sr, harmonics=8,
                                    decay=1.5 * beat, bright=1.3)
                pan = (-0.7, 0.0, 0.7)[v]
                delay = int(0.012 * sr) if v != 1 else 0
                _place(left, tone * np.sqrt((1 - pan) / 2) * 1.4, s + (delay if pan > 0 else 0))
                _place(right, tone * np.sqrt((1 + pan) / 2) * 1.4, s + (delay if pan < 0 else 0))
    out = np.stack([left, right], axis=1)
    peak = np.abs(out).max()
    if peak > 0:
        out *= 0.5 / peak
    return out.astype(np.float32)


def mix_original(vocal: np.ndarray, accompaniment: np.ndarray, vocal_gain_db: float = 0.0,
                 peak: float = 0.89) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre the mono vocal over the stereo accompaniment (same rate and length).

    Returns (original (N,2), vocal_part (N,2), accompaniment_part (N,2)) float32 with
    original == vocal_part + accompaniment_part, scaled together so the mix peaks at `peak`.
    """
    n = min(len(vocal), len(accompaniment))
    v = np.repeat(vocal[:n, None].astype(np.float64), 2, axis=1) * 10 ** (vocal_gain_db / 20)
    a = accompaniment[:n].astype(np.float64)
    mix = v + a
    g = peak / max(np.abs(mix).max(), 1e-9)
    return (mix * g).astype(np.float32), (v * g).astype(np.float32), (a * g).astype(np.float32)
