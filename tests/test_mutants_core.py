"""Behaviour of the serving core that mutation testing found unpinned (issue 17).

A mutmut run over ``sim/core/serving.py`` and ``sim/core/batcher.py`` left mutants alive: code
whose change no test noticed. Each test here pins one thing a user sees in a run (its request
log, its summary, the policy's report) or in a deployment driven directly (replicas able to
serve, what its executor is told), on scenarios small enough to derive every expected value by
hand: deterministic services, replayed arrival times that are exact binary fractions (so times
add up without rounding), crashes at fixed instants. Mutants that no test can tell apart are
listed with their reasons in ``docs/mutation.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import policies
from conftest import FAST_MS, SLOW_MS, ScriptedExecutor, replay_arrivals, simulate
from policies.base import PlanAction, Policy, Reject, Route

SERVICE_S = 1 / 64  # a deterministic batch service time that is an exact binary fraction
SERVICE = {"kind": "deterministic", "mean_ms": SERVICE_S * 1000.0}
TICK_S = 1 / 256  # a short, exact offset: a crash this long after a batch starts finds it in service


def one_deployment(tmp_path: Path, arrival_s, duration_s: float, faults=(), **deployment) -> dict:
    """One replica of ``SERVICE``, batches of one, replayed arrivals, no deadline pressure."""
    return {"duration_s": duration_s, "warmup_s": 0.0,
            "arrivals": replay_arrivals(tmp_path / "arrivals.csv", arrival_s, duration_s),
            "requests": {"deadline_ms": 1e7}, "policy": {"name": "static"}, "faults": list(faults),
            "deployments": [{"name": "m", "service": SERVICE, "replicas": 1, "max_batch_size": 1,
                             "drop_expired": False, **deployment}]}


# ---------------------------------------------------------------- retries and busy time after crashes


def test_each_crash_of_a_requests_batch_counts_one_retry(tmp_path):
    """A request whose batch is lost to two crashes in turn has retries 2, waits out both
    outages, and is served once, from the second recovery, on the recovered replica."""
    first_crash_s, second_crash_s = 1.0 + TICK_S, 1.5 + 2 * TICK_S
    faults = [{"deployment": "m", "at_s": first_crash_s, "down_s": 0.5},   # back at 1.5 + TICK_S
              {"deployment": "m", "at_s": second_crash_s, "down_s": 0.25}]  # mid-retry; back at 1.75 + 2 TICK_S
    requests, summary = simulate(one_deployment(tmp_path, [1.0], 3.0, faults), seed=1)
    (row,) = requests.to_dict("records")
    assert row["retries"] == 2 and not row["dropped"]
    assert row["hop0_enqueue_s"] == second_crash_s  # back in the line at the second crash
    assert row["hop0_start_s"] == second_crash_s + 0.25
    assert row["finish_s"] == second_crash_s + 0.25 + SERVICE_S
    assert (row["hop0_replica"], row["hop0_batch_size"]) == (0, 1)
    assert [f["crash_s"] for f in summary["faults"]] == [first_crash_s, second_crash_s]


def test_busy_time_counts_a_crashed_batch_up_to_the_crash_and_keeps_what_came_before(tmp_path):
    """Busy seconds add every batch's time in service: a whole batch before the crash, the cut
    batch up to the crash, and its retry after the recovery; the cut batch is no batch served."""
    crash_s = 2.0 + TICK_S
    faults = [{"deployment": "m", "at_s": crash_s, "down_s": 0.5}]
    requests, summary = simulate(one_deployment(tmp_path, [1.0, 2.0], 4.0, faults), seed=1)
    assert requests["retries"].tolist() == [0, 1]
    stats = summary["deployments"]["m"]
    busy_s = SERVICE_S + TICK_S + SERVICE_S
    assert stats["busy_seconds"] == pytest.approx(busy_s, abs=1e-12)
    assert stats["utilization"] == pytest.approx(busy_s / 4.0, abs=1e-12)
    assert (stats["batches"], stats["mean_batch_size"]) == (2, 1.0)


def test_a_crash_under_fair_sharing_takes_back_the_lost_batchs_charge(tmp_path):
    """Fair sharing charges a request an estimate (the mean per-request service so far) when it
    is taken; a crash that loses the batch takes the estimate back. Tenant y's batch is lost while
    another y request waits (so y is not lifted again on the retry): after the recovery y's
    counter is one service below x's, so y goes first, then x and y tie and x (listed first) goes."""
    S = SERVICE_S
    crash_s, recover_s = 1.0 + 4 * TICK_S, 1.5 + 4 * TICK_S

    def tenant(name: str, arrival_s: list[float]) -> dict:
        return {"name": name, "deadline_ms": 1e7, "weight": 1.0,
                "arrivals": replay_arrivals(tmp_path / f"{name}.csv", arrival_s, 3.0)}

    # counters (service seconds / weight): x0 served -> x = S; y0 lifted to S, served -> y = 2S;
    # y1 taken at 1.0 -> y = 3S; y2 waits; x1 lifted to y's 3S; the crash refunds y1 -> y = 2S
    raw = {"duration_s": 3.0, "warmup_s": 0.0, "requests": {"deadline_ms": 1e7}, "policy": {"name": "static"},
           "tenants": [tenant("x", [0.0, 1.0 + 2 / 1024]), tenant("y", [0.5, 1.0, 1.0 + 1 / 1024])],
           "faults": [{"deployment": "m", "at_s": crash_s, "down_s": 0.5}],
           "deployments": [{"name": "m", "service": SERVICE, "replicas": 1, "max_batch_size": 1,
                            "drop_expired": False, "queue": "fair"}]}
    requests, summary = simulate(raw, seed=1)
    assert summary["completed"] == summary["requests"] == 5
    after = requests[requests["hop0_start_s"] >= recover_s].sort_values("hop0_start_s")
    assert list(zip(after["tenant"], after["arrival_s"], after["retries"])) == [
        ("y", 1.0 + 1 / 1024, 0), ("x", 1.0 + 2 / 1024, 0), ("y", 1.0, 1)]
    assert after["hop0_start_s"].tolist() == [recover_s, recover_s + S, recover_s + 2 * S]


