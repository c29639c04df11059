"""Progress for long work: Luigi's status message and percentage, plus a tqdm bar on a terminal
(or, where asked for, plain lines with the rate and the time left when there is no terminal)."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """Report `done/total` to a Luigi task (visualiser) and to a CLI progress bar.

    `task` may be None (plain function call). The bar is drawn only when stderr is a terminal
    or `bar=True`, so logs from batch runs stay readable. `lines=True` (a CLI without a terminal:
    a log file, `make demo` piped) prints one line at the start and then one every
    `line_interval` seconds and at the end instead: done/total, rate and time left.
    """

    def __init__(self, task, total: int, label: str, bar: bool | None = None, min_interval: float = 1.0,
                 lines: bool = False, line_interval: float = 10.0, stream=None):
        self.task, self.total, self.label = task, max(int(total), 1), label
        self.done = 0
        self._last = 0.0
        self._min_interval = min_interval
        self._stream = stream or sys.stderr
        show = self._stream.isatty() if bar is None else bar
        self._bar = (tqdm(total=self.total, desc=label, unit="f", leave=False, file=self._stream)
                     if show else None)
        self._lines = bool(lines) and self._bar is None
        self._line_interval = line_interval
        self._t0 = self._last_line = time.monotonic()
        self._first = None                    # (time, done) at the first update
        if self._lines:
            self._print_line()

    def line(self) -> str:
        """'truth frames: 120/2520 (4 %), 14.2/s, ~2m49s left': the rate since the first update (set-up
        time before the first unit does not count), none before the second one."""
        now = time.monotonic()
        el = now - self._t0
        text = f"{self.label}: {self.done}/{self.total} ({100 * self.done // self.total} %)"
        if self._first is not None and self.done > self._first[1] and now > self._first[0]:
            rate = (self.done - self._first[1]) / (now - self._first[0])
            text += f", {rate:.1f}/s"
            if self.done < self.total:
                m, s = divmod(int(round((self.total - self.done) / rate)), 60)
                text += f", ~{m}m{s:02d}s left" if m else f", ~{s}s left"
            else:
                text += f", done in {el:.0f} s"
        return text

    def _print_line(self) -> None:
        print(self.line(), file=self._stream, flush=True)

    def update(self, n: int = 1, message: str | None = None) -> None:
        if self._first is None:
            self._first = (time.monotonic(), self.done + n)
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        now = time.monotonic()
        if self._lines and (now - self._last_line >= self._line_interval or self.done >= self.total):
            self._last_line = now
            self._print_line()
        if self.task is not None and (now - self._last >= self._min_interval or self.done >= self.total):
            self._last = now
            pct = min(100, int(100 * self.done / self.total))
            try:
                self.task.set_progress_percentage(pct)
                self.task.set_status_message(message or f"{self.label}: {self.done}/{self.total}")
            except Exception:  # outside a worker these hooks may be unset
                pass

    def skip(self, n: int) -> None:
        """Leave n units out of the total (work found already done), so rate and time left stay true."""
        self.total = max(self.total - int(n), 1)
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
