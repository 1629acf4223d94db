"""The dynamic batcher and the replicas that pull batches from it.

Rule: whenever a replica is free and requests wait, it takes up to ``max_batch_size`` of them at
once if that many wait, or if the oldest waiting request has waited ``batch_wait_timeout``;
otherwise one timer fires at (oldest enqueue + timeout) and the rule is checked again. With
``drop_expired``, a request whose deadline has been reached when its batch forms is dropped and
the next one is taken in its place. A batch occupies its replica for one sampled service time, and
all of its requests finish together. Each replica is a long-lived object; a batch costs one
SimPy timeout, a wait costs at most one more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from collections import deque

from simpy.events import Timeout

from traces.queues import EdfQueue, FifoQueue, take_batch

if TYPE_CHECKING:
    import simpy

_EPS_S = 1e-12  # float slack when comparing a timer's firing time with the instant it aims at


class BatchSink(Protocol):
    """What the engine does when a batch forms or finishes."""

    def drop(self, request: int, now: float, reason: str) -> None: ...
    def batch_started(self, deployment: int, batch: list[int], now: float, replica: int) -> None: ...
    def batch_finished(self, deployment: int, batch: list[int], now: float) -> None: ...
    def batch_failed(self, deployment: int, batch: list[int], now: float) -> None: ...


class Replica:
    """One server; it serves one batch at a time and records its busy time inside the window."""

    __slots__ = ("batcher", "index", "batch", "started_s", "free_s", "busy_s", "batches", "items", "retiring", "down",
                 "event")

    def __init__(self, batcher: "Batcher", index: int):
        self.batcher = batcher
        self.index = index
        self.batch: list[int] | None = None
        self.started_s = 0.0
        self.free_s = batcher.env.now  # idle since: the service of a batch may depend on it
        self.busy_s = 0.0
        self.batches = 0
        self.items = 0
        self.retiring = False
        self.down = 0  # outages in progress: it serves only at 0
        self.event = None  # the completion of the batch in service; a crash orphans it

    def _account(self, now: float) -> None:
        lo, hi = self.batcher.window_s
        overlap = min(now, hi) - max(self.started_s, lo)
        if overlap > 0:
            self.busy_s += overlap

    def _done(self, event) -> None:
        if event is not self.event:
            return  # the replica crashed while serving this batch
        batcher = self.batcher
        now = batcher.env.now
        batch, self.batch = self.batch, None
        self.free_s = now
        self._account(now)
        batcher.recent.append((now, now - self.started_s, len(batch)))
        lo, hi = batcher.window_s
        if lo <= self.started_s < hi:
            self.batches += 1
            self.items += len(batch)
        batcher.sink.batch_finished(batcher.deployment, batch, now)
        if self.retiring:
            batcher.replicas.remove(self)
            batcher.retired.append(self)
        else:
            batcher.free.append(self)
        if batcher.queue:
            batcher.dispatch(now)


class Batcher:
    """One waiting line and the replicas that serve it."""

    def __init__(self, env: "simpy.Environment", sink: BatchSink, deployment: int,
                 queue: FifoQueue | EdfQueue, sampler, deadlines_s: list[float], *,
                 max_batch_size: int, batch_wait_timeout_s: float, drop_expired: bool,
                 max_queue_size: int, window_s: tuple[float, float]):
        self.env = env
        self.sink = sink
        self.deployment = deployment
        self.queue = queue
        self.sampler = sampler
        self.deadlines_s = deadlines_s
        self.max_batch_size = max_batch_size
        self.timeout_s = batch_wait_timeout_s
        self.drop_expired = drop_expired
        self._expiry = deadlines_s if drop_expired else None  # what take_batch checks expiry against
        self.max_queue_size = max_queue_size
        self.window_s = window_s
        self.replicas: list[Replica] = []
        self.free: list[Replica] = []
        self.retired: list[Replica] = []
        self.down = 0  # replicas crashed and not yet recovered
        self.recent: deque = deque(maxlen=1)  # the deployment's recent batches (it passes its own)
        self._timer_armed = False

    def add_replica(self, index: int) -> Replica:
        replica = Replica(self, index)
        self.replicas.append(replica)
        self.free.append(replica)
        return replica

    @property
    def busy(self) -> int:
        return len(self.replicas) - len(self.free) - self.down

    @property
    def alive(self) -> int:
        return len(self.replicas) - self.down

    def crash(self, replica: Replica, now: float) -> bool:
        """The replica stops at once; the requests of its batch go back to the engine. Outages may
        overlap: each one counts, and only the first stops it (True when this one did)."""
        if replica not in self.replicas:
            return False
        replica.down += 1
        if replica.down > 1:
            return False
        self.down += 1
        if replica in self.free:
            self.free.remove(replica)
        elif replica.batch is not None:
            replica._account(now)
            batch, replica.batch, replica.event = replica.batch, None, None
            self.sink.batch_failed(self.deployment, batch, now)
        return True

    def recover(self, replica: Replica, now: float) -> bool:
        """One outage of the replica ends; it serves again once the last one has (True then)."""
        if not replica.down:
            return False
        replica.down -= 1
        if replica.down:
            return False
        replica.free_s = now
        self.down -= 1
        if replica.retiring:
            self.replicas.remove(replica)
            self.retired.append(replica)
            return True
        self.free.append(replica)
        self.dispatch(now)
        return True

    def submit(self, request: int, now: float) -> bool:
        """Enqueue; False when the queue is full (the caller records the rejection)."""
        queue = self.queue
        if self.max_queue_size and len(queue) >= self.max_queue_size:
            return False
        queue.push(request, now)
        if self.free:
            self.dispatch(now)
        return True

    def dispatch(self, now: float) -> None:
        queue, free = self.queue, self.free
        max_b = self.max_batch_size
        while free and queue:
            if len(queue) < max_b and self.timeout_s > 0:
                ready_s = queue.oldest_s() + self.timeout_s
                if now + _EPS_S < ready_s:
                    if not self._timer_armed:
                        self._timer_armed = True
                        Timeout(self.env, ready_s - now).callbacks.append(self._timer_fired)
                    return
            batch = take_batch(queue, max_b, now, self._expiry, self.sink.drop)
            if batch:
                replica = free.pop()
                self.sink.batch_started(self.deployment, batch, now, replica.index)
                replica.batch = batch
                replica.started_s = now
                event = replica.event = Timeout(self.env, self.sampler.draw_s(len(batch), now, now - replica.free_s))
                event.callbacks.append(replica._done)

    def _timer_fired(self, _event) -> None:
        self._timer_armed = False
        self.dispatch(self.env.now)
