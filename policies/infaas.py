"""`infaas`: INFaaS-style variant selection (Romero et al., USENIX ATC'21), per request.

Among the deployments whose variant meets the accuracy floor (``accuracy_floor``; none by default)
and whose predicted latency fits the request's deadline, take the cheapest, preferring one that is
already serving traffic; when none fits, the fastest. Predicted latency is INFaaS's profiled
latency at the batch size the request would join plus the current queueing delay
(``policies.estimates``). Cost is compute per request: the profiled median latency at batch 1 (all
variants here share one kind of hardware, so time is what a request costs). Per-deployment rates
behind the predictions are refreshed every ``refresh_s`` of simulated time from the traffic this
policy routed.
"""

from __future__ import annotations

import math

from .base import Policy, Route
from .estimates import DeploymentModel
from .params import Fraction, Percentile, Positive
from .registry import register


@register
class Infaas(Policy):
    name = "infaas"

    def __init__(self, accuracy_floor: Fraction | None = None, q: Percentile = 95.0, refresh_s: Positive = 0.25):
        self.accuracy_floor = accuracy_floor
        self.q = q
        self.refresh_s = refresh_s

    def setup(self, view):
        deps = list(view.deployments)
        cost = {d: view.latency_profile(d).percentile_ms(1, 50) for d in deps}
        eligible = [d for d in deps if self.accuracy_floor is None or
                    (not math.isnan(view.accuracy(d)) and view.accuracy(d) >= self.accuracy_floor)]
        self._eligible = [DeploymentModel(d, view.latency_profile(d), self.q) for d in sorted(eligible, key=cost.get)]
        self._all = [DeploymentModel(d, view.latency_profile(d), self.q) for d in sorted(deps, key=cost.get)]
        self._routes = {d: Route.single(d) for d in deps}
        self._counts = {d: 0 for d in deps}
        self._active = set()
        self._last_s = 0.0
        for model in self._all + self._eligible:
            model.update(view, 0.0)

    def _refresh(self, view, now: float) -> None:
        span = now - self._last_s
        rates = {d: c / span for d, c in self._counts.items()}
        for model in self._all + self._eligible:
            model.update(view, rates[model.name])
        self._active = {d for d, c in self._counts.items() if c}
        self._counts = dict.fromkeys(self._counts, 0)
        self._last_s = now

    def route(self, request, view):
        now = view.now_s
        if now - self._last_s >= self.refresh_s:
            self._refresh(view, now)
        deadline = request.deadline_ms - (now - request.arrival_s) * 1000.0
        chosen = None
        for model in self._eligible:  # cheapest first
            if model.latency_ms(view) <= deadline:
                if model.name in self._active:
                    chosen = model.name
                    break
                if chosen is None:
                    chosen = model.name
        if chosen is None:
            chosen = min(self._all, key=lambda m: m.latency_ms(view)).name
        self._counts[chosen] += 1
        return self._routes[chosen]
