"""Every `luigi.cfg` section the pipeline reads, as small frozen settings objects.

These dataclasses are the single description of the configuration: `tasks.config` derives the
`luigi.Config` classes from them (so `--crop-landmark-every 4` works the Luigi way), a stage's
`run` reads its section once into one of these objects, and plain code receives it as an
ordinary argument. Plain code therefore never touches Luigi or the global configuration.

Each class's `SECTION` is the `luigi.cfg` section name; field defaults are the defaults.
"""
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Literal


@dataclass(frozen=True)
class PathSettings:
    SECTION: ClassVar[str] = "paths"
    raw_dir: str = "raw"
    processed_dir: str = "processed"
    release_dir: str = ""               # empty: <processed_dir>/release


@dataclass(frozen=True)
class DeviceSettings:
    SECTION: ClassVar[str] = "device"
    # "auto": CUDA when torch sees a GPU, else CPU. Luigi never says which GPU a task holds,
    # so a worker on a multi-GPU machine is pinned with CUDA_VISIBLE_DEVICES (see README).
    torch_device: str = "auto"


@dataclass(frozen=True)
class CropSettings:
    SECTION: ClassVar[str] = "crop"
    output_size: int = 1024
    margin: float = 0.6                 # box grows by this fraction per side
    detect_width: int = 960             # MTCNN runs on a frame this wide
    landmark_every: int = 6
    edge_fraction: float = 0.08         # landmark closer than this x box size ends a segment
    crf: int = 18
    preset: str = "veryfast"
    keyframe_interval: int = 240        # clips of 240 frames cut by stream copy
    threads: int = 0                    # 0: let the codecs choose


@dataclass(frozen=True)
class BgmSettings:
    SECTION: ClassVar[str] = "bgm"
    demucs_model: str = "htdemucs_ft"
    demucs_repo: str = ""               # empty: the weight-free vocal remover
    chunk_seconds: float = 60.0


@dataclass(frozen=True)
class AudioSettings:
    SECTION: ClassVar[str] = "audio"
    # the segment audio's and the dataset's rate; dataset wavs are 16-bit PCM WAV at this rate
    sample_rate: int = 16000
    channels: int = 1
    duration_tolerance_s: float = 1.0


@dataclass(frozen=True)
class FlameSettings:
    SECTION: ClassVar[str] = "flame"
    model_path: str = ""                # generic_model.pkl / flame2023.pkl; empty: procedural
    landmark_embedding_path: str = ""
    # empty: <processed_dir>/_models/procedural_head_<version>_seed<seed>, regenerated when the
    # generator's version changes
    procedural_model_dir: str = ""


@dataclass(frozen=True)
class EmocaSettings:
    SECTION: ClassVar[str] = "emoca"
    checkpoint_dir: str = ""            # e.g. .../EMOCA_v2_lr_mse_20; empty: weight-free estimator
    batch_size: int = 32


@dataclass(frozen=True)
class RefineSettings:
    """The pipeline's refinement settings. Six defaults differ from flame_fit.refine.RefineParams'
    (outlier_scale, smooth_weight, smooth_order, lambda_smooth, lambda_anchor, close_fit_noise_px;
    luigi.cfg [refine] says why, with the measurements); the library keeps the paper's values until its
    defaults follow."""
    SECTION: ClassVar[str] = "refine"
    # box-plot fence factor s: 3 (Tukey's far-out fence; was 1.5) keeps the widest true poses and mouth
    # openings of a singer, which 1.5 replaced by interpolation
    outlier_scale: float = 3.0
    landmark_window: int = 7            # running-median window for landmark outliers
    # w_s of the landmark smoother (was 0.3); 10 at 30 fps flattens real mouth motion by ~12 px
    # (bench/motion.py), 2 moves the lip error by < 0.1 mm
    smooth_weight: float = 2.0
    smoother: Literal["exact", "adam"] = "exact"
    lambda_landmark: float = 1.0
    # 1: the paper's first differences of pose and camera (speed); 2: second differences
    # (acceleration), which leave a steady turn or nod unpenalised
    smooth_order: int = 2
    # 50 with smooth_order 2 (was 12 with order 1, which was 3 before: the truth capture's head
    # rotation jittered 2.9x the truth's at 3, 1.4x at 12)
    lambda_smooth: float = 50.0
    lambda_reg: float = 1e-3
    # landmarks cannot tell neck from global rotation; a heavier neck prior keeps it near zero
    neck_reg_scale: float = 1e4
    # landmark weight of the 17 jaw-contour points (view-dependent; the 51 others weigh 1)
    contour_weight: float = 1.0
    # after Eq. 1 the expression is re-fitted with the subject's shape, pulled towards the per-frame
    # expression with this weight (0: the per-frame expression is kept, as in the paper); 0.3 (was
    # 1e-2) keeps it close to the per-frame one, which Dlib's lip landmarks pulled less far off
    lambda_anchor: float = 0.3
    refit_iters: int = 200              # L-BFGS iterations of that re-fit at most
    # a segment whose landmark tracks measure at most this noise (px) is refined with
    # flame_fit.refine.CLOSE_FIT's values (the jaw re-fitted to the landmarks); Dlib's whole-pixel
    # landmarks never do under 0.29 px (rounding alone), exact landmarks (0.02 px) do; 0: never
    close_fit_noise_px: float = 0.25
    lr: float = 0.01
    lr_floor: float = 0.125
    max_iters: int = 2000
    tolerance: float = 1e-7             # relative loss decrease that counts as converged
    check_every: int = 5


