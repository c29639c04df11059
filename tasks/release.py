"""Release stage: the assembled dataset packed as `[release] format` with SHA256SUMS (`[release]`).

The plain code is `tasks.dataset.packing.pack_release`; `tasks.dataset.verify.verify_release`
checks a release.
"""
from __future__ import annotations

import luigi

from tasks import config
from tasks.assemble import AssembleDataset
from tasks.base import StageTask
from tasks.common.names import check_name
from tasks.common.settings import ReleaseSettings
from tasks.dataset.packing import pack_release


class PackRelease(StageTask):
    """The assembled dataset as tarballs, the official zips or WebDataset shards, with SHA256SUMS, under
    `[paths] release_dir`."""

    def requires(self):
        return AssembleDataset()

    def output(self):
        return luigi.LocalTarget(str(self.layout.release_root() / "SHA256SUMS"))

    def run(self):
        cfg = config.read(ReleaseSettings)
        # [release] name becomes the tarballs' top folder and file names: one plain name
        name = check_name(cfg.name, "[release] name")
        pack_release(self.layout.dataset_root(), self.layout.release_root(), name, cfg.shard_bytes,
                     include_sequences=cfg.include_sequences, task=self, fmt=cfg.format)
