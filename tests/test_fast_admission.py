"""Arrivals admitted in segments (``ServingCore.fixed_segment``) give the same run as one at a time.

When every request takes one fixed route and no tenant admission stands before the queue, the
simulator writes a segment's route, first deployment and enqueue times at once and calls the first
hop's ``submit`` per arrival. These tests run the same scenarios with that path switched off and
require the same bytes: across ring growth and wrap-around, full queues, a two-stage pipeline, progress
re-entry, and what a planning policy reads from the view between arrivals.
"""

from __future__ import annotations

import pandas as pd
import pytest

import policies
from policies.base import Policy, Route
from sim.core.serving import ServingCore
from sim.engine import Simulation
from sim.runner import prepare
from traces.scenario import scenario_from_dict


def simulation(raw: dict, *, seed: int = 3, policy=None) -> tuple[Simulation, Policy]:
    """The simulation of a scenario, built as sim.runner.run_once builds it, and its policy."""
    prepared = prepare(scenario_from_dict(raw))
    policy = policy or policies.create(prepared.scenario.policy.name, prepared.scenario.policy.params)
    sim = Simulation(prepared.scenario, policy, bundle=prepared.bundle, profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=seed, stage_predictions=prepared.stage_predictions,
                     bundles=prepared.bundles)
    return sim, policy


def run(raw: dict, *, segments: bool, monkeypatch, seed: int = 3, progress: bool = False, policy=None):
    """(requests frame, deployment stats, the policy) of one in-process run."""
    with monkeypatch.context() as patch:
        if not segments:
            patch.setattr(ServingCore, "fixed_segment", lambda self, lo, hi: None)
        sim, policy = simulation(raw, seed=seed, policy=policy)
        ticks: list[float] = []
        result = sim.run(progress=ticks.append if progress else None)
        return result.requests.to_pandas(), result.deployments, policy, sim.core.arrivals_seen


def busy(**extra) -> dict:
    """A burst that outgrows the log's first ring (32,768 slots) and fills a 40-request queue."""
    raw = {"duration_s": 12.0, "seed": 1,
           "arrivals": {"kind": "bursty", "rates_rps": [4000.0, 9000.0], "mean_dwell_s": [1.0, 0.5]},
           "requests": {"deadline_ms": 30.0},
           "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": {"kind": "exponential", "mean_ms": 1.0}, "replicas": 2,
                            "max_batch_size": 4, "batch_wait_timeout_ms": 1.0, "max_queue_size": 40}]}
    raw.update(extra)
    return raw


@pytest.mark.parametrize("progress", [False, True])
def test_segments_give_the_same_run_through_full_queues_and_ring_growth(monkeypatch, progress):
    fast, stats_fast, _, seen_fast = run(busy(), segments=True, monkeypatch=monkeypatch, progress=progress)
    slow, stats_slow, _, seen_slow = run(busy(), segments=False, monkeypatch=monkeypatch, progress=progress)
    assert len(fast) > 2 * 32_768  # the ring grew or wrapped while segments were written ahead
    assert (fast["drop_reason"] == "queue_full").sum() > 100  # the full-queue path was taken
    pd.testing.assert_frame_equal(fast, slow)
    assert stats_fast == stats_slow
    assert seen_fast == seen_slow == len(fast)


def test_segments_keep_every_ring_column_at_the_rings_length():
    """A segment written into the middle of the ring (every one but the first starts there) replaces
    exactly its slots: a longer write would insert into the route list and the deployment array,
    growing them past the ring on every segment (a leak that a fixed route hides from the output)."""
    sim, _ = simulation(busy(duration_s=2.0))
    sim.run(progress=[].append)       # each progress tick ends a segment: the next one starts mid-ring
    log = sim.core.log
    assert sim.core.arrivals_seen > 10_000
    lengths = {len(log.route), len(log.drop_reason), *(len(column) for column in log.answers)}
    lengths |= {len(column) for _, _, column, _ in log._owned()}
    assert lengths == {log.capacity}


