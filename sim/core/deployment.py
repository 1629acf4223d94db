"""A deployment: the replicas of one variant behind one shared batcher, or one batcher per replica.

With a balancer (``sim.core.balancers``) each replica has its own line and the balancer picks one
for each request among the replicas that can serve; without one (``shared``) every replica takes
from one line. A plan may resize it: new replicas serve once their executor has started them (at
once in a simulation without start-up times), idle ones are removed first and busy ones after
their batch. A crash stops one replica; a balancer with health checks moves the lines of dead
replicas to live ones.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

from traces.scenario import DeploymentConfig

from .balancers import make_balancer
from .batcher import Batcher, BatchSink, Replica
from .queues import make_queue
from .records import ReplicaSeconds, deployment_stats

if TYPE_CHECKING:
    import numpy as np

    from .executor import Executor


class Deployment:
    def __init__(self, executor: "Executor", sink: BatchSink, index: int, config: DeploymentConfig,
                 deadlines_s: list[float], window_s: tuple[float, float], rng: "np.random.Generator"):
        self.executor = executor
        self.sink = sink
        self.index = index
        self.name = config.name
        self.config = config
        self.variant = config.variant
        self.deadlines_s = deadlines_s
        self.window_s = window_s
        self.max_batch_size = config.max_batch_size
        self.batch_wait_timeout_ms = config.batch_wait_timeout_ms
        self._balancer = make_balancer(config.balancer, rng)
        self.batchers: list[Batcher] = []
        self._gone: list[Batcher] = []  # per-replica batchers removed by a plan, kept for accounting
        self._live: list[Batcher] = []  # per-replica batchers whose replica is up
        self.recent: deque[tuple[float, float, int]] = deque(maxlen=1024)  # (finish_s, service_s, size)
        self._held = ReplicaSeconds(window_s)
        self._count = 0
        self._replica_ids = 0  # replicas are numbered in order of creation, never reused
        self.cold_starts: list[list[float]] = []  # [started, ready (nan: not yet)] of each cold start
        self._cold: dict[int, int] = {}  # replica index -> its cold start, while it starts
        if self._balancer is None:
            self.batchers.append(self._new_batcher())
            self.submit = self.batchers[0].submit  # one call less on the hottest path
        self.set_replicas(config.replicas, 0.0)

    def _new_batcher(self) -> Batcher:
        return Batcher(self, make_queue(self.config.queue, self.deadlines_s, getattr(self.sink, "queue_tenancy", None)),
                       max_batch_size=self.max_batch_size,
                       batch_wait_timeout_s=self.batch_wait_timeout_ms / 1000.0,
                       drop_expired=self.config.drop_expired, max_queue_size=self.config.max_queue_size)

    # --- requests -----------------------------------------------------------------------
    def submit(self, request: int, now: float) -> bool:
        """Join the queue the balancer picks among live replicas; False when it is full."""
        return self._balancer(self._live or self.batchers).submit(request, now)

    # --- state the view reads -------------------------------------------------------------
    @property
    def replicas(self) -> int:
        """Replicas able to serve now: provisioned ones less those crashed."""
        return self.load()[2]

    # --- faults --------------------------------------------------------------------------------
    def replica(self, index: int):
        for batcher in self.batchers:
            for replica in batcher.replicas:
                if replica.index == index:
                    return batcher, replica
        return None, None

    def crash(self, index: int, now: float) -> None:
        """One outage of replica ``index`` starts (outages may overlap; it is down until the last ends)."""
        batcher, replica = self.replica(index)
        if replica is not None and batcher.crash(replica, now) and self._balancer is not None:
            self._health_check(now)

    def recover(self, index: int, now: float) -> None:
        batcher, replica = self.replica(index)
        if replica is not None and batcher.recover(replica, now) and self._balancer is not None:
            self._health_check(now)

    def _health_check(self, now: float) -> None:
        """A load balancer with health checks: the lines of dead replicas move to live ones. With
        none live, requests wait in the lines they were balanced onto until a replica recovers."""
        self._live = [b for b in self.batchers if b.alive]
        if self._live:
            self._resubmit([r for b in self.batchers if not b.alive for r in b.queue.drain()], now)

    def _resubmit(self, requests, now: float) -> None:
        for request in requests:
            if not self.submit(request, now):
                self.sink.drop(request, now, "queue_full")

    @property
    def provisioned(self) -> int:
        """Replicas the deployment holds (and pays for): serving, starting, crashed."""
        return self._count

    @property
    def enqueued(self) -> int:
        """Requests that joined its queues so far."""
        return sum(b.enqueued for b in self.batchers + self._gone)

    @property
    def in_flight(self) -> int:
        """Requests in service now."""
        return sum(len(r.batch) for b in self.batchers for r in b.replicas if r.batch is not None)

    @property
    def queue_length(self) -> int:
        return self.load()[0]

    @property
    def busy_replicas(self) -> int:
        return self.load()[1]

    def load(self) -> tuple[int, int, int]:
        """(waiting, busy replicas, replicas able to serve) in one pass: a policy reads it per request."""
        batchers = self.batchers
        if len(batchers) == 1:
            b = batchers[0]
            return len(b.queue), b.busy, self._count - b.down - b.starting
        waiting = busy = down = 0
        for b in batchers:
            waiting += len(b.queue)
            busy += b.busy
            down += b.down + b.starting
        return waiting, busy, self._count - down

    # --- changes a plan may make ------------------------------------------------------------
    def set_batching(self, max_batch_size: int | None, batch_wait_timeout_ms: float | None, now: float) -> None:
        if max_batch_size is not None:
            self.executor.batching_changed(self.index, max_batch_size)
            self.max_batch_size = max_batch_size
        if batch_wait_timeout_ms is not None:
            self.batch_wait_timeout_ms = batch_wait_timeout_ms
        for batcher in self.batchers:
            batcher.max_batch_size = self.max_batch_size
            batcher.timeout_s = self.batch_wait_timeout_ms / 1000.0
            batcher.dispatch(now)

    def set_replicas(self, count: int, now: float) -> None:
        """Start new replicas; remove idle ones first, then ones still starting, busy ones after their batch."""
        self._held.change(count, now)
        if self._balancer is None:
            self._resize_shared(self.batchers[0], count, now)
        else:
            self._resize_per_replica(count, now)
        self._count = count

    def _start(self, batcher: Batcher, now: float) -> None:
        replica = batcher.add_replica(self._next_replica_id(), now)
        if self.executor.start_replica(replica, now):  # ready at once: no start-up time
            batcher.ready(replica, now)
        else:
            self._cold[replica.index] = len(self.cold_starts)
            self.cold_starts.append([now, math.nan])

    def replica_ready(self, replica: Replica, now: float) -> None:
        """The executor has started ``replica``: it serves from ``now``."""
        if replica.index in self._cold:
            self.cold_starts[self._cold.pop(replica.index)][1] = now
        batcher = replica.batcher
        batcher.ready(replica, now)
        if self._balancer is not None:
            self._health_check(now)
        batcher.dispatch(now)

    def _resize_shared(self, batcher: Batcher, count: int, now: float) -> None:
        active = [r for r in batcher.replicas if not r.retiring]
        for _ in range(count - len(active)):
            self._start(batcher, now)
        for _ in range(len(active) - count):
            if batcher.free:
                batcher.retire(batcher.free.pop())
            else:
                candidates = [r for r in batcher.replicas if not r.retiring]
                victim = next((r for r in candidates if r.starting), candidates[0])
                victim.retiring = True
        batcher.dispatch(now)

    def _resize_per_replica(self, count: int, now: float) -> None:
        while len(self.batchers) < count:
            self.batchers.append(self._new_batcher())
            self._start(self.batchers[-1], now)
        orphans: list[int] = []
        while len(self.batchers) > count:
            batcher = self.batchers.pop()
            orphans.extend(batcher.queue.drain())
            for replica in batcher.replicas:
                replica.retiring = True
            while batcher.free:
                batcher.retire(batcher.free.pop())
            self._gone.append(batcher)
        self._health_check(now)
        self._resubmit(orphans, now)

    def _next_replica_id(self) -> int:
        self._replica_ids += 1
        return self._replica_ids - 1

    # --- accounting ----------------------------------------------------------------------
    def all_replicas(self):
        for batcher in self.batchers + self._gone:
            yield from batcher.replicas
            yield from batcher.retired

    def stats(self, end_s: float) -> dict:
        """Busy fraction, replica-seconds and batches inside the measurement window."""
        return deployment_stats(self._held.until(end_s), self.all_replicas())
