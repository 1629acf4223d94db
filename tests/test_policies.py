"""Decisions of each policy on small hand-made profiles."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import policies
from policy_fakes import FakeView, request, two_model_table
from traces.errors import InputError

FAST_SLOW = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0}}


def make(name, view, **params):
    policy = policies.create(name, params)
    policy.setup(view)
    return policy


def test_static_extremes():
    view = FakeView(FAST_SLOW, two_model_table())
    assert make("static-small", view).route(request(50), view).label == "fast"
    assert make("static-large", view).route(request(50), view).label == "slow"


def test_planner_takes_the_accurate_single_when_it_fits_and_is_sustainable():
    view = FakeView(FAST_SLOW, two_model_table(), rate_rps=20.0)
    planner = make("planner", view)
    assert planner.route(request(15), view).label == "slow"


def test_planner_takes_a_cascade_when_the_large_model_alone_cannot_keep_up():
    """150 rps: 'slow' alone (100 rps capacity) is unsustainable; a cascade sending it the
    unconfident half is, and is more accurate than 'fast' alone."""
    table = two_model_table()
    busy_slow = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0, "busy": 1}}
    view = FakeView(busy_slow, table, rate_rps=150.0)
    planner = make("planner", view)
    label = planner.route(request(30), view).label
    assert label.startswith("fast@") and label.endswith(">slow")
    best = planner.describe()[0]
    assert best["accuracy"] > table.accuracy("fast") + 0.05
    assert (1 - best["coverage"]) * 150.0 <= 0.9 * 100.0  # the second stage stays sustainable


def test_planner_lets_an_overloaded_accurate_model_take_requests_it_can_start_at_once():
    """At 150 rps 'slow' cannot carry all traffic, but an idle 'slow' still serves the request in
    hand (the most accurate option); once it is busy the planner turns to the cascade."""
    view = FakeView(FAST_SLOW, two_model_table(), rate_rps=150.0)
    planner = make("planner", view)
    assert planner.route(request(30), view).label == "slow"
    busy = FakeView({"fast": {"ms": 2.0}, "slow": {"ms": 10.0, "busy": 1}}, two_model_table(), rate_rps=150.0)
    assert planner.route(request(30), busy).label != "slow"
    assert make("planner", view, mix=False).route(request(30), view).label != "slow"


def _planned(planner, view, deadline_ms: float):
    """The planner after one window of requests with this deadline (the plan's deadline)."""
    planner.route(request(deadline_ms), view)
    planner.plan(view)
    return {o["route"]: o for o in planner.describe()}


def test_planner_keeps_cascades_on_a_flat_model_that_is_busy_nearly_all_the_time():
    """'fast' serves a batch of up to 16 in 2 ms, whatever its size: at 2,400 rps it is busy over
    90% of the time (the cap on the busy share the planner had threw every cascade away) at 30%
    of its capacity at full batches, and answers within a few ms: its cascades stay."""
    from policies.estimates import utilization

    flat = {"fast": {"ms": 2.0, "max_batch_size": 16, "timeout_ms": 1.0},
            "slow": {"ms": 10.0, "max_batch_size": 16, "timeout_ms": 1.0, "replicas": 4}}
    view = FakeView(flat, two_model_table(), rate_rps=2400.0)
    assert utilization(view.latency_profile("fast"), 2400.0, 1, 16, 1.0) > 0.9
    options = _planned(make("planner", view), view, 30.0)
    assert any(label.startswith("fast@") for label in options)
    assert not options["fast"]["spare_only"]   # 'fast' alone can carry everything too


def test_planner_does_not_plan_all_traffic_on_a_steep_model_past_its_steady_latency():
    """'slow' serves a batch of b in 10 b ms (100 rps at any size): at 70 rps, 0.7 of its capacity,
    its queue carries over and its steady latency is past a 40 ms deadline, though its load is
    under ``max_load``: it may only take requests it can start at once. At 40 rps it fits."""
    from policies.estimates import steady_latency_ms

    steep = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0, "per_item_ms": 10.0, "max_batch_size": 16, "timeout_ms": 1.0}}
    profile = FakeView(steep).latency_profile("slow")
    assert steady_latency_ms(profile, 70.0, 1, 16, 1.0) > 40.0 >= steady_latency_ms(profile, 40.0, 1, 16, 1.0)
    for rate_rps, spare in ((70.0, True), (40.0, False)):
        view = FakeView(steep, two_model_table(), rate_rps=rate_rps)
        assert _planned(make("planner", view), view, 40.0)["slow"]["spare_only"] is spare


