"""Progress of long work: a bar on a terminal, and off one (CI, a log file, a pipe) one plain
line on stderr every ~10 s, so a long job shows it is alive without flooding the log."""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

LINE_EVERY_S = 10.0


def show_progress() -> bool:
    """Progress bars on a terminal, never in CI or when output is piped."""
    return sys.stderr.isatty() and not os.environ.get("CI")


class Progress:
    """``update(done)`` with the amount done so far (not an increment); ``close()`` at the end.

    On a terminal: a tqdm bar. Elsewhere: ``progress: <desc>: <done> of <total> <unit>`` on
    stderr when at least ``every_s`` seconds passed since the start or the last line, and
    nothing else (no line at all for work shorter than ``every_s``).
    """

    def __init__(self, total: float, desc: str, unit: str, *, every_s: float = LINE_EVERY_S,
                 bar: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit = float(total), desc, unit
        self.every_s = every_s
        self._clock = clock
        self._last = clock()
        self._done = 0.0
        self._bar = None
        if show_progress() if bar is None else bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def advance(self, amount: float = 1) -> None:
        """``update`` by an increment."""
        self.update(self._done + amount)

    def update(self, done: float) -> None:
        self._done = done
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            print(f"progress: {self.desc}: {_amount(done)} of {_amount(self.total)} {self.unit}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _amount(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
