"""`degrade`: graceful degradation around any other policy.

It asks the inner policy (``inner``, default `planner`, with ``inner_params``) for a route and
overrides it when the route cannot work: a hop whose deployment has no live replica (a crash) is
routed around; a route whose predicted latency (``policies.estimates``, every hop counted) exceeds
the time the request has left steps down to the most accurate single deployment that fits; when
nothing fits, the request is served best effort on the fastest live deployment, or shed at once
(``on_overload = "shed"``), which frees capacity for requests that can still make it. Every
override is counted by reason in ``report()``, which the run output keeps.
"""

from __future__ import annotations

import math
from collections import Counter

from traces.errors import InputError

from .base import Policy, Reject, Route
from .estimates import DeploymentModel
from .params import NonNegative, Percentile
from .registry import create_inner, inner_errors, register


@register
class Degrade(Policy):
    name = "degrade"

    def __init__(self, inner: str = "planner", inner_params: dict | None = None, on_overload: str = "best-effort",
                 q: Percentile = 95.0, refresh_s: NonNegative = 0.5):
        if on_overload not in ("best-effort", "shed"):
            raise InputError("policy.on_overload", f"must be best-effort or shed, got {on_overload!r}")
        self.inner = create_inner(self.name, inner, inner_params)
        self.on_overload, self.q, self.refresh_s = on_overload, q, refresh_s
        self.overrides: Counter = Counter()
        self._shed = Reject("shed")

    def setup(self, view):
        with inner_errors():
            self.inner.setup(view)
        deps = list(view.deployments)
        self._models = {d: DeploymentModel(d, view.latency_profile(d), self.q) for d in deps}
        speed = {d: view.latency_profile(d).percentile_ms(1, 50) for d in deps}
        self._by_speed = sorted(deps, key=speed.get)
        accuracy = {d: view.accuracy(d) for d in deps}
        self._by_accuracy = sorted(deps, key=lambda d: (-(accuracy[d] if not math.isnan(accuracy[d]) else -1), speed[d]))
        self._singles = {d: Route.single(d) for d in deps}
        self._last_s = -math.inf

    def _refresh(self, view) -> None:
        self._last_s = view.now_s
        rate = view.arrival_rate_rps(1.0)
        for model in self._models.values():
            model.update(view, rate / max(len(self._models), 1))

    def route(self, request, view):
        now = view.now_s
        if now - self._last_s >= self.refresh_s:
            self._refresh(view)
        chosen = self.inner.route(request, view)
        if isinstance(chosen, Reject):
            return chosen
        left = request.deadline_ms - (now - request.arrival_s) * 1000.0
        hops = [hop.deployment for hop in chosen.hops]
        if any(view.replicas(d) == 0 for d in hops):
            reason = "route_around_crash"
        else:
            predicted = sum(self._models[d].latency_ms(view) for d in hops)
            if predicted <= left:
                return chosen
            reason = "step_down"
        for dep in self._by_accuracy:
            if view.replicas(dep) > 0 and self._models[dep].latency_ms(view) <= left:
                self.overrides[reason] += 1
                return self._singles[dep]
        if self.on_overload == "shed":
            self.overrides["shed"] += 1
            return self._shed
        self.overrides["best_effort"] += 1
        alive = [d for d in self._by_speed if view.replicas(d) > 0] or self._by_speed
        return self._singles[min(alive, key=lambda d: self._models[d].latency_ms(view))]

    def plan(self, view):
        return self.inner.plan(view)

    def report(self) -> dict:
        return {"overrides": dict(sorted(self.overrides.items())), **self.inner.report()}