def test_segments_give_the_same_two_stage_pipeline(monkeypatch):
    raw = busy(duration_s=3.0)
    raw["deployments"].append({"name": "big", "service": {"kind": "exponential", "mean_ms": 2.0}, "replicas": 2,
                               "max_batch_size": 4, "batch_wait_timeout_ms": 1.0})
    raw["stages"] = [{"name": "a", "deployments": ["m"]}, {"name": "b", "deployments": ["big"]}]
    raw["policy"] = {"name": "static", "pipeline": ["m", "big"]}
    fast, _, _, _ = run(raw, segments=True, monkeypatch=monkeypatch)
    slow, _, _, _ = run(raw, segments=False, monkeypatch=monkeypatch)
    assert fast["hop1_finish_s"].notna().sum() > 1000  # the second stage served
    pd.testing.assert_frame_equal(fast, slow)


class _FixedPlanner(Policy):
    """A fixed route that also plans: at each tick it records what the view says of arrivals."""

    name = "test-fixed-planner"

    def __init__(self):
        self.seen: list[tuple[float, float]] = []

    def setup(self, view):
        self._route = Route.single(view.deployments[0])

    def route(self, request, view):
        return self._route

    def fixed_route(self):
        return self._route

    def plan(self, view):
        self.seen.append((view.now_s, view.arrival_rate_rps(0.5)))
        return ()


policies.register(_FixedPlanner)


def test_a_planning_policy_sees_every_arrival_before_its_tick(monkeypatch):
    raw = busy(duration_s=3.0)
    raw["policy"] = {"name": "test-fixed-planner", "plan_interval_s": 0.25}
    fast, _, planner, _ = run(raw, segments=True, monkeypatch=monkeypatch, policy=_FixedPlanner())
    _, _, reference, _ = run(raw, segments=False, monkeypatch=monkeypatch, policy=_FixedPlanner())
    assert planner.seen == reference.seen and len(planner.seen) >= 11
    arrival_s = fast["arrival_s"].to_numpy()
    for now, rate in planner.seen:  # arrivals strictly before the tick (at a tie, the event goes first)
        span = min(0.5, now)
        count = ((arrival_s >= now - span) & (arrival_s < now)).sum()
        assert rate == pytest.approx(count / span, abs=1e-9)


class _FixedOnly(Policy):
    """A fixed route that must never be asked per request: ``route`` counts its calls."""

    name = "test-fixed-only"

    def __init__(self):
        self.asked = 0

    def setup(self, view):
        self._route = Route.single(view.deployments[0])

    def route(self, request, view):
        self.asked += 1
        return self._route

    def fixed_route(self):
        return self._route


policies.register(_FixedOnly)


def test_a_fixed_route_is_admitted_in_segments_unless_tenants_stand_before_the_queue():
    """The tests above compare the segments with one arrival at a time, so they would pass as well
    if segments were never written: without tenants a fixed route *is* admitted in segments; with a
    tenant's admission in front it is not (each request passes admission first), and in neither
    case is the policy asked per request (``docs/policies.md``: a fixed route skips that call)."""
    raw = busy(duration_s=1.0)
    raw["policy"] = {"name": "test-fixed-only"}
    sim, _ = simulation(raw, policy=_FixedOnly())
    assert sim.core.fixed_segment(0, 10) is not None
    sim, policy = simulation(raw, policy=_FixedOnly())
    sim.run()
    assert sim.core.arrivals_seen > 1000 and policy.asked == 0

    del raw["arrivals"], raw["requests"]
    raw["tenants"] = [{"name": "t", "arrivals": {"kind": "poisson", "rate_rps": 2000.0}, "deadline_ms": 30.0,
                       "quota": {"max_in_flight": 100, "action": "wait"}}]
    sim, _ = simulation(raw, policy=_FixedOnly())
    assert sim.core.fixed_segment(0, 10) is None
    sim, policy = simulation(raw, policy=_FixedOnly())
    sim.run()
    assert sim.core.arrivals_seen > 1000 and policy.asked == 0
