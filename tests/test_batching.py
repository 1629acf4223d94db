"""The dynamic batcher: sizes, the wait timeout, service order, drops and balancers."""

from __future__ import annotations

import numpy as np
import pytest

import policies
from conftest import ScriptedExecutor, simulate
from policies.base import Policy, Route


def scenario(rate_rps, service, *, duration_s=20.0, deadline_ms=1e9, **deployment):
    dep = {"name": "d", "service": service, "replicas": 1, "drop_expired": False}
    dep.update(deployment)
    return {"duration_s": duration_s, "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
            "requests": {"deadline_ms": deadline_ms}, "policy": {"name": "static"}, "deployments": [dep]}


def batches(requests):
    served = requests[requests["hop0_start_s"].notna()]
    return served.groupby(["hop0_replica", "hop0_start_s"])


TINY = {"kind": "deterministic", "mean_ms": 0.01}


def test_sparse_batches_start_exactly_at_the_timeout():
    requests, _ = simulate(scenario(20.0, TINY, max_batch_size=8, batch_wait_timeout_ms=5.0), seed=1)
    groups = batches(requests)
    assert len(groups) > 300
    for start, group in groups:
        assert start[1] - group["arrival_s"].min() == pytest.approx(0.005, abs=1e-9)
        assert (group["arrival_s"] <= start[1] + 1e-12).all()


def test_full_batch_leaves_as_soon_as_it_fills():
    requests, _ = simulate(scenario(2000.0, TINY, max_batch_size=4, batch_wait_timeout_ms=1000.0,
                                    duration_s=5.0), seed=2)
    sizes, exact = [], 0
    for (_, start), group in batches(requests):
        sizes.append(len(group))
        exact += start == group["arrival_s"].max()
    assert sizes[:-1] == [4] * (len(sizes) - 1)
    assert exact >= len(sizes) - 1


def test_batch_never_exceeds_its_maximum_under_overload():
    requests, summary = simulate(scenario(3000.0, {"kind": "exponential", "mean_ms": 2.0, "per_item_ms": 0.5},
                                          max_batch_size=8, replicas=2, duration_s=5.0), seed=3)
    for _, group in batches(requests):
        assert len(group) <= 8
        assert (group["hop0_batch_size"] == len(group)).all()
    assert requests["hop0_batch_size"].max() == 8
    assert summary["mean_batch_size"] > 7


@pytest.mark.parametrize("max_batch", [1, 3])
def test_fifo_serves_in_arrival_order(max_batch):
    requests, _ = simulate(scenario(800.0, {"kind": "exponential", "mean_ms": 1.0}, max_batch_size=max_batch,
                                    batch_wait_timeout_ms=1.0), seed=4)
    starts = requests.sort_values("arrival_s")["hop0_start_s"].to_numpy()
    assert np.all(np.diff(starts) >= 0)
    assert (requests["hop0_start_s"] > requests["arrival_s"]).mean() > 0.3  # queues really formed


def test_edf_serves_earliest_deadlines_first():
    raw = scenario(900.0, {"kind": "exponential", "mean_ms": 2.0}, max_batch_size=2, queue="edf", duration_s=10.0)
    raw["requests"] = {"deadline_ms": [10.0, 1000.0], "weights": [0.5, 0.5]}
    requests, _ = simulate(raw, seed=5)
    abs_deadline = (requests["arrival_s"] + requests["deadline_ms"] / 1000).to_numpy()
    arrival, start = requests["arrival_s"].to_numpy(), requests["hop0_start_s"].to_numpy()
    checked = 0
    for t in np.unique(start):
        chosen = start == t
        waiting = (arrival <= t) & (start > t)
        if waiting.any():
            assert abs_deadline[chosen].max() <= abs_deadline[waiting].min()
            checked += 1
    assert checked > 1000
    # FIFO order is broken somewhere, which is the point of EDF
    assert np.any(np.diff(start[np.argsort(arrival)]) < 0)


def test_expired_requests_are_dropped_before_service():
    raw = scenario(700.0, {"kind": "exponential", "mean_ms": 2.0}, deadline_ms=5.0, drop_expired=True, duration_s=5.0)
    requests, summary = simulate(raw, seed=6)
    expired = requests[requests["drop_reason"] == "expired"]
    assert len(expired) > 100
    assert expired["hop0_start_s"].isna().all()
    served = requests[requests["hop0_start_s"].notna()]
    assert (served["hop0_start_s"] < served["arrival_s"] + served["deadline_ms"] / 1000).all()
    assert summary["completed"] + summary["dropped"] == summary["requests"]
    raw["deployments"][0]["drop_expired"] = False
    requests, _ = simulate(raw, seed=6)
    assert not (requests["drop_reason"] == "expired").any()


