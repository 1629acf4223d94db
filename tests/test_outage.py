"""Full outages: a deployment with no live replica must not crash any policy or lose any request.

Every registered policy and both bounds run against an outage of all replicas of each deployment
in turn, on the bundled digits bundle. A policy may keep sending requests to the dead deployment
(the static ones do), but the run goes to the end, every arrival ends exactly once, and nothing is
served by a dead replica.
"""

from __future__ import annotations

import math

import pytest

import policies
from conftest import simulate
from policies.base import Policy, Route
from policies.estimates import DeploymentModel, utilization
from policy_fakes import FakeView, request, two_model_table
from traces.errors import InputError

# a shared queue with one replica, per-replica queues behind a balancer, a shared queue with two
DEPLOYMENTS = [
    {"name": "small", "variant": "cnn-small-kd/int8/cpu", "replicas": 1, "max_batch_size": 8, "batch_wait_timeout_ms": 1.0},
    {"name": "mid", "variant": "mobilenet_v2/int8/cpu", "replicas": 2, "max_batch_size": 4, "balancer": "round_robin"},
    {"name": "large", "variant": "resnet18/int8/cpu", "replicas": 2, "max_batch_size": 4, "batch_wait_timeout_ms": 2.0,
     "queue": "edf"},
]
PARAMS = {"static": {"cascade": ["small", "mid", "large"], "thresholds": [0.9, 0.8]},
          "aimd-batching": {"inner": "planner"}}
OUTAGE_S = (0.3, 2.2)  # [crash, recover) of every replica of the dead deployment, in a 3 s run
ADAPTIVE = ("degrade", "infaas", "planner", "aimd-batching", "throughput-autotuner")  # they route around it


TRAINED = ("learned",)  # runs only on the system it was trained on: tests/test_learned.py takes it through an outage


def own_policies() -> list[str]:
    """The project's policies (tests may register more of their own) that run on any system."""
    return [n for n in policies.names() if policies.get(n).__module__.startswith("policies.") and n not in TRAINED]


def outage_scenario(policy: str, dead: dict, **deployment_changes) -> dict:
    at_s, until_s = OUTAGE_S
    faults = [{"deployment": dead["name"], "replica": r, "at_s": at_s, "down_s": until_s - at_s}
              for r in range(dead["replicas"])]
    deployments = [{**d, **deployment_changes} for d in DEPLOYMENTS]
    return {"duration_s": 3.0, "arrivals": {"kind": "poisson", "rate_rps": 200.0},
            "requests": {"deadline_ms": [20.0, 60.0]}, "deployments": deployments, "faults": faults,
            "policy": {"name": policy, "plan_interval_s": 0.5, **PARAMS.get(policy, {})}}


def assert_each_arrival_ends_once(requests, summary, at_least: int = 400):
    assert summary["completed"] + summary["dropped"] == summary["requests"] == len(requests) >= at_least
    assert requests["id"].is_unique
    served = ~requests["dropped"]
    assert not requests.loc[served, ["finish_s", "latency_ms"]].isna().any().any()
    assert (requests.loc[served, "drop_reason"] == "").all()
    # every outage ends inside the run: nothing is left stuck in a queue at the end
    assert requests.loc[~served, "drop_reason"].isin(["expired", "queue_full", "replica_failed", "no_option_fits"]).all()


def starts_on(requests, deployment: str, lo_s: float, hi_s: float) -> int:
    """Batches that started on ``deployment`` in [lo_s, hi_s), counted by request over every hop."""
    count = 0
    for k in range(int(requests["hops"].max())):
        on = requests[f"hop{k}_deployment"] == deployment
        start = requests[f"hop{k}_start_s"]
        count += int((on & (start >= lo_s) & (start < hi_s)).sum())
    return count


@pytest.mark.parametrize("dead", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
@pytest.mark.parametrize("policy", own_policies() + ["oracle-static", "isolation-bound"])
def test_every_policy_runs_through_a_full_outage(policy, dead):
    requests, summary = simulate(outage_scenario(policy, dead), seed=2)
    assert_each_arrival_ends_once(requests, summary)
    if policy != "isolation-bound":  # it models each request alone, outside the engine: no faults
        assert starts_on(requests, dead["name"], *OUTAGE_S) == 0
        assert len(summary["faults"]) == dead["replicas"]
    if policy in ADAPTIVE:
        # after the crash (and one plan interval), what it sends the dead deployment is a trickle
        during = requests[(requests["arrival_s"] > OUTAGE_S[0] + 0.5) & (requests["arrival_s"] < OUTAGE_S[1])]
        assert (~during["route"].str.contains(dead["name"])).mean() > 0.9


@pytest.mark.parametrize("balancer", ["shared", "round_robin", "least_loaded", "power_of_two"])
def test_requests_wait_out_a_full_outage_and_are_served_once_a_replica_is_back(balancer):
    # replica 0 comes back at 1.0 s, replica 1 at 2.0 s: with no deadline to miss, every request
    # waits for the first one back, including those balanced onto replica 1's line
    raw = {"duration_s": 2.5, "arrivals": {"kind": "poisson", "rate_rps": 100.0}, "requests": {"deadline_ms": 1e6},
           "faults": [{"deployment": "m", "replica": 0, "at_s": 0.5, "down_s": 0.5},
                      {"deployment": "m", "replica": 1, "at_s": 0.5, "down_s": 1.5}],
           "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 1.0}, "replicas": 2,
                            "max_batch_size": 4, "balancer": balancer, "drop_expired": False}]}
    requests, summary = simulate(raw, seed=4)
    assert_each_arrival_ends_once(requests, summary, at_least=200)
    assert summary["dropped"] == 0
    starts = requests["hop0_start_s"]
    assert not ((starts >= 0.5) & (starts < 1.0)).any()
    waited = requests[(requests["arrival_s"] > 0.5) & (requests["arrival_s"] < 1.0)]
    assert len(waited) > 20 and (waited["hop0_start_s"] < 1.1).all() and (waited["hop0_replica"] == 0).all()


