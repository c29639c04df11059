"""Background music (BGM) of each song: the capture's accompaniment, Demucs, or a weight-free stand-in.

Plain code (the `SeparateBGM` stage in `tasks.bgm` and the `separate-bgm` command call it).
Three ways, chosen in this order by `separate_song_bgm`:
1. `accompaniment.wav` in the song folder: that is the BGM (re-encoded as float32, no separation).
2. `[bgm] demucs_repo` set: Demucs (`[bgm] demucs_model`, default htdemucs_ft) loaded offline from
   that folder (demucs.pretrained.get_model's layout, but each .th read by torch.load with
   weights_only=True and an allow-list of the Demucs model classes); BGM = the sum of the
   non-vocal stems (the demucs CLI's `--two-stems vocals` "add" method).
3. Otherwise the weight-free vocal remover (REPET-SIM on the mid channel, side passed through),
   a stand-in that is named as such in logs and in `bgm.json`.

Arrays are (T, C) float32 ("frames x channels") unless a docstring says otherwise; demucs's own
tensors are (C, T) / (B, S, C, T).
"""
from __future__ import annotations

import inspect
import logging
import pickle
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import yaml

from tasks.capture import raw_layout as R
from tasks.common.atomic import file_sha256, write_json_atomic
from tasks.common.bounded import MAX_JSON_BYTES, MAX_MODEL_BYTES, check_regular_file, read_bounded
from tasks.common.errors import ModelFileError, PipelineInputError
from tasks.common.progress import Progress
from tasks.common.provenance import model_record
from tasks.common.settings import BgmSettings, recorded_params
from tasks.media.audio_io import audio_info, read_audio, resample, resampled_length, write_wav

log = logging.getLogger("singinghead")

FALLBACK_NAME = "weight-free vocal remover (REPET-SIM mid + side passthrough), not Demucs"
VOCAL_STEM = "vocals"
OUTPUT_SUBTYPE = "FLOAT"         # float32: no clipping of stem sums above full scale, no rescaling

# Demucs inference settings. shifts=0: no random time shifts, so reruns give the same bytes.
DEMUCS_SHIFTS = 0
DEMUCS_OVERLAP = 0.25            # apply_model's own split overlap inside each chunk (its default)
CHUNK_OVERLAP_S = 5.0            # crossfade between our chunks (each chunk's edges are zero-padded by demucs)


