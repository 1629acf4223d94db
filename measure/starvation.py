"""Noticing a replica process that is ready to run but gets no CPU.

Replica processes run at idle priority (``SCHED_IDLE``, see ``measure.replicas.run_in_background``)
so that they never delay the front end's threads. The price: when other processes keep every core a
replica may use busy, the replica is starved. It is not stopped outright (Linux gives an idle task
a sliver, about 0.3% of a core next to one busy normal process), but a model that loads in 5 s
then takes half an hour, and a batch of 10 ms takes seconds. The parent would wait for it in
silence, and the harness would in the end record the variant as failed, which a rerun then skips.

The kernel tells a starved replica from a slow one. A replica that is loading, computing or polling for its next batch
runs; one waiting for a batch or a file sleeps; a starved one is runnable (state ``R`` in
``/proc/<pid>/stat``) yet runs almost never (``/proc/<pid>/schedstat``: nanoseconds on a CPU).
``StarvationWatch`` samples both each time its owner's wait for the child times out, and reports
once the child has been runnable at every sample, running at most ``RUNNING_SHARE`` of each
interval, for ``after_s`` seconds in a row. (Schedstat's second counter, the run-queue wait, is
booked only when the task next gets a CPU, in lumps of a second or more for a starved one, so it
cannot tell an interval apart.) Where ``/proc`` lacks either file (not Linux, or a kernel without
schedstat) the watch stays silent and the wait goes on as before.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

__all__ = ["StarvationWatch", "read_run_state"]

RUNNING_SHARE = 0.05   # of an interval, at most, that a runnable child ran for it to count as starved


def read_run_state(pid: int) -> tuple[bool, int] | None:
    """(whether ``pid`` is runnable, ns its main thread has run on a CPU); None if unknown."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        ran_ns = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return state == "R", ran_ns


class StarvationWatch:
    """Whether a child process has been starved of CPU for ``after_s`` seconds in a row.

    ``check()`` is called now and then while waiting for the child; each call closes an interval
    since the last. The clock and the reader are passed in so that a test can play them.
    """

    def __init__(self, pid: int, after_s: float, *, read: Callable[[int], tuple[bool, int] | None] = read_run_state,
                 clock: Callable[[], float] = time.monotonic):
        self.pid, self.after_s, self._read, self._clock = pid, after_s, read, clock
        self._last: tuple[float, int] | None = None
        self._starved_since: float | None = None

    def check(self) -> float | None:
        """The seconds the child has been starved, once that is ``after_s`` or more; else None."""
        now, seen = self._clock(), self._read(self.pid)
        if seen is None:  # gone, or no /proc here: nothing to say
            self._last = self._starved_since = None
            return None
        runnable, ran_ns = seen
        last, self._last = self._last, (now, ran_ns)
        if last is None:
            return None
        interval_s = now - last[0]
        if runnable and interval_s > 0 and (ran_ns - last[1]) / 1e9 <= RUNNING_SHARE * interval_s:
            if self._starved_since is None:
                self._starved_since = last[0]
        else:
            self._starved_since = None
        if self._starved_since is not None and now - self._starved_since >= self.after_s:
            return now - self._starved_since
        return None
