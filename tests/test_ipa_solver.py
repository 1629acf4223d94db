"""The IPA-style solver (``policies.ipa_solver``) against brute force written here: every combination
of options (itertools.product, or numpy broadcasting for the larger ones), scored from the
definitions of the objective, the rank-normalised sum and the accuracy-cost front."""

from __future__ import annotations

import functools
import itertools
import math
import random

import numpy as np
import pytest

from policies.ipa_milp import _bound_prune, _dominated, _Limits, _solve_product, _Weights
from policies.ipa_solver import Infeasible, Option, Plan, _arrays, pareto_front, solve
from traces.errors import InputError

# --- independent references ----------------------------------------------------------------------


def stage_ranks(stage: list[Option]) -> dict[float, float]:
    """Rank of each distinct accuracy in the stage over their number (1/K .. 1)."""
    levels = sorted({o.accuracy for o in stage})
    return {acc: (i + 1) / len(levels) for i, acc in enumerate(levels)}


def score_of(combo, ranks, score: str) -> float:
    if score == "product":
        return math.prod(o.accuracy for o in combo)
    return sum(r[o.accuracy] for r, o in zip(ranks, combo)) / len(combo)


def feasible_combos(stages, sla_ms, cap=None):
    for combo in itertools.product(*stages):
        cost = math.fsum(o.cost_per_hour for o in combo)
        if sum(o.latency_ms for o in combo) <= sla_ms and (cap is None or cost <= cap):
            yield combo, cost


def brute_best(stages, sla_ms, score, cap=None, alpha=2.0, beta=1.0, gamma=1e-6) -> float | None:
    ranks = [stage_ranks(s) for s in stages]
    values = [alpha * score_of(c, ranks, score) - beta * cost - gamma * sum(o.batch for o in c)
              for c, cost in feasible_combos(stages, sla_ms, cap)]
    return max(values, default=None)


def brute_front(stages, sla_ms, score) -> list[tuple[float, float]]:
    ranks = [stage_ranks(s) for s in stages]
    points = {(round(score_of(c, ranks, score), 9), round(cost, 9)) for c, cost in feasible_combos(stages, sla_ms)}
    return sorted(p for p in points if not any(q != p and q[0] >= p[0] and q[1] <= p[1] for q in points))


def random_stages(rng: random.Random, n_stages: int | None = None) -> list[list[Option]]:
    """1-3 stages, 1-4 variants, batches from {1, 2, 4, 8}, replicas 1..6; latency rises with
    batch and accuracy and falls with replicas, cost is replicas x a price per variant."""
    stages = []
    for s in range(n_stages or rng.randint(1, 3)):
        options = []
        for v in range(rng.randint(1, 4)):
            accuracy = rng.choice([0.6, 0.75, 0.9, round(rng.uniform(0.3, 1.0), 3)])
            base_ms, price = rng.uniform(3, 30) * (0.5 + accuracy), rng.uniform(0.05, 1.0)
            for b in rng.sample([1, 2, 4, 8], rng.randint(1, 2)):
                for r in rng.sample(range(1, 7), rng.randint(1, 2)):
                    latency = base_ms * b ** 0.6 / r ** 0.4 + rng.uniform(0, 4)
                    options.append(Option(f"s{s}v{v}", f"s{s}v{v}-b{b}", b, r, accuracy, latency, r * price))
        stages.append(options)
    return stages


def assert_plan_is_consistent(plan: Plan, stages, sla_ms, cap, score) -> None:
    assert len(plan.options) == len(stages)
    assert all(o in stage for o, stage in zip(plan.options, stages))
    assert plan.latency_ms == pytest.approx(sum(o.latency_ms for o in plan.options), rel=1e-12)
    assert plan.latency_ms <= sla_ms * (1 + 1e-12)
    assert cap is None or plan.cost_per_hour <= cap * (1 + 1e-12)
    assert plan.accuracy == pytest.approx(math.prod(o.accuracy for o in plan.options), rel=1e-12)
    assert plan.accuracy_score == pytest.approx(score_of(plan.options, [stage_ranks(s) for s in stages], score),
                                                rel=1e-12)
    assert plan.optimal and plan.rounds >= 1 and plan.solve_ms >= 0


