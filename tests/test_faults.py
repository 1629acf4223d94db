"""Replica crashes and recoveries: nothing is lost, nothing is served by a dead replica."""

from __future__ import annotations

import pytest

from conftest import ScriptedExecutor, simulate
from traces.errors import InputError
from traces.scenario import scenario_from_dict


def scenario(faults, replicas=1, balancer="shared", rate=200.0, duration=6.0):
    return {"duration_s": duration, "arrivals": {"kind": "poisson", "rate_rps": rate},
            "requests": {"deadline_ms": 1e6}, "policy": {"name": "static"}, "faults": faults,
            "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 3.0},
                             "replicas": replicas, "max_batch_size": 4, "balancer": balancer,
                             "drop_expired": False}]}


def test_scheduled_crash_retries_the_batch_and_serves_nothing_while_down():
    # 1250 rps against 1333 rps of capacity: the replica is busy when it crashes
    requests, summary = simulate(scenario([{"deployment": "m", "at_s": 2.0, "down_s": 1.0}], rate=1250.0), seed=1)
    assert len(requests) > 7000 and not requests["dropped"].any()
    assert summary["faults"] == [{"deployment": "m", "replica": 0, "crash_s": 2.0, "recover_s": 3.0}]
    starts = requests["hop0_start_s"]
    assert not ((starts >= 2.0) & (starts < 3.0)).any()
    retried = requests[requests["retries"] > 0]
    assert 1 <= len(retried) <= 4 and (retried["hop0_start_s"] >= 3.0).all()
    # the backlog built during the outage is served after it
    assert requests.loc[(requests["arrival_s"] > 2.0) & (requests["arrival_s"] < 3.0), "hop0_start_s"].min() >= 3.0


def test_crash_without_retry_fails_the_batch():
    faults = [{"deployment": "m", "at_s": 2.0, "down_s": 0.5, "on_failure": "fail"}]
    requests, summary = simulate(scenario(faults, rate=1250.0), seed=1)
    failed = requests[requests["drop_reason"] == "replica_failed"]
    assert 1 <= len(failed) <= 4
    assert summary["completed"] + summary["dropped"] == summary["requests"]


def test_random_faults_follow_their_rates():
    faults = [{"deployment": "m", "mttf_s": 2.0, "mttr_s": 0.5}]
    requests, summary = simulate(scenario(faults, replicas=4, rate=400.0, duration=60.0), seed=2)
    per_replica = 60.0 / 2.5  # renewal cycles of mean 2.5 s
    assert len(summary["faults"]) == pytest.approx(4 * per_replica, rel=0.3)
    assert summary["completed"] + summary["dropped"] == summary["requests"] == summary["completed"]
    for fault in summary["faults"]:
        on_replica = requests[requests["hop0_replica"] == fault["replica"]]
        starts = on_replica["hop0_start_s"]
        assert not ((starts > fault["crash_s"]) & (starts < fault["recover_s"])).any()


def test_balancer_routes_around_a_dead_replica():
    faults = [{"deployment": "m", "replica": 1, "at_s": 1.0, "down_s": 3.0}]
    requests, _ = simulate(scenario(faults, replicas=2, balancer="round_robin", rate=100.0), seed=3)
    during = requests[(requests["arrival_s"] > 1.01) & (requests["arrival_s"] < 4.0)]
    assert (during["hop0_replica"] == 0).all()
    after = requests[requests["arrival_s"] > 4.01]
    assert set(after["hop0_replica"]) == {0, 1}


def test_bad_fault_config():
    with pytest.raises(InputError, match="faults\\[0\\].replica"):
        scenario_from_dict(scenario([{"deployment": "m", "replica": 3, "at_s": 1.0, "down_s": 1.0}]))
    with pytest.raises(InputError, match="faults\\[0\\]"):
        scenario_from_dict(scenario([{"deployment": "m", "at_s": 1.0, "mttr_s": 1.0}]))
    with pytest.raises(InputError, match="faults\\[0\\].deployment"):
        scenario_from_dict(scenario([{"deployment": "x", "at_s": 1.0, "down_s": 1.0}]))