def test_full_queue_rejects():
    raw = scenario(1000.0, {"kind": "exponential", "mean_ms": 2.0}, max_queue_size=5, duration_s=5.0)
    requests, summary = simulate(raw, seed=7)
    rejected = requests[requests["drop_reason"] == "queue_full"]
    assert len(rejected) > 100 and rejected["hop0_start_s"].isna().all()
    assert summary["dropped_by_reason"]["queue_full"] == int((rejected["measured"]).sum())
    # at most 5 waiting + 1 in service when anyone arrives and is admitted: wait bounded by 6 services
    served = requests[requests["hop0_start_s"].notna()]
    assert len(served) + len(rejected) == len(requests)


def test_hit_means_completed_within_deadline():
    raw = scenario(450.0, {"kind": "exponential", "mean_ms": 2.0}, deadline_ms=8.0, duration_s=10.0)
    requests, summary = simulate(raw, seed=8)
    completed = ~requests["dropped"]
    expected = completed & (requests["latency_ms"] <= requests["deadline_ms"])
    assert (requests["hit"] == expected).all()
    assert 0.3 < summary["hit_rate"] < 0.99


def test_round_robin_alternates_replicas():
    raw = scenario(50.0, TINY, replicas=3, balancer="round_robin", duration_s=5.0)
    requests, _ = simulate(raw, seed=9)
    replicas = requests.sort_values("arrival_s")["hop0_replica"].to_numpy()
    assert (replicas == np.arange(len(replicas)) % 3).all()


@pytest.mark.parametrize("balancer", ["least_loaded", "power_of_two"])
def test_per_replica_queues_serve_each_line_in_order(balancer):
    raw = scenario(1500.0, {"kind": "exponential", "mean_ms": 2.0}, replicas=4, balancer=balancer, duration_s=10.0)
    requests, summary = simulate(raw, seed=10)
    assert set(requests["hop0_replica"]) == {0, 1, 2, 3}
    for _, line in requests.groupby("hop0_replica"):
        line = line.sort_values("arrival_s")
        assert np.all(np.diff(line["hop0_start_s"].to_numpy()) >= 0)
        # one batch at a time on a replica
        assert np.all(line["hop0_start_s"].to_numpy()[1:] >= line["hop0_finish_s"].to_numpy()[:-1] - 1e-12)
    assert summary["completed"] == summary["requests"]


def test_least_loaded_beats_round_robin_on_wait():
    """Join-the-shortest-queue waits less than blind round-robin at the same load (a known result)."""
    waits = {}
    for balancer in ("round_robin", "least_loaded"):
        raw = scenario(1500.0, {"kind": "exponential", "mean_ms": 2.0}, replicas=4, balancer=balancer, duration_s=30.0)
        _, summary = simulate(raw, seed=11)
        waits[balancer] = summary["wait_ms"]["mean"]
    assert waits["least_loaded"] < 0.7 * waits["round_robin"]


# ---------------------------------------------------------------- crash and recover, one batcher at a time


class _Sink:
    """Records what the batcher tells the core."""

    def __init__(self):
        self.started, self.failed, self.dropped = [], [], []

    def drop(self, request, now, reason):
        self.dropped.append((request, now, reason))

    def batch_started(self, deployment, batch, now, replica):
        self.started.append((list(batch), now, replica))

    def batch_finished(self, deployment, batch, now, confidences=None):
        pass

    def batch_failed(self, deployment, batch, now):
        self.failed.append((list(batch), now))


def _batcher(replicas=2, queue=None):
    """A core batcher driven by hand, outside any simulation: the core needs no SimPy."""
    from collections import deque
    from types import SimpleNamespace

    from sim.core.batcher import Batcher
    from sim.core.queues import FifoQueue

    executor, sink = ScriptedExecutor(), _Sink()
    owner = SimpleNamespace(executor=executor, sink=sink, index=0, deadlines_s=[1e9] * 100, window_s=(0.0, 1e9),
                            recent=deque(maxlen=8))
    b = Batcher(owner, queue if queue is not None else FifoQueue(), max_batch_size=4, batch_wait_timeout_s=0.0,
                drop_expired=False, max_queue_size=0)
    reps = [b.add_replica(i, 0.0) for i in range(replicas)]
    for replica in reps:
        b.ready(replica, 0.0)
    b.executor = executor
    return b, reps, sink