# --- the optimum ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_optimum_matches_brute_force(seed):
    rng = random.Random(seed)
    infeasible = 0
    for _ in range(50):
        stages = random_stages(rng)
        sla_ms = rng.uniform(5, 40) * len(stages)
        score = rng.choice(["product", "sum"])
        cap = rng.choice([None, rng.uniform(0.3, 2.5) * len(stages)])
        expected = brute_best(stages, sla_ms, score, cap)
        result = solve(stages, sla_ms, score=score, max_cost_per_hour=cap)
        if expected is None:
            assert isinstance(result, Infeasible), result
            infeasible += 1
            continue
        assert isinstance(result, Plan), result
        assert result.objective == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert_plan_is_consistent(result, stages, sla_ms, cap, score)
    assert 0 < infeasible < 40  # both branches were exercised


def test_weights_other_than_the_defaults():
    rng = random.Random(11)
    for _ in range(30):
        stages = random_stages(rng)
        sla_ms = rng.uniform(10, 40) * len(stages)
        alpha, beta, gamma = rng.uniform(0, 20), rng.uniform(0, 3), rng.choice([0.0, 1e-6, 0.05])
        for score in ("product", "sum"):
            expected = brute_best(stages, sla_ms, score, None, alpha, beta, gamma)
            result = solve(stages, sla_ms, alpha=alpha, beta=beta, gamma=gamma, score=score)
            assert (expected is None) == isinstance(result, Infeasible)
            if expected is not None:
                assert result.objective == pytest.approx(expected, rel=1e-9, abs=1e-9)


def grid_best(stages, sla_ms, score, cap=None, alpha=2.0, beta=1.0, gamma=1e-6) -> float | None:
    """Brute force by numpy broadcasting: every combination's totals on an S-dimensional grid."""
    def total(values_of, combine=np.add):
        axes = [np.array([values_of(s, o) for o in stage]).reshape([-1 if k == s else 1 for k in range(len(stages))])
                for s, stage in enumerate(stages)]
        return functools.reduce(combine, axes)
    ranks = [stage_ranks(stage) for stage in stages]
    accuracy = (total(lambda s, o: o.accuracy, np.multiply) if score == "product"
                else total(lambda s, o: ranks[s][o.accuracy]) / len(stages))
    cost = total(lambda s, o: o.cost_per_hour)
    value = alpha * accuracy - beta * cost - gamma * total(lambda s, o: o.batch)
    fits = (total(lambda s, o: o.latency_ms) <= sla_ms) & (cost <= (np.inf if cap is None else cap))
    return float(value[fits].max()) if fits.any() else None


def test_many_three_stage_instances_match_brute_force():
    """More instances than itertools allows, all with three stages and various alphas (the product's
    secant and the presolve's bounds matter most there); a second stream draws the cost caps."""
    rng, caps = random.Random(0), random.Random(1)
    for _ in range(300):
        stages = random_stages(rng, 3)
        sla_ms, alpha = rng.uniform(10, 40) * 3, rng.choice([2.0, 5.0, 20.0])
        cap = caps.choice([None, None, caps.uniform(1.0, 6.0)])
        for score in ("product", "sum"):
            expected = grid_best(stages, sla_ms, score, cap, alpha)
            result = solve(stages, sla_ms, alpha=alpha, score=score, max_cost_per_hour=cap)
            assert (expected is None) == isinstance(result, Infeasible)
            if expected is not None:
                assert result.objective == pytest.approx(expected, rel=1e-9, abs=1e-9)


def larger_stages(rng: np.random.Generator) -> list[list[Option]]:
    """Three stages of 8 variants x 3 batches x 2-3 replicas: enough for the presolve to prune."""
    stages = []
    for s in range(3):
        accuracy = np.sort(rng.uniform(0.5, 0.99, 8))
        options = []
        for v, acc in enumerate(accuracy):
            base_ms = 5 + 40 * acc ** 4 + rng.uniform(0, 5)
            for b in (1, 4, 8):
                for r in sorted(rng.choice(np.arange(1, 7), 2 + (v % 2), replace=False)):
                    options.append(Option(f"v{v}", f"v{v}", b, int(r), float(acc),
                                          base_ms * b ** 0.7 / r ** 0.5 + 2.0 * (b - 1), float(r * (0.05 + 0.3 * acc))))
        stages.append(options)
    return stages


