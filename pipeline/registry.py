"""The stage registry, derived from the tasks' own `requires()`: nothing here lists stages by hand.

A stage is a task class with a `STAGE` name (the name `rerun --from` takes). The graph is walked
from a root through `requires()` and, where a task adds work once its inputs exist (segments are
only known after the crop), through its `dynamic_requires()`, the same list its `run` yields.
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import luigi
from luigi.task import flatten


def requirements(task: luigi.Task) -> list[luigi.Task]:
    """The tasks `task` depends on: `requires()` plus, when computable now, `dynamic_requires()`."""
    deps = list(flatten(task.requires()))
    dynamic = getattr(task, "dynamic_requires", None)
    if dynamic is not None:
        deps += [t for t in flatten(dynamic()) if t not in deps]
    return deps


def task_graph(roots: list[luigi.Task] | luigi.Task) -> dict[luigi.Task, list[luigi.Task]]:
    """{task: the tasks it depends on} for every task reachable from `roots`."""
    todo = list(flatten(roots))
    graph: dict[luigi.Task, list[luigi.Task]] = {}
    while todo:
        t = todo.pop()
        if t in graph:
            continue
        graph[t] = requirements(t)
        todo += [d for d in graph[t] if d not in graph]
    return graph


def stage_of(task: luigi.Task) -> str | None:
    return getattr(type(task), "STAGE", None)


def dependents(graph: dict[luigi.Task, list[luigi.Task]]) -> dict[luigi.Task, set[luigi.Task]]:
    """The graph's edges reversed: {task: the tasks that depend on it}."""
    out: dict[luigi.Task, set[luigi.Task]] = defaultdict(set)
    for t, deps in graph.items():
        for d in deps:
            out[d].add(t)
    return out


def downstream(graph: dict[luigi.Task, list[luigi.Task]], start: set[luigi.Task]) -> set[luigi.Task]:
    """`start` and every task of `graph` that depends on one of them, directly or not."""
    rev = dependents(graph)
    seen, todo = set(), list(start)
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo += list(rev.get(t, ()))
    return seen


def topological(graph: dict[luigi.Task, list[luigi.Task]]) -> list[luigi.Task]:
    """Tasks ordered so that each comes after everything it depends on (ties by task id)."""
    order, done = [], set()

    def visit(t):
        if t in done:
            return
        done.add(t)
        for d in sorted(graph.get(t, ()), key=lambda x: x.task_id):
            visit(d)
        order.append(t)

    for t in sorted(graph, key=lambda x: x.task_id):
        visit(t)
    return order


@dataclass(frozen=True)
class StageRow:
    """One row of the DAG table: a task class, where it lives, what it needs, what it writes."""
    family: str
    stage: str | None
    module: str
    requires: tuple[str, ...]
    outputs: tuple[str, ...]


def family_table(graph: dict[luigi.Task, list[luigi.Task]], relative_to: Path | None = None) -> list[StageRow]:
    """Per task class, in dependency order: its stage, module, required classes and output paths
    (of the first instance met, relative to `relative_to` and with ids replaced by placeholders)."""
    rows: dict[str, StageRow] = {}
    for t in topological(graph):
        fam = t.task_family
        if fam in rows:
            continue
        reqs = tuple(sorted({d.task_family for tt in graph if tt.task_family == fam for d in graph[tt]}))
        outs = tuple(_placeholder(t, Path(o.path), relative_to) for o in flatten(t.output())
                     if hasattr(o, "path"))
        rows[fam] = StageRow(fam, stage_of(t), inspect.getmodule(type(t)).__name__, reqs, outs)
    return list(rows.values())


def _placeholder(task: luigi.Task, path: Path, root: Path | None) -> str:
    text = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
    params = task.to_str_params()
    for key in ("subject", "song"):
        if key in params:
            text = text.replace(params[key], f"<{key}>")
    if "segment" in params:
        text = text.replace(f"segment_{int(params['segment']):03d}", "segment_NNN")
    return text


def stage_names(graph: dict[luigi.Task, list[luigi.Task]]) -> list[str]:
    """The stage names of `graph`, each after the stages it depends on."""
    names: list[str] = []
    for t in topological(graph):
        s = stage_of(t)
        if s is not None and s not in names:
            names.append(s)
    return names


def format_table(rows: list[StageRow]) -> str:
    """The DAG as a Markdown table (ARCHITECTURE.md embeds this output)."""
    lines = ["| task | stage (`rerun --from`) | module | requires | output |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r.family}` | {r.stage or '—'} | {r.module} | {', '.join(r.requires) or '—'} | "
                     f"{'<br>'.join(f'`{o}`' for o in r.outputs) or '—'} |")
    return "\n".join(lines)
