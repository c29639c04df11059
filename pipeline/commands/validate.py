"""`validate`: check a capture against the raw/ contract, every problem at once."""
from __future__ import annotations

from pathlib import Path

from pipeline.build import config_overrides
from pipeline.commands.common import layout_of, path_overrides
from tasks import config
from tasks.capture.checks import errors_of, format_problems, validate_capture
from tasks.common.settings import AudioSettings, BgmSettings, DatasetSettings, EmocaSettings, FlameSettings
from tasks.layout import reserved_names


def validate(args) -> int:
    with config_overrides(path_overrides(args)):
        dataset, audio = config.read(DatasetSettings), config.read(AudioSettings)
        models = config.read(FlameSettings), config.read(EmocaSettings), config.read(BgmSettings)
    raw = Path(args.raw_dir_pos) if args.raw_dir_pos else layout_of(args).raw
    problems = validate_capture(raw, args.subject, dataset, audio, *models, reserved=reserved_names())
    if problems:
        print(format_problems(problems))
    n_err = len(errors_of(problems))
    print(f"{raw}: {n_err} error(s), {len(problems) - n_err} warning(s)")
    return 1 if n_err else 0
