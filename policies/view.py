"""The one implementation of ``SystemView``, over a live system: the simulation or the real server.

Both executors keep the same state under the same names (``deployment(name)`` with ``variant``,
``replicas``, ``busy_replicas``, ``queue_length``, ``load()``, ``max_batch_size``,
``batch_wait_timeout_ms`` and ``recent`` batches; ``deployment_names``, ``predictions``, ``profiles``, ``arrival_times``,
``arrivals_seen``) and a ``clock()``, so a policy sees exactly the same view in both. The view
holds no mutator: a policy changes the system only through the ``PlanAction``s it returns.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from traces.profiles import LatencyProfile, PredictionTable


class LiveView:
    """Implements ``policies.base.SystemView`` over an executor's live state."""

    __slots__ = ("_system", "_clock", "_deployment")

    def __init__(self, system: Any, clock: Callable[[], float]):
        self._system = system
        self._clock = clock
        self._deployment = system.deployment  # name -> live deployment (unknown names: InputError)

    @property
    def now_s(self) -> float:
        return self._clock()

    @property
    def deployments(self) -> tuple[str, ...]:
        return self._system.deployment_names

    @property
    def predictions(self) -> "PredictionTable | None":
        return self._system.predictions

    @property
    def stages(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(name, deployments) of every stage, in order; a scenario without [[stages]] is one
        stage (named "") of all its deployments."""
        return self._system.stages

    def stage_predictions(self, stage: int) -> "PredictionTable | None":
        """The prediction table of one stage of a pipeline (stage 0: ``predictions``)."""
        return self._system.stage_predictions[stage]

    def variant(self, deployment: str) -> str | None:
        return self._deployment(deployment).variant

    def replicas(self, deployment: str) -> int:
        return self._deployment(deployment).replicas

    def busy_replicas(self, deployment: str) -> int:
        return self._deployment(deployment).busy_replicas

    def queue_length(self, deployment: str) -> int:
        return self._deployment(deployment).queue_length

    def load(self, deployment: str) -> tuple[int, int, int]:
        return self._deployment(deployment).load()

    def max_batch_size(self, deployment: str) -> int:
        return self._deployment(deployment).max_batch_size

    def batch_wait_timeout_ms(self, deployment: str) -> float:
        return self._deployment(deployment).batch_wait_timeout_ms

    def arrival_rate_rps(self, window_s: float = 1.0) -> float:
        """Arrivals seen in the last ``window_s`` (or since the start, if shorter), per second."""
        system = self._system
        now = self._clock()
        span = min(window_s, now)
        if span <= 0:
            return 0.0
        seen = system.arrivals_seen
        first = bisect.bisect_left(system.arrival_times, now - span, 0, seen)
        return (seen - first) / span

    def recent_batch_latency_ms(self, deployment: str, q: float = 95.0, window_s: float = 5.0) -> float:
        """The q-th percentile service time of batches finished in the last ``window_s`` (NaN if none),
        among the deployment's last 1,024 batches (a bounded memory: a busier window counts only those)."""
        since = self._clock() - window_s
        values = [s for t, s, _ in list(self._deployment(deployment).recent) if t >= since]
        return float(np.percentile(values, q)) * 1000.0 if values else math.nan

    def last_service_ms(self, deployment: str) -> float:
        """Service time of the most recently finished batch, in O(1) (NaN before the first)."""
        recent = self._deployment(deployment).recent
        return recent[-1][1] * 1000.0 if recent else math.nan

    def latency_profile(self, deployment: str) -> "LatencyProfile":
        return self._system.profiles[deployment]

    def accuracy(self, deployment: str) -> float:
        variant = self.variant(deployment)
        table = self._system.predictions
        if table is None or variant not in table.pred:
            return math.nan
        return table.accuracy(variant)
