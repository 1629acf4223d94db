"""Tenants in runs: every arrival accounted for by tenant, rate limits, quotas, strict priority and
fair sharing as the core applies them, cost attribution, a policy that routes by tenant, the real
server on the same scheduler, and the scenario's errors."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

import policies
from policies.base import Policy, Route
from conftest import ScriptedExecutor
from sim.runner import prepare, run_seed
from traces.errors import InputError
from traces.scenario import scenario_from_dict

SERVICE = {"kind": "exponential", "mean_ms": 4.0}


def tenants_scenario(tenants: list[dict], *, queue: str = "fifo", replicas: int = 1, max_batch: int = 1,
                     duration_s: float = 6.0, policy: dict | None = None, deployments: list | None = None) -> dict:
    return {"seed": 3, "duration_s": duration_s, "warmup_s": 0.5, "tenants": tenants,
            "deployments": deployments or [{"name": "m", "service": SERVICE, "replicas": replicas,
                                            "max_batch_size": max_batch, "queue": queue}],
            "policy": policy or {"name": "static"}}


def tenant(name: str, rate_rps: float, **keys) -> dict:
    return {"name": name, "arrivals": {"kind": "poisson", "rate_rps": rate_rps}, "deadline_ms": 100.0, **keys}


def run(raw: dict, seed: int = 3):
    _, requests, summary, _ = run_seed(prepare(scenario_from_dict(raw)), seed)
    return requests.to_pandas(), summary


def test_every_arrival_is_accounted_for_by_tenant():
    raw = tenants_scenario([tenant("a", 120.0), tenant("b", 60.0, deadline_ms=[20.0, 200.0], weights=[1, 3])])
    requests, summary = run(raw)
    assert set(requests["tenant"]) == {"a", "b"}
    measured = requests[requests["measured"]]
    per = summary["tenants"]
    assert per["a"]["requests"] + per["b"]["requests"] == summary["requests"] == len(measured)
    assert per["a"]["requests"] == (measured["tenant"] == "a").sum()
    for name in ("a", "b"):  # each outcome of each request: completed, or dropped with a reason
        mine = measured[measured["tenant"] == name]
        assert per[name]["completed"] + sum(per[name]["dropped_by_reason"].values()) == len(mine)
    # each tenant's own deadlines: b draws 20 or 200 ms, a only 100
    assert set(requests.loc[requests["tenant"] == "a", "deadline_ms"]) == {100.0}
    assert set(requests.loc[requests["tenant"] == "b", "deadline_ms"]) == {20.0, 200.0}
    # the rates are each tenant's own (about 120 and 60 per second over the 5.5 s window)
    assert 0.8 < per["a"]["requests"] / (120 * 5.5) < 1.2 and 0.7 < per["b"]["requests"] / (60 * 5.5) < 1.3


def test_the_token_bucket_admits_exactly_what_rate_and_burst_allow():
    raw = tenants_scenario([tenant("limited", 200.0, rate_limit={"rate_rps": 50.0, "burst": 5}), tenant("free", 20.0)])
    requests, summary = run(raw)
    mine = requests[requests["tenant"] == "limited"].sort_values("arrival_s")
    tokens, last, admitted = Fraction(5), Fraction(0), []
    for t in mine["arrival_s"]:  # the bucket, recomputed with exact fractions
        t = Fraction(t)
        tokens = min(Fraction(5), tokens + 50 * (t - last))
        last = t
        admitted.append(tokens >= 1)
        tokens -= 1 if tokens >= 1 else 0
    rejected = (mine["drop_reason"] == "rate_limited").to_numpy()
    assert (rejected == ~np.array(admitted)).all() and rejected.sum() > 500
    assert not (requests.loc[requests["tenant"] == "free", "drop_reason"] == "rate_limited").any()
    assert summary["tenants"]["limited"]["dropped_by_reason"]["rate_limited"] == rejected[mine["measured"].to_numpy()].sum()


def in_flight_peak(rows: pd.DataFrame) -> int:
    """The most requests admitted and not yet ended at once (admitted: joined the first queue)."""
    admitted = rows[rows["hop0_enqueue_s"].notna()]
    ends = admitted["finish_s"].fillna(admitted["hop0_enqueue_s"])  # a drop ends at its drop time
    ended = np.where(admitted["dropped"], admitted["hop0_enqueue_s"].where(admitted["hop0_start_s"].isna(),
                                                                           admitted["hop0_finish_s"]), ends)
    events = sorted([(t, 1) for t in admitted["hop0_enqueue_s"]] + [(t, -1) for t in ended], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.parametrize("action", ["reject", "wait"])
def test_a_quota_caps_requests_in_flight(action):
    raw = tenants_scenario([tenant("capped", 400.0, quota={"max_in_flight": 3, "action": action}),
                            tenant("other", 50.0)], replicas=2, duration_s=4.0)
    requests, summary = run(raw)
    mine = requests[requests["tenant"] == "capped"]
    assert in_flight_peak(mine) <= 3
    reasons = set(mine["drop_reason"]) - {""}
    if action == "reject":
        assert (mine["drop_reason"] == "quota").sum() > 100
    else:  # nothing rejected for the quota: held and admitted later, or still held at the end
        assert "quota" not in reasons and (mine["hop0_enqueue_s"] > mine["arrival_s"] + 1e-9).sum() > 100
        assert reasons <= {"expired", "unfinished"} and summary["tenants"]["capped"]["held_most"] > 10
    assert not (requests.loc[requests["tenant"] == "other", "drop_reason"] == "quota").any()


def test_strict_priority_never_serves_a_lower_level_while_premium_waits():
    deployments = [{"name": "m", "service": {"kind": "exponential", "mean_ms": 2.0, "per_item_ms": 2.0},
                    "max_batch_size": 4, "queue": "priority"}]  # about 330 requests/s at full batches
    raw = tenants_scenario([tenant("premium", 150.0, priority=1), tenant("batch", 220.0, priority=2)],
                           deployments=deployments)
    requests, summary = run(raw)
    started = requests[requests["hop0_start_s"].notna()]
    premium, low = started[started["tenant"] == "premium"], started[started["tenant"] == "batch"]
    enq, start = premium["hop0_enqueue_s"].to_numpy(), premium["hop0_start_s"].to_numpy()
    for s in low["hop0_start_s"].to_numpy():  # a batch that takes a low request leaves no premium waiting
        assert not ((enq < s) & (start > s)).any()
    assert summary["tenants"]["premium"]["hit_rate"] > summary["tenants"]["batch"]["hit_rate"]
    fifo, fifo_summary = run({**raw, "deployments": [{**raw["deployments"][0], "queue": "fifo"}]})
    assert summary["tenants"]["premium"]["latency_ms"]["p99"] < fifo_summary["tenants"]["premium"]["latency_ms"]["p99"]


def test_fair_sharing_gives_backlogged_tenants_service_in_proportion_to_their_weights():
    deployments = [{"name": "m", "service": {"kind": "exponential", "mean_ms": 2.0, "per_item_ms": 2.0},
                    "replicas": 2, "max_batch_size": 4, "queue": "fair"}]  # about 800 requests/s at full batches
    raw = tenants_scenario([tenant("light", 600.0, weight=1.0, deadline_ms=60000.0),
                            tenant("heavy", 1200.0, weight=3.0, deadline_ms=60000.0)],
                           deployments=deployments, duration_s=8.0)
    requests, summary = run(raw)
    service = {n: summary["tenants"][n]["service_seconds"] for n in ("light", "heavy")}
    assert service["heavy"] / service["light"] == pytest.approx(3.0, rel=0.05)
    # the bound of sim.core.tenancy: 2 c B s / min(w), s the largest per-request share of a batch
    served = requests[requests["hop0_start_s"].notna()]
    share = ((served["hop0_finish_s"] - served["hop0_start_s"]) / served["hop0_batch_size"]).max()
    assert summary["fairness"]["max_service_gap_s"] <= 2 * 2 * 4 * share / 1.0
    fifo, fifo_summary = run({**raw, "deployments": [{**raw["deployments"][0], "queue": "fifo"}]})
    fifo_ratio = fifo_summary["tenants"]["heavy"]["service_seconds"] / fifo_summary["tenants"]["light"]["service_seconds"]
    assert fifo_ratio == pytest.approx(2.0, rel=0.1)  # FIFO serves them as they come: in the ratio of their rates


def test_cost_attribution_sums_to_the_run_and_adds_the_price():
    raw = tenants_scenario([tenant("a", 100.0, price_per_1k_requests=2.0), tenant("b", 300.0)], replicas=2)
    raw["price_per_replica_hour"] = 3.0
    _, summary = run(raw)
    per = summary["tenants"]
    assert per["a"]["replica_seconds"] + per["b"]["replica_seconds"] == pytest.approx(summary["cost"]["replica_seconds"])
    assert per["a"]["cost"]["replica"] + per["b"]["cost"]["replica"] == pytest.approx(summary["cost"]["total"])
    assert per["a"]["cost"]["requests"] == pytest.approx(per["a"]["requests"] / 1000 * 2.0)
    assert per["b"]["cost"]["requests"] == 0.0
    assert per["b"]["replica_seconds"] > 2 * per["a"]["replica_seconds"]  # b sent 3x the work


class _ByTenant(Policy):
    name = "test-by-tenant"

    def setup(self, view):
        self._routes = {"gold": Route.single("large"), None: Route.single("small")}

    def route(self, request, view):
        return self._routes.get(request.tenant, self._routes[None])


def test_a_policy_sees_each_request_tenant_and_may_route_by_it():
    policies.register(_ByTenant)
    deployments = [{"name": "small", "service": SERVICE}, {"name": "large", "service": {"kind": "exponential", "mean_ms": 6.0}}]
    raw = tenants_scenario([tenant("gold", 50.0), tenant("plain", 50.0)], deployments=deployments,
                           policy={"name": "test-by-tenant"})
    requests, _ = run(raw)
    assert set(requests.loc[requests["tenant"] == "gold", "hop0_deployment"]) == {"large"}
    assert set(requests.loc[requests["tenant"] == "plain", "hop0_deployment"]) == {"small"}


def test_the_real_server_runs_tenants_on_the_same_scheduler():
    from measure.server import Server, parametric_runners

    raw = tenants_scenario([tenant("premium", 100.0, priority=1, rate_limit={"rate_rps": 80.0, "burst": 4}),
                            tenant("batch", 150.0, priority=2)], queue="priority", duration_s=2.0)
    scenario = scenario_from_dict(raw)
    prepared = prepare(scenario)
    server = Server(dataclasses.replace(scenario, seed=3), policies.create("static", {}),
                    parametric_runners(scenario, 3), seed=3, labels=None, profiles=prepared.profiles, predictions=None)
    real = server.run().to_pandas()
    simulated, _ = run(raw)
    # the same arrivals, tenants and token-bucket decisions (they depend on arrival times alone)
    assert real["tenant"].tolist() == simulated["tenant"].tolist()
    assert ((real["drop_reason"] == "rate_limited") == (simulated["drop_reason"] == "rate_limited")).all()
    started = real[real["hop0_start_s"].notna()]
    premium = started[started["tenant"] == "premium"]
    for s in started.loc[started["tenant"] == "batch", "hop0_start_s"]:
        waiting = (premium["hop0_enqueue_s"] < s - 1e-3) & (premium["hop0_start_s"] > s + 1e-3)
        assert not waiting.any()  # strict priority, up to the real server's lock and timer resolution


@pytest.mark.parametrize("change, where", [
    ({"arrivals": {"kind": "poisson", "rate_rps": 5.0}}, "arrivals"),
    ({"tenants": [tenant("a", 5.0), tenant("a", 5.0)]}, "tenants[1].name"),
    ({"tenants": [{**tenant("a", 5.0), "colour": "red"}]}, "tenants[0].colour"),
    ({"tenants": [tenant("a", 5.0, quota={"action": "wait"})]}, "tenants.a.quota.max_in_flight"),
    ({"tenants": [tenant("a", 5.0, quota={"max_in_flight": 2, "action": "later"})]}, "tenants.a.quota.action"),
    ({"tenants": [tenant("a", 5.0, rate_limit={"rate_rps": 0.0})]}, "tenants.a.rate_limit.rate_rps"),
    ({"tenants": [tenant("a", 5.0, priority=0)]}, "tenants.a.priority"),
    ({"tenants": [tenant("a", 5.0, weight=0.0)]}, "tenants.a.weight"),
    ({"tenants": [{"name": "a", "arrivals": {"kind": "poisson", "rate_rps": 5.0}}]}, "tenants.a.deadline_ms"),
])
def test_a_bad_tenant_is_named(change, where):
    raw = {**tenants_scenario([tenant("a", 5.0)]), **change}
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    assert info.value.where == where


def test_a_tenants_queue_needs_tenants():
    raw = {"duration_s": 1.0, "arrivals": {"kind": "poisson", "rate_rps": 5.0}, "requests": {"deadline_ms": 10.0},
           "deployments": [{"name": "m", "service": SERVICE, "queue": "fair"}], "policy": {"name": "static"}}
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    assert info.value.where == "deployments.m.queue"


def test_a_sweep_load_scales_every_tenant():
    from sim.sweep import _set

    raw = tenants_scenario([tenant("a", 10.0), tenant("b", 30.0)])
    _set(raw, "load", 2.0, "test")
    assert [t["arrivals"]["rate_rps"] for t in raw["tenants"]] == [20.0, 60.0]
    assert math.isclose(scenario_from_dict(raw).arrivals.mean_rate_rps(6.0), 80.0)


def test_an_hpa_may_scale_on_one_tenant_queue():
    """HPA on the premium tenant's waiting requests alone, behind a priority queue: a flood of
    batch traffic it does not count leaves the deployment at one replica (premium requests are
    served first and hardly wait); counting every tenant scales it up."""
    deployments = [{"name": "m", "service": {"kind": "exponential", "mean_ms": 4.0}, "replicas": 1, "queue": "priority",
                     "autoscaling": {"policy": "hpa", "max_replicas": 6, "target_average_value": 2,
                                     "sync_period_s": 1.0, "tenant": "premium"}, "startup_s": 0.5}]
    raw = tenants_scenario([tenant("premium", 20.0), tenant("batch", 600.0, priority=2, deadline_ms=60000.0)],
                           deployments=deployments, duration_s=8.0)
    _, _, _, timeline = run_seed(prepare(scenario_from_dict(raw)), 3)
    assert timeline["replicas"].max() == 1
    raw["deployments"][0]["autoscaling"].pop("tenant")
    _, _, _, timeline = run_seed(prepare(scenario_from_dict(raw)), 3)
    assert timeline["replicas"].max() > 2
    raw["deployments"][0]["autoscaling"]["tenant"] = "gold"
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    assert info.value.where == "deployments.m.autoscaling.tenant"


@pytest.mark.parametrize("action", ["reject", "delay"])
def test_a_priority_level_timeout_rejects_or_delays(action):
    """Triton's per-level queue policy: a batch request that waited 30 ms is rejected ("timeout")
    or moved behind every level, where it is served only when nothing else waits."""
    deployments = [{"name": "m", "service": {"kind": "exponential", "mean_ms": 2.0, "per_item_ms": 2.0},
                    "max_batch_size": 4, "queue": "priority"}]
    batch = tenant("batch", 250.0, priority=2, deadline_ms=60000.0, queue_timeout_ms=30.0, timeout_action=action)
    raw = tenants_scenario([tenant("premium", 150.0, priority=1), batch], deployments=deployments)
    requests, summary = run(raw)
    low = requests[requests["tenant"] == "batch"]
    timed_out = low["drop_reason"] == "timeout"
    if action == "reject":
        assert timed_out.sum() > 50
        served = low[low["hop0_start_s"].notna()]
        assert ((served["hop0_start_s"] - served["hop0_enqueue_s"]) * 1000.0 <= 30.0 + 60.0).all()
    else:  # nothing rejected: the delayed wait longer than the level's timeout, behind everyone
        assert not timed_out.any()
        late = low[(low["hop0_start_s"] - low["hop0_enqueue_s"]) * 1000.0 > 30.0]
        assert len(late) > 50
    assert summary["tenants"]["premium"]["hit_rate"] == 1.0


def test_a_priority_levels_queue_limit_turns_the_excess_away_as_queue_full():
    """Tenant "a" (level 1, at most 2 waiting) sends 2.5x what the replica serves; "b" (level 2,
    no limit) a trickle. Over its level's limit an arrival of "a" is dropped at once as
    queue_full; every arrival ends, none is left waiting unaccounted ("unfinished")."""
    raw = tenants_scenario([tenant("a", 600.0, priority=1, max_queue_size=2), tenant("b", 20.0, priority=2)],
                           queue="priority", duration_s=2.0)
    requests, summary = run(raw)
    reasons = requests.loc[requests["dropped"], ["tenant", "drop_reason"]].value_counts()
    assert set(reasons.index) <= {("a", "queue_full"), ("b", "expired")} and reasons[("a", "queue_full")] > 100
    assert "unfinished" not in summary["dropped_by_reason"]
    assert (requests["finish_s"].notna() | requests["dropped"]).all()


class _TimedExecutor(ScriptedExecutor):
    """``ScriptedExecutor`` that keeps the batching waits' timers for the test to fire."""

    def __init__(self):
        super().__init__()
        self.timers = []

    def call_at(self, time_s, callback):
        self.timers.append((time_s, callback))


