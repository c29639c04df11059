"""Overall build progress: tasks done of total, the current stage, elapsed and remaining time."""
from __future__ import annotations

import io

import luigi

from pipeline.build import build
from pipeline.progress import BuildProgress, format_eta


def test_eta_from_mean_time_per_task():
    assert format_eta(0, 10, 5.0) == ""
    assert format_eta(2, 10, 20.0) == "~1m20s left"
    assert format_eta(5, 10, 10.0) == "~10s left"
    assert format_eta(10, 10, 99.0) == ""


class _Leaf(luigi.Task):
    n = luigi.IntParameter()
    done = False

    def complete(self):
        return self.done

    def run(self):
        type(self).done = True


class _Root(luigi.WrapperTask):
    def requires(self):
        return [_Leaf(n=0)]


def test_lines_without_a_terminal(luigi_paths):
    out = io.StringIO()
    with BuildProgress(stream=out, bar=False):
        assert build(_Root()).ok
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("progress:")]
    assert lines and "tasks done" in lines[-1] and "/" in lines[-1]
    assert lines[-1].startswith("progress: 2/2")


def test_total_known_up_front(luigi_paths):
    out = io.StringIO()
    _Leaf.done = False
    pending = [_Leaf(n=0), _Root()]
    with BuildProgress(stream=out, bar=False, pending=pending):
        assert build(_Root()).ok
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("progress:")]
    assert lines[0].startswith("progress: 1/2 tasks done, last _Leaf")


# ----------------------------------------------------------------------------- long work without a terminal
def test_work_progress_prints_lines_with_rate_and_time_left():
    from tasks.common.progress import Progress
    out = io.StringIO()
    p = Progress(None, 10, "truth frames", lines=True, line_interval=0.0, stream=out)
    first = out.getvalue().splitlines()
    assert first == ["truth frames: 0/10 (0 %)"]       # printed before any work is done
    p.skip(2)                                           # 2 found up to date: 8 left to do
    for _ in range(8):
        p.update(1)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[2].startswith("truth frames: 2/8 (25 %), ") and "/s, ~" in lines[2]
    assert lines[2].endswith("left")
    assert lines[-1].startswith("truth frames: 8/8 (100 %), ") and "done in" in lines[-1]
    # a terminal-less run that did not ask for lines stays quiet
    quiet = io.StringIO()
    q = Progress(None, 3, "x", stream=quiet)
    q.update(3)
    q.close()
    assert quiet.getvalue() == ""