@dataclass(frozen=True)
class ScanFitSettings:
    SECTION: ClassVar[str] = "scan_fit"
    # A fit whose landmarks stay further than this from the scan's (mean, mm at model scale), or whose
    # shape has a coefficient beyond this many prior standard deviations (beta ~ N(0, 1)), did not
    # fit the scan (a degenerate mesh, landmarks of another scan, wrong units): it stops the subject.
    max_landmark_residual_mm: float = 10.0
    max_abs_shape_coefficient: float = 6.0
    # error: such a fit stops the subject; flag: its shape ships, flagged in shape/report.json, the
    # dataset manifest ("flags") and the dataset report
    on_bad_fit: Literal["error", "flag"] = "error"
    # a scan without scan/scan.json: "infer" takes the one unit (mm, cm, m, in) that makes the head
    # a head (0.13-0.30 m front to back) and fixes the scale, refusing the scan when none or several
    # do; "free" fits the scale (it trades against the shape's size directions: 0.14-0.21 mm, 0.1-0.2 %
    # scale error on exact scans where fixed units give 0.04-0.11 mm). Declared units always win.
    units: Literal["infer", "free"] = "infer"
    # How far the points of scan/landmarks.json lie from where they belong (standard deviation, mm
    # at model scale): 1 mm for points placed on the scan by the capture software or a careful
    # annotator; raise it for rough clicks. It weighs the landmarks against the scan's surface, and
    # the landmarks fix what the surface cannot: where the face sits along it (3 mm let a fit from
    # the zero shape slide 4.2-4.5 mm off on two of six generated scans; 1 mm: all six under 0.5).
    # Automatic landmarks count at least 20 mm.
    landmark_sigma_mm: float = 1.0


@dataclass(frozen=True)
class DatasetSettings:
    SECTION: ClassVar[str] = "dataset"
    fps: int = 30
    min_sequence_seconds: float = 3.0
    clip_frames: int = 240
    split_seed: int = 0
    split_by_song: bool = True
    train_fraction: float = 0.80
    val_fraction: float = 0.05

    @property
    def min_sequence_frames(self) -> int:
        """Segments shorter than this never become sequences (and are never refined)."""
        return round(self.min_sequence_seconds * self.fps)


@dataclass(frozen=True)
class ReleaseSettings:
    SECTION: ClassVar[str] = "release"
    # tarballs: the published tree in tar shards; zips: the official per-modality zips;
    # webdataset: per-split training shards keyed by clip id (tasks.dataset.packing)
    format: Literal["tarballs", "zips", "webdataset"] = "tarballs"
    shard_bytes: int = 2_000_000_000    # tar shards close before this size (tarballs, webdataset)
    include_sequences: bool = True
    name: str = "SingingHead"


ALL_SETTINGS = (PathSettings, DeviceSettings, CropSettings, BgmSettings, AudioSettings, FlameSettings,
                EmocaSettings, ScanFitSettings, RefineSettings, DatasetSettings, ReleaseSettings)


