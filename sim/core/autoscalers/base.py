"""What an autoscaler sees and what it answers: the contract between the serving core and a policy.

Every ``tick_s`` of its config (``traces.autoscaling``) the core builds one ``Observation`` of a
deployment and asks its autoscaler how many replicas it wants. The autoscaler keeps whatever
history its source system keeps (HPA's recommendations, Ray's decision counter, Knative's panic
state, INFaaS's scale-down backlog) and nothing else: no clock of its own, no SimPy, no threads, so
the simulated and the real executor get the same decisions from the same observations, and a test
can script the observations and check every decision by hand.

The core owns everything about acting on the answer (starting replicas that pay their start-up
time, retiring replicas after their batch); ``Observation.replicas`` reports what it has provisioned,
``ready_replicas`` the part of it that serves.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Generic, TypeVar

from traces.autoscaling import AutoscalingConfig

C = TypeVar("C", bound=AutoscalingConfig)


@dataclass(frozen=True)
class Observation:
    """What a controller sees of one deployment at one tick."""

    time_s: float
    replicas: int           # provisioned (incl. starting)
    ready_replicas: int     # serving
    queue_length: int       # waiting
    in_flight: int          # in service now
    arrival_rate_rps: float  # over the last tick
    throughput_rps_per_replica: float  # profiled capacity of one replica at its max batch (for INFaaS)

    @property
    def ongoing_requests(self) -> int:
        """Requests in the deployment: waiting plus in service (Ray's "ongoing", Knative's concurrency)."""
        return self.queue_length + self.in_flight


class Autoscaler(abc.ABC, Generic[C]):
    """One deployment's controller. ``desired`` is called once per tick, in time order."""

    def __init__(self, config: C):
        self.config = config

    @abc.abstractmethod
    def desired(self, obs: Observation) -> int:
        """The replica count wanted now, within [min_replicas, max_replicas]."""

    def clamp(self, replicas: int) -> int:
        return max(self.config.min_replicas, min(self.config.max_replicas, int(replicas)))


class TimeWindow:
    """Samples (time_s, value) kept for ``window_s``: those with ``time_s > now - window_s`` count.

    Both Kubernetes (``rec.timestamp.After(cutoff)``) and Knative's windowed averages keep the
    samples strictly younger than the window; one helper says so once.
    """

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._samples: list[tuple[float, float]] = []

    def add(self, time_s: float, value: float) -> None:
        self._samples.append((time_s, value))

    def values(self, now_s: float, window_s: float | None = None) -> list[float]:
        """Values younger than ``window_s`` (default: the whole window); older ones are dropped
        once they fall out of the whole window."""
        cutoff_all = now_s - self.window_s
        self._samples = [s for s in self._samples if s[0] > cutoff_all]
        cutoff = now_s - (self.window_s if window_s is None else window_s)
        return [v for t, v in self._samples if t > cutoff]
