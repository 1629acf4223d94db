"""The optimisation core of an IPA-style pipeline planner: one (variant, batch, replicas) per stage.

IPA (Ghafouri et al., "Inference Pipeline Adaptation") re-plans a pipeline every few seconds: per
stage a model variant, a batch size and a replica count, so that the end-to-end latency meets the
SLA, trading accuracy against cost. This module makes that choice exactly; building the candidates
(profiles, arrival rate, batch filling, queueing) is the caller's work. Pick one ``Option`` per stage to

    maximise   alpha * accuracy_score - beta * sum(cost_per_hour) - gamma * sum(batch)
    subject to sum(latency_ms) <= sla_ms          (and sum(cost_per_hour) <= max_cost_per_hour)

(defaults: IPA's paper weights, alpha 2, beta 1, gamma 1e-6) as a MILP (``scipy.optimize.milp``,
HiGHS): one binary ``x_o`` per option, one equality ``sum x_o = 1`` per stage, one latency row.

- ``score="sum"``: per stage the distinct accuracies of its variants are ranked, the least accurate
  scoring 1/K and the most accurate 1; the score is the mean of the chosen ranks. Linear.
- ``score="product"``: IPA's end-to-end accuracy. Its log ``L = sum log(accuracy_o) x_o`` is linear
  and the product is ``exp(L)``, convex: the MILP takes ``exp``'s piecewise-linear secant, an upper
  bound, and a breakpoint is added at each solution's ``L`` until the bound meets the best true
  objective (1e-9 relative). Exact, with no nonlinear solver. ``Plan.rounds`` counts the MILPs
  (1-3 in ``bench/ipa_plan.py``); ``Plan.optimal`` is False only if the cap of 50 rounds stopped it.

An exact presolve (slack, a Lagrangian bound, dominance) first drops the options no optimal choice
needs: on the bench's 5 stages x ~1,700 options it leaves tens to hundreds. The presolve, the HiGHS
calls and the secant refinement live in ``policies.ipa_milp``, whose docstring explains them; this
module holds the types, the input checks, the diagnosis of an infeasible SLA or cost cap, ``solve``
and ``pareto_front``.

**Pareto mode** (``pareto_front``): the exact accuracy-cost front by the epsilon-constraint method:
maximise the score (for the product, maximise L), minimise the cost at that score, cap the cost
just below that plan's, repeat. Unlike a sweep of the weights it finds non-convex parts too.

**How this differs from IPA's code.** IPA's batch-filling delay ``(b - 1) / lambda`` is attached to
the batch *binary* in the mode its experiments used, so it never enters the latency constraint, and
it has no queueing term; here ``latency_ms`` is the caller's prediction, meant to include batch
filling and queueing wait. IPA fixes a choice's replicas at ``ceil(rate / throughput)``; here they
are explicit per option, so the solver can buy latency with replicas. IPA solves the product with
Gurobi's nonlinear terms; here HiGHS solves it exactly by the secant refinement.
"""

from __future__ import annotations

import math
import numbers
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import LinearConstraint

from traces.errors import InputError

from .ipa_milp import (REL_TOL, _Arrays, _dominated, _Limits, _presolve, _row, _slack, _solve_linear, _solve_product,
                       _Weights)

SCORES = ("product", "sum")
_FIELDS = ("accuracy", "latency_ms", "cost_per_hour", "batch", "replicas")


@dataclass(frozen=True)
class Option:
    """One candidate for a stage, everything computed by the caller."""
    variant: str
    deployment: str
    batch: int
    replicas: int
    accuracy: float       # the variant's accuracy, in (0, 1]
    latency_ms: float     # predicted stage latency (batch filling and queueing wait included)
    cost_per_hour: float  # replicas x price per replica-hour


@dataclass(frozen=True)
class Plan:
    """The chosen option per stage and what it scores."""
    options: tuple[Option, ...]
    accuracy_score: float   # the score the objective used ("product" or "sum")
    accuracy: float         # product of the stage accuracies, whatever the score
    cost_per_hour: float
    latency_ms: float       # sum over stages
    objective: float
    solve_ms: float         # wall time of the call
    rounds: int = 1         # MILPs solved
    optimal: bool = True    # False only when the cap of rounds stopped the refinement


@dataclass(frozen=True)
class Infeasible:
    """No choice meets the constraints, and why (``reason``: "no option", "sla" or "cost")."""
    reason: str
    stage: str | None              # the stage that cannot meet it (for "sla" the slowest one)
    fastest_ms: tuple[float, ...]  # fastest latency per stage (inf for a stage with no option)
    fastest_total_ms: float
    sla_ms: float
    excess_ms: float               # fastest_total_ms - sla_ms
    message: str
    min_cost_per_hour: float | None = None  # for "cost": the cheapest choice within the SLA


def _check_number(value: object, where: str, low: float = 0.0, low_open: bool = False, high: float = math.inf) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and low <= value <= high
            and not (low_open and value == low)):
        expected = (f"in ({low:g}, {high:g}]" if math.isfinite(high)
                    else f"a finite number {'>' if low_open else '>='} {low:g}")
        raise InputError(where, f"expected {expected}, got {value!r}")


