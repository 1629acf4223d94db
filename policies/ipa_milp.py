"""The MILP machinery behind ``policies.ipa_solver``: presolve, the HiGHS calls, the secant refinement.

``ipa_solver`` checks the input and states the problem; here all stages' options become columns
(``_Arrays``), grouped by stage, and every MILP shares the same rows (``_rows``): one choice per
stage, the SLA, the optional cost cap (``_Limits``). The objective and the bounds on it live in
``_Weights``.

**Exact presolve** (``_presolve``). (1) Options that miss the SLA (or cost cap) even with the
fastest (cheapest) option everywhere else go. (2) Lagrangian bound: for any price mu >= 0 on the
SLA, a choice within it scores at most ``mu * sla + sum over stages of max(v - mu * latency)`` (v: an
option's linear objective; for the product with the chord of ``exp`` over the L that can still win);
with an option forced, its own term replaces its stage's max. At the mu found by bisection, options
whose bound is below the true objective of a feasible choice (the per-stage maximisers there,
improved by one-stage swaps) go. The same bound on L alone caps the breakpoints. (3) An option that
another of its stage matches or beats in accuracy, latency, cost and batch goes. On the bench's 5
stages x ~1,700 options, tens to hundreds of columns are left: a median 8 ms (sum) and 11 ms
(product) per plan, against 95 and 131 ms with no presolve.

**Secant refinement** (``_solve_product``). The product score is ``exp(L)`` with ``L`` the sum of
the chosen log accuracies: convex, so its piecewise-linear secant over breakpoints ``t_0 < ... <
t_K`` lies above it, and the MILP with the secant in its place (one binary per segment, L split
into per-segment parts) gives an upper bound. Its solution is scored with the true ``exp``; while
the bound exceeds the best true objective by more than ``REL_TOL`` (relative), a breakpoint is
added at that solution's ``L`` (the secant is exact there) and the MILP solved again. Each round
proves optimality or removes the last solution's over-estimate, so it ends, exact, with no
nonlinear solver; ``MAX_ROUNDS`` caps it.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy.optimize import LinearConstraint, milp
from scipy.sparse import csr_array

if TYPE_CHECKING:
    from .ipa_solver import Option

MAX_ROUNDS = 50
INITIAL_SEGMENTS = 4
REL_TOL = 1e-9
# Gaps and tolerances tight enough for a 1e-9 answer (HiGHS's default absolute gap, 1e-6, would
# hide gamma's tie-break); feasibility jump off: it costs a third of the time on these tiny MILPs.
_HIGHS = {"mip_rel_gap": 1e-11, "mip_abs_gap": 1e-12, "primal_feasibility_tolerance": 1e-9,
          "mip_feasibility_tolerance": 1e-9, "mip_heuristic_run_feasibility_jump": False}


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
