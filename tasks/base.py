"""What every stage task shares: checked subject/song/segment parameters and the layout."""
from __future__ import annotations

import luigi

from tasks.common.names import check_name
from tasks.layout import Layout


class NameParameter(luigi.Parameter):
    """A subject or song id: one plain folder name, checked when the task is instantiated."""

    def __init__(self, *args, what: str = "subject", **kwargs):
        super().__init__(*args, **kwargs)
        self.what = what

    def normalize(self, x):
        return check_name(x, self.what)


class StageTask(luigi.Task):
    """A task of the DAG; `layout` is `[paths]` as configured when it is asked for."""

    @property
    def layout(self) -> Layout:
        return Layout.from_config()


class SubjectTask(StageTask):
    subject = NameParameter(what="subject")


class SongTask(SubjectTask):
    song = NameParameter(what="song")


class SegmentTask(SongTask):
    segment = luigi.IntParameter()