def test_degrade_routes_around_a_crashed_deployment_with_nothing_lost(tiny_bundle):
    raw = {"duration_s": 8.0, "bundle": str(tiny_bundle), "arrivals": {"kind": "poisson", "rate_rps": 40.0},
           "requests": {"deadline_ms": 200.0},
           "deployments": [{"name": "fast", "variant": "fast/int8/cpu", "max_batch_size": 4},
                           {"name": "slow", "variant": "slow/fp32/cpu", "max_batch_size": 4}],
           "faults": [{"deployment": "slow", "at_s": 2.0, "down_s": 3.0}],
           "policy": {"name": "degrade", "inner": "static-large"}}
    requests, summary = simulate(raw, seed=5)
    assert summary["completed"] + summary["dropped"] == summary["requests"]
    # only the batch in service at the crash can miss: retried on the dead deployment, it expires
    lost = requests[requests["dropped"]]
    assert (lost["retries"] == 1).all() and (lost["drop_reason"] == "expired").all() and len(lost) <= 4
    down = requests[(requests["arrival_s"] > 2.0) & (requests["arrival_s"] < 5.0)]
    assert (down["route"] == "fast").all() and len(down) > 60
    up = requests[requests["arrival_s"] > 5.1]
    assert (up["route"] == "slow").all()
    assert summary["policy"]["overrides"] == {"route_around_crash": len(down)}


@pytest.mark.parametrize("balancer", ["shared", "round_robin"])
def test_overlapping_outages_keep_a_replica_down_until_the_last_ends(balancer):
    faults = [{"deployment": "m", "replica": 1, "at_s": 10.0, "down_s": 10.0},
              {"deployment": "m", "replica": 1, "at_s": 15.0, "down_s": 15.0}]
    requests, summary = simulate(scenario(faults, replicas=2, balancer=balancer, rate=300.0, duration=40.0), seed=6)
    assert summary["completed"] == summary["requests"]
    on_1 = requests.loc[requests["hop0_replica"] == 1, "hop0_start_s"]
    assert not ((on_1 >= 10.0) & (on_1 < 30.0)).any()
    assert (on_1 < 10.0).any() and (on_1 >= 30.0).any()  # it serves before and after
    assert [(f["crash_s"], f["recover_s"]) for f in summary["faults"]] == [(10.0, 20.0), (15.0, 30.0)]


def test_random_outages_inside_a_scheduled_one_do_not_end_it():
    # one replica; random crashes (mean up 1 s, down 0.2 s) fall inside the scheduled [5, 15)
    faults = [{"deployment": "m", "at_s": 5.0, "down_s": 10.0}, {"deployment": "m", "mttf_s": 1.0, "mttr_s": 0.2}]
    requests, summary = simulate(scenario(faults, rate=100.0, duration=20.0), seed=7)
    inside = [f for f in summary["faults"][1:] if 5.0 < f["crash_s"] and f["recover_s"] < 15.0]
    assert len(inside) >= 3
    starts = requests["hop0_start_s"]
    assert not ((starts >= 5.0) & (starts < 15.0)).any()
    for fault in summary["faults"]:
        assert not ((starts >= fault["crash_s"]) & (starts < fault["recover_s"])).any()
    assert summary["completed"] == summary["requests"]


# ---------------------------------------------------------------- one deployment, by hand


class _Sink:
    def __init__(self):
        self.dropped, self.failed = [], []

    def drop(self, request, now, reason):
        self.dropped.append((request, now, reason))

    def batch_started(self, deployment, batch, now, replica):
        pass

    def batch_finished(self, deployment, batch, now, confidences=None):
        pass

    def batch_failed(self, deployment, batch, now):
        self.failed.append((list(batch), now))


def _deployment(replicas=2, balancer="round_robin", max_queue_size=2):
    import numpy as np

    from sim.core.deployment import Deployment
    from traces.scenario import DeploymentConfig

    cfg = DeploymentConfig(name="m", replicas=replicas, max_batch_size=1, batch_wait_timeout_ms=0.0,
                           max_queue_size=max_queue_size, drop_expired=False, balancer=balancer)
    sink = _Sink()
    dep = Deployment(ScriptedExecutor(), sink, 0, cfg, [1e9] * 100, (0.0, 1e9), np.random.default_rng(0))
    return dep, sink


def _queues(dep):
    return [[r for _, r in b.queue] for b in dep.batchers]  # a fifo line holds (enqueue_s, request)


