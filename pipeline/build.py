"""The one place that runs Luigi: `build(...)` for the CLI, `rerun` and the tests.

Configuration overrides (`--paths-raw-dir /data/raw`, `--crop-landmark-every 4`, ...) go through
Luigi's own command-line parser for the duration of the build, exactly as they do for the
`luigi` command, so the global configuration is never rewritten.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import luigi
from luigi.cmdline_parser import CmdlineParser
from luigi.task_register import Register

from tasks.config import read_all as read_all_settings
from tasks.common.atomic import remove_stale_siblings, sweep_stale_temps
from tasks.common.build_lock import build_lock
from tasks.layout import Layout

log = logging.getLogger("singinghead")

SUCCESS = (luigi.LuigiStatusCode.SUCCESS, luigi.LuigiStatusCode.SUCCESS_WITH_RETRY)


@dataclass(frozen=True)
class BuildResult:
    ok: bool
    status: str
    summary: str


def override_args(overrides: dict[str, dict[str, object]] | None) -> list[str]:
    """{'paths': {'raw_dir': 'x'}} -> ['--paths-raw-dir=x'] (None values are left out). One token with '=',
    so that a value starting with '-' (-0.5, -inf, a path) is not read as a flag."""
    args: list[str] = []
    for section, opts in (overrides or {}).items():
        for key, value in opts.items():
            if value is not None:
                args.append(f"--{section}-{key}".replace("_", "-") + f"={value}")
    return args


def config_flags() -> dict[str, str]:
    """Every `--section-key` flag of a luigi.cfg section (ours and Luigi's own, e.g. `--worker-...`)
    -> how it takes its value: 'one', 'optional' (an explicit bool) or 'none' (a switch)."""
    flags = {}
    for family, without_section, name, param in Register.get_all_params():
        if without_section or not issubclass(Register.get_task_cls(family), luigi.Config):
            continue
        kwargs = param._parser_kwargs(name, family)   # what Luigi's own parser is given
        flags[f"--{family}-{name}".replace("_", "-")] = (
            "none" if kwargs.get("action") == "store_true" else "optional" if kwargs.get("nargs") == "?"
            else "one")
    return flags


def split_config_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without its luigi.cfg overrides, the overrides): `--crop-landmark-every 4` and
    `--crop-landmark-every=4` as the `luigi` command takes them, for `config_overrides(cli_args=...)`."""
    flags = config_flags()
    rest, config = [], []
    i = 0
    while i < len(argv):
        token = argv[i]
        how = flags.get(token.split("=", 1)[0]) if token.startswith("--") else None
        if how is None:
            rest.append(token)
        elif "=" in token or how == "none":
            config.append(token)
        elif how == "one" and i + 1 < len(argv):
            config += [token, argv[i + 1]]
            i += 1
        elif how == "optional" and i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false"):
            config += [token, argv[i + 1]]
            i += 1
        else:
            config.append(token)
        i += 1
    return rest, config


@contextmanager
def config_overrides(overrides: dict[str, dict[str, object]] | None = None, cli_args: list[str] | None = None,
                     **sections):
    """Make `overrides` (and `section={key: value}` keywords, and `cli_args`, Luigi-style
    `--section-key value` flags) visible to every luigi.Config read inside the block, the Luigi way;
    blocks nest, the inner one wins (within a block, `overrides` win over `cli_args`)."""
    args = _ACTIVE + list(cli_args or []) + override_args({**(overrides or {}), **sections})
    if args == _ACTIVE:
        yield
        return
    # Luigi's parser wants a root task family; only its global `--section-key` flags are used here.
    # The outer blocks' flags come first, so an inner block's value wins (argparse keeps the last).
    saved = list(_ACTIVE)
    with CmdlineParser.global_instance([_OverrideHolder.get_task_family(), *args], allow_override=True):
        _ACTIVE[:] = args
        try:
            yield
        finally:
            _ACTIVE[:] = saved


_ACTIVE: list[str] = []


class _OverrideHolder(luigi.WrapperTask):
    """Names a root task for Luigi's parser while `config_overrides` is active; never run."""


def build(tasks: list[luigi.Task] | luigi.Task, workers: int = 1, overrides: dict | None = None,
          scheduler_host: str | None = None, scheduler_port: int | None = None,
          log_level: str | None = None) -> BuildResult:
    """Run `tasks` (and whatever they need) with Luigi; the local scheduler unless a host is given.

    `tasks` may be a callable returning the tasks, so that they are created under `overrides`.
    The build holds processed/'s build lock (one build per processed/ at a time: PipelineInputError
    naming the other build's pid otherwise; shared by the workers of a central scheduler) and first
    removes the temporaries a killed build left.
    """
    kwargs: dict = {"workers": workers, "detailed_summary": True}
    if scheduler_host:
        kwargs["scheduler_host"] = scheduler_host
        if scheduler_port:
            kwargs["scheduler_port"] = scheduler_port
    else:
        kwargs["local_scheduler"] = True
    if log_level:
        kwargs["log_level"] = log_level
    with config_overrides(overrides):
        read_all_settings()   # a refused luigi.cfg value: one line naming it, before the lock or any work
        lay = Layout.from_config()
        # exclusive: one build per processed/; shared among the workers of one central scheduler
        with build_lock(lay.processed, shared=bool(scheduler_host)):
            removed = sweep_stale_temps(lay.processed)
            remove_stale_siblings(lay.release.absolute())
            if removed:
                log.info("removed %d temporary file(s)/folder(s) a killed build left in %s", len(removed),
                         lay.processed)
            roots = tasks() if callable(tasks) else tasks
            roots = list(roots) if isinstance(roots, (list, tuple)) else [roots]
            result = luigi.build(roots, **kwargs)
    return BuildResult(ok=result.status in SUCCESS, status=result.status.name, summary=result.summary_text)