class _LevelSink:
    """A batch sink behind two tenants' priority queue: tenant 0 at level 1, tenant 1 at level 2
    with a 3 ms queue timeout (reject); it keeps what was dropped and started, and when."""

    def __init__(self, tenant_of):
        from sim.core.admission import QueueTenancy

        self.queue_tenancy = QueueTenancy(tenant_of, (1, 2), (1.0, 1.0), {}, {2: (0.003, "reject")})
        self.dropped, self.started = [], []

    def drop(self, request, now, reason):
        self.dropped.append((request, now, reason))

    def batch_started(self, deployment, batch, now, replica):
        self.started.append((list(batch), now))


def test_a_level_timeout_is_applied_when_the_batcher_next_forms_a_batch():
    """A level-2 request waits for a batch (10 ms wait, batches of 4); a level-1 one joins it at 5 ms,
    past the first's 3 ms timeout. Nothing is formed then (the wait's timer is pending and the batch
    not full), so the timeout is applied at the timer, 10 ms: the first is rejected then, and the
    second, now the oldest, waits its own 10 ms."""
    from sim.core.deployment import Deployment
    from traces.scenario import DeploymentConfig

    executor, sink = _TimedExecutor(), _LevelSink([1, 0])
    cfg = DeploymentConfig(name="m", replicas=1, max_batch_size=4, batch_wait_timeout_ms=10.0, queue="priority",
                           drop_expired=False)
    dep = Deployment(executor, sink, 0, cfg, [1e9] * 2, (0.0, 1e9), np.random.default_rng(0))
    assert dep.submit(0, 0.0) and [t for t, _ in executor.timers] == [pytest.approx(0.010)]
    executor.time_s = 0.005
    assert dep.submit(1, 0.005)
    assert sink.dropped == [] and sink.started == []
    executor.time_s = 0.010
    executor.timers[0][1]()
    assert sink.dropped == [(0, 0.010, "timeout")] and sink.started == []
    assert executor.timers[1][0] == pytest.approx(0.015)
    executor.time_s = 0.015
    executor.timers[1][1]()
    assert sink.started == [([1], 0.015)] and len(sink.dropped) == 1