def _two_classes(planner, view, tight_ms: float, loose_ms: float):
    planner.route(request(tight_ms), view)
    planner.route(request(loose_ms), view)
    planner.plan(view)
    return ({o["route"]: o for o in planner.describe(tight_ms)}, {o["route"]: o for o in planner.describe(loose_ms)})


def test_planner_plans_each_deadline_class_and_gives_spare_room_to_the_tightest():
    """Half the requests at 12 ms, half at 60 ms, 300 rps: 'slow' (10 ms, 100 rps) cannot carry
    either class. The 12 ms class can use it only when it is idle, so its spare room goes to that
    class; the 60 ms class, which has cascades to fall back on, does not compete for it."""
    deps = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0}}
    view = FakeView(deps, two_model_table(), rate_rps=300.0)
    tight, loose = _two_classes(make("planner", view), view, 12.0, 60.0)
    assert tight["slow"]["spare_only"] and "slow" not in loose
    assert not any(label.startswith("fast@") for label in tight)   # a cascade's 12 ms worst case does not fit
    assert any(label.startswith("fast@") for label in loose)


def test_planner_reserves_what_a_tighter_class_sends_before_planning_a_looser_one():
    """At 180 rps with two classes: 'fast' alone is the 5 ms class's plan, which reserves 90 rps on
    it; the 60 ms class's cascade must fit beside it: its second stage on 'slow' (100 rps at most)
    takes the unsure share of 90 rps only."""
    deps = {"fast": {"ms": 2.0, "max_batch_size": 8}, "slow": {"ms": 10.0}}
    view = FakeView(deps, two_model_table(), rate_rps=180.0)
    planner = make("planner", view)
    tight, loose = _two_classes(planner, view, 5.0, 60.0)
    assert list(tight) == ["fast"]
    cascade = next(o for label, o in loose.items() if label.startswith("fast@"))
    assert (1 - cascade["coverage"]) * 90.0 <= planner.max_load * 100.0 < (1 - cascade["coverage"]) * 180.0


def test_planner_splits_a_class_no_option_can_take_whole_over_budgets_most_accurate_first():
    """At 400 rps no option carries the 60 ms class (ceilings of 100 rps on 'slow', 200 on
    'fast', cascades through 'fast' included): its rate is split, 'slow' first, each single
    its largest sustainable share; a budgeted single takes about budget x the window's time
    elapsed, then no more (besides what it can start at once, which a busy one cannot)."""
    deps = {"fast": {"ms": 5.0}, "slow": {"ms": 10.0}}
    view = FakeView(deps, two_model_table(), rate_rps=400.0)
    planner = make("planner", view, refresh_s=10.0)
    plan = _planned(planner, view, 60.0)
    assert not any(label.startswith("fast@") for label in plan)
    assert list(plan) == ["slow", "fast"]
    slow, fast = plan["slow"]["budget_rps"], plan["fast"]["budget_rps"]
    assert 0.8 * planner.max_load * 100.0 <= slow <= planner.max_load * 100.0
    assert 0.8 * planner.max_load * 200.0 <= fast <= planner.max_load * 200.0
    # both busy with one waiting: no spare room, so only the budgets let requests in
    later = FakeView({d: {**v, "busy": 1, "queue": 1} for d, v in deps.items()}, two_model_table(), rate_rps=400.0)
    later.now_s = view.now_s + 0.5   # half a second into the window
    routes = [planner.route(request(60.0, arrival_s=later.now_s), later).label for _ in range(400)]
    assert routes.count("slow") == pytest.approx(0.5 * slow + 1, abs=1.0)
    assert routes[:routes.count("slow")] == ["slow"] * routes.count("slow")   # the most accurate first


