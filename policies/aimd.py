"""`aimd-batching`: Clipper-style adaptive batching (Crankshaw et al., NSDI'17), around any router.

Every plan interval, for each deployment, it compares the observed p``q`` batch service time of the
last interval with the latency budget (``slo_fraction`` of the deadline, default half: the other
half is left for queueing): starting from the scenario's maximum batch size, while under it, it grows by ``increase``; when
over, it is multiplied by ``decrease``. Routing is delegated to ``inner`` (default `static`). The
deadline is ``deadline_ms`` or else the tightest one seen.
"""

from __future__ import annotations

import math
from typing import Annotated

from .base import PlanAction, Policy
from .params import Count, Percentile, Positive, Range
from .registry import create_inner, inner_errors, register


@register
class AimdBatching(Policy):
    name = "aimd-batching"

    def __init__(self, inner: str = "static", inner_params: dict | None = None, deadline_ms: Positive | None = None,
                 slo_fraction: Positive = 0.5, increase: Count = 1,
                 decrease: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.5, q: Percentile = 99.0):
        self.inner = create_inner(self.name, inner, inner_params)
        self.deadline_ms, self.slo_fraction = deadline_ms, slo_fraction
        self.increase, self.decrease, self.q = increase, decrease, q
        self._seen_ms = math.inf
        self.history: list[tuple[float, str, int]] = []

    def setup(self, view):
        with inner_errors():
            self.inner.setup(view)
        self._limits = {d: view.latency_profile(d).max_batch_size for d in view.deployments}
        self._batch = {d: view.max_batch_size(d) for d in view.deployments}  # starts from the scenario's
        self._last_s = view.now_s

    def route(self, request, view):
        if request.deadline_ms < self._seen_ms:
            self._seen_ms = request.deadline_ms
        return self.inner.route(request, view)

    def plan(self, view):
        actions = list(self.inner.plan(view))
        deadline = self.deadline_ms or self._seen_ms
        if not math.isfinite(deadline):
            return actions
        budget = self.slo_fraction * deadline
        for dep, b in self._batch.items():
            observed = view.recent_batch_latency_ms(dep, self.q, window_s=max(view.now_s - self._last_s, 1e-9))
            if math.isnan(observed):
                continue
            new = min(self._limits[dep], b + self.increase) if observed <= budget else max(1, int(b * self.decrease))
            if new != b:
                self._batch[dep] = new
                self.history.append((view.now_s, dep, new))
                actions.append(PlanAction(dep, max_batch_size=new))
        self._last_s = view.now_s
        return actions

    def report(self) -> dict:
        return {"batch_size_changes": len(self.history),
                "final_max_batch_size": dict(self._batch), **self.inner.report()}