def test_a_level_timeout_takes_effect_at_its_time_and_not_before():
    from sim.core.tenancy import PriorityQueue

    queue = PriorityQueue([0, 1, 1], [1, 2], [0.0] * 3, level_timeouts={2: (0.030, "delay")})
    queue.push(1, 0.0)
    queue.push(2, 0.010)
    queue.push(0, 0.020)
    assert queue.expire(0.0299) == [] and queue.take_n(3) == [0, 1, 2]
    queue.push(1, 0.0)
    queue.push(2, 0.010)
    assert queue.expire(0.030) == [] and len(queue) == 2   # 1 delayed, 2 not yet
    queue.push(0, 0.035)
    assert queue.take_n(3) == [0, 2, 1]                     # the delayed one comes last
    rejecting = PriorityQueue([0, 1], [1, 2], [0.0] * 2, level_timeouts={2: (0.030, "reject")})
    rejecting.push(1, 0.0)
    assert rejecting.expire(0.030) == [1] and not rejecting


def test_a_quota_counts_a_request_in_flight_through_every_stage():
    """A request forwarded from the first stage to the second is still in flight: its place frees
    only when it ends, so the tenant never has more than its quota between two stages either."""
    deployments = [{"name": "one", "service": SERVICE, "replicas": 1, "max_batch_size": 1},
                   {"name": "two", "service": SERVICE, "replicas": 1, "max_batch_size": 1}]
    raw = tenants_scenario([tenant("capped", 300.0, deadline_ms=1e6, quota={"max_in_flight": 3, "action": "wait"})],
                           deployments=deployments, policy={"name": "static", "pipeline": ["one", "two"]},
                           duration_s=3.0)
    raw["stages"] = [{"name": "a", "deployments": ["one"]}, {"name": "b", "deployments": ["two"]}]
    requests, summary = run(raw)
    done = requests[requests["finish_s"].notna()]
    assert len(done) > 300 and done["hop1_finish_s"].notna().all()        # through both stages
    events = sorted([(t, 1) for t in done["hop0_enqueue_s"]] + [(t, -1) for t in done["finish_s"]],
                    key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 3 and summary["tenants"]["capped"]["held_most"] > 10


def test_an_expired_request_frees_its_place_for_a_held_one():
    """With a quota that waits, a request dropped as expired ends its place at once: the oldest
    held request of its tenant joins the queue at that instant."""
    deployments = [{"name": "m", "service": SERVICE, "replicas": 1, "max_batch_size": 1, "drop_expired": True}]
    raw = tenants_scenario([tenant("capped", 400.0, deadline_ms=6.0, quota={"max_in_flight": 4, "action": "wait"})],
                           deployments=deployments, duration_s=2.0)
    requests, _ = run(raw)
    expired = requests[requests["drop_reason"] == "expired"]
    assert len(expired) > 20
    late = requests[requests["hop0_enqueue_s"] > requests["arrival_s"] + 1e-9]   # held, then admitted
    # a place freed by an expiry is taken at the expiry's instant (the drop happens when a batch forms)
    batch_starts = set(requests["hop0_start_s"].dropna())
    assert late["hop0_enqueue_s"].isin(batch_starts).sum() > 10


class _Recorder(Policy):
    """Routes everything to the one deployment and records what it was shown of each request."""

    name = "test-tenant-recorder"
    seen: list = []

    def setup(self, view):
        self._route = Route.single(view.deployments[0])
        _Recorder.seen = []

    def route(self, request, view):
        _Recorder.seen.append((request.id, request.arrival_s, request.deadline_ms, request.sample_index, request.tenant,
                               view.now_s, view.arrival_rate_rps(0.25)))
        return self._route


def test_a_policy_sees_each_tenant_request_as_it_is_and_every_arrival_before_it():
    """What ``route`` is shown under tenants: the request's own id, arrival time, deadline, sample and
    tenant, and a view whose arrival rate counts every arrival up to and including this one (the
    rate-limited ones too, which are never routed)."""
    policies.register(_Recorder)
    raw = tenants_scenario([tenant("a", 200.0, rate_limit={"rate_rps": 100.0, "burst": 2}),
                            tenant("b", 80.0, deadline_ms=[20.0, 200.0], weights=[1, 1])],
                           policy={"name": "test-tenant-recorder"}, duration_s=2.0)
    requests, _ = run(raw)
    seen = pd.DataFrame(_Recorder.seen, columns=["id", "arrival_s", "deadline_ms", "sample", "tenant", "now_s", "rate"])
    requests = requests.reset_index(drop=True)   # one row per request, in id order
    routed = requests.index[requests["drop_reason"] != "rate_limited"]
    assert len(requests) - len(routed) > 20 and seen["id"].tolist() == routed.tolist()
    assert (seen["arrival_s"].to_numpy() == requests.loc[routed, "arrival_s"].to_numpy()).all()
    assert (seen["deadline_ms"].to_numpy() == requests.loc[routed, "deadline_ms"].to_numpy()).all()
    assert (seen["tenant"].to_numpy() == requests.loc[routed, "tenant"].to_numpy()).all()
    assert all(isinstance(s, (int, np.integer)) and s >= 0 for s in seen["sample"])
    assert (seen["now_s"] == seen["arrival_s"]).all()
    arrivals = requests["arrival_s"].to_numpy()
    for i, now, rate in seen[["id", "now_s", "rate"]].itertuples(index=False):
        span = min(0.25, now)
        first = np.searchsorted(arrivals[: i + 1], now - span, side="left")
        assert span <= 0 or rate == pytest.approx((i + 1 - first) / span, abs=1e-9)


def test_without_tenants_a_routing_policy_sees_every_arrival_before_it():
    policies.register(_Recorder)
    raw = {"seed": 3, "duration_s": 2.0, "arrivals": {"kind": "poisson", "rate_rps": 150.0},
           "requests": {"deadline_ms": 100.0}, "deployments": [{"name": "m", "service": SERVICE}],
           "policy": {"name": "test-tenant-recorder"}}
    requests, _ = run(raw)
    seen = pd.DataFrame(_Recorder.seen, columns=["id", "arrival_s", "deadline_ms", "sample", "tenant", "now_s", "rate"])
    assert seen["id"].tolist() == list(range(len(requests))) and seen["tenant"].isna().all()
    arrivals = requests["arrival_s"].to_numpy()
    for i, now, rate in seen[["id", "now_s", "rate"]].itertuples(index=False):
        span = min(0.25, now)
        first = np.searchsorted(arrivals[: i + 1], now - span, side="left")
        assert span <= 0 or rate == pytest.approx((i + 1 - first) / span, abs=1e-9)