def test_planner_groups_many_distinct_deadlines_into_a_few_classes_planned_at_their_tightest():
    view = FakeView(FAST_SLOW, two_model_table(), rate_rps=20.0)
    planner = make("planner", view)
    deadlines = [11.0 + i for i in range(40)]   # 40 distinct deadlines, one request each
    for deadline in deadlines:
        planner.route(request(deadline), view)
    planner.plan(view)
    assert len(planner._plans) == 8
    assert sorted(planner._plans) == deadlines[::5]   # 5 deadlines a group, each planned at its smallest
    assert planner._plan_for(13.0) is planner._plans[11.0]


def test_planner_falls_back_to_fast_when_only_fast_fits():
    view = FakeView(FAST_SLOW, two_model_table(), rate_rps=20.0)
    planner = make("planner", view)
    assert planner.route(request(5), view).label == "fast"  # a cascade's worst case is 12 ms
    # with time already spent waiting, even a 15 ms deadline leaves room for 'fast' only
    assert planner.route(request(15, arrival_s=view.now_s - 0.006), view).label == "fast"


def test_planner_accounts_for_queues():
    deps = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0, "queue": 3, "busy": 1}}
    view = FakeView(deps, two_model_table(), rate_rps=20.0)
    planner = make("planner", view)
    # slow: 3 waiting + half a service in progress -> 45 ms predicted; 30 ms leaves 'fast' only
    assert planner.route(request(30), view).label == "fast"
    assert planner.route(request(60), view).label == "slow"


def test_planner_rejects_bad_parameters():
    with pytest.raises(InputError, match="policy.taus"):
        policies.create("planner", {"taus": [1.5]})


def test_infaas_takes_the_cheapest_feasible():
    view = FakeView({"fast": {"ms": 2.0}, "mid": {"ms": 5.0}, "slow": {"ms": 10.0}}, None)
    infaas = make("infaas", view)
    assert infaas.route(request(50), view).label == "fast"


def test_infaas_accuracy_floor_and_fastest_when_nothing_fits():
    view = FakeView(FAST_SLOW, two_model_table())
    infaas = make("infaas", view, accuracy_floor=0.9)
    assert infaas.route(request(50), view).label == "slow"
    assert infaas.route(request(1), view).label == "fast"  # nothing fits: fastest


def test_infaas_counts_queueing_delay():
    deps = {"fast": {"ms": 2.0, "queue": 20, "busy": 1}, "slow": {"ms": 10.0}}
    view = FakeView(deps, two_model_table())
    infaas = make("infaas", view)
    assert infaas.route(request(20), view).label == "slow"  # fast has 41 ms of queue ahead


def test_infaas_ranks_cost_by_replica_time_per_request_at_full_batches():
    # 'flat' takes 5 ms for a batch of any size up to 8 (0.625 ms a request); 'steep' 2 ms for one
    # request but 2 ms more for each (16 ms for 8: 2 ms a request). The batch-1 latency says 'steep'.
    deps = {"flat": {"ms": 5.0, "max_batch_size": 8}, "steep": {"ms": 2.0, "per_item_ms": 2.0, "max_batch_size": 8}}
    view = FakeView(deps, None)
    assert make("infaas", view).route(request(50), view).label == "flat"


def test_infaas_sends_a_deployment_no_more_than_95_percent_of_its_capacity():
    # 'fast' serves 500 requests/s (2 ms, batches of one): a 0.25 s window may send it 0.95 x 125
    deps = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0}}
    view = FakeView(deps, None)
    infaas = make("infaas", view)
    routed = [infaas.route(request(100, arrival_s=view.now_s), view).label for _ in range(130)]
    assert routed.count("fast") == math.ceil(0.95 * 500 * 0.25) and set(routed[119:]) == {"slow"}
    view.now_s += 0.25  # a new window: 'fast' again
    assert infaas.route(request(100, arrival_s=view.now_s), view).label == "fast"


def test_autotuner_picks_highest_throughput_that_fits():
    deps = {"fast": {"ms": 2.0, "per_item_ms": 1.0, "max_batch_size": 8},
            "slow": {"ms": 10.0, "per_item_ms": 0.5, "max_batch_size": 8}}
    view = FakeView(deps, None)
    tuner = make("throughput-autotuner", view, deadline_ms=6.0)
    actions = tuner.plan(view)
    # fast at b=5 takes 6 ms: 833 rps, the best within 6 ms; slow never fits
    assert [(a.deployment, a.max_batch_size) for a in actions] == [("fast", 5)]
    assert tuner.route(request(6), view).label == "fast"