# ----------------------------------------------------------------------------- chunking
def window_plan(n: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Windows [start, stop) of at most `window` samples covering [0, n), neighbours sharing `overlap`.

    The last window is aligned to the end (full length) so no window is a short remnant; a track
    shorter than `window` is one window.
    """
    if n <= window:
        return [(0, n)]
    step = max(1, window - overlap)
    starts = list(range(0, n - window, step)) + [n - window]
    return [(s, s + window) for s in starts]


def crossfade_weights(plan: list[tuple[int, int]], n: int) -> list[np.ndarray]:
    """Per-window weights (len = window length) that sum to exactly 1 at every sample of [0, n).

    Linear ramps over each overlap with the neighbouring windows; computed as raw trapezoids and
    normalised by their sum, so uneven overlaps (the end-aligned last window) are handled too.
    """
    raw = []
    total = np.zeros(n, dtype=np.float64)
    for i, (s, e) in enumerate(plan):
        w = np.ones(e - s, dtype=np.float64)
        if i > 0:
            ov = plan[i - 1][1] - s
            if ov > 0:
                w[:ov] = np.minimum(w[:ov], (np.arange(ov) + 0.5) / ov)
        if i + 1 < len(plan):
            ov = e - plan[i + 1][0]
            if ov > 0:
                w[-ov:] = np.minimum(w[-ov:], (np.arange(ov)[::-1] + 0.5) / ov)
        raw.append(w)
        total[s:e] += w
    return [w / total[s:e] for w, (s, e) in zip(raw, plan)]


# ----------------------------------------------------------------------------- weight-free remover
@dataclass(frozen=True)
class RepetParams:
    """REPET-SIM settings (tuned on the demo songs with bench/bgm.py; see its numbers)."""
    analysis_sr: int = 22050      # the vocal estimate is band-limited to 11 kHz; cheaper STFT
    n_fft: int = 2048
    hop: int = 512
    width_s: float = 4.0          # nn_filter's exclusion zone: similar frames at least this far apart
    margin_v: float = 1.0         # vocal soft-mask margin (librosa gallery uses 10; 1 scored higher here)
    power: float = 2.0
    window_s: float = 30.0        # REPET-SIM's k-NN matrix is quadratic in frames: bound it per window
    overlap_s: float = 4.0


def repet_sim_vocal(mid: np.ndarray, sr: int, p: RepetParams) -> np.ndarray:
    """The vocal part of one mono window by REPET-SIM: (N,) -> (N,) float32, same rate.

    Repeating (background) magnitude = per-frame median of the most similar frames (cosine k-NN
    via librosa's nn_filter), kept below the mixture; the vocal soft mask is applied to the
    complex STFT and inverted.
    """
    import librosa  # heavy import (numba); only this path needs it

    spec = librosa.stft(mid, n_fft=p.n_fft, hop_length=p.hop)
    mag = np.abs(spec)
    frames = mag.shape[1]
    width = int(librosa.time_to_frames(p.width_s, sr=sr, hop_length=p.hop))
    # recurrence_matrix needs frames > 2*width; short windows (clips of a few seconds) shrink it.
    width = max(1, min(width, (frames - 1) // 4))
    if frames < 8:
        return np.zeros_like(mid)
    rep = np.minimum(mag, librosa.decompose.nn_filter(mag, aggregate=np.median, metric="cosine",
                                                      width=width))
    mask_v = librosa.util.softmask(mag - rep, p.margin_v * rep, power=p.power)
    return librosa.istft(mask_v * spec, hop_length=p.hop, n_fft=p.n_fft, length=len(mid)).astype(np.float32)


def weight_free_bgm(x: np.ndarray, sr: int, p: RepetParams = RepetParams(), progress=None) -> np.ndarray:
    """BGM of a song without model weights: (T, C) -> (T, C) float32 at the same rate.

    The vocal is estimated from the mid channel (mean of channels) at `analysis_sr`, window by
    window (cost linear in length), crossfaded, brought back to `sr` and subtracted from every
    channel. Content above analysis_sr/2 and the side channel (L-R)/2 pass through untouched,
    which is where a centred vocal is not.
    """
    n = x.shape[0]
    mid = x.mean(axis=1, dtype=np.float64).astype(np.float32)
    asr = min(p.analysis_sr, sr)
    mid_a = resample(mid[:, None], sr, asr)[:, 0]
    plan = window_plan(len(mid_a), int(round(p.window_s * asr)), int(round(p.overlap_s * asr)))
    weights = crossfade_weights(plan, len(mid_a))
    vocal_a = np.zeros(len(mid_a), dtype=np.float64)
    for (s, e), w in zip(plan, weights):
        vocal_a[s:e] += w * repet_sim_vocal(mid_a[s:e], asr, p)
        if progress is not None:
            progress.update(1)
    vocal = resample(vocal_a.astype(np.float32)[:, None], asr, sr)[:n, 0]
    if len(vocal) < n:
        vocal = np.pad(vocal, (0, n - len(vocal)))
    return (x - vocal[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------- Demucs
def _demucs_fix(name: str) -> str:
    return (f"put the released Demucs files for {name!r} (the <sig>-<checksum>.th files listed in "
            f"demucs/remote/files.txt and {name}.yaml from the demucs package's remote/ folder) in this "
            f"folder, or set [bgm] demucs_repo empty to use the weight-free vocal remover (a stand-in)")


def _th_by_signature(repo: Path) -> dict[str, Path]:
    """{signature: file} of the .th files, named as demucs's LocalRepo names them
    (`<sig>-<checksum8>.th` or `<sig>.th`); two files for one signature are an error, as there."""
    out: dict[str, Path] = {}
    for f in sorted(repo.glob("*.th")):
        sig = f.stem.rsplit("-", 1)[0] if "-" in f.stem else f.stem
        if sig in out:
            raise ModelFileError(f, f"a second model file for signature {sig!r} (also {out[sig].name})",
                                 "delete all but one of them")
        out[sig] = f
    return out


def check_demucs_repo(repo: str | Path, name: str) -> list[Path]:
    """The model files `load_demucs(repo, name)` will read (yaml first, then .th), or ModelFileError.

    Checked here because demucs itself calls sys.exit on a missing folder and gives terse errors
    for a missing bag file (issues facebookresearch/demucs#555, #608).
    """
    repo = Path(repo)
    if not repo.exists():
        raise ModelFileError(repo, "the Demucs model folder ([bgm] demucs_repo) does not exist", _demucs_fix(name))
    if not repo.is_dir():
        raise ModelFileError(repo, "[bgm] demucs_repo is not a folder", _demucs_fix(name))
    ths = _th_by_signature(repo)
    if not ths:
        raise ModelFileError(repo, "no .th model files in the Demucs model folder "
                                   "(safetensors exports are not read by demucs's local loader)", _demucs_fix(name))
    if name in ths:
        return [ths[name]]
    bag = repo / f"{name}.yaml"
    if not bag.is_file():
        raise ModelFileError(bag, f"missing: model {name!r} is neither a bag file {bag.name} nor a single "
                                  f"model file {name}-<checksum>.th (found signatures: {sorted(ths)})",
                             _demucs_fix(name))
    sigs, _, _ = read_bag_file(bag, name)
    missing = [s for s in sigs if s not in ths]
    if missing:
        raise ModelFileError(repo, f"{bag.name} lists models {missing} with no <sig>-<checksum>.th file here",
                             _demucs_fix(name))
    return [bag] + [ths[s] for s in sigs]


def read_bag_file(bag: Path, name: str) -> tuple[list[str], list | None, float | None]:
    """(signatures, weights, segment) of a demucs bag file `<name>.yaml`, as demucs.repo.BagOnlyRepo
    reads it (`models`, optional `weights` (models x sources), optional `segment`)."""
    try:
        spec = yaml.safe_load(read_bounded(bag, MAX_JSON_BYTES, "the bag file").decode("utf-8")) or {}
        sigs = spec["models"]
        if not isinstance(sigs, list) or not sigs:
            raise ValueError("'models' must be a non-empty list of signatures")
        weights, segment = spec.get("weights"), spec.get("segment")
        if weights is not None and not (isinstance(weights, list) and all(
                isinstance(w, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in w)
                for w in weights)):
            raise ValueError("'weights' must be a list of lists of numbers")
        if segment is not None and (isinstance(segment, bool) or not isinstance(segment, (int, float))
                                    or not 0 < segment < 1e4):
            raise ValueError(f"'segment' must be a positive number of seconds, got {segment!r}")
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise ModelFileError(bag, f"not a Demucs bag file (needs a 'models:' list): {type(e).__name__}: {e}",
                             _demucs_fix(name)) from None
    return [str(s) for s in sigs], weights, segment


def demucs_model_classes() -> tuple[type, ...]:
    """The only classes a Demucs release file may name: the three model architectures."""
    from demucs.demucs import Demucs  # demucs is only needed when a Demucs folder is configured
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs
    return (HTDemucs, HDemucs, Demucs)


def _demucs_safe_globals() -> list:
    """The allow-list of the guarded load: the model classes (referenced as `klass`, never called by
    the unpickler) and the plain types their constructor kwargs hold (HTDemucs's `segment` is a
    `fractions.Fraction`, rebuilt from its string)."""
    return [*demucs_model_classes(), Fraction]


def _refused_globals(path: Path, err: Exception) -> str:
    """The globals outside the allow-list, by their full names (listed from the archive without
    unpickling it); torch's own message as a fallback (legacy, non-zip files)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _demucs_safe_globals()}
    try:
        names = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
    except Exception:  # noqa: BLE001 - not a zip archive: fall back to the unpickler's message
        names = []
    if names:
        return "globals: " + ", ".join(sorted(names))
    m = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    return f"global: {m.group(1)}" if m else "unpickling refused"


def load_demucs_package(path: Path) -> dict:
    """torch.load of one release .th through an allow-list (weights_only=True): {klass, args, kwargs,
    state}. Anything else (a pickle that names another global, a foreign layout) is ModelFileError."""
    try:
        check_regular_file(path, MAX_MODEL_BYTES, "the model file")
    except PipelineInputError as e:
        raise ModelFileError(e.path, e.problem, e.fix) from e
    try:
        with torch.serialization.safe_globals(_demucs_safe_globals()):
            pkg = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFileError(path, "refused: the file names code outside the Demucs model allow-list "
                             f"({_refused_globals(path, e)})",
                             "use only the .th files of the official Demucs release; this file may be "
                             "malicious or from another program") from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds on a damaged archive
        raise ModelFileError(path, f"not a readable torch file ({type(e).__name__}: {e})",
                             "download the model file again") from None
    if not isinstance(pkg, dict) or not {"klass", "args", "kwargs", "state"} <= set(pkg):
        raise ModelFileError(path, "not a Demucs release file (needs klass, args, kwargs and state)",
                             "use the <sig>-<checksum>.th files of the Demucs release (not a bare state dict)")
    if not (isinstance(pkg["klass"], type) and pkg["klass"] in demucs_model_classes()):
        raise ModelFileError(path, f"model class {pkg['klass']!r} is not a Demucs model",
                             "use the .th files of the Demucs release")
    if not isinstance(pkg["args"], (list, tuple)) or not isinstance(pkg["kwargs"], dict) \
            or not isinstance(pkg["state"], dict):
        raise ModelFileError(path, "malformed Demucs release file (args/kwargs/state of the wrong type)",
                             "download the model file again")
    return pkg


def build_demucs_model(pkg: dict, path: Path) -> torch.nn.Module:
    """The model of one release package, as demucs.states.load_model(strict=False) builds it:
    constructor kwargs the class does not know are dropped (with a log line), then the state dict
    is loaded. Quantized (DiffQ) states are refused: their restore needs diffq, not installed."""
    klass, args, kwargs, state = pkg["klass"], list(pkg["args"]), dict(pkg["kwargs"]), pkg["state"]
    if state.get("__quantized"):
        raise ModelFileError(path, "a quantized (DiffQ) Demucs model, which this pipeline does not load",
                             "use a non-quantized model such as htdemucs or htdemucs_ft")
    params = inspect.signature(klass).parameters
    for key in [k for k in kwargs if k not in params]:
        log.warning("%s: dropping constructor argument %r unknown to %s", path, key, klass.__name__)
        del kwargs[key]
    try:
        model = klass(*args, **kwargs)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - wrong shapes, missing keys, bad kwargs
        raise ModelFileError(path, f"the weights do not fit {klass.__name__} ({type(e).__name__}: {e})",
                             "download the model files again; they must be demucs 4 release .th files") from None
    return model


def _load_signature(file: Path, name: str) -> torch.nn.Module:
    """One model file: its checksum (the name's 8 hex digits after '-', as demucs checks it), then the
    guarded load."""
    if "-" in file.stem:
        want = file.stem.rsplit("-", 1)[1].lower()
        got = file_sha256(file)[:len(want)]
        if got != want:
            raise ModelFileError(file, f"checksum mismatch: the name says {want} but the file's sha256 "
                                 f"starts {got}", "the file is corrupt or truncated: download it again (its "
                                 "name ends with the first hex digits of its sha256)")
    return build_demucs_model(load_demucs_package(file), file)


def load_demucs(repo: str | Path, name: str):
    """Demucs model (a BagOfModels or single model, eval mode) from a local release folder.

    Reproduces demucs.pretrained.get_model(name, repo) (a single model when `name` is a signature,
    else the bag `<name>.yaml` with its weights and segment), but every .th goes through
    `load_demucs_package`'s allow-list instead of demucs's torch.load(weights_only=False).
    """
    from demucs.apply import BagOfModels  # see demucs_model_classes

    repo = Path(repo)
    files = check_demucs_repo(repo, name)
    if files[0].suffix != ".yaml":
        return _load_signature(files[0], name).eval()
    bag = files[0]
    _, weights, segment = read_bag_file(bag, name)
    models = [_load_signature(f, name) for f in files[1:]]
    first = models[0]
    for f, m in zip(files[1:], models):
        # BagOfModels asserts these; a clear error instead.
        if (list(m.sources), m.samplerate, m.audio_channels) != (list(first.sources), first.samplerate,
                                                                  first.audio_channels):
            raise ModelFileError(f, f"sources/rate/channels {m.sources}/{m.samplerate}/{m.audio_channels} differ "
                                 f"from the bag's first model ({first.sources}/{first.samplerate}/"
                                 f"{first.audio_channels})", _demucs_fix(name))
    if weights is not None and (len(weights) != len(models)
                                or any(len(w) != len(first.sources) for w in weights)):
        raise ModelFileError(bag, f"'weights' must be {len(models)} lists of {len(first.sources)} numbers",
                             _demucs_fix(name))
    return BagOfModels(models, weights, segment).eval()


def demucs_chunk_plan(total: int, samplerate: int, chunk_seconds: float) -> list[tuple[int, int]]:
    """Chunks of `chunk_seconds` at the model rate, overlapping CHUNK_OVERLAP_S (at most a quarter chunk)."""
    window = max(1, int(round(chunk_seconds * samplerate)))
    return window_plan(total, window, min(int(round(CHUNK_OVERLAP_S * samplerate)), window // 4))


def demucs_bgm(model, x: np.ndarray, sr: int, device: torch.device, chunk_seconds: float,
               progress=None) -> np.ndarray:
    """BGM by Demucs: (T, C) at sr -> (T, C) float32 at sr (sum of the non-vocal stems).

    The song is converted to the model's rate and channels, standardised by the mono mix's mean
    and std as demucs.api.Separator does, and fed to apply_model in chunks of `chunk_seconds`
    (crossfaded over CHUNK_OVERLAP_S), so activations and per-stem buffers stay bounded. The whole
    track and the chunk outputs stay in host memory; only the model runs on `device`.
    """
    from demucs.apply import apply_model
    from demucs.audio import convert_audio
    import julius

    n, channels = x.shape
    if VOCAL_STEM not in model.sources:
        raise ModelFileError("[bgm] demucs_model", f"model has no {VOCAL_STEM!r} stem (sources {model.sources})",
                             "use a vocals-separating model such as htdemucs or htdemucs_ft")
    keep = [i for i, s in enumerate(model.sources) if s != VOCAL_STEM]
    msr = model.samplerate
    wav = convert_audio(torch.from_numpy(np.ascontiguousarray(x.T)), sr, msr, model.audio_channels)  # (2, T')
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    wav = (wav - mean) / std
    total = wav.shape[-1]
    plan = demucs_chunk_plan(total, msr, chunk_seconds)
    weights = crossfade_weights(plan, total)
    out = torch.zeros(model.audio_channels, total, dtype=torch.float32)
    for (s, e), w in zip(plan, weights):
        est = apply_model(model, wav[None, :, s:e], shifts=DEMUCS_SHIFTS, split=True, overlap=DEMUCS_OVERLAP,
                          device=device, progress=False)[0]                     # (S, 2, L) on CPU
        stems = est[keep] * std + mean                                         # un-standardise each stem
        out[:, s:e] += stems.sum(0) * torch.from_numpy(w.astype(np.float32))
        if progress is not None:
            progress.update(1)
    out = convert_audio_channels_back(out, channels)
    back = julius.resample_frac(out, msr, sr, output_length=n) if msr != sr else out[..., :n]
    return np.ascontiguousarray(back.T.numpy(), dtype=np.float32)


def convert_audio_channels_back(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """Model channels (C', T) -> the original's channel count: mean for mono, copy/cut otherwise."""
    if wav.shape[0] == channels:
        return wav
    if channels == 1:
        return wav.mean(0, keepdim=True)
    if wav.shape[0] == 1:
        return wav.expand(channels, -1)
    if wav.shape[0] > channels:
        return wav[:channels]
    return torch.cat([wav, wav[-1:].expand(channels - wav.shape[0], -1)], 0)


def demucs_model_record(repo: Path, name: str, model) -> dict:
    files = check_demucs_repo(repo, name)
    subs = list(getattr(model, "models", [model]))
    return model_record(f"demucs {name}", real=True, files=files, repo=str(repo),
                        sources=list(model.sources), samplerate=model.samplerate,
                        audio_channels=model.audio_channels, sub_models=len(subs),
                        segment=float(getattr(model, "segment", 0) or 0))


# ----------------------------------------------------------------------------- the stage
def _source_record(path: Path) -> dict:
    frames, sr, ch = audio_info(path)
    return {"path": str(path), "sha256": file_sha256(path), "sample_rate": sr, "channels": ch,
            "frames": frames, "duration_s": frames / sr}


def separate_song_bgm(song_dir: Path, out_wav: Path, out_record: Path, cfg: BgmSettings,
                      device: torch.device, subject: str, song: str, task=None) -> dict:
    """Write one song's BGM to `out_wav` and its record to `out_record`; returns the record.

    `song_dir`: the raw song folder (accompaniment.wav, else original.wav|flac|mp3); `cfg`: `[bgm]`;
    `device`: where Demucs runs (the weight-free remover is CPU-only); `subject`/`song` name the song
    in logs and the record; `task`: the Luigi task to report progress to, or None.
    """
    song_dir, out_wav = Path(song_dir), Path(out_wav)
    accompaniment = song_dir / R.ACCOMPANIMENT_FILE
    params = recorded_params(cfg)
    if accompaniment.is_file():
        x, sr = read_audio(accompaniment)
        method, description, model, source = "accompaniment", "the capture's accompaniment.wav (no separation)", None, accompaniment
        bgm = x
        log.info("%s/%s: BGM = %s (no separation)", subject, song, accompaniment)
    else:
        source = R.find_original_song(song_dir)
        if source is None:
            raise PipelineInputError(song_dir / "original.wav", "no original song (original.wav|flac|mp3) and no "
                                     "accompaniment.wav, so there is no BGM", "add the original song (vocals included) "
                                     "or the separated accompaniment.wav")
        x, sr = read_audio(source)
        if cfg.demucs_repo:
            repo = Path(cfg.demucs_repo)
            net = load_demucs(repo, cfg.demucs_model)
            model = demucs_model_record(repo, cfg.demucs_model, net)
            dev = device
            method, description = "demucs", f"Demucs {cfg.demucs_model} (sum of the non-vocal stems)"
            n_chunks = len(demucs_chunk_plan(resampled_length(x.shape[0], sr, net.samplerate), net.samplerate,
                                             cfg.chunk_seconds))
            prog = Progress(task, n_chunks, f"Demucs {song}")
            log.info("%s/%s: separating %s with Demucs %s on %s", subject, song, source, cfg.demucs_model, dev)
            bgm = demucs_bgm(net, x, sr, dev, cfg.chunk_seconds, prog)
            prog.close()
            params["demucs"] = {"shifts": DEMUCS_SHIFTS, "overlap": DEMUCS_OVERLAP, "chunk_overlap_s": CHUNK_OVERLAP_S,
                                "device": dev.type, "stems_summed": [s for s in net.sources if s != VOCAL_STEM],
                                "standardised": "mono mix mean/std, as demucs.api"}
        else:
            p = RepetParams()
            method, description = "weight-free", FALLBACK_NAME
            log.warning("%s/%s: no [bgm] demucs_repo configured: BGM by the %s", subject, song, FALLBACK_NAME)
            model = model_record(FALLBACK_NAME, real=False, algorithm="REPET-SIM (Rafii & Pardo 2012), librosa "
                                 "nn_filter + softmask", params=asdict(p))
            n_win = len(window_plan(int(np.ceil(x.shape[0] * min(p.analysis_sr, sr) / sr)),
                                    int(round(p.window_s * min(p.analysis_sr, sr))),
                                    int(round(p.overlap_s * min(p.analysis_sr, sr)))))
            prog = Progress(task, n_win, f"vocal remover {song}")
            bgm = weight_free_bgm(x, sr, p, prog)
            prog.close()
            params["weight_free"] = asdict(p)
    write_wav(out_wav, bgm, sr, OUTPUT_SUBTYPE)
    record = {
        "subject": subject, "song": song, "method": method, "description": description,
        "model": model, "source": _source_record(Path(source)),
        "output": {"path": str(out_wav), "sample_rate": sr, "channels": int(bgm.shape[1]),
                   "frames": int(bgm.shape[0]), "duration_s": bgm.shape[0] / sr, "subtype": OUTPUT_SUBTYPE,
                   "sha256": file_sha256(out_wav), "level_rescaled": False},
        "time_base": "same as the source file (the original/accompaniment is aligned with vocal.wav)",
        "params": params,
    }
    write_json_atomic(out_record, record)
    return record
