"""Dataset stage: every subject's sequences and clips in the SingingHead layout (`[dataset]`).

The plain code is `tasks.dataset.assembly.assemble_dataset` (plan, sequences, metadata, manifest
in `tasks.dataset`).
"""
from __future__ import annotations

from pathlib import Path

import luigi
from luigi.task import flatten

from tasks import config
from tasks.base import StageTask
from tasks.common.settings import AudioSettings, CropSettings, DatasetSettings, PathSettings, ReleaseSettings
from tasks.dataset.assembly import assemble_dataset
from tasks.media.clips import ClipEncoding
from tasks.subject import SubjectOutputs


def stage_outputs(roots) -> dict[Path, str]:
    """{output path: STAGE} of every stage task reachable from `roots`.

    Walks `requires()` and, where a task has it, `dynamic_requires()` (the tasks its `run` yields),
    the same walk as `pipeline.registry`; a task class with a `STAGE` name is a stage.
    """
    todo, seen, out = list(flatten(roots)), set(), {}
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        stage = getattr(type(t), "STAGE", None)
        if stage:
            for target in flatten(t.output()):
                out[Path(target.path)] = stage
        todo += flatten(t.requires())
        dynamic = getattr(t, "dynamic_requires", None)
        if dynamic is not None:
            todo += flatten(dynamic())
    return out


def manifest_settings() -> tuple:
    """The luigi.cfg sections the manifest records: all but [paths] (where, not how) and [release]
    (packed after the manifest is written)."""
    return tuple(s for s in config.read_all() if not isinstance(s, (PathSettings, ReleaseSettings)))


class AssembleDataset(StageTask):
    """Every subject's sequences and clips in the SingingHead layout, with splits and a manifest."""

    threads = luigi.IntParameter(default=2, significant=False)

    def requires(self):
        return [SubjectOutputs(subject=s) for s in self.layout.list_subjects()]

    def output(self):
        return luigi.LocalTarget(str(self.layout.dataset_root() / "manifest.json"))

    def run(self):
        self.assemble()

    def assemble(self) -> dict:
        """Assemble the dataset now (what `run` does); returns the manifest."""
        lay = self.layout
        return assemble_dataset(
            lay.list_subjects(), lay.dataset_root(), lay,
            dataset=config.read(DatasetSettings), audio=config.read(AudioSettings),
            # a clip that cannot be stream-copied is re-encoded like the portraits it comes from
            encoding=ClipEncoding.of_portraits(config.read(CropSettings)),
            config_record=manifest_settings(), stage_outputs=stage_outputs(self.requires()),
            task=self, threads=self.threads,
        )