def test_optimum_matches_brute_force_on_larger_instances():
    rng = np.random.default_rng(5)
    for _ in range(8):
        stages = larger_stages(rng)
        latency = sorted(sum(combo) for combo in itertools.product(*[[o.latency_ms for o in s] for s in stages]))
        sla_ms = latency[int(len(latency) * rng.uniform(0.05, 0.5))]
        for score in ("product", "sum"):
            assert solve(stages, sla_ms, score=score).objective == pytest.approx(
                grid_best(stages, sla_ms, score), rel=1e-9, abs=1e-9)


def test_gamma_breaks_a_tie_between_batch_sizes():
    """Two options alike but for the batch: only gamma (1e-6) tells them apart."""
    same = dict(variant="v", deployment="d", replicas=2, accuracy=0.8, latency_ms=10.0, cost_per_hour=0.5)
    stages = [[Option(batch=8, **same), Option(batch=2, **same), Option(batch=4, **same)],
              [Option("w", "e", 4, 1, 0.9, 12.0, 0.25), Option("w", "e", 1, 1, 0.9, 12.0, 0.25)]]
    plan = solve(stages, 30.0)
    assert [o.batch for o in plan.options] == [2, 1]
    assert plan.objective == pytest.approx(2 * 0.72 - 0.75 - 3e-6, rel=1e-12)


def test_dominance_presolve_drops_only_weakly_dominated_options():
    """Kept options: none is matched or beaten everywhere by another kept one of its stage.
    Dropped options: each is matched or beaten everywhere by a kept one (so nothing optimal is lost:
    the weights are non-negative). Values from small sets, so ties are common."""
    rng = random.Random(4)
    for _ in range(30):
        stages = [[Option(f"acc{acc}", "d", rng.choice([1, 2, 4]), 1, acc, float(rng.randint(1, 3)),
                          float(rng.randint(1, 3)))
                   for acc in (rng.choice([0.5, 0.7, 0.9]) for _ in range(rng.randint(1, 12)))] for _ in range(2)]
        a = _arrays(stages)
        dropped = _dominated(a)

        def no_worse(o, p):
            return (o.accuracy >= p.accuracy and o.latency_ms <= p.latency_ms and o.cost_per_hour <= p.cost_per_hour
                    and o.batch <= p.batch)
        for s, stage in enumerate(stages):
            kept = [o for o, d in zip(stage, dropped[a.stage == s]) if not d]
            assert kept and all(not no_worse(o, p) for o, p in itertools.permutations(kept, 2))
            assert all(any(no_worse(o, p) for o in kept) for p, d in zip(stage, dropped[a.stage == s]) if d)


@pytest.mark.parametrize("score", ["product", "sum"])
def test_bound_presolve_drops_only_options_that_cannot_beat_its_incumbent(score):
    """Every option the Lagrangian bound drops is in no choice within the SLA that reaches the
    incumbent's objective (brute force over the choices containing it)."""
    rng = random.Random(51)
    dropped_any = 0
    for _ in range(60):
        stages = random_stages(rng, rng.randint(2, 3))
        sla_ms, alpha = rng.uniform(15, 40) * len(stages), rng.choice([2.0, 5.0, 20.0])
        if brute_best(stages, sla_ms, score) is None:
            continue
        weights = _Weights(alpha, 1.0, 1e-6, score, len(stages))
        a = _arrays(stages)
        kept, incumbent = _bound_prune(a, _Limits(len(stages), sla_ms, None), weights)
        reached = weights.of(kept, incumbent)
        ranks = [stage_ranks(s) for s in stages]
        kept_ids = {id(o) for o in kept.options}
        for combo, cost in feasible_combos(stages, sla_ms):
            value = alpha * score_of(combo, ranks, score) - cost - 1e-6 * sum(o.batch for o in combo)
            if any(id(o) not in kept_ids for o in combo):
                assert value < reached + 1e-12
        dropped_any += len(kept.options) < len(a.options)
    assert dropped_any >= 10


def test_secant_refinement_rejects_an_overestimated_choice():
    """One stage, breakpoints at L = log 0.25 .. log 1 in four segments. "mid" (L = -0.52) sits inside a
    segment, where the secant over-estimates its accuracy 0.5946 as 0.6036, so the first MILP picks
    it (2 x 0.6036 - 0.3 > 2 x 0.5 - 0.1); its true value 0.889 is below "on-break"'s exact 0.9, so a
    breakpoint is added at -0.52 and the second MILP picks "on-break"."""
    stages = [[Option("low", "l", 1, 1, 0.25, 1.0, 10.0), Option("high", "h", 1, 1, 1.0, 1.0, 10.0),
               Option("on-break", "b", 1, 1, 0.5, 1.0, 0.1), Option("mid", "m", 1, 1, math.exp(-0.52), 1.0, 0.3)]]
    weights = _Weights(2.0, 1.0, 0.0, "product", 1)
    a = _arrays(stages)
    choice, rounds, optimal = _solve_product(a, _Limits(1, 10.0, None), weights, np.zeros(0, int))
    assert a.options[choice[0]].variant == "on-break" and rounds == 2 and optimal