def test_an_expiry_under_fair_sharing_takes_back_the_expired_requests_charge(tmp_path):
    """Fair sharing charges a request an estimate when it is taken; one that has expired by then is
    dropped and its charge taken back (the fair queue's refund, at once, before the next pick). x0 is
    served from 0 to S; y0 (deadline S / 2) waits and has expired when the replica frees at S, so
    the batch formed then drops it and serves x1 instead; y1 is served when it arrives."""
    S = SERVICE_S

    def tenant(name: str, arrival_s: list[float], deadline_ms: float) -> dict:
        return {"name": name, "deadline_ms": deadline_ms, "weight": 1.0,
                "arrivals": replay_arrivals(tmp_path / f"{name}.csv", arrival_s, 1.0)}

    raw = {"duration_s": 1.0, "warmup_s": 0.0, "policy": {"name": "static"},
           "tenants": [tenant("x", [0.0, TICK_S], 1e7), tenant("y", [TICK_S / 2, 0.5], S * 1000.0 / 2)],
           "deployments": [{"name": "m", "service": SERVICE, "replicas": 1, "max_batch_size": 1,
                            "drop_expired": True, "queue": "fair"}]}
    requests, summary = simulate(raw, seed=1)
    rows = requests.sort_values("arrival_s").reset_index(drop=True)
    assert rows["tenant"].tolist() == ["x", "y", "x", "y"]
    assert rows.loc[1, "drop_reason"] == "expired" and summary["completed"] == 3
    assert rows.loc[[0, 2, 3], "hop0_start_s"].tolist() == [0.0, S, 0.5]


# ---------------------------------------------------------------- cascades: a full next hop


def test_a_cascade_forward_that_finds_the_next_queue_full_is_dropped_there(tiny_bundle, tmp_path):
    """Eight requests at once through fast > slow with every request forwarded (threshold 1.0)
    and room for one waiting request at slow: request 0 goes on to slow at once, request 1
    waits there, and the six others are dropped as queue_full when they leave fast."""
    path = tmp_path / "burst.csv"
    pd.DataFrame({"t": [0.0] * 8 + [9.9]}).to_csv(path, index=False)  # the last stamp ends the window
    raw = {"duration_s": 10.0, "bundle": str(tiny_bundle),
           "arrivals": {"kind": "replay", "path": str(path), "length_s": 9.9},
           "requests": {"deadline_ms": 1e4},
           "deployments": [{"name": "fast", "variant": "fast/int8/cpu", "max_batch_size": 4},
                           {"name": "slow", "variant": "slow/fp32/cpu", "max_batch_size": 4, "max_queue_size": 1}],
           "policy": {"name": "static", "cascade": ["fast", "slow"], "threshold": 1.0}}
    requests, summary = simulate(raw, seed=1)
    # fast serves [0] from 0, then [1..4] from 2 ms (5 ms), then [5, 6, 7] from 7 ms (3 of 2 and 4: 4 ms)
    first_ms, second_ms = FAST_MS[1], FAST_MS[1] + FAST_MS[4]
    third_ms = second_ms + (FAST_MS[2] + FAST_MS[4]) / 2
    leave_fast_ms = np.array([first_ms, *[second_ms] * 4, *[third_ms] * 3])
    assert np.allclose(requests["hop0_finish_s"] * 1000.0, leave_fast_ms, atol=1e-9)
    assert np.allclose(requests["hop1_enqueue_s"] * 1000.0, leave_fast_ms, atol=1e-9)
    assert (requests["hop1_deployment"] == "slow").all() and (requests["hops"] == 2).all()
    dropped = requests["dropped"].to_numpy()
    assert dropped.tolist() == [False, False] + [True] * 6
    assert (requests.loc[dropped, "drop_reason"] == "queue_full").all()
    assert requests.loc[dropped, "hop1_start_s"].isna().all() and requests.loc[dropped, "finish_s"].isna().all()
    # request 1 starts on slow when request 0 leaves it
    expected_ms = [first_ms + SLOW_MS[1], first_ms + 2 * SLOW_MS[1]]
    assert np.allclose(requests["latency_ms"].to_numpy()[:2], expected_ms, atol=1e-9)
    assert (summary["completed"], summary["dropped"]) == (2, 6)


