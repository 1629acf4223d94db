"""A hand-made system view for testing policy decisions without running the engine."""

from __future__ import annotations

import math

import numpy as np

from policies.base import Request
from traces.profiles import LatencyProfile, PredictionTable


class FakeView:
    """Deployments with constant latency per batch size (ms = base + per_item * (b - 1))."""

    def __init__(self, deployments: dict[str, dict], predictions: PredictionTable | None = None, rate_rps: float = 0.0):
        self._deps = deployments
        self._profiles = {name: LatencyProfile({b: [d["ms"] + d.get("per_item_ms", 0.0) * (b - 1)] * 3
                                                for b in range(1, d.get("max_measured", 8) + 1)}, measured=True)
                          for name, d in deployments.items()}
        self._predictions = predictions
        self.rate_rps = rate_rps
        self.now_s = 10.0

    @property
    def deployments(self):
        return tuple(self._deps)

    @property
    def predictions(self):
        return self._predictions

    @property
    def stages(self):
        return (("", tuple(self._deps)),)  # one stage, as a scenario without [[stages]]

    def stage_predictions(self, stage):
        return self._predictions

    def variant(self, d):
        return self._deps[d].get("variant", d)

    def replicas(self, d):
        return self._deps[d].get("replicas", 1)

    def busy_replicas(self, d):
        return self._deps[d].get("busy", 0)

    def queue_length(self, d):
        return self._deps[d].get("queue", 0)

    def load(self, d):
        return self.queue_length(d), self.busy_replicas(d), self.replicas(d)

    def max_batch_size(self, d):
        return self._deps[d].get("max_batch_size", 1)

    def batch_wait_timeout_ms(self, d):
        return self._deps[d].get("timeout_ms", 0.0)

    def arrival_rate_rps(self, window_s=1.0):
        return self.rate_rps

    def recent_batch_latency_ms(self, d, q=95.0, window_s=5.0):
        return self._deps[d].get("recent_ms", math.nan)  # NaN: no batch finished lately

    def latency_profile(self, d):
        return self._profiles[d]

    def accuracy(self, d):
        table = self._predictions
        variant = self.variant(d)
        return table.accuracy(variant) if table is not None and variant in table.pred else math.nan


def two_model_table(n: int = 1000, seed: int = 0) -> PredictionTable:
    """'fast' is right 75% of the time and confident (>= 0.8) on half the samples, where it is
    right 95% of the time; 'slow' is right 97% of the time."""
    rng = np.random.default_rng(seed)
    confident = np.arange(n) < n // 2
    fast_ok = np.where(confident, rng.random(n) < 0.95, rng.random(n) < 0.55)
    conf = np.where(confident, rng.uniform(0.8, 1.0, n), rng.uniform(0.3, 0.8, n))
    slow_ok = rng.random(n) < 0.97
    ids = np.arange(n)
    return PredictionTable(ids, {"fast": ids % 2, "slow": ids % 2}, {"fast": conf, "slow": np.full(n, 0.99)},
                           {"fast": fast_ok, "slow": slow_ok})


def request(deadline_ms: float, arrival_s: float = 10.0) -> Request:
    return Request(0, arrival_s, deadline_ms, 0)
