"""Wall-clock instants, met precisely: the real server's waits, and its timer thread.

A latency of a few milliseconds is measured against waits of a few hundred microseconds, so
``wait_until`` sleeps to ``SPIN_S`` before its target and spins the rest with the GIL released,
and threads of the server ask Linux for a 1 ns timer slack. ``Timers`` is the serving core's
``call_at`` on real time: one thread, a heap of due times, each callback run under the core's lock.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from typing import Callable, Protocol


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()
_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30
# Linux lets a sleep overshoot by the thread's timer slack (50 us by default); with a 1 ns slack a
# sleep ends ~50 us late on a VM, so spinning the last 0.1 ms is enough, else the last 0.3 ms.
SPIN_S = 1e-4 if _PRCTL is not None else 3e-4


def set_timer_slack(ns: int) -> int | None:
    """Set the calling thread's timer slack; returns the previous one (None where unsupported)."""
    if _PRCTL is None:
        return None
    old = _PRCTL(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
    return old if old > 0 and _PRCTL(_PR_SET_TIMERSLACK, ns, 0, 0, 0) == 0 else None


class BatchRunner(Protocol):
    """Runs one real batch. Called from a replica worker thread."""

    def run(self, sample_indices: list[int]) -> tuple[list, list[float]]: ...


def wait_until(target: float, interrupt: threading.Event | None = None) -> None:
    """Sleep to ``SPIN_S`` before ``target`` (perf_counter time), then spin with the GIL released.

    With ``interrupt``, return as soon as that event is set (a failed replica ends the run).
    """
    rest = target - time.perf_counter() - SPIN_S
    if rest > 0 and (interrupt.wait(rest) if interrupt is not None else time.sleep(rest)):
        return
    while time.perf_counter() < target:
        time.sleep(0)  # releases the GIL without yielding the core (sched_yield may hand it over for a slice)


def warm(runner: BatchRunner) -> None:
    """Run lazy initialisation before the clock starts: ``runner.warmup()`` if it has one, else a batch of 1."""
    hook = getattr(runner, "warmup", None)
    hook() if hook is not None else runner.run([0])


class Timers:
    """Callbacks at wall-clock times (seconds since ``t0``, a ``perf_counter`` reading), each run
    under ``lock`` by one thread of their own; a callback that raises ends the run via ``fail``."""

    def __init__(self, lock: threading.Lock, fail: Callable[[BaseException], None]):
        self._lock, self._fail = lock, fail
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Callable]] = []
        self._seq = itertools.count()
        self._stopping = False
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="timers")

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread.start()

    def call_at(self, time_s: float, callback: Callable[[object], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time_s, next(self._seq), callback))
            if self._heap[0][2] is callback:
                self._cond.notify()

    def _loop(self) -> None:
        set_timer_slack(1)
        heap, cond = self._heap, self._cond
        try:
            while True:
                with cond:
                    while not self._stopping:
                        rest = heap[0][0] - (time.perf_counter() - self.t0) - SPIN_S if heap else None
                        if rest is not None and rest <= 0:
                            break
                        cond.wait(rest)
                    if self._stopping:
                        return
                    time_s, _, callback = heapq.heappop(heap)
                wait_until(self.t0 + time_s)
                with self._lock:
                    callback(None)
        except BaseException as exc:
            self._fail(exc)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