def test_a_finished_batch_reports_its_service_time_not_its_clock_reading():
    """Batches here last 1 s. Started at 0.5 s and 1.5 s, they served 1.0 s each, whatever the
    clock reads when they end: that is what the deployment's recent batches keep (a policy's
    ``last_service_ms`` and ``recent_batch_latency_ms``) and what a fair queue is charged."""
    from sim.core.queues import FifoQueue

    class ChargedFifo(FifoQueue):
        def __init__(self):
            super().__init__()
            self.charges = []

        def served(self, batch, service_s):
            self.charges.append((list(batch), service_s))

    queue = ChargedFifo()
    b, (r0,), _ = _batcher(replicas=1, queue=queue)
    b.executor.time_s = 0.5
    for request in range(3):
        b.submit(request, 0.5)
    b.executor.run(until_s=2.0)                                   # the first batch ends, the second starts
    b.executor.run(until_s=3.0)
    assert list(b.recent) == [(1.5, 1.0, 1), (2.5, 1.0, 2)]      # (finish_s, service_s, size)
    assert queue.charges == [([0], 1.0), ([1, 2], 1.0)]


def test_a_waiting_batch_sets_one_timer_however_often_it_is_dispatched():
    """A batch that waits for more requests has one timer, at its oldest request's enqueue time
    plus the wait. Requests that join do not dispatch while it is set, but other events do (here a
    replica that becomes ready, as ``Deployment.replica_ready`` dispatches): they must not set a
    second timer for the same instant (an event of the run that would only dispatch for nothing)."""
    b, _, sink = _batcher(replicas=1)
    b.timeout_s = 1.0
    timers = []
    b.executor.call_at = lambda time_s, callback: timers.append(time_s)
    for request, now in enumerate((0.25, 0.5)):  # two of four: the batch waits
        b.executor.time_s = now
        b.submit(request, now)
    b.executor.time_s = 0.75
    b.ready(b.add_replica(1, 0.75), 0.75)
    b.dispatch(0.75)
    assert timers == [1.25] and sink.started == []
    b.executor.time_s = 1.25
    b._timer_fired()
    assert [batch for batch, _, _ in sink.started] == [[0, 1]] and sink.started[0][1] == 1.25


def test_overlapping_crashes_count_once_and_only_the_last_recovery_restores():
    b, (r0, r1), _ = _batcher()
    assert b.crash(r0, 0.0) is True
    assert b.crash(r0, 0.5) is False  # a second outage of a replica already down
    assert (r0.down, b.down, b.alive, b.free) == (2, 1, 1, [r1])
    assert b.crash(r1, 0.6) is True
    assert (b.down, b.alive, b.free) == (2, 0, [])
    assert b.recover(r0, 1.0) is False  # one of its two outages ends: still down
    assert (r0.down, b.down, b.free) == (1, 2, [])
    assert b.recover(r0, 2.0) is True
    assert (r0.down, b.down, b.alive, b.free, r0.free_s) == (0, 1, 1, [r0], 2.0)
    assert b.recover(r0, 3.0) is False  # not down: nothing to end
    assert b.down == 1


def test_crash_of_a_replica_that_left_is_ignored():
    b, (r0, r1), _ = _batcher()
    other, (stranger,), _ = _batcher(replicas=1)
    assert b.crash(stranger, 0.0) is False
    assert (stranger.down, b.down, b.alive) == (0, 0, 2)


def test_crash_in_service_hands_the_batch_back():
    b, (r0,), sink = _batcher(replicas=1)
    for request in range(3):
        b.submit(request, 0.0)
    assert sink.started == [([0], 0.0, 0)]  # no wait: the first request leaves alone
    b.executor.run(until_s=0.25)
    assert b.crash(r0, 0.25) is True
    assert sink.failed == [([0], 0.25)] and r0.batch is None and r0.busy_s == 0.25


def test_a_retiring_replica_that_recovers_leaves():
    b, (r0, r1), _ = _batcher()
    b.crash(r1, 0.0)
    r1.retiring = True
    assert b.recover(r1, 1.0) is True
    assert b.replicas == [r0] and b.retired == [r1] and b.free == [r0] and b.down == 0


# ---------------------------------------------------------------- the EDF queue on its own


def test_edf_queue_order_ties_oldest_and_drain():
    from sim.core.queues import EdfQueue

    q = EdfQueue([5.0, 3.0, 3.0, 9.0, 1.0])
    for request, enqueue_s in ((0, 0.0), (1, 0.1), (2, 0.2), (3, 0.3)):
        q.push(request, enqueue_s)
    assert q.take() == 1  # earliest deadline; 1 and 2 tie on it, 1 came first
    assert q.oldest_s() == 0.0
    assert q.take() == 2
    assert q.take() == 0
    assert q.oldest_s() == 0.3  # 0, 1 and 2 were taken, so 3 is the oldest left
    q.push(4, 0.4)
    q.push(1, 0.5)
    assert q.drain() == [4, 1, 3]  # in service order
    assert len(q) == 0
    q.push(2, 0.6)
    assert q.oldest_s() == 0.6 and q.take() == 2