def _check_option(option: object, where: str) -> None:
    if not isinstance(option, Option):
        raise InputError(where, f"expected an Option, got {type(option).__name__}")
    _check_number(option.accuracy, f"{where}.accuracy", 0.0, low_open=True, high=1.0)
    _check_number(option.latency_ms, f"{where}.latency_ms")
    _check_number(option.cost_per_hour, f"{where}.cost_per_hour")
    for field in ("batch", "replicas"):
        value = getattr(option, field)
        if not (isinstance(value, numbers.Real) and value >= 1 and float(value).is_integer()):
            raise InputError(f"{where}.{field}", f"expected an integer >= 1, got {value!r}")


def _arrays(stages: Sequence[Sequence[Option]]) -> _Arrays:
    """The options as checked columns: checked at once, then one by one only to name a bad one."""
    options = tuple(o for stage in stages for o in stage)
    try:
        if not all(isinstance(o, Option) for o in options):
            raise TypeError
        accuracy, latency, cost, batch, replicas = (np.fromiter(map(operator.attrgetter(f), options), float,
                                                                len(options)) for f in _FIELDS)
        counts = np.r_[batch, replicas]
        good = bool(np.all((accuracy > 0) & (accuracy <= 1) & (latency >= 0) & (cost >= 0) & np.isfinite(latency)
                           & np.isfinite(cost)) and np.all((counts >= 1) & (counts % 1 == 0)))
    except (TypeError, ValueError):
        good = False
    if not good:
        for s, stage in enumerate(stages):
            for i, option in enumerate(stage):
                _check_option(option, f"stages[{s}][{i}]")
    edges = np.cumsum([0] + [len(stage) for stage in stages])
    ranks = [_ranks(stage, accuracy[edges[s]:edges[s + 1]], f"stages[{s}]") for s, stage in enumerate(stages)]
    return _Arrays(options, np.repeat(np.arange(len(stages)), np.diff(edges)), np.log(accuracy),
                   np.concatenate(ranks), latency, cost, batch)


def _ranks(stage: Sequence[Option], accuracy: np.ndarray, where: str) -> np.ndarray:
    """Rank of each option's accuracy among the stage's distinct variant accuracies, over their number."""
    variants = [o.variant for o in stage]
    if len(set(zip(variants, accuracy.tolist()))) != len(set(variants)):
        seen: dict[str, float] = {}
        for i, option in enumerate(stage):
            if seen.setdefault(option.variant, option.accuracy) != option.accuracy:
                raise InputError(f"{where}[{i}].accuracy", f"variant {option.variant!r} already has accuracy "
                                                            f"{seen[option.variant]!r} in this stage")
    levels = np.unique(accuracy)
    return (np.searchsorted(levels, accuracy) + 1) / len(levels)


def _check_inputs(stages, sla_ms, alpha, beta, gamma, score, max_cost_per_hour, stage_names) -> tuple[str, ...]:
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or len(stages) == 0:
        raise InputError("stages", "expected a non-empty sequence of stages, each a sequence of Options")
    for s, stage in enumerate(stages):
        if isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence):
            raise InputError(f"stages[{s}]", f"expected a sequence of Options, got {type(stage).__name__}")
    _check_number(sla_ms, "sla_ms", low_open=True)
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        _check_number(value, name)
    if score not in SCORES:
        raise InputError("score", f"expected one of {', '.join(SCORES)}, got {score!r}")
    if max_cost_per_hour is not None:
        _check_number(max_cost_per_hour, "max_cost_per_hour")
    names = tuple(str(s) for s in range(len(stages))) if stage_names is None else tuple(stage_names)
    if len(names) != len(stages) or len(set(names)) != len(names):
        raise InputError("stage_names", f"expected {len(stages)} distinct names, got {list(names)!r}")
    return names


def _fmt(value: float, unit: str = " ms") -> str:
    return (f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}") + unit


def _sla_check(stages, sla_ms: float, names: tuple[str, ...]) -> Infeasible | None:
    """The fastest option of every stage: if even that misses the SLA, nothing meets it."""
    fastest = tuple(min((o.latency_ms for o in stage), default=math.inf) for stage in stages)
    total = math.fsum(fastest)
    empty = next((s for s, stage in enumerate(stages) if len(stage) == 0), None)
    if empty is not None:
        return Infeasible("no option", names[empty], fastest, total, sla_ms, math.inf,
                          f"stage {names[empty]!r} has no candidate option")
    if total <= sla_ms:
        return None
    slowest = max(range(len(stages)), key=lambda s: fastest[s])
    spent = " + ".join(_fmt(t, "") for t in fastest) + f" = {_fmt(total)}" if len(stages) > 1 else _fmt(total)
    return Infeasible("sla", names[slowest], fastest, total, sla_ms, total - sla_ms,
                      f"the fastest choice per stage takes {spent}, {_fmt(total - sla_ms)} over the "
                      f"{_fmt(sla_ms)} SLA; stage {names[slowest]!r} ({_fmt(fastest[slowest])}) is the slowest")