def test_a_full_outage_with_a_bounded_queue_refuses_the_overflow():
    raw = {"duration_s": 2.0, "arrivals": {"kind": "poisson", "rate_rps": 200.0}, "requests": {"deadline_ms": 1e6},
           "faults": [{"deployment": "m", "at_s": 0.5, "down_s": 1.0}], "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 1.0},
                            "max_queue_size": 10, "drop_expired": False}]}
    requests, summary = simulate(raw, seed=4)
    assert_each_arrival_ends_once(requests, summary)
    assert summary["dropped_by_reason"] == {"queue_full": summary["dropped"]} and summary["dropped"] > 150


# --- the estimates every load-aware policy uses, at zero replicas --------------------------------

def test_no_live_replica_means_infinite_latency_and_utilization():
    view = FakeView({"m": {"ms": 2.0, "replicas": 0, "max_batch_size": 4, "timeout_ms": 1.0}})
    model = DeploymentModel("m", view.latency_profile("m"))
    model.update(view, 100.0)
    assert model.latency_ms(view) == math.inf
    assert model.latency_at(0, 0, 0) == math.inf and math.isfinite(model.latency_at(0, 0, 1))
    assert utilization(view.latency_profile("m"), 100.0, 0, 4, 1.0) == math.inf
    assert utilization(view.latency_profile("m"), 0.0, 0, 4, 1.0) == math.inf
    # 100 rps x 2 ms over the batch one replica forms, e^-0.2 + 0.2 (policies.estimates)
    assert utilization(view.latency_profile("m"), 100.0, 1, 4, 0.0) == pytest.approx(0.2 / (math.exp(-0.2) + 0.2), rel=1e-3)


@pytest.mark.parametrize("policy", own_policies())
@pytest.mark.parametrize("dead", ["fast", "slow"])
def test_every_policy_decides_with_a_dead_deployment(policy, dead):
    deps = {"fast": {"ms": 2.0, "max_batch_size": 4}, "slow": {"ms": 10.0, "max_batch_size": 4}}
    deps[dead]["replicas"] = 0
    view = FakeView(deps, two_model_table(), rate_rps=50.0)
    chosen = policies.create(policy, {"static": {"deployment": "fast"}, "aimd-batching": {"inner": "planner"}}.get(policy, {}))
    chosen.setup(view)
    stopped: set[str] = set()
    for _ in range(3):
        view.now_s += 1.0
        for action in chosen.plan(view):
            if action.replicas is not None:
                (stopped.add if action.replicas == 0 else stopped.discard)(action.deployment)
        route = chosen.route(request(100.0, arrival_s=view.now_s), view)
        assert not stopped & {h.deployment for h in route.hops}, "routed to a deployment it scaled to zero"
        if policy in ADAPTIVE:
            assert [h.deployment for h in route.hops] == ["slow" if dead == "fast" else "fast"]


def test_autotuner_leaves_a_dead_choice_even_when_nothing_fits():
    deps = {"fast": {"ms": 2.0, "replicas": 0}, "slow": {"ms": 10.0}}
    view = FakeView(deps, two_model_table())
    tuner = policies.create("throughput-autotuner", {"deadline_ms": 5.0})
    tuner.setup(view)
    assert tuner.plan(view) == [] and tuner.route(request(5.0), view).label == "slow"


# --- routes over one deployment twice ----------------------------------------------------------

class _Twice(Policy):
    name = "test-twice"

    def setup(self, view):
        self._route = Route.cascade([view.deployments[0], view.deployments[0]], [0.9])

    def route(self, request, view):
        return self._route


def test_the_engine_refuses_a_route_over_one_deployment_twice():
    from sim.engine import Simulation
    from sim.runner import prepare
    from traces.scenario import scenario_from_dict

    raw = {"duration_s": 1.0, "arrivals": {"kind": "poisson", "rate_rps": 50.0}, "requests": {"deadline_ms": 50.0},
           "deployments": [{"name": "small", "variant": "cnn-small-kd/int8/cpu"}], "policy": {"name": "static"}}
    prepared = prepare(scenario_from_dict(raw))
    sim = Simulation(prepared.scenario, _Twice(), profiles=prepared.profiles, predictions=prepared.predictions, seed=1)
    with pytest.raises(InputError, match="policy 'test-twice': route small@0.9>small visits deployment 'small' twice"):
        sim.run()


def test_static_refuses_a_cascade_over_one_deployment_twice():
    view = FakeView({"fast": {"ms": 2.0}, "slow": {"ms": 10.0}}, two_model_table())
    policy = policies.create("static", {"cascade": ["fast", "slow", "fast"], "thresholds": [0.9, 0.8]})
    with pytest.raises(InputError, match="^policy.cascade: lists deployment 'fast' twice"):
        policy.setup(view)