# ---------------------------------------------------------------- what policies see and do


class _BySampleParity(Policy):
    """Test policy: a request for an even sample goes to fast, an odd one to slow."""

    name = "test-by-sample-parity"

    def setup(self, view):
        self._routes = (Route.single("fast"), Route.single("slow"))

    def route(self, request, view):
        return self._routes[request.sample_index % 2]


def test_a_policy_routes_on_the_sample_each_request_carries(tiny_bundle, monkeypatch):
    """The request a policy is asked to route carries the sample it will be evaluated on."""
    monkeypatch.setitem(policies.registry._REGISTRY, _BySampleParity.name, _BySampleParity)
    raw = {"duration_s": 2.0, "bundle": str(tiny_bundle), "arrivals": {"kind": "poisson", "rate_rps": 50.0},
           "requests": {"deadline_ms": 1e4},
           "deployments": [{"name": "fast", "variant": "fast/int8/cpu"}, {"name": "slow", "variant": "slow/fp32/cpu"}],
           "policy": {"name": _BySampleParity.name}}
    requests, _ = simulate(raw, seed=2)
    sample = requests["sample_id"].astype(int)
    assert set(sample) == {0, 1, 2, 3} and len(requests) > 40
    assert (requests["hop0_deployment"] == np.where(sample % 2 == 0, "fast", "slow")).all()


class _RejectOdd(Policy):
    """Test policy: a request with an odd id is refused at arrival, with its own reason."""

    name = "test-reject-odd"

    def setup(self, view):
        self._route, self._reject = Route.single("m"), Reject("odd id")

    def route(self, request, view):
        return self._reject if request.id % 2 else self._route


def test_a_refused_request_ends_at_its_arrival_with_the_policys_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(policies.registry._REGISTRY, _RejectOdd.name, _RejectOdd)
    raw = {"duration_s": 2.0, "arrivals": {"kind": "poisson", "rate_rps": 50.0}, "requests": {"deadline_ms": 1e4},
           "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 1.0}}],
           "policy": {"name": _RejectOdd.name}}
    requests, summary = simulate(raw, seed=2)
    odd = (np.arange(len(requests)) % 2).astype(bool)
    assert len(requests) > 60
    assert (requests.loc[odd, "drop_reason"] == "odd id").all() and requests.loc[odd, "dropped"].all()
    assert (requests.loc[odd, "hops"] == 0).all() and requests.loc[odd, "hop0_deployment"].isna().all()
    assert not requests.loc[~odd, "dropped"].any() and requests.loc[~odd, "finish_s"].notna().all()
    assert summary["dropped_by_reason"] == {"odd id": int(odd.sum())}


class _Closed(Policy):
    """Test policy: refuses every request, with a fixed answer (the executor admits in segments)."""

    name = "test-closed"

    def setup(self, view):
        self._reject = Reject("closed")

    def route(self, request, view):
        return self._reject

    def fixed_route(self):
        return self._reject


