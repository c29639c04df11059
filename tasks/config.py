"""The `luigi.cfg` sections as `luigi.Config` classes, derived from `tasks.common.settings`.

Each section's values can be overridden on the command line the Luigi way, for example
`--paths-raw-dir /data/raw` or `--crop-landmark-every 4`. A stage's `run` calls `read(...)` once
and hands the resulting frozen settings object to plain code; nothing else reads the config.
"""
from __future__ import annotations

import dataclasses
import typing

import luigi

from tasks.common import settings as S
from tasks.common.errors import PipelineInputError


def _parameter(hint, default) -> luigi.Parameter:
    """The luigi Parameter for one settings field (by its type hint)."""
    if typing.get_origin(hint) is typing.Literal:
        return luigi.ChoiceParameter(choices=list(typing.get_args(hint)), default=default)
    if hint is bool:
        return luigi.BoolParameter(default=default, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    if hint is int:
        return luigi.IntParameter(default=default)
    if hint is float:
        return luigi.FloatParameter(default=default)
    return luigi.Parameter(default=default)


def _config_class(settings_cls) -> type[luigi.Config]:
    hints = typing.get_type_hints(settings_cls)
    params = {f.name: _parameter(hints[f.name], f.default) for f in dataclasses.fields(settings_cls)}
    # Luigi takes the section name from the class name.
    return type(settings_cls.SECTION, (luigi.Config,), params)


CONFIG_CLASSES: dict[type, type[luigi.Config]] = {cls: _config_class(cls) for cls in S.ALL_SETTINGS}


def read(settings_cls):
    """The current value of one `luigi.cfg` section (command-line overrides included), read once."""
    cfg = CONFIG_CLASSES[settings_cls]()
    out = settings_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(settings_cls)})
    problems = S.settings_problems(out)
    if problems:
        key, what = problems[0]
        section = settings_cls.SECTION
        more = "".join(f"; {k} {w}" for k, w in problems[1:])
        raise PipelineInputError(f"luigi.cfg [{section}] {key}", what + more,
                                 f"set {key} in the [{section}] section of luigi.cfg, or pass "
                                 f"--{section}-{key.replace('_', '-')} VALUE on the command line")
    return out


def read_all() -> tuple:
    """Every section, in `settings.ALL_SETTINGS` order (what the dataset manifest records)."""
    return tuple(read(cls) for cls in S.ALL_SETTINGS)