def test_secant_never_underestimates_a_near_tie():
    """"top" (accuracy 1, at the last breakpoint) beats "low" (0.25, at the first) by 3e-4: a secant
    that fell below exp anywhere near L = 0 would let "low" win."""
    stages = [[Option("low", "l", 1, 1, 0.25, 1.0, 0.0), Option("top", "t", 1, 1, 1.0, 1.0, 1.4997)]]
    a = _arrays(stages)
    choice, _, optimal = _solve_product(a, _Limits(1, 10.0, None), _Weights(2.0, 1.0, 0.0, "product", 1),
                                        np.zeros(0, int))
    assert a.options[choice[0]].variant == "top" and optimal


def test_secant_refinement_alone_matches_brute_force():
    """The product MILP loop without presolve or incumbent, with a large alpha (so the secant's
    over-estimate decides more choices): its optimum is the brute-force one."""
    rng = random.Random(31)
    rounds_seen = []
    for _ in range(40):
        stages = random_stages(rng, 3)
        sla_ms = rng.uniform(15, 40) * 3
        expected = brute_best(stages, sla_ms, "product", None, 20.0)
        if expected is None:
            continue
        a, weights = _arrays(stages), _Weights(20.0, 1.0, 1e-6, "product", 3)
        choice, rounds, optimal = _solve_product(a, _Limits(3, sla_ms, None), weights, np.zeros(0, int))
        assert weights.of(a, choice) == pytest.approx(expected, rel=1e-9, abs=1e-9) and optimal
        rounds_seen.append(rounds)
    assert max(rounds_seen) >= 2


def test_product_and_sum_choose_differently():
    """Only one stage can be upgraded within the SLA. The product gains most from the stage whose
    accuracy rises most (0.5 -> 0.99); the rank sum counts both upgrades alike, so it takes the cheaper one."""
    stages = [[Option("a-small", "a1", 1, 1, 0.5, 10.0, 0.1), Option("a-large", "a2", 1, 1, 0.99, 30.0, 0.3)],
              [Option("b-small", "b1", 1, 1, 0.5, 10.0, 0.1), Option("b-large", "b2", 1, 1, 0.6, 30.0, 0.1)]]
    product, rank_sum = solve(stages, 40.0, score="product"), solve(stages, 40.0, score="sum")
    assert [o.variant for o in product.options] == ["a-large", "b-small"]
    assert [o.variant for o in rank_sum.options] == ["a-small", "b-large"]
    assert rank_sum.accuracy_score == pytest.approx(0.75) and product.accuracy_score == pytest.approx(0.495)
    for plan, score in ((product, "product"), (rank_sum, "sum")):
        assert plan.objective == pytest.approx(brute_best(stages, 40.0, score), rel=1e-12)


# --- the Pareto front ----------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["product", "sum"])
def test_pareto_front_matches_brute_force(score):
    rng = random.Random(21 if score == "product" else 22)
    sizes = []
    for _ in range(30):
        stages = random_stages(rng, rng.randint(1, 3))
        sla_ms = rng.uniform(10, 40) * len(stages)
        front = pareto_front(stages, sla_ms, score=score)
        assert [(round(p.accuracy_score, 9), round(p.cost_per_hour, 9)) for p in front] == brute_front(
            stages, sla_ms, score)
        assert all(p.latency_ms <= sla_ms for p in front)
        sizes.append(len(front))
    assert max(sizes) >= 3 and min(sizes) == 0  # real fronts, and an infeasible SLA, were exercised


def test_pareto_points_keeps_the_most_accurate():
    stages = random_stages(random.Random(3), 3)
    full = pareto_front(stages, 100.0)
    first_two = pareto_front(stages, 100.0, points=2)
    assert len(full) >= 3
    assert [(p.accuracy_score, p.cost_per_hour) for p in first_two] == [
        (p.accuracy_score, p.cost_per_hour) for p in full[-2:]]