def _plan(a: _Arrays, choice: np.ndarray, weights: _Weights, start: float, rounds: int = 1,
          optimal: bool = True) -> Plan:
    options = tuple(a.options[i] for i in choice)
    accuracy = float(math.prod(o.accuracy for o in options))
    return Plan(options, float(weights.score_of(options, a.rank[choice])), accuracy,
                math.fsum(o.cost_per_hour for o in options), math.fsum(o.latency_ms for o in options),
                float(weights.of(a, choice)), (time.perf_counter() - start) * 1e3, rounds, optimal)


def solve(stages: Sequence[Sequence[Option]], sla_ms: float, *, alpha: float = 2.0, beta: float = 1.0,
          gamma: float = 1e-6, score: str = "product", max_cost_per_hour: float | None = None,
          stage_names: Sequence[str] | None = None) -> Plan | Infeasible:
    """The exact best choice of one option per stage (module docstring), or why there is none."""
    start = time.perf_counter()
    names = _check_inputs(stages, sla_ms, alpha, beta, gamma, score, max_cost_per_hour, stage_names)
    everything = _arrays(stages)
    blocked = _sla_check(stages, sla_ms, names)
    if blocked is not None:
        return blocked
    weights = _Weights(float(alpha), float(beta), float(gamma), score, len(stages))
    limits = _Limits(len(stages), sla_ms, max_cost_per_hour)
    a, incumbent = _presolve(everything, limits, weights)
    found = None
    if a is not None and score == "product":
        found = _solve_product(a, limits, weights, incumbent)
    elif a is not None and (choice := _solve_linear(a, limits, weights.linear(a))) is not None:
        found = (choice, 1, True)
    if found is not None:
        return _plan(a, found[0], weights, start, *found[1:])
    fastest = tuple(min(o.latency_ms for o in stage) for stage in stages)
    within_sla = limits._replace(max_cost=None)
    a = _slack(everything, within_sla)
    cheapest = math.fsum(a.cost[_solve_linear(a, within_sla, -a.cost)])
    return Infeasible("cost", None, fastest, math.fsum(fastest), sla_ms, math.fsum(fastest) - sla_ms,
                      f"no choice within the {_fmt(sla_ms)} SLA costs at most {max_cost_per_hour:.4g} per hour; "
                      f"the cheapest costs {cheapest:.4g}", cheapest)


def pareto_front(stages: Sequence[Sequence[Option]], sla_ms: float, *, score: str = "product",
                 points: int | None = None, stage_names: Sequence[str] | None = None) -> list[Plan]:
    """The exact accuracy-score/cost front within the SLA, cheapest first (epsilon-constraint method).

    Each step maximises the score under a cost cap, then minimises the cost at that score, then
    caps the cost just below (1e-8 relative: costs closer than that count as equal). ``points``
    bounds the number of plans (the most accurate ones); empty when nothing meets the SLA. The
    plans' ``objective`` uses the default weights.
    """
    start = time.perf_counter()
    names = _check_inputs(stages, sla_ms, 2.0, 1.0, 1e-6, score, None, stage_names)
    if points is not None and (not isinstance(points, int) or points < 1):
        raise InputError("points", f"expected an integer >= 1 or None, got {points!r}")
    a = _arrays(stages)
    if _sla_check(stages, sla_ms, names) is not None:
        return []
    weights = _Weights(2.0, 1.0, 1e-6, score, len(stages))
    a = _slack(a, _Limits(len(stages), sla_ms, None))
    a = a.take(~_dominated(a, batch=False))  # the front is in score and cost: batch plays no part
    plans: list[Plan] = []
    cap = None
    while points is None or len(plans) < points:
        limits = _Limits(len(stages), sla_ms, cap)
        step = _slack(a, limits)
        accuracy = None if step is None else step.log_accuracy if score == "product" else step.rank
        best = None if step is None else _solve_linear(step, limits, accuracy)  # max L: max product
        if best is None:
            break
        level = accuracy[best].sum()
        floor = LinearConstraint(_row(accuracy, len(accuracy)), level - REL_TOL * max(1.0, abs(level)), np.inf)
        cheapest = _solve_linear(step, limits, -step.cost, [floor])
        plan = _plan(step, best if cheapest is None else cheapest, weights, start)
        if plans and plan.cost_per_hour >= plans[-1].cost_per_hour:
            break  # no progress: HiGHS's tolerance is above the cap's step
        plans.append(plan)
        cap = plan.cost_per_hour - 1e-8 * max(1.0, plan.cost_per_hour)
    pairs = [(p.accuracy_score, p.cost_per_hour) for p in plans]
    front = [p for p, (s, c) in zip(plans, pairs) if not any(t >= s and d <= c and (t, d) != (s, c) for t, d in pairs)]
    return sorted(front, key=lambda p: p.cost_per_hour)
