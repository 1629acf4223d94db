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
  and the product is ``exp(L)``, convex, so a chord lies above it: with ``exp`` replaced by its
  piecewise-linear secant over breakpoints ``t_0 < ... < t_K`` (one binary per segment, L split into
  per-segment parts) the MILP's optimum is an upper bound. Its solution is scored with the true
  ``exp``; while the bound exceeds the best true objective by more than 1e-9 (relative), a breakpoint
  is added at that solution's ``L`` (the secant is exact there) and the MILP solved again. Each
  round proves optimality or removes the last solution's over-estimate, so it ends: exact, with no
  nonlinear solver. ``Plan.rounds`` counts the MILPs (1-3 in ``bench/ipa_plan.py``);
  ``Plan.optimal`` is False only if the cap of 50 rounds stopped it.

**Exact presolve.** (1) Options that miss the SLA (or cost cap) even with the fastest (cheapest)
option everywhere else go. (2) Lagrangian bound: for any price mu >= 0 on the SLA, a choice within
it scores at most ``mu * sla + sum over stages of max(v - mu * latency)`` (v: an option's linear
objective; for the product with the chord of ``exp`` over the L that can still win); with an option
forced, its own term replaces its stage's max. At the mu found by bisection, options whose bound is
below the true objective of a feasible choice (the per-stage maximisers there, improved by one-stage
swaps) go. The same bound on L alone caps the breakpoints. (3) An option that another of its stage
matches or beats in accuracy, latency, cost and batch goes. On the bench's 5 stages x ~1,700
options, tens to hundreds of columns are left: a median 8 ms (sum) and 11 ms (product) per plan,
against 95 and 131 ms with no presolve.

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

import functools
import math
import numbers
import operator
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import LinearConstraint, milp
from scipy.sparse import csr_array

from traces.errors import InputError

SCORES = ("product", "sum")
MAX_ROUNDS = 50
INITIAL_SEGMENTS = 4
REL_TOL = 1e-9
# Gaps and tolerances tight enough for a 1e-9 answer (HiGHS's default absolute gap, 1e-6, would
# hide gamma's tie-break); feasibility jump off: it costs a third of the time on these tiny MILPs.
_HIGHS = {"mip_rel_gap": 1e-11, "mip_abs_gap": 1e-12, "primal_feasibility_tolerance": 1e-9,
          "mip_feasibility_tolerance": 1e-9, "mip_heuristic_run_feasibility_jump": False}
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


@dataclass(frozen=True)
class _Arrays:
    """All stages' options as columns, grouped by stage in stage order."""
    options: tuple[Option, ...]
    stage: np.ndarray
    log_accuracy: np.ndarray
    rank: np.ndarray        # rank-normalised accuracy within the stage, in (0, 1]
    latency_ms: np.ndarray
    cost: np.ndarray
    batch: np.ndarray

    def take(self, keep: np.ndarray) -> _Arrays:
        return _Arrays(tuple(self.options[i] for i in np.flatnonzero(keep)), *(
            v[keep] for v in (self.stage, self.log_accuracy, self.rank, self.latency_ms, self.cost, self.batch)))

    def complete(self, n_stages: int) -> bool:
        return len(np.unique(self.stage)) == n_stages

    def per_stage(self, values: np.ndarray, reduce: np.ufunc) -> np.ndarray:
        """``reduce`` (np.minimum, np.maximum) over each stage's columns; every stage must have one."""
        return reduce.reduceat(values, np.flatnonzero(np.r_[True, self.stage[1:] != self.stage[:-1]]))


class _Limits(NamedTuple):
    """What every MILP here enforces: one choice per stage, the SLA, the optional cost cap."""
    n_stages: int
    sla_ms: float
    max_cost: float | None


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


