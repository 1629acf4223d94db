"""What an executor supplies to the serving core: a clock, timers, and a way to run batches.

The core (``sim.core.serving``) decides everything: which requests form a batch and when, which
replica serves it, where a request goes after a hop, when replicas come and go. It never waits
and never runs anything itself; it asks its executor. The SimPy engine (``sim.engine``) answers
with simulated time: a timer is a SimPy timeout, a batch takes a service time sampled from the
bundle. The real server (``measure.server``) answers with the wall clock: a timer thread, and a
worker thread per replica that runs the batch on a real model. Either one reports back by calling
the core: ``Replica.completed_at`` when a batch ends, ``Deployment.replica_ready`` when a new
replica has started, and the callbacks it was given by ``call_at`` when their time comes. The real
server makes each of these calls under one lock, so the core never sees two at once.

A callback given to ``call_at`` takes one argument (the executor's event, or None) and ignores it,
so that the SimPy executor can hang it on a timeout without a wrapper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from .batcher import Replica


class Executor(Protocol):
    def now(self) -> float:
        """Seconds since the run started."""

    def call_at(self, time_s: float, callback: Callable[[object], None]) -> None:
        """Call ``callback(event)`` at ``time_s`` (never before it; at once if it has passed)."""

    def start_batch(self, replica: "Replica", batch: list[int], now: float) -> None:
        """Run ``batch`` on ``replica`` from ``now``; report its end with ``replica.completed_at``
        (a SimPy timeout set as ``replica.ticket`` can be its callback as it is)."""

    def start_replica(self, replica: "Replica", now: float) -> None:
        """Bring up a replica added after the start (load, build, warm up). True: it serves at
        once; False: report ``replica.batcher.owner.replica_ready(replica, time)`` once it can."""

    def stop_replica(self, replica: "Replica") -> None:
        """A replica left for good (removed by a plan): release what runs it."""

    def batching_changed(self, deployment: int, max_batch_size: int) -> None:
        """A plan raised or lowered a deployment's largest batch (a sampler may need to grow)."""