def test_a_fixed_refusal_drops_every_arrival_with_its_reason(monkeypatch):
    """A policy whose fixed answer is a refusal: no segment is admitted ahead (there is no first
    queue), each arrival is dropped at once with the policy's reason."""
    monkeypatch.setitem(policies.registry._REGISTRY, _Closed.name, _Closed)
    raw = {"duration_s": 2.0, "arrivals": {"kind": "poisson", "rate_rps": 50.0}, "requests": {"deadline_ms": 1e4},
           "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 1.0}}],
           "policy": {"name": _Closed.name}}
    requests, summary = simulate(raw, seed=2)
    assert len(requests) > 60 and requests["dropped"].all() and (requests["hops"] == 0).all()
    assert (requests["route"] == "").all()                      # refused at arrival: no route taken
    assert (requests["finish_s"].isna()).all() and summary["dropped_by_reason"] == {"closed": len(requests)}


class _ToM(Policy):
    """Every request to deployment m; subclasses plan."""

    def setup(self, view):
        self._route = Route.single("m")

    def route(self, request, view):
        return self._route


class _PlanClock(_ToM):
    """Test policy: it notes when each plan is asked for."""

    name = "test-plan-clock"
    plans_s: list[float]

    def setup(self, view):
        super().setup(view)
        self.plans_s = []

    def plan(self, view):
        self.plans_s.append(view.now_s)
        return []

    def report(self):
        return {"plans_s": list(self.plans_s)}


def test_plans_run_on_their_grid_and_none_at_the_end_of_the_run(tmp_path, monkeypatch):
    """With a 0.5 s plan interval a 2 s run plans at 0.5, 1.0 and 1.5 s; not at 2.0 s, where the
    run ends (the plan would act only on the drain after it)."""
    monkeypatch.setitem(policies.registry._REGISTRY, _PlanClock.name, _PlanClock)
    raw = one_deployment(tmp_path, [0.25, 1.25], 2.0)
    raw["policy"] = {"name": _PlanClock.name, "plan_interval_s": 0.5}
    _, summary = simulate(raw, seed=1)
    assert summary["policy"]["plans_s"] == [0.5, 1.0, 1.5]
    raw["policy"]["plan_interval_s"] = 2.0   # the first plan would fall at the end: none at all
    _, summary = simulate(raw, seed=1)
    assert summary["policy"]["plans_s"] == []


class _BigBatch(_ToM):
    """Test policy: every plan sets deployment m's largest batch to 100."""

    name = "test-big-batch"

    def plan(self, view):
        return [PlanAction("m", max_batch_size=100)]


def test_a_plan_may_batch_a_parametric_service_beyond_its_profiles_grid(tmp_path, monkeypatch):
    """A parametric service has no measured batch sizes to stay within (its profile's grid of 64
    is a convenience): a plan's batch of 100 applies. 150 requests at once after it: one is
    served alone (the replica was free), then 100 together, then the 49 left."""
    monkeypatch.setitem(policies.registry._REGISTRY, _BigBatch.name, _BigBatch)
    raw = one_deployment(tmp_path, [1.0] * 150, 2.0)
    raw["policy"] = {"name": _BigBatch.name, "plan_interval_s": 0.5}
    requests, summary = simulate(raw, seed=1)
    assert summary["completed"] == 150
    sizes = requests.groupby("hop0_start_s")["hop0_batch_size"].agg(["first", "size"])
    assert sizes.index.tolist() == [1.0, 1.0 + SERVICE_S, 1.0 + 2 * SERVICE_S]
    assert sizes["first"].tolist() == sizes["size"].tolist() == [1, 100, 49]


# ---------------------------------------------------------------- batching waits late in a long run


def test_the_batching_wait_still_works_hours_into_a_run(tmp_path):
    """Past 2**14 s a float has no room for the timer's 1e-12 s slack: the wait's timer, firing
    exactly at its time, must still count as fired, or no later wait is ever timed. Two requests
    a second apart, past 4.5 hours: each waits the 10 ms timeout, alone, and is served."""
    arrival_s = [16400.0, 16401.0]
    raw = one_deployment(tmp_path, arrival_s, 16402.0, max_batch_size=4, batch_wait_timeout_ms=10.0)
    requests, summary = simulate(raw, seed=1)
    assert summary["completed"] == 2
    assert requests["hop0_start_s"].tolist() == pytest.approx([t + 0.01 for t in arrival_s], abs=1e-9)
    assert requests["finish_s"].tolist() == pytest.approx([t + 0.01 + SERVICE_S for t in arrival_s], abs=1e-9)


# ---------------------------------------------------------------- a deployment driven by hand


class _ColdStarts(ScriptedExecutor):
    """``ScriptedExecutor`` whose replicas added once ``cold`` is set start slowly (the test says
    when they are ready); it keeps the replicas it is told to stop."""

    def __init__(self):
        super().__init__()
        self.cold, self.stopped = False, []

    def start_replica(self, replica, now):
        return not self.cold

    def stop_replica(self, replica):
        self.stopped.append(replica)


