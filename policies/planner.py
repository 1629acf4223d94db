"""`planner`: the deadline-aware cascade planner, this project's own method.

Per request it takes, among single deployments and two-stage cascades (a fast variant, then an
accurate one when the fast one's confidence is below a threshold tau), the option with the highest
expected accuracy whose predicted latency fits the time the request has left.

- Expected accuracy and coverage (the share of requests the first stage answers) of every
  (pair, tau) come from the bundle's per-sample predictions.
- Load is accounted for at plan time (every ``refresh_s`` of simulated time): with the current
  arrival rate lambda, an option is *sustainable* when every stage keeps its utilisation (the
  share of its replicas' time kept busy) under ``max_utilization`` if all traffic took it: lambda
  on the first stage, (1 - coverage) lambda on the second, each at the batch its batcher forms at
  that rate (``policies.estimates``, from the batcher's rule). The cap is a guard on latency, not
  on stability: behind a dynamic batcher the queue stays stable up to the capacity at full
  batches, but the tail grows long before (two ResNet-18 INT8 replicas at 0.7 of that capacity
  serve a p95 of 3x their p95 service time, with 92% of their time busy); a cap on the
  full-batch load instead let the planner send them most of 600 requests/s and cost it 4.4 (20 ms)
  and 2.3 (40 ms) points of on-time accuracy against ``oracle-static`` (``bench/shapes.py``,
  two-large). For each pair only its most accurate sustainable tau is kept; options are sorted by
  expected accuracy.
- A single deployment that is not sustainable for all the traffic stays in the list (``mix``,
  default on) but may only take a request it can start at once: fewer waiting than the batch it
  forms and a replica free. So an accurate model that cannot carry the load still serves what it
  has room for (at a 10 ms deadline in the study this took the planner from 0.964 to 0.972-0.975
  on-time accuracy, level with `infaas`), without building a queue that would make its own
  requests and the cascades' second stages late.
- Per request, the prediction for a deployment is the profiled p``q`` service time of the batch
  it forms at the rate this policy has been sending it (stage two counted at its expected share;
  the batch from the batcher's rule, ``policies.estimates``) plus the queueing delay of its
  current queue; a cascade must fit with both stages (its worst case). The first option that
  fits wins; when none does, the deployment with the lowest predicted latency. The per-request work is a scan of a short, precomputed list.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np

from traces.errors import InputError

from .base import Policy, Route
from .estimates import DeploymentModel, TrafficMeter, utilization
from .options import cascade_pairs
from .params import Fraction, NonNegative, Percentile, Positive, Range
from .registry import register

DEFAULT_TAUS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


class _Option:
    __slots__ = ("route", "first", "second", "accuracy", "coverage", "tau", "spare_only")

    def __init__(self, route, first, second, accuracy, coverage, tau):
        self.route, self.first, self.second = route, first, second
        self.accuracy, self.coverage, self.tau = accuracy, coverage, tau
        self.spare_only = False  # an unsustainable single: only for a request it can start at once


@register
class Planner(Policy):
    name = "planner"

    def __init__(self, taus: list[Fraction] | None = None, q: Percentile = 95.0,
                 max_utilization: Annotated[float, Range(0, 1, low_open=True)] = 0.9, refresh_s: NonNegative = 0.5,
                 rate_window_s: Positive = 2.0, cascades: bool = True, mix: bool = True):
        self.taus = tuple(taus) if taus is not None else DEFAULT_TAUS
        if not self.taus or any(not 0 <= t <= 1 for t in self.taus):
            raise InputError("policy.taus", f"must be thresholds in [0, 1], got {taus!r}")
        self.q, self.max_utilization = q, max_utilization
        self.refresh_s, self.rate_window_s, self.use_cascades = refresh_s, rate_window_s, cascades
        self.mix = mix

    # --- plan time -------------------------------------------------------------------------
    def setup(self, view):
        deps = list(view.deployments)
        self._index = {d: i for i, d in enumerate(deps)}
        self._models = [DeploymentModel(d, view.latency_profile(d), self.q) for d in deps]
        speed = {d: view.latency_profile(d).percentile_ms(1, 50) for d in deps}
        self._fallback = [self._index[d] for d in sorted(deps, key=speed.get)]
        self._singles = [_Option(Route.single(d), self._index[d], -1, _nan_low(view.accuracy(d)), 1.0, None)
                         for d in deps]
        self._cascades: list[list[_Option]] = []  # per pair, one option per tau
        table = view.predictions
        if self.use_cascades and table is not None:
            for fast, slow in cascade_pairs(deps, speed, lambda d: view.variant(d) in table.pred):
                vf, vs = view.variant(fast), view.variant(slow)
                conf, ok_fast, ok_slow = table.confidence[vf], table.correct[vf], table.correct[vs]
                pair = []
                for tau in self.taus:
                    exits = conf >= tau
                    pair.append(_Option(Route.cascade([fast, slow], [tau]), self._index[fast], self._index[slow],
                                        float(np.where(exits, ok_fast, ok_slow).mean()), float(exits.mean()), tau))
                self._cascades.append(pair)
        self._meter = TrafficMeter(len(deps), view.now_s)
        self._replan(view)

    def _utilization(self, view, index: int, rate_rps: float) -> float:
        """At plan time; remembered until the next plan (every cascade's first stage asks at lambda)."""
        key = (index, rate_rps)
        if key not in self._busy:
            model = self._models[index]
            self._busy[key] = utilization(model.profile, rate_rps, view.replicas(model.name),
                                          view.max_batch_size(model.name), view.batch_wait_timeout_ms(model.name))
        return self._busy[key]

    def _sustainable(self, view, option: _Option, rate_rps: float) -> bool:
        if self._utilization(view, option.first, rate_rps) > self.max_utilization:
            return False
        return option.second < 0 or self._utilization(view, option.second, (1 - option.coverage) * rate_rps) <= self.max_utilization

    def _replan(self, view) -> None:
        now = view.now_s
        rate = view.arrival_rate_rps(self.rate_window_s) if now > 0 else 0.0
        self.rate_rps = rate
        options = []
        self._busy: dict[tuple[int, float], float] = {}
        for single in self._singles:
            # a single that cannot carry all the traffic may still take a request it can start at
            # once (no queue, a replica free), so idle capacity of accurate models is not wasted
            single.spare_only = not self._sustainable(view, single, rate)
            if self.mix or not single.spare_only:
                options.append(single)
        for pair in self._cascades:
            usable = [o for o in pair if self._sustainable(view, o, rate)]
            if usable:
                options.append(max(usable, key=lambda o: o.accuracy))
        options.sort(key=lambda o: -o.accuracy)
        self._options = options
        # each deployment's batch and service estimate at the rate this policy has been sending it
        # (stage two counted at its expected share); before any traffic, at what the best option would
        stage_rate = self._meter.take_rates(now)
        if stage_rate is None:
            stage_rate = [0.0] * len(self._models)
            if options:
                best = options[0]
                stage_rate[best.first] = rate
                if best.second >= 0:
                    stage_rate[best.second] = (1 - best.coverage) * rate
        for index, model in enumerate(self._models):
            model.update(view, stage_rate[index])

    def plan(self, view):
        self._replan(view)
        return ()

    # --- per request -------------------------------------------------------------------------
    def route(self, request, view):
        now = view.now_s
        if now - self._meter.since_s >= self.refresh_s:
            self._replan(view)
        left = request.deadline_ms - (now - request.arrival_s) * 1000.0
        models = self._models
        predicted = [-1.0] * len(models)   # per deployment, computed at most once per request
        for option in self._options:
            i = option.first
            first = predicted[i]
            if first < 0 or option.spare_only:
                load = view.load(models[i].name)
                if option.spare_only and (load[0] >= models[i].batch or load[1] >= load[2]):
                    continue  # no room to start it at once
                if first < 0:
                    first = predicted[i] = models[i].latency_at(*load)
            total = first
            j = option.second
            if j >= 0:
                second = predicted[j]
                if second < 0:
                    second = predicted[j] = models[j].latency_ms(view)
                total += second
            if total <= left:
                counts = self._meter.counts
                counts[i] += 1.0
                if j >= 0:
                    counts[j] += 1.0 - option.coverage
                return option.route
        best = min(self._fallback, key=lambda k: predicted[k] if predicted[k] >= 0 else models[k].latency_ms(view))
        self._meter.counts[best] += 1.0
        return self._singles[best].route

    def describe(self) -> list[dict]:
        """The current option list, most accurate first (for reports and tests)."""
        return [{"route": o.route.label, "accuracy": o.accuracy, "coverage": o.coverage} for o in self._options]


def _nan_low(value: float) -> float:
    return -1.0 if math.isnan(value) else value