def test_degrade_steps_down_under_overload_and_counts_it():
    deps = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0, "queue": 10, "busy": 1}}
    view = FakeView(deps, two_model_table(), rate_rps=20.0)
    degrade = make("degrade", view, inner="static-large")
    assert degrade.route(request(30), view).label == "fast"  # slow has 105 ms predicted
    assert degrade.report()["overrides"] == {"step_down": 1}
    shed = make("degrade", view, inner="static-large", on_overload="shed")
    assert shed.route(request(1), view).reason == "shed"
    assert shed.report()["overrides"] == {"shed": 1}


def test_degrade_routes_around_a_dead_deployment():
    deps = {"fast": {"ms": 2.0}, "slow": {"ms": 10.0, "replicas": 0}}
    view = FakeView(deps, two_model_table())
    degrade = make("degrade", view, inner="static-large")
    assert degrade.route(request(100), view).label == "fast"
    assert degrade.report()["overrides"] == {"route_around_crash": 1}


def test_aimd_grows_while_under_budget_and_halves_when_over():
    class View(FakeView):
        observed = 1.0

        def recent_batch_latency_ms(self, d, q=95.0, window_s=5.0):
            return self.observed

    view = View({"m": {"ms": 2.0, "max_batch_size": 4, "max_measured": 16}}, None)
    aimd = make("aimd-batching", view, deadline_ms=20.0)
    sizes = []
    for step in range(6):
        view.now_s += 1.0
        view.observed = 4.0 if step < 4 else 15.0  # budget is 10 ms
        sizes += [a.max_batch_size for a in aimd.plan(view)]
    assert sizes == [5, 6, 7, 8, 4, 2]


# --- parameter types: one check in registry.create, against each policy's __init__ annotations ----

def test_every_policy_parameter_has_a_checkable_annotation():
    from policies.params import describe
    from policies.registry import annotations, parameters

    for name in policies.names():
        hints = annotations(name)
        assert set(hints) == set(parameters(name)), name
        assert all(describe(h) for h in hints.values())


@pytest.mark.parametrize("hint, good, bad", [
    ("float", [1, 2.5, -3.0], [True, "1.0", None, float("nan"), [1.0]]),
    ("int", [1, -2], [True, 1.0, "1", None]),
    ("str", ["a", ""], [1, None, ["a"]]),
    ("bool", [True, False], [1, 0, "true", None]),
    ("list[float]", [[], [1, 2.5]], [1.0, (1.0,), [1.0, "x"], [True]]),
    ("list[str]", [[], ["a", "b"]], ["a", ["a", 1]]),
    ("dict | None", [{}, {"k": 1}, None], [5, "x", []]),
    ("float | None", [None, 1.5, 2], ["x", False]),
])
def test_parameter_type_rules(hint, good, bad):
    from policies.params import matches

    resolved = eval(hint)
    assert all(matches(v, resolved) for v in good)
    assert not any(matches(v, resolved) for v in bad)


def test_none_is_accepted_where_the_annotation_allows_it():
    assert policies.create("infaas", {"accuracy_floor": None}).accuracy_floor is None
    assert policies.create("planner", {"taus": None, "q": 90}).q == 90  # an int where a float is expected
    with pytest.raises(InputError, match="^policy.q: must be a number in \\[0, 100\\], got None$"):
        policies.create("planner", {"q": None})


TWO_DEPLOYMENTS = ('[[deployments]]\nname = "fast"\nvariant = "fast/int8/cpu"\nmax_batch_size = 4\n\n'
                   '[[deployments]]\nname = "slow"\nvariant = "slow/fp32/cpu"\nmax_batch_size = 4\n')