# --- why there is no plan ------------------------------------------------------------------------


def test_infeasible_names_the_slowest_stage_and_the_excess():
    stages = [[Option("d1", "d1", 1, 1, 0.8, 38.2, 1.0), Option("d2", "d2", 1, 2, 0.8, 45.0, 2.0)],
              [Option("j1", "j1", 1, 1, 0.9, 41.0, 1.0), Option("j2", "j2", 2, 1, 0.95, 70.0, 1.0)]]
    result = solve(stages, 60.0, stage_names=["detect", "judge"])
    assert isinstance(result, Infeasible) and result.reason == "sla" and result.stage == "judge"
    assert result.fastest_ms == (38.2, 41.0)
    assert result.fastest_total_ms == pytest.approx(79.2) and result.excess_ms == pytest.approx(19.2)
    assert result.message == ("the fastest choice per stage takes 38.2 + 41.0 = 79.2 ms, 19.2 ms over the "
                              "60.0 ms SLA; stage 'judge' (41.0 ms) is the slowest")
    assert pareto_front(stages, 60.0) == []


def test_infeasible_names_an_empty_stage():
    stages = [[Option("a", "a", 1, 1, 0.8, 5.0, 1.0)], []]
    result = solve(stages, 60.0, stage_names=["detect", "judge"])
    assert isinstance(result, Infeasible) and result.reason == "no option" and result.stage == "judge"
    assert "'judge'" in result.message


def test_infeasible_cost_cap_reports_the_cheapest_within_the_sla():
    rng = random.Random(8)
    stages = random_stages(rng, 2)
    sla_ms = 100.0
    cheapest = min(cost for _, cost in feasible_combos(stages, sla_ms))
    result = solve(stages, sla_ms, max_cost_per_hour=0.5 * cheapest)
    assert isinstance(result, Infeasible) and result.reason == "cost"
    assert result.min_cost_per_hour == pytest.approx(cheapest, rel=1e-12)
    assert isinstance(solve(stages, sla_ms, max_cost_per_hour=cheapest), Plan)


# --- bad input -----------------------------------------------------------------------------------

GOOD = Option("v", "d", 1, 1, 0.9, 10.0, 1.0)


def option(**change) -> Option:
    return Option(**{**GOOD.__dict__, **change})


@pytest.mark.parametrize("stages, kwargs, where", [
    ([[GOOD, option(latency_ms=math.nan)]], {}, "stages[0][1].latency_ms"),
    ([[GOOD], [option(latency_ms=-1.0)]], {}, "stages[1][0].latency_ms"),
    ([[option(cost_per_hour=-0.1)]], {}, "stages[0][0].cost_per_hour"),
    ([[option(cost_per_hour=math.inf)]], {}, "stages[0][0].cost_per_hour"),
    ([[option(accuracy=0.0)]], {}, "stages[0][0].accuracy"),
    ([[option(accuracy=1.2)]], {}, "stages[0][0].accuracy"),
    ([[option(batch=0)]], {}, "stages[0][0].batch"),
    ([[option(replicas=1.5)]], {}, "stages[0][0].replicas"),
    ([[GOOD, option(accuracy=0.8)]], {}, "stages[0][1].accuracy"),  # one variant, two accuracies
    ([["not an option"]], {}, "stages[0][0]"),
    ([], {}, "stages"),
    ([[GOOD]], {"score": "mean"}, "score"),
    ([[GOOD]], {"sla_ms": 0.0}, "sla_ms"),
    ([[GOOD]], {"sla_ms": math.nan}, "sla_ms"),
    ([[GOOD]], {"alpha": -1.0}, "alpha"),
    ([[GOOD]], {"beta": -0.5}, "beta"),
    ([[GOOD]], {"gamma": math.nan}, "gamma"),
    ([[GOOD]], {"max_cost_per_hour": -1.0}, "max_cost_per_hour"),
    ([[GOOD], [GOOD]], {"stage_names": ["only one"]}, "stage_names"),
])
def test_bad_input_names_the_field(stages, kwargs, where):
    kwargs = {"sla_ms": 100.0, **kwargs}
    with pytest.raises(InputError) as caught:
        solve(stages, **kwargs)
    assert caught.value.where == where


def test_pareto_bad_points():
    with pytest.raises(InputError) as caught:
        pareto_front([[GOOD]], 100.0, points=0)
    assert caught.value.where == "points"
