"""The live serving system the real server runs, and the read-only view policies get of it.

A ``Deployment`` is one shared ``Batcher`` or one per replica (picked by a balancer); a ``Batcher``
is a waiting line (``traces.queues``) guarded by a ``threading.Condition``, with one worker thread
per ``Replica`` that forms batches by the simulator's rule (``sim.batcher``) and runs them on its
own ``BatchRunner``. Policies see it through ``policies.view.LiveView``, as in the simulator
(each read is one GIL-atomic ``len`` or int, so no lock). The balancers are the
simulator's own (``traces.balancers``), so power-of-two consumes its random stream
as the simulator does.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from traces.balancers import make_balancer
from traces.queues import make_queue, take_batch
from traces.records import ReplicaSeconds, deployment_stats
from traces.scenario import DeploymentConfig

if TYPE_CHECKING:
    from .server import Server


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


class Replica:
    """One server: its runner, whether it serves a batch now, and its busy time inside the window."""

    __slots__ = ("index", "runner", "busy", "retiring", "started_s", "busy_s", "batches", "items")

    def __init__(self, index: int, runner: BatchRunner | None):
        self.index, self.runner = index, runner
        self.busy = self.retiring = False
        self.started_s = 0.0
        self.busy_s, self.batches, self.items = 0.0, 0, 0


class Batcher:
    """One waiting line, its condition variable, and the worker threads of the replicas serving it."""

    def __init__(self, server: "Server", dep: "Deployment"):
        cfg = dep.config
        self.server, self.dep = server, dep
        self.cond = threading.Condition(threading.Lock())
        self.queue = make_queue(cfg.queue, server.deadlines_s)
        self.max_b, self.timeout_s = dep.max_batch_size, dep.batch_wait_timeout_ms / 1000.0
        self.max_queue_size = cfg.max_queue_size
        self._expiry = server.deadlines_s if cfg.drop_expired else None  # what take_batch checks expiry against
        self.replicas: list[Replica] = []
        self.threads: list[threading.Thread] = []
        self.busy = 0
        self.stopping = False

    def submit(self, request: int, now: float) -> bool:
        """Enqueue; False when full. Wakes a worker only when the batching rule may have changed."""
        with self.cond:
            queue = self.queue
            if self.max_queue_size and len(queue) >= self.max_queue_size:
                return False
            queue.push(request, now)
            n = len(queue)
            if n == 1 or n >= self.max_b or self.timeout_s <= 0:
                self.cond.notify()
        return True

    def _next(self, rep: Replica) -> list[int] | float | None:
        """Under the lock: a batch, or a time to spin to (the timeout is near), or None (exit)."""
        queue, cond, clock = self.queue, self.cond, self.server.clock
        while not (rep.retiring or self.stopping):
            if not queue:
                cond.wait()
                continue
            now = clock()
            if len(queue) < self.max_b and self.timeout_s > 0:
                ready = queue.oldest_s() + self.timeout_s
                if now < ready:
                    if ready - now > SPIN_S:
                        cond.wait(ready - now - SPIN_S)
                        continue
                    return ready
            batch = take_batch(queue, self.max_b, now, self._expiry, self.server.drop)
            if batch:
                rep.busy, rep.started_s, self.busy = True, now, self.busy + 1
                if queue:
                    cond.notify()  # another idle replica may take the rest
                return batch
        return None

    def work(self, rep: Replica) -> None:
        """A replica's thread: form batches by the rule, run them, report them, until told to stop."""
        server = self.server
        set_timer_slack(1)
        try:
            if rep.runner is None:  # added by a plan: built and warmed here, not in the dispatcher
                rep.runner = self.dep.factory()
                warm(rep.runner)
            while True:
                with self.cond:
                    if rep.busy:
                        rep.busy, self.busy = False, self.busy - 1
                    got = self._next(rep)
                if got is None:
                    return
                if got.__class__ is float:
                    t_abs, queue = got + server.t0, self.queue
                    while time.perf_counter() < t_abs and len(queue) < self.max_b:
                        time.sleep(0)
                    continue
                start = rep.started_s  # the instant the batch formed, as in the simulator
                server.batch_started(got, start, rep.index)
                preds, confidences = rep.runner.run([server.sample[i] for i in got])
                finish = server.clock()
                lo, hi = server.window_s
                overlap = min(finish, hi) - max(start, lo)
                if overlap > 0:
                    rep.busy_s += overlap
                if lo <= start < hi:
                    rep.batches += 1
                    rep.items += len(got)
                self.dep.recent.append((finish, finish - start, len(got)))
                server.batch_finished(got, finish, preds, confidences)  # then free (next lock round)
        except BaseException as exc:  # reported by the dispatcher, which stops the run
            server.fail(exc)
        finally:
            close = getattr(rep.runner, "close", None)
            if close is not None:  # a replica process ends with its thread
                close()

    def add(self, rep: Replica) -> None:
        self.replicas.append(rep)
        thread = threading.Thread(target=self.work, args=(rep,), daemon=True, name=f"{self.dep.name}/{rep.index}")
        self.threads.append(thread)
        thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def join(self, timeout_s: float) -> None:
        """Wait for the workers to exit; daemon threads, so a hung runner cannot hang the process."""
        for thread in self.threads:
            thread.join(timeout_s)


