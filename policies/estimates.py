"""Load-aware latency predictions from profiles, shared by the policies that plan with them.

All are closed-form and cheap: they run per request. For a deployment with R replicas, maximum
batch B, batch wait timeout T and arrival rate lambda:

- the batch the batcher forms is b = min(B, max(1 + lambda T, lambda / R * s(b))), the larger of
  what arrives during one timeout and what piles up during one service of b (a fixed point found
  by a few iterations from b = 1);
- a request arriving now waits for the batches ahead of it, ``queue / (R b)`` service rounds, plus
  half a service when every replica is busy (the mean residual), plus the time for its own batch to
  fill or time out when a replica is idle and the batch is not full;
- its predicted latency is that wait plus the profiled service time of b at a chosen percentile;
- its utilisation is lambda s(b) / (R b), the share of the replicas' time that rate keeps busy.

A deployment with no live replica (R = 0: every replica crashed) has zero capacity: its predicted
latency and its utilisation are infinite, so a policy comparing them never picks it and never
divides by its replica count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from traces.profiles import LatencyProfile

    from .base import SystemView


def formed_batch_size(profile: "LatencyProfile", rate_rps: float, replicas: int, max_batch_size: int,
                      timeout_ms: float, q: float = 50.0) -> int:
    limit = min(max_batch_size, profile.max_batch_size)
    if rate_rps <= 0:
        return 1
    by_timeout = 1.0 + rate_rps * timeout_ms / 1000.0
    b = 1
    for _ in range(8):
        piled = rate_rps / max(replicas, 1) * profile.percentile_ms(b, q) / 1000.0
        nxt = int(min(limit, max(1, math.ceil(max(by_timeout, piled)))))
        if nxt == b:
            break
        b = nxt
    return b


def utilization(profile: "LatencyProfile", rate_rps: float, replicas: int, max_batch_size: int,
                timeout_ms: float) -> float:
    """The share of ``replicas``' time that ``rate_rps`` keeps busy at the batch it forms (inf for none)."""
    if replicas <= 0:
        return math.inf
    b = formed_batch_size(profile, rate_rps, replicas, max_batch_size, timeout_ms)
    return rate_rps * profile.mean_ms(b) / 1000.0 / (b * replicas)


class DeploymentModel:
    """A deployment's profile summarised for fast per-request predictions at the current rate."""

    __slots__ = ("name", "profile", "q", "batch", "service_ms", "timeout_ms", "rate_rps")

    def __init__(self, name: str, profile: "LatencyProfile", q: float = 95.0):
        self.name = name
        self.profile = profile
        self.q = q
        self.batch = 1
        self.service_ms = profile.percentile_ms(1, q)
        self.timeout_ms = 0.0
        self.rate_rps = 0.0

    def update(self, view: "SystemView", rate_rps: float) -> None:
        """Recompute the formed batch and its service time for ``rate_rps`` reaching this deployment."""
        self.rate_rps = rate_rps
        self.timeout_ms = view.batch_wait_timeout_ms(self.name)
        self.batch = formed_batch_size(self.profile, rate_rps, view.replicas(self.name),
                                       view.max_batch_size(self.name), self.timeout_ms)
        self.service_ms = self.profile.percentile_ms(self.batch, self.q)

    def latency_ms(self, view: "SystemView") -> float:
        """Predicted latency of a request joining this deployment now."""
        return self.latency_at(*view.load(self.name))

    def latency_at(self, waiting: int, busy: int, replicas: int) -> float:
        """Predicted latency of a request joining this deployment with this load: its service
        time plus the wait of the module docstring (written out flat: it runs per request);
        infinite with no live replica."""
        if replicas <= 0:
            return math.inf
        service, batch = self.service_ms, self.batch
        delay = service + (waiting // batch) / replicas * service
        if busy >= replicas:
            return delay + 0.5 * service
        if waiting + 1 < batch and self.timeout_ms > 0:
            rate = self.rate_rps
            to_fill = (batch - waiting - 1) / rate * 1000.0 if rate > 0 else math.inf
            return delay + (to_fill if to_fill < self.timeout_ms else self.timeout_ms)
        return delay
