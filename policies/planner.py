"""`planner`: the deadline-aware cascade planner, this project's own method.

Per request it takes, among single deployments and two-stage cascades (a fast variant, then an
accurate one when the fast one's confidence is below a threshold tau), the option with the highest
expected accuracy whose predicted latency fits the time the request has left.

- Expected accuracy and coverage (the share of requests the first stage answers) of every
  (pair, tau) come from the bundle's per-sample predictions.
- Load is accounted for at plan time (every ``refresh_s`` of simulated time), **per deadline
  class**: the deadlines routed in the last window, each with its share of the arrival rate
  lambda (measured over ``rate_window_s``, or over its last quarter when that is higher, so a
  burst is seen within half a second). Classes are planned tightest first. For a class of rate
  lambda_c and deadline D, an option is *sustainable* when, with that class's traffic on it (lambda_c
  on the first stage, (1 - coverage) lambda_c on the second) beside what the tighter classes'
  plans reserve on each deployment, (a) no stage is loaded past ``max_load`` of its capacity at
  full batches (a stability guard), and (b) its steady latency, the sum of its stages'
  ``policies.estimates.steady_latency_ms``, fits D. The latency test separates the two kinds of
  model that a cap on the busy share (which this planner had, at 0.9, until the widened study,
  ``docs/widened.md``) confused: a model whose service barely grows with the batch is busy 96%
  of the time at a third of its capacity and still answers within 1.5 services, so the cap threw
  away cascades that ``oracle-static`` ran at 99.9% of deadlines; a steep one (ResNet-18 INT8)
  carries a queue from half its capacity, which the steady latency's heavy-traffic term sees.
  For each pair only its most accurate sustainable tau is kept; a class's options are sorted by
  expected accuracy, and the best one reserves the class's rate on its deployments.
- A single that is not sustainable for a class stays in its plan (``mix``, default on) but may
  only take a request it can start at once (fewer waiting than the batch it forms and a replica
  free), and that spare room goes to the tightest class whose deadline its batch-1 p``q`` fits:
  with 10 and 40 ms classes, an idle ResNet-18 serves 10 ms requests, which have no other
  accurate option, rather than 40 ms ones, which have cascades (with this, the widened study's
  mixed-deadline cells lose none to ``infaas``, 9 before: ``docs/widened.md``).
- A class that no option can take whole (a burst past what the fast model alone sustains) is
  *split*: the singles, most accurate first, each get a budget, the largest rate that keeps it
  sustainable beside what is reserved on it, and take requests while within it; what none can
  take goes to the per-request fallback.
- Per request, the prediction for a deployment is the profiled p``q`` service time of the batch
  the request will be served in (the batch the rate forms, or the requests already waiting plus
  itself if more, up to the maximum; the rate is what this policy has been sending it, stage two
  counted at its expected share) plus the queueing delay of its current queue; a cascade must fit
  with both stages (its worst case). The first option that fits wins; when none does, the
  deployment with the lowest predicted latency. The per-request work is a scan of a short,
  precomputed list.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np

from traces.errors import InputError

from .base import Policy, Route
from .estimates import DeploymentModel, TrafficMeter, capacity_rps, steady_latency_ms
from .options import cascade_pairs
from .params import Fraction, NonNegative, Percentile, Positive, Range
from .registry import register

DEFAULT_TAUS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
MAX_CLASSES = 8  # deadline classes planned apart (more distinct deadlines are grouped)
MAX_LOAD = 0.9  # the share of a deployment's capacity at full batches that the planner plans to use


class _Option:
    __slots__ = ("route", "first", "second", "accuracy", "coverage", "tau")

    def __init__(self, route, first, second, accuracy, coverage, tau):
        self.route, self.first, self.second = route, first, second
        self.accuracy, self.coverage, self.tau = accuracy, coverage, tau


@register
class Planner(Policy):
    name = "planner"

    def __init__(self, taus: list[Fraction] | None = None, q: Percentile = 95.0,
                 max_load: Annotated[float, Range(0, 1, low_open=True)] = MAX_LOAD, refresh_s: NonNegative = 0.5,
                 rate_window_s: Positive = 2.0, cascades: bool = True, mix: bool = True):
        self.taus = tuple(taus) if taus is not None else DEFAULT_TAUS
        if not self.taus or any(not 0 <= t <= 1 for t in self.taus):
            raise InputError("policy.taus", f"must be thresholds in [0, 1], got {taus!r}")
        self.q, self.max_load = q, max_load
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
        self._deadlines: dict[float, int] = {}   # requests routed since the last plan, per deadline
        self._shares: list[tuple[float, float]] = []   # (deadline, share of requests) of the last window
        self._replan(view)

    def _load(self, index: int, rate_rps: float) -> float:
        """The share of a deployment's capacity at full batches that ``rate_rps`` would use."""
        capacity = self._capacity_rps[index]
        return rate_rps / capacity if capacity > 0 else math.inf

    def _steady_ms(self, view, index: int, rate_rps: float) -> float:
        """At plan time; remembered until the next plan (many options ask at the same rates)."""
        key = (index, rate_rps)
        if key not in self._steady:
            model = self._models[index]
            self._steady[key] = steady_latency_ms(model.profile, rate_rps, view.replicas(model.name),
                                                  view.max_batch_size(model.name), view.batch_wait_timeout_ms(model.name), self.q)
        return self._steady[key]

    def _sustainable(self, view, option: _Option, rate_rps: float, deadline_ms: float | None,
                     reserved: list[float]) -> bool:
        """Whether ``rate_rps`` can take the option beside the rates ``reserved`` for tighter
        classes: every stage under ``max_load`` and the stages' steady latencies within the deadline."""
        first_rps = reserved[option.first] + rate_rps
        if self._load(option.first, first_rps) > self.max_load:
            return False
        if option.second >= 0:
            second_rps = reserved[option.second] + (1 - option.coverage) * rate_rps
            if self._load(option.second, second_rps) > self.max_load:
                return False
        if deadline_ms is None:
            return True
        latency = self._steady_ms(view, option.first, first_rps)
        if option.second >= 0:
            latency += self._steady_ms(view, option.second, second_rps)
        return latency <= deadline_ms

    def _classes(self, rate_rps: float) -> list[tuple[float | None, float]]:
        """(deadline, rate) of each deadline class routed in the last window, tightest first; one
        class of no known deadline before any request."""
        counts = self._deadlines
        if counts:
            total = sum(counts.values())
            shares = [(d, counts[d] / total) for d in sorted(counts)]
            if len(shares) > MAX_CLASSES:   # many distinct deadlines: 8 groups of about equal share,
                groups = np.minimum((np.cumsum([w for _, w in shares]) - 1e-12) * MAX_CLASSES, MAX_CLASSES - 1).astype(int)
                merged: dict[int, list] = {}
                for (deadline, share), group in zip(shares, groups):   # each planned at its tightest
                    merged.setdefault(int(group), [deadline, 0.0])[1] += share
                shares = [(d, w) for d, w in merged.values()]
            self._shares = shares
        self._deadlines = {}
        return [(d, share * rate_rps) for d, share in self._shares] or [(None, rate_rps)]

    def _split(self, view, class_rps: float, deadline: float | None, reserved: list[float], plan: list) -> list:
        """A class that no option can take whole: its rate is split over the singles, most accurate
        first, each given the largest share that keeps it sustainable beside what is already
        reserved on it (a *budget*, in requests per second); what none can take is left to the
        per-request fallback. The spare-only entries stay first."""
        remaining = class_rps
        entries = [entry for entry in plan if entry[1]]
        for single in sorted(self._singles, key=lambda o: -o.accuracy):
            if remaining <= 0:
                break
            budget = self._largest_sustainable(view, single, remaining, deadline, reserved)
            if budget > 0:
                entries.append((single, False, budget))
                reserved[single.first] += budget
                remaining -= budget
        return entries

    def _largest_sustainable(self, view, single: _Option, limit_rps: float, deadline: float | None,
                             reserved: list[float]) -> float:
        """The largest rate up to ``limit_rps`` that ``single`` can take (bisection: its load and
        steady latency grow with the rate), to 1% of its capacity."""
        if self._sustainable(view, single, limit_rps, deadline, reserved):
            return limit_rps
        lo, hi = 0.0, limit_rps
        step = 0.01 * self._capacity_rps[single.first]
        while hi - lo > step:
            mid = 0.5 * (lo + hi)
            if self._sustainable(view, single, mid, deadline, reserved):
                lo = mid
            else:
                hi = mid
        return lo

    def _replan(self, view) -> None:
        now = view.now_s
        # the rate over the window, or over its last quarter when higher: a burst is planned for
        # within a quarter of the window, a lull only once the whole window has seen it
        rate = max(view.arrival_rate_rps(self.rate_window_s), view.arrival_rate_rps(self.rate_window_s / 4)) if now > 0 else 0.0
        self.rate_rps = rate
        self._capacity_rps = [capacity_rps(m.profile, view.replicas(m.name), view.max_batch_size(m.name)) for m in self._models]
        self._steady: dict[tuple[int, float], float] = {}
        reserved = [0.0] * len(self._models)   # what the tighter classes' best options send each deployment
        spare_claimed: set[int] = set()        # singles whose spare room a tighter class takes
        self._plans: dict[float | None, list[tuple[_Option, bool, float]]] = {}
        self._taken: dict[tuple[float | None, int], int] = {}   # per class and budgeted single, requests this window
        for deadline, class_rps in self._classes(rate):
            plan = []
            for single in self._singles:
                if self._sustainable(view, single, class_rps, deadline, reserved):
                    plan.append((single, False, math.inf))
                elif self.mix and single.first not in spare_claimed and \
                        (deadline is None or self._models[single.first].by_size_ms[0] <= deadline):
                    # not sustainable for the whole class, but it may take a request it can start
                    # at once; its spare room goes to the tightest class it can serve
                    plan.append((single, True, math.inf))
                    spare_claimed.add(single.first)
            for pair in self._cascades:
                usable = [o for o in pair if self._sustainable(view, o, class_rps, deadline, reserved)]
                if usable:
                    plan.append((max(usable, key=lambda o: o.accuracy), False, math.inf))
            plan.sort(key=lambda entry: -entry[0].accuracy)
            best = next((o for o, spare, _ in plan if not spare), None)
            if best is not None:
                reserved[best.first] += class_rps
                if best.second >= 0:
                    reserved[best.second] += (1 - best.coverage) * class_rps
            else:
                plan = self._split(view, class_rps, deadline, reserved, plan)
            self._plans[deadline] = plan
        self._default_key = max(self._plans, key=lambda d: -1.0 if d is None else d)
        self._keys: dict[float, float | None] = {}   # a request's deadline -> the class it is planned in
        # each deployment's batch and service estimate at the rate this policy has been sending it
        # (stage two counted at its expected share); before any traffic, at what the plans reserve
        stage_rate = self._meter.take_rates(now) or reserved
        for index, model in enumerate(self._models):
            model.update(view, stage_rate[index])

    def plan(self, view):
        self._replan(view)
        return ()

    def _class_of(self, deadline_ms: float) -> float | None:
        """The class a deadline is planned in: its own, else the loosest class at most as loose
        (a group of deadlines is keyed by its tightest), else the loosest."""
        try:
            return self._keys[deadline_ms]
        except KeyError:
            known = [d for d in self._plans if d is not None and d <= deadline_ms]
            key = self._keys[deadline_ms] = max(known) if known else self._default_key
            return key

    def _plan_for(self, deadline_ms: float) -> list[tuple[_Option, bool, float]]:
        """The plan of this deadline's class (``_class_of``)."""
        return self._plans[self._class_of(deadline_ms)]

    # --- per request -------------------------------------------------------------------------
    def route(self, request, view):
        now = view.now_s
        if now - self._meter.since_s >= self.refresh_s:
            self._replan(view)
        deadline = request.deadline_ms
        deadlines = self._deadlines
        deadlines[deadline] = deadlines.get(deadline, 0) + 1
        left = deadline - (now - request.arrival_s) * 1000.0
        models = self._models
        predicted = [-1.0] * len(models)   # per deployment, computed at most once per request
        key = self._class_of(deadline)
        for option, spare_only, budget_rps in self._plans[key]:
            i = option.first
            if budget_rps < math.inf and self._taken.get((key, i), 0) >= budget_rps * (now - self._meter.since_s) + 1:
                continue  # its share of this class is spent for this window
            first = predicted[i]
            if first < 0 or spare_only:
                load = view.load(models[i].name)
                if spare_only and (load[0] >= models[i].batch or load[1] >= load[2]):
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
                if budget_rps < math.inf:
                    self._taken[(key, i)] = self._taken.get((key, i), 0) + 1
                return option.route
        best = min(self._fallback, key=lambda k: predicted[k] if predicted[k] >= 0 else models[k].latency_ms(view))
        self._meter.counts[best] += 1.0
        return self._singles[best].route

    def describe(self, deadline_ms: float | None = None) -> list[dict]:
        """A class's current plan, most accurate first (for reports and tests): the loosest
        class's unless ``deadline_ms`` names one."""
        plan = self._plans[self._default_key] if deadline_ms is None else self._plan_for(deadline_ms)
        return [{"route": o.route.label, "accuracy": o.accuracy, "coverage": o.coverage, "spare_only": spare,
                 **({"budget_rps": budget} if budget < math.inf else {})} for o, spare, budget in plan]


def _nan_low(value: float) -> float:
    return -1.0 if math.isnan(value) else value
