"""`degrade`: graceful degradation around any other policy.

It asks the inner policy (``inner``, default `planner`, with ``inner_params``) for a route and
overrides it only when the route cannot work:

- a hop whose deployment has no live replica (a crash) is routed around;
- a route whose predicted latency (``policies.estimates``, every hop counted) exceeds the time the
  request has left steps down to a single deployment that fits. The step-downs are spread: among
  the deployments that fit, the most accurate one whose load (the rate this policy has been
  sending it, as a share of its capacity at full batches) is at most ``max_load`` takes it; when
  every one that fits is more loaded, the least loaded one does. (Its busy share would say little:
  a deployment whose service barely grows with the batch is busy nearly all the time at a third
  of its capacity, ``policies.estimates``.) Sending every step-down to the most accurate deployment that
  fits (as this policy first did) piled them onto one until it was late too;
- when nothing fits, the request is served best effort on the fastest live deployment, or shed at
  once (``on_overload = "shed"``), which frees capacity for requests that can still make it.

The predictions are the planner's own: each deployment's batch and service time at the rate this
policy has sent it over the last ``refresh_s`` (a cascade's later hops at the share expected to
reach them), plus its current queue. Predicting at another rate (this policy first split the
arrival rate evenly over the deployments) made it disagree with an inner planner that met every
deadline: on ``bench/shapes.py``'s shapes it stepped down about 300 requests a seed where the
planner alone had a hit rate of 1.000, and with ResNet-18 FP32 as a fourth deployment at 40 ms
half of all requests, ending 4.4 points of on-time accuracy below the planner alone. So around
the planner, with the same ``q`` and ``refresh_s``, it overrides nothing that the planner
predicted to fit.

Every override is counted by reason in ``report()``, which the run output keeps; a request that
ends where the inner policy sent it is no override.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated

from traces.errors import InputError

from .base import Policy, Reject, Route
from .estimates import DeploymentModel, TrafficMeter, capacity_rps, route_shares
from .params import NonNegative, Percentile, Range
from .registry import create_inner, inner_errors, register


@register
class Degrade(Policy):
    name = "degrade"

    def __init__(self, inner: str = "planner", inner_params: dict | None = None, on_overload: str = "best-effort",
                 q: Percentile = 95.0, refresh_s: NonNegative = 0.5,
                 max_load: Annotated[float, Range(0, 1, low_open=True)] = 0.9):
        if on_overload not in ("best-effort", "shed"):
            raise InputError("policy.on_overload", f"must be best-effort or shed, got {on_overload!r}")
        self.inner = create_inner(self.name, inner, inner_params)
        self.on_overload, self.q, self.refresh_s = on_overload, q, refresh_s
        self.max_load = max_load
        self.overrides: Counter = Counter()
        self._shed = Reject("shed")

    def setup(self, view):
        with inner_errors():
            self.inner.setup(view)
        deps = list(view.deployments)
        self._index = {d: i for i, d in enumerate(deps)}
        self._models = [DeploymentModel(d, view.latency_profile(d), self.q) for d in deps]
        speed = [view.latency_profile(d).percentile_ms(1, 50) for d in deps]
        accuracy = [view.accuracy(d) for d in deps]
        self._by_speed = sorted(range(len(deps)), key=speed.__getitem__)
        self._by_accuracy = sorted(range(len(deps)), key=lambda i: (-(accuracy[i] if not math.isnan(accuracy[i]) else -1),
                                                                     speed[i]))
        self._singles = [Route.single(d) for d in deps]
        self._shares: dict[Route, tuple[tuple[int, float], ...]] = {}
        self._load = [0.0] * len(deps)   # each deployment's share of its capacity at full batches
        self._meter = TrafficMeter(len(deps), view.now_s)
        self._refresh(view)

    def _refresh(self, view) -> None:
        rates = self._meter.take_rates(view.now_s) or [0.0] * len(self._models)
        for i, model in enumerate(self._models):
            model.update(view, rates[i])
            capacity = capacity_rps(model.profile, view.replicas(model.name), model.limit)
            self._load[i] = rates[i] / capacity if capacity > 0 else math.inf

    def _sent(self, route: Route, view) -> Route:
        shares = self._shares.get(route)
        if shares is None:
            shares = self._shares[route] = route_shares(route, view, self._index)
        counts = self._meter.counts
        for i, share in shares:
            counts[i] += share
        return route

    def route(self, request, view):
        now = view.now_s
        if now - self._meter.since_s >= self.refresh_s:
            self._refresh(view)
        chosen = self.inner.route(request, view)
        if isinstance(chosen, Reject):
            return chosen
        left = request.deadline_ms - (now - request.arrival_s) * 1000.0
        models, index = self._models, self._index
        hops = [index[hop.deployment] for hop in chosen.hops]
        predicted = [-1.0] * len(models)
        if any(view.replicas(models[i].name) == 0 for i in hops):
            reason = "route_around_crash"
        else:
            total = 0.0
            for i in hops:
                predicted[i] = models[i].latency_ms(view)
                total += predicted[i]
            if total <= left:
                return self._sent(chosen, view)
            reason = "step_down"
        fitting = []
        for i in self._by_accuracy:  # most accurate first
            if view.replicas(models[i].name) > 0:
                if predicted[i] < 0:
                    predicted[i] = models[i].latency_ms(view)
                if predicted[i] <= left:
                    fitting.append(i)
        if fitting:
            roomy = [i for i in fitting if self._load[i] <= self.max_load]
            pick = roomy[0] if roomy else min(fitting, key=self._load.__getitem__)
            return self._override(reason, self._singles[pick], chosen, view)
        if self.on_overload == "shed":
            self.overrides["shed"] += 1
            return self._shed
        alive = [i for i in self._by_speed if view.replicas(models[i].name) > 0] or self._by_speed
        pick = min(alive, key=lambda i: predicted[i] if predicted[i] >= 0 else models[i].latency_ms(view))
        return self._override("best_effort", self._singles[pick], chosen, view)

    def _override(self, reason: str, route: Route, chosen: Route, view) -> Route:
        """Send ``route`` instead of ``chosen``, counted as an override unless it is the same place."""
        if [h.deployment for h in route.hops] == [h.deployment for h in chosen.hops]:
            return self._sent(chosen, view)
        self.overrides[reason] += 1
        return self._sent(route, view)

    def plan(self, view):
        self._refresh(view)  # the inner planner re-plans here too: both keep the same windows
        return self.inner.plan(view)

    def report(self) -> dict:
        return {"overrides": dict(sorted(self.overrides.items())), **self.inner.report()}