def test_a_crash_moves_its_line_to_the_live_replica_and_drops_what_does_not_fit():
    dep, sink = _deployment()
    for request in range(6):
        assert dep.submit(request, 0.0)
    # each replica serves one (1 s each) and holds two waiting
    assert dep.load() == (4, 2, 2)
    (waiting_0, waiting_1) = _queues(dep)
    assert sorted(waiting_0 + waiting_1) == [2, 3, 4, 5] and len(waiting_0) == len(waiting_1) == 2
    dead = dep.batchers[1].replicas[0]
    dep.crash(dead.index, 0.5)
    assert len(sink.failed) == 1 and sink.failed[0][1] == 0.5
    # the dead line moves to the live one, which is full: each is dropped at the crash, as queue_full
    assert sink.dropped == [(r, 0.5, "queue_full") for r in waiting_1]
    assert _queues(dep) == [waiting_0, []]
    assert dep.load() == (2, 1, 1) and dep.replicas == 1


def test_a_replica_down_on_any_line_is_not_able_to_serve():
    """The replicas able to serve count what is down on every per-replica line, not the last's only."""
    dep, _ = _deployment(replicas=3)
    for request in range(6):
        assert dep.submit(request, 0.0)
    dep.crash(dep.batchers[0].replicas[0].index, 0.5)
    assert dep.load()[1:] == (2, 2)
    dep.crash(dep.batchers[1].replicas[0].index, 0.6)
    assert dep.load()[1:] == (1, 1)


def test_set_batching_changes_every_line():
    dep, _ = _deployment()
    dep.set_batching(None, 250.0, 0.0)
    assert dep.batch_wait_timeout_ms == 250.0
    assert [(b.max_batch_size, b.timeout_s) for b in dep.batchers] == [(1, 0.25), (1, 0.25)]
    dep.set_batching(3, None, 0.0)
    assert [(b.max_batch_size, b.timeout_s) for b in dep.batchers] == [(3, 0.25), (3, 0.25)]


def test_removing_a_per_replica_line_resubmits_its_requests_and_retires_its_replica():
    dep, sink = _deployment(max_queue_size=3)
    for request in range(6):
        dep.submit(request, 0.0)
    dep.set_replicas(3, 0.0)
    assert len(dep.batchers) == 3 and dep.load() == (4, 2, 3)
    third = dep.batchers[2]
    idle = third.replicas[0]
    last = dep.batchers[1]
    busy, moved = last.replicas[0], _queues(dep)[1]
    dep.set_replicas(1, 2.0 / 3)  # the idle third line and the busy second go
    assert len(dep.batchers) == 1 and dep._gone == [third, last]
    assert third.retired == [idle] and third.replicas == [] and idle.retiring
    assert busy.retiring and last.replicas == [busy] and len(last.queue) == 0
    # the live line held 2 and takes 1 more of the 2 moved; the other is dropped when the plan acts
    assert _queues(dep)[0][-1] == moved[0]
    assert sink.dropped == [(moved[1], 2.0 / 3, "queue_full")]


def test_a_failed_batch_fails_every_request_in_it():
    # 1500 rps against 1333 rps of capacity: full batches of 4, one in service at the crash
    faults = [{"deployment": "m", "at_s": 2.0, "down_s": 0.5, "on_failure": "fail"}]
    requests, _ = simulate(scenario(faults, rate=1500.0), seed=1)
    starts = requests["hop0_start_s"]
    in_service = requests[starts == starts[starts < 2.0].max()]
    assert len(in_service) == 4 and (in_service["hop0_finish_s"].isna()).all()
    failed = requests[requests["retries"] > 0]
    assert failed["id"].tolist() == in_service["id"].tolist()
    assert (failed["drop_reason"] == "replica_failed").all() and (failed["retries"] == 1).all()
    assert (failed["hop0_batch_size"] == 4).all() and (failed["hop0_replica"] == 0).all()  # where it was lost


def test_a_retried_request_that_finds_the_line_full_is_dropped_unserved():
    faults = [{"deployment": "m", "at_s": 2.0, "down_s": 0.5}]
    raw = scenario(faults, rate=1500.0)
    raw["deployments"][0]["max_queue_size"] = 4
    requests, _ = simulate(raw, seed=1)
    retried = requests[requests["retries"] > 0]
    assert len(retried) >= 1
    assert (retried["drop_reason"] == "queue_full").all() and retried["dropped"].all()
    # its hop is reset: back in the line at the crash, never started, on no replica, in no batch
    assert (retried["hop0_enqueue_s"] == 2.0).all() and retried["hop0_start_s"].isna().all()
    assert retried["hop0_replica"].isna().all() and retried["hop0_batch_size"].isna().all()