class _Starts:
    """A batch sink that keeps (request, replica, time) of every batch start."""

    def __init__(self):
        self.starts = []

    def drop(self, request, now, reason):
        raise AssertionError("nothing is dropped in these tests")

    def batch_started(self, deployment, batch, now, replica):
        self.starts += [(request, replica, now) for request in batch]

    def batch_finished(self, deployment, batch, now, confidences=None):
        pass

    def batch_failed(self, deployment, batch, now):
        raise AssertionError("no batch is in service at these crashes")


def _shared_deployment(executor, replicas: int):
    from sim.core.deployment import Deployment
    from traces.scenario import DeploymentConfig

    cfg = DeploymentConfig(name="m", replicas=replicas, max_batch_size=1, batch_wait_timeout_ms=0.0,
                           drop_expired=False)
    sink = _Starts()
    return Deployment(executor, sink, 0, cfg, [1e9] * 100, (0.0, 1e9), np.random.default_rng(0)), sink


def test_a_replica_that_crashes_while_starting_serves_once_started_and_recovered():
    """Crashed during its start-up, a replica counts as down (not as starting): it serves only
    after both its start-up and its outage have ended, and takes the waiting request then."""
    executor = _ColdStarts()
    dep, sink = _shared_deployment(executor, 1)
    executor.cold = True
    dep.set_replicas(2, 0.0)  # replica 1 starts
    assert dep.load() == (0, 0, 1)
    dep.crash(1, 0.1)
    assert dep.load() == (0, 0, 1)  # 2 provisioned, 1 down
    assert dep.submit(0, 0.1) and dep.submit(1, 0.1)  # 0 on replica 0, 1 waits
    dep.replica_ready(dep.replica(1)[1], 0.2)  # started, but still down: it does not serve
    assert dep.load() == (1, 1, 1) and sink.starts == [(0, 0, 0.1)]
    dep.recover(1, 0.3)
    assert sink.starts == [(0, 0, 0.1), (1, 1, 0.3)]
    assert dep.load() == (0, 2, 2)


def test_a_replica_whose_outage_ends_before_its_start_up_goes_back_to_starting():
    """Two replicas start; one crashes and recovers before its start-up ends: it is starting
    again, not able to serve, until the executor reports it ready."""
    executor = _ColdStarts()
    dep, _ = _shared_deployment(executor, 1)
    executor.cold = True
    dep.set_replicas(3, 0.0)  # replicas 1 and 2 start
    dep.crash(1, 0.1)
    dep.recover(1, 0.2)
    assert dep.load() == (0, 0, 1)
    dep.replica_ready(dep.replica(1)[1], 0.3)
    assert dep.load() == (0, 0, 2)
    dep.replica_ready(dep.replica(2)[1], 0.4)
    assert dep.load() == (0, 0, 3)


def test_the_executor_is_told_which_replicas_a_plan_removed():
    """A plan that removes every replica stops the idle one at once and the busy one after its
    batch; the executor gets those very replicas (the real server stops their worker threads)."""
    executor = _ColdStarts()
    dep, sink = _shared_deployment(executor, 2)
    idle, busy = (dep.replica(index)[1] for index in (0, 1))
    assert dep.submit(0, 0.0) and sink.starts == [(0, 1, 0.0)]  # the last free replica takes it
    dep.set_replicas(0, 0.5)
    assert executor.stopped == [idle]
    executor.run(1.0)  # the batch ends
    assert executor.stopped == [idle, busy]


def test_a_replica_removed_while_starting_leaves_when_its_start_up_ends():
    """A plan that removes a replica while none is idle takes one still starting before a busy one:
    it is marked to leave, and when the executor reports it ready it does not serve; the executor
    is told to stop that very replica then."""
    executor = _ColdStarts()
    dep, sink = _shared_deployment(executor, 1)
    assert dep.submit(0, 0.0) and sink.starts == [(0, 0, 0.0)]  # replica 0 is busy until 1.0
    executor.cold = True
    dep.set_replicas(2, 0.0)          # replica 1 starts
    starting = dep.replica(1)[1]
    dep.set_replicas(1, 0.1)          # no idle replica: the starting one is the one to go
    assert executor.stopped == [] and dep.provisioned == 1
    assert dep.submit(1, 0.1)         # waits: replica 0 is busy, replica 1 not ready
    dep.replica_ready(starting, 0.2)
    assert executor.stopped == [starting] and dep.replica(1) == (None, None)
    assert sink.starts == [(0, 0, 0.0)]  # it left without serving the waiting request