@dataclass(frozen=True)
class _Weights:
    """The objective alpha * score - beta * cost - gamma * batch, and linear bounds on it."""
    alpha: float
    beta: float
    gamma: float
    score: str
    n_stages: int

    def linear(self, a: _Arrays) -> np.ndarray:
        """Per column: for "sum" the whole objective, for "product" all but the product."""
        rank = self.alpha * a.rank / self.n_stages if self.score == "sum" else 0.0
        return rank - self.beta * a.cost - self.gamma * a.batch

    def score_of(self, options: Sequence[Option], ranks: np.ndarray) -> float:
        return math.prod(o.accuracy for o in options) if self.score == "product" else float(ranks.mean())

    def of(self, a: _Arrays, choice: np.ndarray) -> float:
        options = [a.options[i] for i in choice]
        return (self.alpha * self.score_of(options, a.rank[choice]) - self.beta * math.fsum(a.cost[choice])
                - self.gamma * sum(o.batch for o in options))

    def least_log(self, a: _Arrays, value: float) -> float:
        """The least L (sum of log accuracies) of a choice whose objective can reach ``value``."""
        needed = value + a.per_stage(-self.linear(a), np.minimum).sum()  # alpha * exp(L) must pay this
        return math.log(needed / self.alpha) - 1e-12 if needed > 0 and self.alpha > 0 else -math.inf

    def relaxed(self, a: _Arrays, low: float, high: float) -> tuple[np.ndarray, float]:
        """Per-column values and a constant whose sum bounds the objective of every choice with L in
        [low, high]: for "product", exp(L) replaced by its chord over that range (above it: convex)."""
        if self.score == "sum":
            return self.linear(a), 0.0
        slope = (math.exp(high) - math.exp(low)) / (high - low) if high - low > 1e-12 else math.exp(high)
        return self.alpha * slope * a.log_accuracy + self.linear(a), self.alpha * (math.exp(low) - slope * low)


def _best_per_stage(values: np.ndarray, stage: np.ndarray, tie: np.ndarray | None = None) -> np.ndarray:
    """The column with the largest value in each stage (ties: the largest ``tie``)."""
    order = np.lexsort((values, stage) if tie is None else (tie, values, stage))
    return order[np.r_[stage[order][1:] != stage[order][:-1], True]]


