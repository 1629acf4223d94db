"""A deployment: the replicas of one variant behind one shared batcher, or one batcher per replica."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from traces.scenario import DeploymentConfig

from traces.balancers import make_balancer
from .batcher import Batcher, BatchSink
from traces.queues import make_queue
from traces.records import ReplicaSeconds, deployment_stats

if TYPE_CHECKING:
    import simpy


class Deployment:
    def __init__(self, env: "simpy.Environment", sink: BatchSink, index: int, config: DeploymentConfig,
                 sampler, deadlines_s: list[float], window_s: tuple[float, float], rng: np.random.Generator):
        self.env = env
        self.sink = sink
        self.index = index
        self.name = config.name
        self.config = config
        self.variant = config.variant
        self.sampler = sampler
        self._deadlines_s = deadlines_s
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
        if self._balancer is None:
            self.batchers.append(self._new_batcher())
            self.submit = self.batchers[0].submit  # one call less on the hottest path
        self.set_replicas(config.replicas, 0.0)

    def _new_batcher(self) -> Batcher:
        batcher = Batcher(self.env, self.sink, self.index, make_queue(self.config.queue, self._deadlines_s),
                          self.sampler, self._deadlines_s, max_batch_size=self.max_batch_size,
                          batch_wait_timeout_s=self.batch_wait_timeout_ms / 1000.0,
                          drop_expired=self.config.drop_expired, max_queue_size=self.config.max_queue_size,
                          window_s=self.window_s)
        batcher.recent = self.recent
        return batcher

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
            return len(b.queue), b.busy, self._count - b.down
        waiting = busy = down = 0
        for b in batchers:
            waiting += len(b.queue)
            busy += b.busy
            down += b.down
        return waiting, busy, self._count - down

    # --- changes a plan may make ------------------------------------------------------------
    def set_batching(self, max_batch_size: int | None, batch_wait_timeout_ms: float | None, now: float) -> None:
        if max_batch_size is not None:
            self.sampler.ensure_batch(max_batch_size)
            self.max_batch_size = max_batch_size
        if batch_wait_timeout_ms is not None:
            self.batch_wait_timeout_ms = batch_wait_timeout_ms
        for batcher in self.batchers:
            batcher.max_batch_size = self.max_batch_size
            batcher.timeout_s = self.batch_wait_timeout_ms / 1000.0
            batcher.dispatch(now)

    def set_replicas(self, count: int, now: float) -> None:
        """Add idle replicas at once; remove idle ones first, busy ones after their batch."""
        self._held.change(count, now)
        if self._balancer is None:
            self._resize_shared(self.batchers[0], count, now)
        else:
            self._resize_per_replica(count, now)
        self._count = count

    def _resize_shared(self, batcher: Batcher, count: int, now: float) -> None:
        active = [r for r in batcher.replicas if not r.retiring]
        for _ in range(count - len(active)):
            batcher.add_replica(self._next_replica_id())
        for _ in range(len(active) - count):
            if batcher.free:
                replica = batcher.free.pop()
                batcher.replicas.remove(replica)
                batcher.retired.append(replica)
            else:
                next(r for r in batcher.replicas if not r.retiring).retiring = True
        batcher.dispatch(now)

    def _resize_per_replica(self, count: int, now: float) -> None:
        while len(self.batchers) < count:
            self.batchers.append(self._new_batcher())
            self.batchers[-1].add_replica(self._next_replica_id())
        orphans: list[int] = []
        while len(self.batchers) > count:
            batcher = self.batchers.pop()
            orphans.extend(batcher.queue.drain())
            for replica in batcher.replicas:
                replica.retiring = True
            if batcher.free:
                batcher.retired.extend(batcher.free)
                batcher.replicas.clear()
                batcher.free.clear()
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