@pytest.mark.parametrize("policy, line", [
    ('name = "infaas"\naccuracy_floor = "high"', "policy.accuracy_floor: must be a number in [0, 1], got 'high'"),
    ('name = "infaas"\nq = nan', "policy.q: must be a number in [0, 100], got nan"),
    ('name = "planner"\nmax_load = true', "policy.max_load: must be a number in (0, 1], got True"),
    ('name = "aimd-batching"\nincrease = 1.5', "policy.increase: must be an integer >= 0, got 1.5"),
    ('name = "aimd-batching"\nincrease = true', "policy.increase: must be an integer >= 0, got True"),
    ('name = "degrade"\non_overload = 3', "policy.on_overload: must be a string, got 3"),
    ('name = "static"\ndeployment = 1', "policy.deployment: must be a string, got 1"),
    ('name = "planner"\ncascades = "yes"', "policy.cascades: must be true or false, got 'yes'"),
    ('name = "planner"\ntaus = 0.5', "policy.taus: must be a list of numbers in [0, 1], got 0.5"),
    ('name = "planner"\ntaus = [0.5, "x"]', "policy.taus: must be a list of numbers in [0, 1], got [0.5, 'x']"),
    ('name = "static"\ncascade = "fast"\nthreshold = 0.5', "policy.cascade: must be a list of strings, got 'fast'"),
    ('name = "static"\ncascade = ["fast", "slow"]\nthresholds = 0.5',
     "policy.thresholds: must be a list of numbers in [0, 1], got 0.5"),
    ('name = "degrade"\ninner_params = 5', "policy.inner_params: must be a table, got 5"),
    ('name = "degrade"\ninner = 5', "policy.inner: must be a string, got 5"),
    # the wrapped policy's own parameters are named under inner_params
    ('name = "degrade"\ninner = "infaas"\ninner_params = { accuracy_floor = "high" }',
     "policy.inner_params.accuracy_floor: must be a number in [0, 1], got 'high'"),
    ('name = "degrade"\ninner = "infaas"\ninner_params = { accuracy_floor = 2.0 }',
     "policy.inner_params.accuracy_floor: must be a number in [0, 1], got 2.0"),
    # declared ranges (policies.params.Range)
    ('name = "planner"\nq = 150', "policy.q: must be a number in [0, 100], got 150"),
    ('name = "planner"\ntaus = [0.5, 1.5]', "policy.taus: must be a list of numbers in [0, 1], got [0.5, 1.5]"),
    ('name = "infaas"\nrefresh_s = 0.0', "policy.refresh_s: must be a number > 0, got 0.0"),
    ('name = "aimd-batching"\ndecrease = 1.0', "policy.decrease: must be a number in (0, 1), got 1.0"),
    ('name = "static"\ncascade = ["fast", "slow"]\nthreshold = -0.5',
     "policy.threshold: must be a number in [0, 1], got -0.5"),
    ('name = "aimd-batching"\ninner = "infaas"\ninner_params = { floor = 0.5 }',
     "policy.inner_params.floor: unknown parameter for policy 'infaas'"),
    ('name = "aimd-batching"\ninner_params = { deployment = "nosuch" }',
     "policy.inner_params.deployment: unknown deployment 'nosuch'"),
    ('name = "degrade"\ninner = "nope"', "policy.inner: unknown policy 'nope'"),
    ('name = "degrade"\ninner = "degrade"', "policy.inner: degrade cannot wrap itself"),
    ('name = "static"\ncascade = ["fast", "fast"]\nthreshold = 0.5', "policy.cascade: lists deployment 'fast' twice"),
])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_policy_parameters_get_one_line_and_exit_2(tmp_path, tiny_bundle, capsys, command, policy, line):
    from sim.cli import main

    scenario = tmp_path / "scn.toml"
    scenario.write_text(f"duration_s = 1.0\nbundle = '{tiny_bundle.as_posix()}'\n\n[arrivals]\nkind = \"poisson\"\n"
                        f"rate_rps = 50.0\n\n[requests]\ndeadline_ms = 50.0\n\n{TWO_DEPLOYMENTS}\n[policy]\n{policy}\n")
    out = tmp_path / "out"
    code = main(["run", str(scenario), "--out", str(out)] if command == "run" else ["validate", str(scenario)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{line}" in err and (f": {line}" in err or err.startswith(f"error: {line}")), err
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


def test_declared_ranges_and_their_words():
    from typing import Annotated

    from policies.params import Range, describe, matches

    half_open = Annotated[float, Range(0, 1, low_open=True)]
    assert describe(half_open) == "a number in (0, 1]" and describe(list[half_open] | None) == "a list of numbers in (0, 1]"
    assert matches(1, half_open) and matches(0.5, half_open)
    assert not any(matches(v, half_open) for v in (0, 0.0, 1.01, -1, "0.5", True))
    at_least = Annotated[int, Range(2)]
    assert describe(at_least) == "an integer >= 2" and matches(2, at_least) and not matches(1, at_least)
    assert not matches(2.0, at_least)


# --- degrade around a policy that needs no help, and under overload (simulated) ------------------

STUDY_DEPLOYMENTS = [  # examples/study/base.toml's three deployments
    {"name": name, "variant": variant, "max_batch_size": 16, "batch_wait_timeout_ms": 1.0}
    for name, variant in (("small", "cnn-small-kd/fp32/cpu"), ("medium", "mobilenet_v2/int8/cpu"),
                          ("large", "resnet18/int8/cpu"))]


def _study_rate_rps() -> float:
    """The study base's rate (examples/study/base.toml: 1.5x what its large model sustains, a rule
    bench/scenario_loads.py works out on the bundle), so these runs follow a re-measured bundle."""
    from traces.scenario import read_toml

    base = Path(__file__).resolve().parents[1] / "examples" / "study" / "base.toml"
    return float(read_toml(base)["arrivals"]["rate_rps"])


def _study_run(tmp_path, name: str, policy: str, rate_rps: float, deadline_ms: float):
    """``simulate run`` of the study's deployments for 5 s; (requests.parquet bytes, summary)."""
    import json

    from sim.cli import main

    lines = [f"duration_s = 5.0\nwarmup_s = 1.0\nseed = 3\n\n[arrivals]\nkind = \"poisson\"\nrate_rps = {rate_rps}\n\n"
             f"[requests]\ndeadline_ms = {deadline_ms}\n\n[policy]\n{policy}\n"]
    for d in STUDY_DEPLOYMENTS:
        lines.append("[[deployments]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in d.items()))
    scenario = tmp_path / f"{name}.toml"
    scenario.write_text("\n".join(lines))
    out = tmp_path / name
    assert main(["run", str(scenario), "--out", str(out)]) == 0
    seed = out / "seed-3"
    return (seed / "requests.parquet").read_bytes(), json.loads((seed / "summary.json").read_text())


def test_degrade_overrides_nothing_where_its_inner_policy_meets_every_deadline(tmp_path):
    half = 0.5 * _study_rate_rps()
    alone, alone_summary = _study_run(tmp_path, "planner", 'name = "planner"', half, 40.0)
    wrapped, summary = _study_run(tmp_path, "degrade", 'name = "degrade"\ninner = "planner"', half, 40.0)
    assert alone_summary["hit_rate"] == 1.0
    assert summary["policy"]["overrides"] == {}
    assert wrapped == alone


def test_degrade_spreads_its_step_downs_over_the_deployments_that_can_take_them(tmp_path):
    """At 1.25x what large and medium sustain together at full batches, the requests large cannot
    take are more than medium can: the step-downs must reach small as well as medium."""
    import pandas as pd

    from sim.core.prepare import BUNDLED
    from traces.bundle import TraceBundle
    from traces.profiles import LatencyProfile

    bundle = TraceBundle.load(BUNDLED / "digits-cpu")
    capacity_rps = sum(LatencyProfile.from_bundle(bundle, d["variant"]).throughput_rps(d["max_batch_size"])
                       for d in STUDY_DEPLOYMENTS if d["name"] in ("medium", "large"))
    _, summary = _study_run(tmp_path, "degrade", 'name = "degrade"\ninner = "static-large"', 1.25 * capacity_rps, 20.0)
    requests = pd.read_parquet(tmp_path / "degrade" / "seed-3" / "requests.parquet")
    stepped = requests.loc[requests["route"] != "large", "route"].value_counts()
    assert summary["policy"]["overrides"]["step_down"] == stepped.sum() > 1000
    assert len(stepped) == 2 and stepped.min() > 0.1 * stepped.sum(), stepped  # both small and medium, neither alone


def test_degrade_keeps_what_its_inner_planner_predicted_to_fit():
    view = FakeView(FAST_SLOW, two_model_table(), rate_rps=20.0)
    degrade = make("degrade", view, inner="planner")
    for deadline in (5, 15, 30):
        assert degrade.route(request(deadline), view).label == make("planner", view).route(request(deadline), view).label
    assert degrade.report()["overrides"] == {}
