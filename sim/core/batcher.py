"""The dynamic batcher and the replicas that take batches from it.

Rule: whenever a replica is free and requests wait, it takes up to ``max_batch_size`` of them at
once if that many wait, or if the oldest waiting request has waited ``batch_wait_timeout``;
otherwise one timer is set for (oldest enqueue + timeout) and the rule is checked again when it
fires. With ``drop_expired``, a request whose deadline has been reached when its batch forms is
dropped and the next one taken in its place. A batch occupies its replica until the executor
reports its end; all of its requests finish together.

Both executors run this rule: the simulator's batches last a sampled service time, the real
server's as long as the model takes. A replica is a long-lived object with a ``ticket`` for the
batch it serves: a crash clears it, so the end of a batch that a crash orphaned is ignored.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Protocol

from .queues import EdfQueue, FifoQueue, take_batch

if TYPE_CHECKING:
    from .deployment import Deployment
    from .executor import Executor

_EPS_S = 1e-12  # float slack when comparing a timer's firing time with the instant it aims at


class BatchSink(Protocol):
    """What the core does when a batch forms, ends or is lost to a crash."""

    def drop(self, request: int, now: float, reason: str) -> None: ...
    def batch_started(self, deployment: int, batch: list[int], now: float, replica: int) -> None: ...
    def batch_finished(self, deployment: int, batch: list[int], now: float,
                       confidences: list[float] | None = None) -> None: ...
    def batch_failed(self, deployment: int, batch: list[int], now: float) -> None: ...


class Replica:
    """One server: one batch at a time; its busy time, batches and items inside the window."""

    __slots__ = ("batcher", "index", "batch", "started_s", "free_s", "busy_s", "batches", "items", "retiring", "down",
                 "starting", "ticket", "handle")

    def __init__(self, batcher: "Batcher", index: int, now: float):
        self.batcher = batcher
        self.index = index
        self.batch: list[int] | None = None
        self.started_s = 0.0
        self.free_s = now  # idle since: the service of a batch may depend on it
        self.busy_s = 0.0
        self.batches = 0
        self.items = 0
        self.retiring = False
        self.down = 0  # outages in progress: it serves only at 0
        self.starting = True  # until the executor says it can serve
        self.ticket: object = None  # the executor's token for the batch in service; a crash clears it
        self.handle: object = None  # the executor's own state for this replica (a worker thread)

    def _account(self, now: float) -> None:
        lo, hi = self.batcher.window_s
        overlap = min(now, hi) - max(self.started_s, lo)
        if overlap > 0:
            self.busy_s += overlap

    def completed_at(self, ticket: object, now: float | None = None, confidences: list[float] | None = None) -> None:
        """The batch of ``ticket`` ended at ``now`` (None: the executor's now; a SimPy timeout
        calls this with itself as the ticket); ``confidences`` are the runner's, per request
        (None: the prediction table's). Ignored if a crash has orphaned the batch."""
        if ticket is not self.ticket:
            return
        batcher = self.batcher
        if now is None:
            now = batcher.executor.now()
        batch, self.batch, self.ticket = self.batch, None, None
        self.free_s = now
        started_s = self.started_s
        batcher.recent.append((now, now - started_s, len(batch)))
        if batcher.charge is not None:
            batcher.charge(batch, now - started_s)
        lo, hi = batcher.window_s
        overlap = (now if now < hi else hi) - (started_s if started_s > lo else lo)  # _account, inlined
        if overlap > 0:
            self.busy_s += overlap
        if lo <= started_s < hi:
            self.batches += 1
            self.items += len(batch)
        batcher.sink.batch_finished(batcher.deployment, batch, now, confidences)
        if self.retiring:
            batcher.retire(self)
        else:
            batcher.free.append(self)
        if batcher.queue:
            batcher.dispatch(now)


class Batcher:
    """One waiting line and the replicas that serve it."""

    def __init__(self, owner: "Deployment", queue: FifoQueue | EdfQueue, *, max_batch_size: int,
                 batch_wait_timeout_s: float, drop_expired: bool, max_queue_size: int):
        self.owner = owner
        self.executor: "Executor" = owner.executor
        self.sink: BatchSink = owner.sink
        self.deployment = owner.index
        self.queue = queue
        self.max_batch_size = max_batch_size
        self.timeout_s = batch_wait_timeout_s
        self._expiry = owner.deadlines_s if drop_expired else None  # what take_batch checks expiry against
        self.max_queue_size = max_queue_size
        self.window_s = owner.window_s
        self.replicas: list[Replica] = []
        self.free: list[Replica] = []
        self.retired: list[Replica] = []
        self.down = 0      # replicas crashed and not yet recovered (starting or not)
        self.starting = 0  # replicas not yet ready, and not down
        self.enqueued = 0  # requests that joined this line, ever (the autoscalers' arrival rate)
        self.recent: deque = owner.recent  # the deployment's recent batches
        self._timer_s = math.inf  # when the batching wait's timer is set for (inf: none)
        self._expired: list[tuple[int, str]] = []  # dropped while a batch formed, not yet reported
        self.charge = getattr(queue, "served", None)  # a fair queue charges each batch's service
        self.expire = getattr(queue, "expire", None) if getattr(queue, "_timeouts", None) else None

    def add_replica(self, index: int, now: float) -> Replica:
        """A new replica, not yet serving: ``ready`` puts it to work."""
        replica = Replica(self, index, now)
        self.replicas.append(replica)
        self.starting += 1
        return replica

    def ready(self, replica: Replica, now: float) -> None:
        """The replica can serve from ``now`` (a retiring one leaves instead)."""
        replica.starting = False
        replica.free_s = now
        if replica.down:  # crashed while starting: it serves once recovered
            return
        self.starting -= 1
        if replica.retiring:
            self.retire(replica)
        else:
            self.free.append(replica)

    def retire(self, replica: Replica) -> None:
        self.replicas.remove(replica)
        self.retired.append(replica)
        self.executor.stop_replica(replica)

    @property
    def busy(self) -> int:
        return len(self.replicas) - len(self.free) - self.down - self.starting

    @property
    def alive(self) -> int:
        """Replicas that can serve now."""
        return len(self.replicas) - self.down - self.starting

    def crash(self, replica: Replica, now: float) -> bool:
        """The replica stops at once; the requests of its batch go back to the core. Outages may
        overlap: each one counts, and only the first stops it (True when this one did)."""
        if replica not in self.replicas:
            return False
        replica.down += 1
        if replica.down > 1:
            return False
        self.down += 1
        if replica.starting:  # counted as down, not as starting, until it recovers
            self.starting -= 1
        elif replica in self.free:
            self.free.remove(replica)
        elif replica.batch is not None:
            replica._account(now)
            batch, replica.batch, replica.ticket = replica.batch, None, None
            if self.charge is not None:
                self.queue.refund(batch)
            self.sink.batch_failed(self.deployment, batch, now)
        return True

    def recover(self, replica: Replica, now: float) -> bool:
        """One outage of the replica ends; it serves again once the last one has (True then)."""
        if not replica.down:
            return False
        replica.down -= 1
        if replica.down:
            return False
        self.down -= 1
        if replica.starting:  # back to starting: ``ready`` puts it to work
            self.starting += 1
            return True
        replica.free_s = now
        if replica.retiring:
            self.retire(replica)
            return True
        self.free.append(replica)
        self.dispatch(now)
        return True

    def submit(self, request: int, now: float) -> bool:
        """Enqueue; False when the queue is full (the caller records the rejection)."""
        queue = self.queue
        if self.max_queue_size and len(queue) >= self.max_queue_size:
            return False
        if queue.push(request, now) is False:  # a priority level at its own limit
            return False
        self.enqueued += 1
        # with the wait's timer set (never later than the oldest's ready time) and the batch not
        # full, the rule cannot be met before the timer fires
        if self.free and (self._timer_s == math.inf or len(queue) >= self.max_batch_size):
            self.dispatch(now)
        return True

    def dispatch(self, now: float) -> None:
        queue, free = self.queue, self.free
        if self.expire is not None and free:  # a priority level's timeout (sim.core.tenancy)
            for request in self.expire(now):
                self.sink.drop(request, now, "timeout")
        max_b = self.max_batch_size
        while free and queue:
            if len(queue) < max_b and self.timeout_s > 0:
                ready_s = queue.oldest_s() + self.timeout_s
                if now + _EPS_S < ready_s:
                    if ready_s + _EPS_S < self._timer_s:  # none set, or one set for later (the wait was shortened)
                        # aimed as a timeout of (ready_s - now) from now lands, the way SimPy adds it
                        self._timer_s = now + (ready_s - now)
                        self.executor.call_at(self._timer_s, self._timer_fired)
                    return
            batch = take_batch(queue, max_b, now, self._expiry, self._drop_later)
            if batch:
                replica = free.pop()
                self.sink.batch_started(self.deployment, batch, now, replica.index)
                replica.batch = batch
                replica.started_s = now
                self.executor.start_batch(replica, batch, now)
            if self._expired:
                self._report_expired(now)

    def _drop_later(self, request: int, now: float, reason: str) -> None:
        """``take_batch``'s drop of an expired request: a fair queue's charge is taken back at once
        (its next pick depends on it); the drop is reported once the batch has its replica
        (``_report_expired``). Reporting it may free a tenant's place under a quota, and the held
        request that takes it joins this very queue: reported mid-batch, that re-entered ``dispatch``,
        which gave the free replica away under the batch being formed."""
        if self.charge is not None:
            self.queue.refund((request,))
        self._expired.append((request, reason))

    def _report_expired(self, now: float) -> None:
        expired, self._expired = self._expired, []
        for request, reason in expired:
            self.sink.drop(request, now, reason)

    def _timer_fired(self, _event: object = None) -> None:
        now = self.executor.now()
        if now + _EPS_S >= self._timer_s:  # the earliest one set (a later one may still come, harmlessly)
            self._timer_s = math.inf
        self.dispatch(now)
