"""The read-only view of the real server that policies decide from, and its queue balancers.

``ServerView`` answers exactly what ``sim.view.EngineView`` answers, but from live state: the
clock is wall time since the run's start, queue lengths and busy replicas are read from the real
queues (each read is one GIL-atomic ``len`` or int, so no lock is needed). The balancers repeat
``sim.balancers`` (which imports SimPy, so it cannot be imported here) draw for draw, so a
power-of-two deployment consumes its random stream exactly as the simulator does.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from traces.profiles import LatencyProfile, PredictionTable

    from .server import Server


class ServerView:
    """Implements ``policies.base.SystemView`` over a running ``Server``; it exposes no mutator."""

    __slots__ = ("_server",)

    def __init__(self, server: "Server"):
        self._server = server

    @property
    def now_s(self) -> float:
        return self._server.clock()

    @property
    def deployments(self) -> tuple[str, ...]:
        return self._server.deployment_names

    @property
    def predictions(self) -> "PredictionTable | None":
        return self._server.predictions

    def variant(self, deployment: str) -> str | None:
        return self._server.deployment(deployment).variant

    def replicas(self, deployment: str) -> int:
        return self._server.deployment(deployment).replicas

    def busy_replicas(self, deployment: str) -> int:
        return self._server.deployment(deployment).busy_replicas

    def queue_length(self, deployment: str) -> int:
        return self._server.deployment(deployment).queue_length

    def max_batch_size(self, deployment: str) -> int:
        return self._server.deployment(deployment).max_batch_size

    def batch_wait_timeout_ms(self, deployment: str) -> float:
        return self._server.deployment(deployment).batch_wait_timeout_ms

    def arrival_rate_rps(self, window_s: float = 1.0) -> float:
        """Arrivals dispatched in the last ``window_s`` (or since the start, if shorter), per second."""
        server = self._server
        now = server.clock()
        span = min(window_s, now)
        if span <= 0:
            return 0.0
        seen = server.arrivals_seen
        first = bisect.bisect_left(server.arrival_times, now - span, 0, seen)
        return (seen - first) / span

    def latency_profile(self, deployment: str) -> "LatencyProfile":
        return self._server.profiles[deployment]

    def accuracy(self, deployment: str) -> float:
        variant = self.variant(deployment)
        table = self._server.predictions
        if table is None or variant not in table.pred:
            return math.nan
        return table.accuracy(variant)


def _load(batcher) -> int:
    return len(batcher.queue) + batcher.busy


def make_balancer(name: str, rng: np.random.Generator) -> Callable[[Sequence], object] | None:
    """None for the shared queue; otherwise picks one of a deployment's per-replica batchers."""
    if name == "shared":
        return None
    if name == "round_robin":
        state = [0]

        def round_robin(batchers: Sequence):
            index = state[0] % len(batchers)
            state[0] = index + 1
            return batchers[index]
        return round_robin
    if name == "least_loaded":
        return lambda batchers: min(batchers, key=_load)
    if name == "power_of_two":
        block: list[float] = []

        def power_of_two(batchers: Sequence):
            n = len(batchers)
            if n == 1:
                return batchers[0]
            if len(block) < 2:
                block.extend(rng.random(4096).tolist())
            first = int(block.pop() * n)
            second = int(block.pop() * (n - 1))
            second += second >= first
            a, b = batchers[first], batchers[second]
            return b if _load(b) < _load(a) else a
        return power_of_two
    raise ValueError(f"unknown balancer {name!r}")