def _lagrangian(a: _Arrays, sla_ms: float, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, a bound on ``sum(values)`` over the choices within the SLA that contain it (module
    docstring), at a mu found by bisection; and the per-stage maximisers there, a choice within the SLA."""
    def at(mu: float) -> tuple[np.ndarray, np.ndarray, bool]:
        reduced = values - mu * a.latency_ms
        best = a.per_stage(reduced, np.maximum)
        fastest_best = a.per_stage(np.where(reduced >= best[a.stage], a.latency_ms, np.inf), np.minimum)
        return reduced, best, fastest_best.sum() <= sla_ms
    low = high = 0.0
    reduced, best, fits = at(0.0)
    if not fits:  # the bound is convex in mu; its minimum is where the maximisers start to fit
        high = 1.0
        while not at(high)[2] and high < 1e15:
            low, high = high, high * 8
        for _ in range(24):
            mid = 0.5 * (low + high)
            low, high = (low, mid) if at(mid)[2] else (mid, high)
        reduced, best, _ = at(high)
    return high * sla_ms + best.sum() - best[a.stage] + reduced, _best_per_stage(reduced, a.stage, -a.latency_ms)


def _most_log(a: _Arrays, sla_ms: float) -> float:
    """An upper bound on L = sum of log accuracies over the choices within the SLA (its Lagrangian bound)."""
    return min(float(_lagrangian(a, sla_ms, a.log_accuracy)[0].max()) + 1e-12,
               a.per_stage(a.log_accuracy, np.maximum).sum())


def _bound_prune(a: _Arrays, limits: _Limits, weights: _Weights) -> tuple[_Arrays, np.ndarray]:
    """Drop columns whose Lagrangian bound is below the true objective of a feasible choice; return
    the rest and that choice (empty when none fits). For the product twice: the second chord starts
    at the least L that can still beat the first pass's choice, so it is tighter."""
    low, high = a.per_stage(a.log_accuracy, np.minimum).sum(), _most_log(a, limits.sla_ms)
    incumbent, value = np.zeros(0, int), -math.inf
    for _ in range(2 if weights.score == "product" else 1):
        values, constant = weights.relaxed(a, low, high)
        bound, candidate = _lagrangian(a, limits.sla_ms, values)
        fits = a.latency_ms[candidate].sum() <= limits.sla_ms and (
            limits.max_cost is None or a.cost[candidate].sum() <= limits.max_cost)
        candidate = _improve(a, limits, weights, candidate) if fits else candidate
        if fits and weights.of(a, candidate) > value:
            incumbent, value = candidate, weights.of(a, candidate)
        low = min(max(low, weights.least_log(a, value)), high)
    if not len(incumbent):
        return a, incumbent
    keep = bound + constant >= value - REL_TOL * max(1.0, abs(value))
    keep[incumbent] = True
    return a.take(keep), np.cumsum(keep)[incumbent] - 1


def _improve(a: _Arrays, limits: _Limits, weights: _Weights, choice: np.ndarray) -> np.ndarray:
    """Local search from a feasible choice: while replacing one stage's option improves the objective
    within the limits, make the best such swap (all swaps scored at once)."""
    choice = choice.copy()
    for _ in range(10 * limits.n_stages):
        def swapped(values: np.ndarray) -> np.ndarray:  # per column: the total with it swapped in
            return values[choice].sum() - values[choice][a.stage] + values
        score = np.exp(swapped(a.log_accuracy)) if weights.score == "product" else swapped(a.rank) / limits.n_stages
        cost = swapped(a.cost)
        value = weights.alpha * score - weights.beta * cost - weights.gamma * swapped(a.batch)
        cap = np.inf if limits.max_cost is None else limits.max_cost
        fits = (swapped(a.latency_ms) <= limits.sla_ms) & (cost <= cap)
        value[~fits] = -np.inf
        best = int(np.argmax(value))
        if value[best] <= value[choice[0]] + 1e-12 * max(1.0, abs(value[choice[0]])):
            break
        choice[a.stage[best]] = best
    return choice


def _dominated(a: _Arrays, batch: bool = True) -> np.ndarray:
    """Columns another column of their stage matches or beats in accuracy, latency, cost and (unless
    ``batch`` is False) batch; of identical ones the first stays. With non-negative weights they are
    never needed."""
    keys = np.stack([-a.log_accuracy, a.latency_ms, a.cost] + ([a.batch] if batch else []), 1)
    dominated = np.zeros(len(keys), bool)
    for s in np.unique(a.stage):
        columns = np.flatnonzero(a.stage == s)
        k = keys[columns]
        no_worse = (k[None, :, :] <= k[:, None, :]).all(2)  # [j, i]: i is no worse than j anywhere
        better = (k[None, :, :] < k[:, None, :]).any(2) | np.tri(len(k), k=-1, dtype=bool)
        dominated[columns] = (no_worse & better).any(1)
    return dominated


def _slack(a: _Arrays, limits: _Limits) -> _Arrays | None:
    """Without the options that miss the SLA (or the cost cap) even with the fastest (cheapest) option
    in every other stage; None when a stage is left with none."""
    for field, limit in (("latency_ms", limits.sla_ms), ("cost", limits.max_cost)):
        if limit is not None:
            values = getattr(a, field)
            least = a.per_stage(values, np.minimum)
            a = a.take(values <= limit - (least.sum() - least)[a.stage] + 1e-12 * max(1.0, abs(limit)))
            if not a.complete(limits.n_stages):
                return None
    return a


def _presolve(a: _Arrays, limits: _Limits, weights: _Weights | None) -> tuple[_Arrays | None, np.ndarray]:
    """The columns an optimal choice may need (module docstring: slack, bound when ``weights`` are
    given, dominance; None if nothing fits), and a feasible choice among them (empty if none is known)."""
    none = np.zeros(0, int)
    a = _slack(a, limits)
    if a is None:
        return None, none
    a, incumbent = _bound_prune(a, limits, weights) if weights is not None else (a, none)
    keep = ~_dominated(a)
    keep[incumbent] = True  # a dominated incumbent column stays: harmless
    return a.take(keep), np.cumsum(keep)[incumbent] - 1


def _row(values: np.ndarray, width: int, columns: np.ndarray | None = None) -> csr_array:
    """One constraint row: ``values`` in ``columns`` (default: the first len(values) columns)."""
    columns = np.arange(len(values)) if columns is None else columns
    return csr_array((values, (np.zeros(len(values), int), columns)), shape=(1, width))


def _rows(a: _Arrays, limits: _Limits, width: int) -> list[LinearConstraint]:
    """The rows every MILP here has: one choice per stage, the SLA, the optional cost cap."""
    n = len(a.options)
    choose = csr_array((np.ones(n), (a.stage, np.arange(n))), shape=(limits.n_stages, width))
    rows = [LinearConstraint(choose, 1.0, 1.0), LinearConstraint(_row(a.latency_ms, width), -np.inf, limits.sla_ms)]
    if limits.max_cost is not None:
        rows.append(LinearConstraint(_row(a.cost, width), -np.inf, limits.max_cost))
    return rows


@functools.cache
def _highs_options() -> tuple[tuple[str, object], ...]:
    """The ``_HIGHS`` options this scipy's HiGHS knows (an older one lacks some, and milp would raise)."""
    return tuple((key, value) for key, value in _HIGHS.items() if _milp(np.ones(1), np.ones(1), [], {key: value}))


def _milp(c: np.ndarray, integrality: np.ndarray, rows: list[LinearConstraint], options: dict | None = None,
          bounds: tuple = (0.0, 1.0)):
    """HiGHS (columns in [0, 1] unless ``bounds`` say otherwise); milp passes options it does not know to
    HiGHS verbatim, with a warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unrecognized options")
        try:
            return milp(c, integrality=integrality, bounds=bounds, constraints=rows,
                        options=dict(_highs_options()) if options is None else options)
        except (AttributeError, KeyError, ValueError):
            if options is None:
                raise
            return None


def _solve_linear(a: _Arrays, limits: _Limits, weights: np.ndarray,
                  extra: Sequence[LinearConstraint] = ()) -> np.ndarray | None:
    """The choice maximising ``weights @ x``, or None when nothing is feasible."""
    result = _milp(-weights, np.ones(len(weights)), _rows(a, limits, len(weights)) + list(extra))
    return None if result.x is None else _best_per_stage(result.x, a.stage)


def _solve_product(a: _Arrays, limits: _Limits, weights: _Weights,
                   incumbent: np.ndarray) -> tuple[np.ndarray, int, bool] | None:
    """Maximise ``alpha * exp(L) + linear @ x`` by secant refinement (module docstring).

    Per segment j of breakpoints t_0 < ... < t_K: a binary y_j (L lies in segment j) and L's part
    L_j in [t_{j-1} y_j, t_j y_j], with L = sum L_j and the product bounded by the sum of the segment
    secants a_j y_j + b_j L_j (the disaggregated convex-combination form: its LP relaxation is the
    hull of the secant, and narrow segments give no tiny coefficients). L runs from the least value
    that can beat the incumbent (a breakpoint) to an upper bound on L within the SLA (``_most_log``).
    Returns the best choice, the MILPs solved and whether optimality was proven.
    """
    n, linear = len(a.options), weights.linear(a)
    best, best_value = (incumbent, weights.of(a, incumbent)) if len(incumbent) else (None, -math.inf)
    high = _most_log(a, limits.sla_ms)
    low = max(a.per_stage(a.log_accuracy, np.minimum).sum(), weights.least_log(a, best_value))
    low = min(low, a.log_accuracy[best].sum()) if best is not None else low
    if high - low <= 1e-12:  # the product is a constant for every choice that can beat the incumbent
        found = _solve_linear(a, limits, linear, [LinearConstraint(_row(a.log_accuracy, n), low, np.inf)])
        best = found if found is not None and weights.of(a, found) > best_value else best
        return None if best is None else (best, 1, True)
    breaks = np.linspace(low, high, INITIAL_SEGMENTS + 1)
    breaks = breaks if best is None else _with_break(breaks, a.log_accuracy[best].sum())
    for rounds in range(1, MAX_ROUNDS + 1):
        k = len(breaks) - 1  # columns: x (n), segment binaries y (k), segment parts of L (k)
        width, seg, part = n + 2 * k, np.arange(n, n + k), np.arange(n + k, n + 2 * k)
        span = np.arange(k)  # rows: L_j - t_j y_j <= 0 and t_{j-1} y_j - L_j <= 0
        inside = csr_array((np.r_[np.ones(k), -breaks[1:], breaks[:-1], -np.ones(k)],
                            (np.r_[span, span, span + k, span + k], np.r_[part, seg, seg, part])), shape=(2 * k, width))
        rows = _rows(a, limits, width) + [
            LinearConstraint(_row(np.r_[a.log_accuracy, -np.ones(k)], width, np.r_[np.arange(n), part]), 0.0, 0.0),
            LinearConstraint(_row(np.ones(k), width, seg), 1.0, 1.0), LinearConstraint(inside, -np.inf, 0.0)]
        slope = np.diff(np.exp(breaks)) / np.diff(breaks)
        c = np.r_[-linear, -weights.alpha * (np.exp(breaks[:-1]) - slope * breaks[:-1]), -weights.alpha * slope]
        lower = np.r_[np.zeros(n + k), np.full(k, min(breaks[0], 0.0))]  # L's parts are <= 0 (log accuracies)
        result = _milp(c, np.r_[np.ones(n + k), np.zeros(k)], rows, bounds=(lower, np.r_[np.ones(n + k), np.zeros(k)]))
        if result.x is None:  # nothing beats the incumbent (or, without one, nothing is feasible)
            return None if best is None else (best, rounds, True)
        choice = _best_per_stage(result.x[:n], a.stage)
        if weights.of(a, choice) > best_value:
            best, best_value = choice, weights.of(a, choice)
        bound = -result.mip_dual_bound
        refined = _with_break(breaks, a.log_accuracy[choice].sum())
        if bound - best_value <= REL_TOL * max(1.0, abs(best_value)) or len(refined) == len(breaks):
            return best, rounds, True  # bound met, or the relaxation's optimum is exact at a breakpoint
        breaks = refined
    return best, MAX_ROUNDS, False


def _with_break(breaks: np.ndarray, at: float) -> np.ndarray:
    """``breaks`` with ``at`` added in order, unless one is already within 1e-12 of it."""
    return breaks if np.abs(breaks - at).min() <= 1e-12 else np.sort(np.r_[breaks, at])


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
