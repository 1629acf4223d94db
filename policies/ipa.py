"""`ipa`: pipeline adaptation as IPA does it, and its two baselines `fa2` (scale only) and `rim` (switch only).

Every ``adaptation_interval_s`` (10 s, as IPA) the policy predicts the peak arrival rate of the
next 20 s from the 10 s peaks it has seen (``policies.forecasters``; IPA used an LSTM and falls
back to the window maximum with under two minutes of history; the default here is that maximum
over 12 windows: on the bursty study window an AR(12) refitted online on the run's own peaks
predicted up to 3,000 requests/s for a peak of 822 and missed 10% of deadlines against 1%), builds
every (variant, batch, replicas) each stage could run at that rate with its predicted latency
(``policies.ipa_model``: the batch filling, the profiled p99 and the queueing wait), and solves
IPA's integer program over them (``policies.ipa_solver``: maximise alpha x accuracy score - beta
x cost - gamma x batch sizes under the end-to-end SLA). It applies the answer with plan actions,
the mechanism the autoscalers use, so a replica it adds pays its cold start.

A change of variant is make-before-break: the new variant's replicas start while requests still
go to the old one; the route switches at the first tick after one of them is ready, and the old
deployment goes to zero replicas once its queue is empty and a grace of five SLAs has passed
(requests admitted on the old route may still be on their way to it from an earlier stage). The
policy needs ``plan_interval_s`` (its tick: 1 s is what IPA's per-second monitoring gives); the
rate of each tick feeds the window peaks.

When no configuration meets the SLA at the predicted rate, each stage takes its fastest option at
the most replicas allowed (the plan that misses least), and ``report()`` counts those plans.

Baselines (IPA's own, through the same machinery, so only the decision space differs):
- `fa2` (FA2, Razavi et al.): replicas and batch adapt, variants pinned, ``variants = "cheapest"``
  (the fastest variant of each stage), ``"strongest"`` (the most accurate) or a list of
  deployments, one per stage. With the variants fixed, the objective is IPA's cost term.
- `rim` (RIM): variant and batch adapt, ``replicas`` fixed per stage (3 in IPA's experiments).
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import numpy as np

from traces.errors import InputError

from .base import PlanAction, Policy, Route
from .forecasters import make_forecaster
from .ipa_model import Candidate, fill_timeout_ms, stage_options
from .ipa_solver import Infeasible, Plan, solve
from .params import NonNegative, Positive, Range
from .registry import register

Replicas = Annotated[int, Range(1, 1000)]
FORECAST_HORIZON = 2          # windows: the peak of the next 20 s, as IPA predicts it
DRAIN_GRACE_SLAS = 5.0        # an old variant keeps a replica this many SLAs after the switch


@register
class IpaPolicy(Policy):
    """IPA: variant, batch and replicas per stage (module docstring)."""

    name: ClassVar[str] = "ipa"
    needs_plan_interval: ClassVar[bool] = True

    def __init__(self, sla_ms: Positive | None = None, adaptation_interval_s: Positive = 10.0,
                 forecaster: str = "window-max", forecaster_params: dict | None = None,
                 alpha: NonNegative = 2.0, beta: NonNegative = 1.0, gamma: NonNegative = 1e-6,
                 score: str = "product", max_batch_size: Replicas = 8, max_replicas: Replicas = 16,
                 price_per_replica_hour: NonNegative = 1.0):
        self.sla_ms = sla_ms
        self.adaptation_interval_s = adaptation_interval_s
        # IPA's accuracies are percentages (its table: 82.9 for a QA model's F1), so alpha weighs a
        # percentage point of the score against beta x one replica-hour: scaled here for fractions
        self.weights = {"alpha": 100.0 * alpha, "beta": beta, "gamma": gamma}
        if score not in ("product", "sum"):
            raise InputError("policy.score", f"must be 'product' or 'sum', got {score!r}")
        self.score = score
        self.max_batch_size = max_batch_size
        self.max_replicas = max_replicas
        self.price_per_replica_hour = price_per_replica_hour
        try:
            self.forecaster = make_forecaster(forecaster, **(forecaster_params or {}))
        except InputError as exc:
            raise InputError("policy.forecaster", exc.problem) from None
        self._peaks: list[float] = []
        self._window_peak = 0.0
        self._last_tick_s = 0.0
        self._last_adapt_s = -math.inf
        self._deadline_ms = math.inf
        self._counts = {"plans": 0, "infeasible_plans": 0, "switches": 0}
        self._rates: list[float] = []

    # --- set-up ------------------------------------------------------------------------------
    def setup(self, view) -> None:
        self.stage_names = [name or str(k) for k, (name, _) in enumerate(view.stages)]
        self._candidates: list[list[Candidate]] = []
        for k, (_, deployments) in enumerate(view.stages):
            table = view.stage_predictions(k)
            cands = []
            for d in deployments:
                variant = view.variant(d)
                if variant is None or table is None or variant not in table.pred:
                    raise InputError(f"policy {self.name!r}", f"deployment {d!r} needs a measured variant with "
                                     "predictions (accuracy is part of the objective)")
                cands.append(Candidate(d, variant, view.latency_profile(d), table.accuracy(variant)))
            self._candidates.append(self.stage_candidates(k, cands))
        self._replicas = {d: view.replicas(d) for _, deps in view.stages for d in deps}  # what we last set
        # until the first plan, each stage serves where the scenario started the most replicas
        self._current = [max(deps, key=lambda d: self._replicas[d]) for _, deps in view.stages]
        self._pending: list[str | None] = [None] * len(self._current)
        self._draining: dict[str, float] = {}  # deployment -> when its route was switched away
        self._build_route()

    def stage_candidates(self, stage: int, candidates: list[Candidate]) -> list[Candidate]:
        """The variants a stage may choose among (all of them; `fa2` pins one)."""
        return candidates

    def pinned_replicas(self, stage: int) -> int | None:
        """A fixed replica count for a stage (none; `rim` fixes it)."""
        return None

    def _build_route(self) -> None:
        self._route = Route.pipeline([Route.single(d) for d in self._current])

    # --- per request -------------------------------------------------------------------------
    def route(self, request, view):
        if request.deadline_ms < self._deadline_ms:
            self._deadline_ms = request.deadline_ms
        return self._route

    # --- per tick -----------------------------------------------------------------------------
    def plan(self, view):
        now = view.now_s
        span = now - self._last_tick_s
        self._last_tick_s = now
        if span > 0:
            self._window_peak = max(self._window_peak, view.arrival_rate_rps(span))
        actions: list[PlanAction] = []
        if now - self._last_adapt_s >= self.adaptation_interval_s - 1e-9:
            self._peaks.append(self._window_peak)
            self._window_peak = 0.0
            self._last_adapt_s = now
            actions += self._adapt(view, now)
        actions += self._advance(view, now)
        return actions

    def predicted_rate_rps(self) -> float:
        peaks = np.asarray(self._peaks, dtype=np.float64)
        if len(peaks) >= 2 * self.forecaster.history:
            self.forecaster.fit(peaks, FORECAST_HORIZON)  # online: refit on all peaks seen so far
        return max(0.0, float(self.forecaster.predict(peaks[-self.forecaster.history:])))

    def sla(self) -> float:
        sla = self.sla_ms if self.sla_ms is not None else self._deadline_ms
        return sla if math.isfinite(sla) else 1000.0

    def options(self, rate_rps: float) -> list[list]:
        return [stage_options(cands, rate_rps, max_batch_size=self.max_batch_size, max_replicas=self.max_replicas,
                              price_per_replica_hour=self.price_per_replica_hour, replicas=self.pinned_replicas(k))
                for k, cands in enumerate(self._candidates)]

    def decide(self, rate_rps: float) -> Plan | Infeasible:
        return solve(self.options(rate_rps), self.sla(), score=self.score, stage_names=self.stage_names,
                     **self.weights)

    def _adapt(self, view, now: float) -> list[PlanAction]:
        rate = self.predicted_rate_rps()
        result = self.decide(rate)
        self._counts["plans"] += 1
        if isinstance(result, Infeasible):
            self._counts["infeasible_plans"] += 1
            chosen = [min(opts, key=lambda o: (o.latency_ms, o.cost_per_hour)) if opts else None
                      for opts in self.options(rate)]
        else:
            chosen = list(result.options)
        self._rates.append(rate)
        actions: list[PlanAction] = []
        for k, option in enumerate(chosen):
            if option is None:  # not even the most replicas keep up: keep what runs
                continue
            target = option.deployment
            actions.append(self._set(target, option.replicas, option.batch, fill_timeout_ms(option.batch, rate)))
            stale = self._pending[k]
            if target == self._current[k]:
                self._pending[k] = None
            else:
                self._pending[k] = target
                self._draining.pop(target, None)
            if stale is not None and stale != target:  # never served: nothing to drain
                actions.append(self._set(stale, 0))
        return actions

    def _set(self, deployment: str, replicas: int, batch: int | None = None,
             timeout_ms: float | None = None) -> PlanAction:
        self._replicas[deployment] = replicas
        return PlanAction(deployment, replicas=replicas, max_batch_size=batch, batch_wait_timeout_ms=timeout_ms)

    def _advance(self, view, now: float) -> list[PlanAction]:
        """Finish variant switches: route to a new variant once it serves; retire drained ones."""
        actions: list[PlanAction] = []
        for k, new in enumerate(self._pending):
            if new is not None and view.replicas(new) >= 1:
                self._draining[self._current[k]] = now
                self._current[k], self._pending[k] = new, None
                self._counts["switches"] += 1
                self._build_route()
        in_use = set(self._current) | {p for p in self._pending if p is not None}
        grace_s = DRAIN_GRACE_SLAS * self.sla() / 1000.0
        for name, since in list(self._draining.items()):
            if name in in_use:
                del self._draining[name]
            elif now - since >= grace_s and view.queue_length(name) == 0:
                del self._draining[name]
                actions.append(self._set(name, 0))
        for name, count in self._replicas.items():  # what the scenario started and no plan uses
            if count > 0 and name not in in_use and name not in self._draining:
                actions.append(self._set(name, 0))
        return actions

    def report(self) -> dict:
        rates = self._rates or [math.nan]
        return {**self._counts, "predicted_rate_rps": {"mean": float(np.mean(rates)), "max": float(np.max(rates))}}


@register
class ScaleOnly(IpaPolicy):
    """FA2-style: replicas and batch adapt; each stage's variant is pinned."""

    name = "fa2"

    def __init__(self, variants: str | list[str] = "cheapest", **params):
        super().__init__(**params)
        self.variants = variants

    def stage_candidates(self, stage: int, candidates: list[Candidate]) -> list[Candidate]:
        if isinstance(self.variants, list):
            if len(self.variants) != len(self.stage_names):
                raise InputError("policy.variants", f"needs one deployment per stage ({len(self.stage_names)})")
            pinned = [c for c in candidates if c.deployment == self.variants[stage]]
            if not pinned:
                raise InputError("policy.variants", f"{self.variants[stage]!r} is not a deployment of stage "
                                 f"{self.stage_names[stage]!r} ({', '.join(c.deployment for c in candidates)})")
            return pinned
        if self.variants == "cheapest":
            return [min(candidates, key=lambda c: c.profile.mean_ms(c.profile.min_batch_size))]
        if self.variants == "strongest":
            return [max(candidates, key=lambda c: c.accuracy)]
        raise InputError("policy.variants", f"must be 'cheapest', 'strongest' or a list of deployments, got {self.variants!r}")


@register
class SwitchOnly(IpaPolicy):
    """RIM-style: variant and batch adapt; each stage runs a fixed number of replicas."""

    name = "rim"

    def __init__(self, replicas: Replicas = 3, **params):
        super().__init__(**params)
        self.fixed_replicas = replicas

    def pinned_replicas(self, stage: int) -> int | None:
        return self.fixed_replicas
