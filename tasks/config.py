"""Every `luigi.cfg` section the pipeline reads, as `luigi.Config` classes.

Each section's values can be overridden on the command line the Luigi way, for example
`--paths-raw-dir /data/raw` or `--crop-landmark-every 4`. Stages read their settings only
through these classes so that `recorded_params` can write them next to each output.
"""
from __future__ import annotations

import luigi


class paths(luigi.Config):  # noqa: N801 - the section name is the class name
    raw_dir = luigi.Parameter(default="raw")
    processed_dir = luigi.Parameter(default="processed")
    release_dir = luigi.Parameter(default="")  # empty: <processed_dir>/release


class device(luigi.Config):  # noqa: N801
    # "auto": CUDA when torch sees a GPU, else CPU. Luigi never says which GPU a task holds,
    # so a worker on a multi-GPU machine is pinned with CUDA_VISIBLE_DEVICES (see README).
    torch_device = luigi.Parameter(default="auto")


class crop(luigi.Config):  # noqa: N801
    output_size = luigi.IntParameter(default=1024)
    margin = luigi.FloatParameter(default=0.6)          # box grows by this fraction per side
    detect_width = luigi.IntParameter(default=960)      # MTCNN runs on a frame this wide
    landmark_every = luigi.IntParameter(default=6)
    edge_fraction = luigi.FloatParameter(default=0.08)  # landmark closer than this x box size ends a segment
    crf = luigi.IntParameter(default=18)
    preset = luigi.Parameter(default="veryfast")
    keyframe_interval = luigi.IntParameter(default=240)  # clips of 240 frames cut by stream copy
    threads = luigi.IntParameter(default=0)             # 0: let the codecs choose


class bgm(luigi.Config):  # noqa: N801
    demucs_model = luigi.Parameter(default="htdemucs_ft")
    demucs_repo = luigi.Parameter(default="")           # empty: the weight-free vocal remover
    chunk_seconds = luigi.FloatParameter(default=60.0)


class audio(luigi.Config):  # noqa: N801
    sample_rate = luigi.IntParameter(default=16000)
    channels = luigi.IntParameter(default=1)
    duration_tolerance_s = luigi.FloatParameter(default=1.0)


class flame(luigi.Config):  # noqa: N801
    model_path = luigi.Parameter(default="")            # generic_model.pkl / flame2023.pkl; empty: procedural
    landmark_embedding_path = luigi.Parameter(default="")
    # empty: <processed_dir>/_models/procedural_head_<version>_seed<seed>, regenerated when the
    # generator's version changes
    procedural_model_dir = luigi.Parameter(default="")


class emoca(luigi.Config):  # noqa: N801
    checkpoint_dir = luigi.Parameter(default="")        # e.g. .../EMOCA_v2_lr_mse_20; empty: weight-free estimator
    batch_size = luigi.IntParameter(default=32)


class refine(luigi.Config):  # noqa: N801
    outlier_scale = luigi.FloatParameter(default=1.5)     # box-plot fence factor s
    landmark_window = luigi.IntParameter(default=7)       # running-median window for landmark outliers
    # w_s of the landmark smoother; 10 at 30 fps flattens real mouth motion by ~12 px (bench/motion.py)
    smooth_weight = luigi.FloatParameter(default=0.3)
    smoother = luigi.ChoiceParameter(choices=["exact", "adam"], default="exact")
    lambda_landmark = luigi.FloatParameter(default=1.0)
    lambda_smooth = luigi.FloatParameter(default=3.0)
    lambda_reg = luigi.FloatParameter(default=1e-3)
    # landmarks cannot tell neck from global rotation; a heavier neck prior keeps it near zero
    neck_reg_scale = luigi.FloatParameter(default=1e4)
    # landmark weight of the 17 jaw-contour points (view-dependent; the 51 others weigh 1)
    contour_weight = luigi.FloatParameter(default=1.0)
    lr = luigi.FloatParameter(default=0.01)
    lr_floor = luigi.FloatParameter(default=0.125)
    max_iters = luigi.IntParameter(default=2000)
    tolerance = luigi.FloatParameter(default=1e-7)        # relative loss decrease that counts as converged
    check_every = luigi.IntParameter(default=5)


class dataset(luigi.Config):  # noqa: N801
    fps = luigi.IntParameter(default=30)
    min_sequence_seconds = luigi.FloatParameter(default=3.0)
    clip_frames = luigi.IntParameter(default=240)
    split_seed = luigi.IntParameter(default=0)
    split_by_song = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    train_fraction = luigi.FloatParameter(default=0.80)
    val_fraction = luigi.FloatParameter(default=0.05)


class release(luigi.Config):  # noqa: N801
    shard_bytes = luigi.IntParameter(default=2_000_000_000)
    include_sequences = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    name = luigi.Parameter(default="SingingHead")


def override_paths(raw_dir: str | None = None, processed_dir: str | None = None) -> None:
    """Set `[paths]` for this process, as `--paths-raw-dir` / `--paths-processed-dir` would.

    The release folder follows the processed folder unless `[paths] release_dir` names one.
    """
    import luigi.configuration
    cfg = luigi.configuration.get_config()
    if raw_dir:
        cfg.set("paths", "raw_dir", str(raw_dir))
    if processed_dir:
        cfg.set("paths", "processed_dir", str(processed_dir))
