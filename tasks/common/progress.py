"""Progress for long work: Luigi's status message and percentage, plus a tqdm bar on a terminal."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """Report `done/total` to a Luigi task (visualiser) and to a CLI progress bar.

    `task` may be None (plain function call). The bar is drawn only when stderr is a terminal
    or `bar=True`, so logs from batch runs stay readable.
    """

    def __init__(self, task, total: int, label: str, bar: bool | None = None, min_interval: float = 1.0):
        self.task, self.total, self.label = task, max(int(total), 1), label
        self.done = 0
        self._last = 0.0
        self._min_interval = min_interval
        show = sys.stderr.isatty() if bar is None else bar
        self._bar = tqdm(total=self.total, desc=label, unit="f", leave=False) if show else None

    def update(self, n: int = 1, message: str | None = None) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        now = time.monotonic()
        if self.task is not None and (now - self._last >= self._min_interval or self.done >= self.total):
            self._last = now
            pct = min(100, int(100 * self.done / self.total))
            try:
                self.task.set_progress_percentage(pct)
                self.task.set_status_message(message or f"{self.label}: {self.done}/{self.total}")
            except Exception:  # outside a worker these hooks may be unset
                pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