# ---------------------------------------------------------------- a plan's batching change, applied by the engine


def _simulation(raw):
    import policies
    from sim.engine import Simulation
    from sim.runner import prepare
    from traces.scenario import scenario_from_dict

    prepared = prepare(scenario_from_dict(raw))
    s = prepared.scenario
    return Simulation(s, policies.create(s.policy.name, s.policy.params), bundle=prepared.bundle,
                      profiles=prepared.profiles, predictions=prepared.predictions, seed=1)


def test_a_plan_that_changes_only_the_wait_timeout_reaches_every_line():
    from policies.base import PlanAction

    sim = _simulation(scenario(10.0, TINY, max_batch_size=4, batch_wait_timeout_ms=5.0, replicas=2,
                               balancer="round_robin"))
    dep = sim.core.deployments[0]
    sim.core.apply(PlanAction("d", batch_wait_timeout_ms=40.0), 0.0)
    assert dep.batch_wait_timeout_ms == 40.0 and [b.timeout_s for b in dep.batchers] == [0.04, 0.04]
    sim.core.apply(PlanAction("d", max_batch_size=2), 0.0)
    assert [(b.max_batch_size, b.timeout_s) for b in dep.batchers] == [(2, 0.04), (2, 0.04)]
    sim.core.apply(PlanAction("d", max_batch_size=16), 0.0)  # a parametric service has no measured limit
    assert [b.max_batch_size for b in dep.batchers] == [16, 16]


def test_a_bad_plan_names_the_policy_and_deployment():
    from policies.base import PlanAction
    from traces.errors import InputError

    sim = _simulation(scenario(10.0, TINY))
    with pytest.raises(InputError) as info:
        sim.core.apply(PlanAction("d", replicas=-1), 0.0)
    assert (info.value.where, info.value.problem) == ("policy 'static' plan for 'd'", "replicas must be >= 0, got -1")


def test_a_plan_may_not_batch_beyond_the_measured_sizes(tiny_bundle):
    from policies.base import PlanAction
    from traces.errors import InputError

    raw = {"duration_s": 4.0, "bundle": str(tiny_bundle), "arrivals": {"kind": "poisson", "rate_rps": 10.0},
           "requests": {"deadline_ms": 200.0}, "policy": {"name": "static"},
           "deployments": [{"name": "fast", "variant": "fast/int8/cpu", "max_batch_size": 2}]}
    sim = _simulation(raw)
    limit = sim.core.profiles["fast"].max_batch_size
    sim.core.apply(PlanAction("fast", max_batch_size=limit), 0.0)
    assert sim.core.deployments[0].max_batch_size == limit
    with pytest.raises(InputError) as info:
        sim.core.apply(PlanAction("fast", max_batch_size=limit + 1), 0.0)
    assert info.value.problem == f"max_batch_size must be in 1..{limit} (the measured sizes), got {limit + 1}"


class _RecentReader(Policy):
    """A plan-only policy that records, at each tick, the view's percentiles of recent batches over
    a window longer than the run (so only the deployment's cap of 1,024 batches limits them)."""

    name = "test-recent-reader"
    seen: list = []

    def setup(self, view):
        self._route = Route.single("d")
        _RecentReader.seen = []

    def route(self, request, view):
        return self._route

    def plan(self, view):
        _RecentReader.seen.append((view.now_s, [view.recent_batch_latency_ms("d", q, window_s=1e9)
                                                for q in (0, 50, 100)]))
        return ()


policies.register(_RecentReader)


def test_recent_batch_latency_reads_the_last_1024_batches():
    """``recent_batch_latency_ms`` is over the deployment's last 1,024 batches (docstring): at each
    plan tick its percentiles are those of the last 1,024 batches finished by then, as the request
    log has them (one request a batch: finish - start), not of every batch nor of one more."""
    raw = scenario(3000.0, {"kind": "exponential", "mean_ms": 0.2}, duration_s=1.25, max_batch_size=1)
    raw["policy"] = {"name": "test-recent-reader", "plan_interval_s": 0.5}
    requests, _ = simulate(raw, seed=3)
    served = requests[requests["hop0_finish_s"].notna()].sort_values("hop0_finish_s")
    assert [now for now, _ in _RecentReader.seen] == [0.5, 1.0]
    for now, percentiles in _RecentReader.seen:
        done = served[served["hop0_finish_s"] <= now]
        assert len(done) > 1200                                   # more batches than the view keeps
        service_s = (done["hop0_finish_s"] - done["hop0_start_s"]).to_numpy()[-1024:]
        expected = [float(np.percentile(service_s, q)) * 1000.0 for q in (0, 50, 100)]
        assert percentiles == pytest.approx(expected, rel=1e-12)