# The values each numeric setting may take, as (what the user is told, test). A value outside them is
# refused when luigi.cfg is read (tasks.config.read), naming the section, key and value, before any stage
# works with it; values the code would take but that mean nothing (a negative weight, a window of 0)
# otherwise fail deep inside a stage, or silently do something else.
Limit = tuple[str, Callable[[float], bool]]
_POSITIVE: Limit = ("a number > 0", lambda v: v > 0)
_NON_NEGATIVE: Limit = ("a number >= 0", lambda v: v >= 0)
_AT_LEAST_1: Limit = ("a whole number >= 1", lambda v: v >= 1)
_FRACTION: Limit = ("a number from 0 to 1", lambda v: 0 <= v <= 1)
LIMITS: dict[type, dict[str, Limit]] = {
    CropSettings: {"output_size": ("an even number >= 16 (yuv420 video)", lambda v: v >= 16 and v % 2 == 0),
                   "margin": _NON_NEGATIVE, "detect_width": ("a whole number >= 64", lambda v: v >= 64),
                   "landmark_every": _AT_LEAST_1, "edge_fraction": ("a number from 0 to 0.5", lambda v: 0 <= v < 0.5),
                   "crf": ("a whole number from 0 to 51 (x264)", lambda v: 0 <= v <= 51),
                   "keyframe_interval": _AT_LEAST_1, "threads": _NON_NEGATIVE},
    BgmSettings: {"chunk_seconds": _POSITIVE},
    AudioSettings: {"sample_rate": ("a rate from 8000 to 192000 Hz", lambda v: 8000 <= v <= 192000),
                    "channels": ("1 or 2", lambda v: v in (1, 2)), "duration_tolerance_s": _NON_NEGATIVE},
    EmocaSettings: {"batch_size": _AT_LEAST_1},
    RefineSettings: {"outlier_scale": _POSITIVE, "landmark_window": _AT_LEAST_1, "smooth_weight": _NON_NEGATIVE,
                     "lambda_landmark": _NON_NEGATIVE, "lambda_smooth": _NON_NEGATIVE, "lambda_reg": _NON_NEGATIVE,
                     "smooth_order": ("1 or 2", lambda v: v in (1, 2)),
                     "neck_reg_scale": _NON_NEGATIVE, "contour_weight": _NON_NEGATIVE,
                     "lambda_anchor": _NON_NEGATIVE, "refit_iters": _NON_NEGATIVE, "lr": _POSITIVE,
                     "lr_floor": ("a number > 0 and <= 1", lambda v: 0 < v <= 1), "max_iters": _AT_LEAST_1,
                     "tolerance": _NON_NEGATIVE, "check_every": _AT_LEAST_1},
    ScanFitSettings: {"max_landmark_residual_mm": _POSITIVE, "max_abs_shape_coefficient": _POSITIVE,
                      "landmark_sigma_mm": _POSITIVE},
    DatasetSettings: {"fps": _AT_LEAST_1, "min_sequence_seconds": _NON_NEGATIVE, "clip_frames": _AT_LEAST_1,
                      "train_fraction": _FRACTION, "val_fraction": _FRACTION},
    ReleaseSettings: {"shard_bytes": ("a whole number >= 1", lambda v: v >= 1)},
}


def settings_problems(settings) -> list[tuple[str, str]]:
    """(key, what is wrong) for each refused value of one settings object; [] when none is.
    Floats must also be finite (Luigi parses 'nan' and 'inf')."""
    cls, out = type(settings), []
    limits = LIMITS.get(cls, {})
    for f in fields(cls):
        v = getattr(settings, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            out.append((f.name, f"is {v!r}, want a finite number"))
        elif f.name in limits and isinstance(v, (int, float)) and not limits[f.name][1](v):
            out.append((f.name, f"is {v!r}, want {limits[f.name][0]}"))
    if cls is DatasetSettings and not out and settings.train_fraction + settings.val_fraction > 1:
        out.append(("val_fraction", f"is {settings.val_fraction!r}, want train_fraction "
                                    f"({settings.train_fraction!r}) + val_fraction at most 1 (test takes the rest)"))
    return out


def recorded_params(*settings) -> dict:
    """{section: {field: value}} of the given settings objects, written next to each output."""
    return {type(s).SECTION: asdict(s) for s in settings}