class Deployment:
    """The replicas of one deployment behind one shared batcher, or one batcher each with a balancer."""

    def __init__(self, server: "Server", index: int, config: DeploymentConfig,
                 factory: Callable[[], BatchRunner], balance_rng: np.random.Generator):
        self.server, self.index, self.config, self.factory = server, index, config, factory
        self.name, self.variant = config.name, config.variant
        self.max_batch_size, self.batch_wait_timeout_ms = config.max_batch_size, config.batch_wait_timeout_ms
        self._balancer = make_balancer(config.balancer, balance_rng)
        self.recent: deque[tuple[float, float, int]] = deque(maxlen=1024)  # (finish_s, service_s, size)
        self._lock = threading.Lock()  # the balancer's state and the batcher list
        self.batchers: list[Batcher] = [] if self._balancer else [Batcher(server, self)]
        self.all_batchers = list(self.batchers)
        self.replicas = 0
        self._held = ReplicaSeconds(server.window_s)
        self._ids = 0

    def submit(self, request: int, now: float) -> bool:
        if self._balancer is None:
            return self.batchers[0].submit(request, now)
        with self._lock:
            return self._balancer(self.batchers).submit(request, now)

    @property
    def queue_length(self) -> int:
        return sum(len(b.queue) for b in self.batchers)

    @property
    def busy_replicas(self) -> int:
        return sum(b.busy for b in self.batchers)

    def load(self) -> tuple[int, int, int]:
        """(waiting, busy replicas, replicas), as ``sim.deployment.Deployment.load``."""
        return self.queue_length, self.busy_replicas, self.replicas

    def new_replica(self, runner: BatchRunner | None) -> Replica:
        self._ids += 1
        return Replica(self._ids - 1, runner)

    def start(self, runners: list[BatchRunner]) -> None:
        for runner in runners:
            if self._balancer is not None:
                self.batchers.append(Batcher(self.server, self))
                self.all_batchers.append(self.batchers[-1])
            self.batchers[-1].add(self.new_replica(runner))
        self.replicas = len(runners)
        self._held.change(self.replicas, 0.0)

    def set_batching(self, max_batch_size: int | None, timeout_ms: float | None) -> None:
        if max_batch_size is not None:
            self.max_batch_size = max_batch_size
        if timeout_ms is not None:
            self.batch_wait_timeout_ms = timeout_ms
        for b in self.batchers:
            with b.cond:
                b.max_b, b.timeout_s = self.max_batch_size, self.batch_wait_timeout_ms / 1000.0
                b.cond.notify_all()

    def set_replicas(self, count: int, now: float) -> None:
        """New replicas start at once; idle ones are removed first, busy ones after their batch."""
        self._held.change(count, now)
        with self._lock:
            if self._balancer is None:
                batcher = self.batchers[0]
                with batcher.cond:
                    active = [r for r in batcher.replicas if not r.retiring]
                    for _ in range(count - len(active)):
                        batcher.add(self.new_replica(None))
                    victims = sorted(active, key=lambda r: r.busy)[:max(0, len(active) - count)]
                    for replica in victims:
                        replica.retiring = True
                    batcher.cond.notify_all()
                orphans: list[int] = []
            else:
                while len(self.batchers) < count:
                    self.batchers.append(Batcher(self.server, self))
                    self.all_batchers.append(self.batchers[-1])
                    self.batchers[-1].add(self.new_replica(None))
                orphans = []
                while len(self.batchers) > count:
                    batcher = self.batchers.pop()
                    with batcher.cond:
                        orphans.extend(batcher.queue.drain())
                        for replica in batcher.replicas:
                            replica.retiring = True
                        batcher.cond.notify_all()
        self.replicas = count
        for request in orphans:
            if not self.submit(request, now):
                self.server.drop(request, now, "queue_full")

    def stats(self, end_s: float) -> dict:
        """Busy fraction, replica-seconds and batches inside the measurement window (as sim's)."""
        return deployment_stats(self._held.until(end_s), (r for b in self.all_batchers for r in b.replicas))
