"""The request log's ring, replicas that come up late, stage breakdowns and bundle profiles: what
mutation testing found unpinned (issue 17).

A mutmut run over ``sim/core/records.py``, ``sim/core/deployment.py``, ``traces/summary.py`` and
``traces/profiles.py`` left mutants alive. Each test here pins one thing a user sees: the rows of
``requests.parquet`` when the log's ring grows under a burst, how far the ring grows (its memory),
where and when a request that waited for a crashed replica is served once a plan's new replica is
up, the per-stage breakdown of a pipeline, and what a profile built from a bundle carries unless
asked. The scenarios are small enough to derive every expected value by hand: a deterministic
1/64 s service, arrival and crash times that are exact binary fractions. Mutants that no test can
tell apart are listed with their reasons in ``docs/mutation.md``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import policies
from conftest import replay_arrivals, simulate
from policies.base import PlanAction, Policy, Route
from sim.core import records
from traces.bundle import TraceBundle
from traces.profiles import LatencyProfile, SlowSpells
from traces.summary import Tally, stage_breakdown

SERVICE_S = 1 / 64  # a deterministic batch service time that is an exact binary fraction
SERVICE = {"kind": "deterministic", "mean_ms": SERVICE_S * 1000.0}


# ---------------------------------------------------------------- the request log's ring


def test_a_burst_that_outgrows_a_tiny_ring_keeps_every_requests_row(tmp_path, monkeypatch):
    """An 8-slot ring: two early requests end, then 16 arrive at once on 10 replicas with room for
    4 waiting. The ring retires the two ended ones at the 9th arrival and doubles at the 11th,
    while 8 are in service; the two requests refused for a full queue after that get slots that
    a grown ring hands out empty. Every row is as worked out by hand, and as with a ring that
    never fills."""
    burst_s = 1.0
    arrival_s = [0.25, 0.5] + [burst_s] * 16
    raw = {"duration_s": 2.0, "warmup_s": 0.0,
           "arrivals": replay_arrivals(tmp_path / "arrivals.csv", arrival_s, 2.0),
           "requests": {"deadline_ms": 1e7}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": SERVICE, "replicas": 10, "max_batch_size": 1,
                            "max_queue_size": 4, "drop_expired": False}]}
    monkeypatch.setattr(records, "MIN_CAPACITY", 8)
    requests, summary = simulate(raw, seed=1)
    # ids 0, 1 and the first 10 of the burst start on arrival; 4 wait one service; 2 are refused
    start_s = [0.25, 0.5] + [burst_s] * 10 + [burst_s + SERVICE_S] * 4
    served, refused = requests.iloc[:16], requests.iloc[16:]
    assert requests["id"].tolist() == list(range(18))
    assert served["hop0_start_s"].tolist() == start_s
    assert served["finish_s"].tolist() == [t + SERVICE_S for t in start_s]
    assert served["hop0_enqueue_s"].tolist() == arrival_s[:16]
    assert (served["route"] == "m").all() and (served["hops"] == 1).all() and not served["dropped"].any()
    assert served["hop0_batch_size"].tolist() == [1] * 16
    assert sorted(served["hop0_replica"].iloc[2:12]) == list(range(10))  # the burst takes every replica
    assert refused["drop_reason"].tolist() == ["queue_full"] * 2
    assert refused["hop0_enqueue_s"].tolist() == [burst_s] * 2 and (refused["hops"] == 1).all()
    for column in ("hop0_start_s", "hop0_finish_s", "hop0_replica", "hop0_batch_size", "finish_s"):
        assert refused[column].isna().all(), column
    assert (summary["completed"], summary["dropped"]) == (16, 2)
    monkeypatch.setattr(records, "MIN_CAPACITY", 1 << 15)
    whole, _ = simulate(raw, seed=1)
    pd.testing.assert_frame_equal(requests, whole)


def _ring_of_eight(monkeypatch, n: int, *, live: bool = False):
    """A request log of ``n`` requests whose ring starts with 8 slots, and the chunks it retires;
    ``live``: the real server's log (its runners answer: one stage, whose samples are the requests')."""
    monkeypatch.setattr(records, "MIN_CAPACITY", 8)
    work = SimpleNamespace(size=n, arrival_s=np.arange(n) / 8.0, deadline_class=np.zeros(n, dtype=np.uint8),
                           deadline_classes_ms=np.array([100.0]), sample_index=np.zeros(n, dtype=np.int64),
                           tenant=None, stage_sample_index=())
    log = records.RequestLog(work, records.TableContext(["m"], [None], None, 0.0,
                                                        answer_labels=[None] if live else None))
    chunks: list[dict] = []
    log.sinks.append(chunks.append)
    return log, chunks


@pytest.mark.parametrize("ended, capacity, retired", [
    ((0, 1), 8, 2),        # a quarter of the ring has ended: it is retired, the ring stays
    ((0,), 16, 0),         # less than a quarter: the ring doubles instead
    ((1, 2, 3), 16, 0),    # ended, but behind a request still open: nothing can be retired
])
def test_the_ring_retires_a_quarter_that_has_ended_and_doubles_only_when_less_has(monkeypatch, ended,
                                                                                   capacity, retired):
    """The ring's memory stays put while at least a quarter of its slots hold requests that have
    all ended (a prefix of them): the 9th arrival on an 8-slot ring retires that prefix as one
    chunk; with less ended it doubles and retires nothing."""
    log, chunks = _ring_of_eight(monkeypatch, 12)
    for i in ended:
        log.finish_s[i & log.mask] = 1.0
    log.make_room(8)
    assert (log.capacity, log.retired, log.limit) == (capacity, retired, retired + capacity)
    assert [chunk["id"].tolist() for chunk in chunks] == ([list(range(retired))] if retired else [])


def test_a_live_logs_ring_grows_with_its_confidences_and_dispatch_lags(monkeypatch):
    """The real server's log keeps each hop's confidence (its runners' answers) and each request's
    dispatch lag in ring columns of their own: when the ring doubles they move with the rest."""
    log, chunks = _ring_of_eight(monkeypatch, 12, live=True)
    log.ensure_hops(1)
    for i in range(8):
        log.hops[0].confidence[i] = i / 8.0
        log.dispatch_lag_s[i] = i / 1024.0
    log.make_room(8)                         # nothing has ended: the ring doubles
    assert log.capacity == 16
    assert [log.hops[0].confidence[i & log.mask] for i in range(8)] == [i / 8.0 for i in range(8)]
    assert [log.dispatch_lag_s[i & log.mask] for i in range(8)] == [i / 1024.0 for i in range(8)]
    for i in range(8):
        log.finish_s[i & log.mask] = 2.0
    log.retire(8)                            # and the table has them, by name
    (chunk,) = chunks
    assert chunk["dispatch_lag_s"].tolist() == [i / 1024.0 for i in range(8)]
    assert chunk["hop0_confidence"].tolist() == [i / 8.0 for i in range(8)]


def test_requests_still_open_at_the_end_are_dropped_as_unfinished(monkeypatch):
    """What the real server leaves open when its drain time is up: dropped, reason "unfinished"
    (the drop reason docs/formats.md names), and no finish time in the table."""
    log, chunks = _ring_of_eight(monkeypatch, 4)
    log.ensure_hops(1)
    for i in (0, 1):
        log.finish_s[i] = 1.0
    assert log.end_unfinished(2.0) == [2, 3]
    log.retire_all()
    (chunk,) = chunks
    assert chunk["dropped"].tolist() == [False, False, True, True]
    assert chunk["drop_reason"].tolist() == ["", "", "unfinished", "unfinished"]
    assert np.isnan(chunk["finish_s"][2:]).all() and np.isnan(chunk["latency_ms"][2:]).all()
    assert log.end_unfinished(3.0) == [] and len(chunks) == 1   # all retired: nothing is left open


# ---------------------------------------------------------------- a plan's replica and a crashed one


class _AddReplicaOnce(Policy):
    """Test policy: every request to m; the first plan asks for a second replica, later ones for nothing."""

    name = "test-add-replica-once"

    def setup(self, view):
        self._route, self._planned = Route.single("m"), False

    def route(self, request, view):
        return self._route

    def plan(self, view):
        if self._planned:
            return []
        self._planned = True
        return [PlanAction("m", replicas=2)]


@pytest.mark.parametrize("balancer", ["shared", "least_loaded"])
@pytest.mark.parametrize("startup_s", [None, 0.5])
def test_a_plans_new_replica_serves_what_waited_for_a_crashed_one_once_it_is_up(tmp_path, monkeypatch,
                                                                               balancer, startup_s):
    """Replica 0 is down from 0.25 s to 1.25 s; request A (0.375 s) waits for it. The plan at 0.5 s
    adds replica 1: ready at once, or after a 0.5 s start-up (at 1.0 s). A is served on replica 1
    from the instant it is ready, in the shared line or moved there from replica 0's own line.
    B and C (1.5 s, both replicas idle) go one to each replica. A cold start of 0.5 s is reported."""
    monkeypatch.setitem(policies.registry._REGISTRY, _AddReplicaOnce.name, _AddReplicaOnce)
    deployment = {"name": "m", "service": SERVICE, "replicas": 1, "max_batch_size": 1, "drop_expired": False,
                  "balancer": balancer, **({"startup_s": startup_s} if startup_s else {})}
    raw = {"duration_s": 2.0, "warmup_s": 0.0,
           "arrivals": replay_arrivals(tmp_path / "arrivals.csv", [0.375, 1.5, 1.5], 2.0),
           "requests": {"deadline_ms": 1e7}, "policy": {"name": _AddReplicaOnce.name, "plan_interval_s": 0.5},
           "faults": [{"deployment": "m", "replica": 0, "at_s": 0.25, "down_s": 1.0}],
           "deployments": [deployment]}
    requests, summary = simulate(raw, seed=1)
    ready_s = 0.5 + (startup_s or 0.0)
    assert summary["completed"] == 3 and requests["retries"].tolist() == [0, 0, 0]
    assert requests["hop0_start_s"].tolist() == [ready_s, 1.5, 1.5]
    assert requests["finish_s"].tolist() == [ready_s + SERVICE_S, 1.5 + SERVICE_S, 1.5 + SERVICE_S]
    assert requests["hop0_replica"].tolist() == [1, 0, 1]
    stats = summary["deployments"]["m"]
    if startup_s:
        assert (stats["cold_starts"], stats["cold_start_seconds"]) == (1, startup_s)
    else:
        assert "cold_starts" not in stats


class _AddReplicaAndWatch(_AddReplicaOnce):
    """The same plan, and the load the policy is shown at each arrival (with the arrival time)."""

    name = "test-add-replica-and-watch"
    seen: list = []

    def route(self, request, view):
        type(self).seen.append((request.arrival_s, view.load("m")))
        return self._route


@pytest.mark.parametrize("balancer", ["shared", "least_loaded"])
def test_a_replica_still_starting_is_not_counted_as_able_to_serve(tmp_path, monkeypatch, balancer):
    """The plan at 0.25 s adds a replica that takes 0.5 s to start. At 0.5 s the policy sees one
    replica able to serve (of two provisioned), nothing waiting, nothing busy; at 1.0 s both serve.
    With a line per replica the count is summed over the lines: a starting replica is subtracted there
    as it is from the shared line."""
    monkeypatch.setitem(policies.registry._REGISTRY, _AddReplicaAndWatch.name, _AddReplicaAndWatch)
    monkeypatch.setattr(_AddReplicaAndWatch, "seen", [])
    raw = {"duration_s": 1.5, "warmup_s": 0.0,
           "arrivals": replay_arrivals(tmp_path / "arrivals.csv", [0.5, 1.0], 1.5),
           "requests": {"deadline_ms": 1e7}, "policy": {"name": _AddReplicaAndWatch.name, "plan_interval_s": 0.25},
           "deployments": [{"name": "m", "service": SERVICE, "replicas": 1, "max_batch_size": 1,
                            "balancer": balancer, "startup_s": 0.5}]}
    requests, summary = simulate(raw, seed=1)
    assert summary["completed"] == 2
    # (the first entry is the run's check of the policy on an empty system, before any arrival)
    assert _AddReplicaAndWatch.seen[1:] == [(0.5, (0, 0, 1)), (1.0, (0, 0, 2))]


# ---------------------------------------------------------------- a pipeline's stage breakdown


def test_the_stage_breakdown_of_a_loaded_table_is_the_runs_and_is_worked_out_by_hand(tmp_path):
    """Two stages of 1/64 s and 1/32 s; A at 0.25 s (before the 0.375 s warm-up), B and C at
    0.5 s: C waits one service at each stage. Measured: stage 0 takes 15.625 and 31.25 ms, stage 1
    31.25 and 46.875 ms, of latencies 46.875 and 78.125 ms. The breakdown of the table as loaded
    (a DataFrame) is the run's own; a table where nothing measured completed gives NaN, quietly."""
    raw = {"duration_s": 1.0, "warmup_s": 0.375,
           "arrivals": replay_arrivals(tmp_path / "arrivals.csv", [0.25, 0.5, 0.5], 1.0),
           "requests": {"deadline_ms": 1e7},
           "deployments": [{"name": "s0", "service": SERVICE, "max_batch_size": 1, "drop_expired": False},
                           {"name": "s1", "service": {**SERVICE, "mean_ms": 2 * SERVICE["mean_ms"]},
                            "max_batch_size": 1, "drop_expired": False}],
           "stages": [{"name": "read", "deployments": ["s0"]}, {"name": "judge", "deployments": ["s1"]}],
           "policy": {"name": "static", "pipeline": ["s0", "s1"]}}
    requests, summary = simulate(raw, seed=1)
    names = ["read", "judge"]
    stages = stage_breakdown(requests, names)
    assert stages == summary["stages"]
    read, judge = stages["read"], stages["judge"]
    assert (read["mean_ms"], read["max_ms"]) == (23.4375, 31.25)
    assert (judge["mean_ms"], judge["max_ms"]) == (39.0625, 46.875)
    assert (read["share_of_latency"], judge["share_of_latency"]) == (23.4375 / 62.5, 39.0625 / 62.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" from numpy
        none = stage_breakdown(requests.assign(measured=False), names)
    assert list(none) == names
    assert all(math.isnan(value) for stage in none.values() for value in stage.values())


# ---------------------------------------------------------------- a bundle's profile


def _timed_bundle(tmp_path: Path) -> tuple[TraceBundle, np.ndarray]:
    """One variant timed back to back 800 times, 5 ms apart, with slow spells (an AR(1) level in
    its latencies), and 20 runs after 10 ms of idleness (no run times); the table lists them in
    reverse. Returns the bundle and the back-to-back latencies in time order."""
    rng = np.random.default_rng(0)
    n, rho = 800, math.exp(-0.005 / 0.2)
    level = np.empty(n)
    level[0] = rng.normal()
    for i in range(1, n):
        level[i] = rho * level[i - 1] + math.sqrt(1 - rho * rho) * rng.normal()
    latency = np.exp(0.2 * level)
    started = 1.7e9 + 0.005 * np.arange(n)
    rows = pd.DataFrame({"variant": "m/fp32/cpu", "model": "m", "precision": "fp32", "device": "cpu",
                         "batch_size": 1, "latency_ms": np.concatenate([latency, np.full(20, 3.0)]),
                         "idle_ms": np.r_[np.zeros(n), np.full(20, 10.0)],
                         "started_at_s": np.r_[started, np.full(20, np.nan)]})
    TraceBundle(meta={"name": "timed"}, service=rows.iloc[::-1].reset_index(drop=True),
                predictions=pd.DataFrame(columns=["variant", "sample_id", "label", "pred", "confidence",
                                                  "correct"])).save(tmp_path / "b")
    return TraceBundle.load(tmp_path / "b"), latency


def test_a_bundles_profile_is_measured_and_has_spells_and_a_timeline_only_when_asked(tmp_path):
    """A profile from a bundle is a measured one, its idle classes too; it draws independently
    and at random (no spells, no timeline) unless the caller asks for them, though this bundle
    has both: then the spells are the bundle's and the timeline its back-to-back runs in time order."""
    bundle, in_time_order_ms = _timed_bundle(tmp_path)
    variant = "m/fp32/cpu"
    plain = LatencyProfile.from_bundle(bundle, variant)
    assert plain.is_measured is True
    [(gap_s, idle)] = plain.after_idle
    assert gap_s == 0.01 and idle.is_measured is True and idle.mean_ms(1) == 3.0
    assert plain.spells == SlowSpells() and plain.timeline is None
    asked = LatencyProfile.from_bundle(bundle, variant, spells=True, timeline=True)
    assert asked.spells == bundle.slow_spells(variant) and not asked.spells.none
    [(size, (started, latency))] = asked.timeline.items()
    assert size == 1 and started.size == 800 and (np.diff(started) > 0).all()
    np.testing.assert_array_equal(latency, in_time_order_ms)


def test_a_distribution_drops_what_is_not_finite_and_leaves_its_input_as_it_was():
    """The summary's distributions (``traces.summary.distribution``): the mean, percentiles and max
    of the finite values only; the caller's array is not reordered unless it says it may be; and the
    figures are worked out in float64 whatever the column's type."""
    from traces.summary import distribution

    with_nan = distribution(np.array([3.0, np.nan, 1.0, np.inf, 2.0]))
    assert (with_nan["mean"], with_nan["p50"], with_nan["max"]) == (2.0, 2.0, 3.0)
    values = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    distribution(values)
    assert values.tolist() == [5.0, 1.0, 4.0, 2.0, 3.0]
    single = np.array([0.1, 0.2, 0.7, 1e8, 3.3], dtype=np.float32)
    assert distribution(single) == distribution(single.astype(np.float64))


def test_a_poisson_process_built_directly_names_its_rate_in_a_refusal():
    from traces.arrivals import Poisson
    from traces.errors import InputError

    with pytest.raises(InputError) as error:
        Poisson(-1.0)
    assert error.value.where == "arrivals.rate_rps"


def test_the_tally_keeps_every_latency_when_its_column_grows_past_its_reserve():
    """A tally with no reserve holds 1,024 values at first; 3,000 latencies in three chunks make
    its column grow twice, and every value survives the copies (the distribution drops what is not
    finite, so a value lost to NaN would shift the mean and median, not raise)."""
    tally = Tally()
    n = 1000
    for start in (0, n, 2 * n):
        latency_ms = np.arange(start, start + n, dtype=np.float64)
        tally.add(pd.DataFrame({
            "measured": True, "dropped": False, "hit": True, "drop_reason": None, "route": "m", "hops": 1,
            "correct": pd.array([pd.NA] * n, dtype="boolean"), "latency_ms": latency_ms,
            "arrival_s": 0.0, "hop0_start_s": latency_ms / 1000.0}))
    summary = tally.summary(warmup_s=0.0, duration_s=1.0, deployments={}, price_per_replica_hour=0.0)
    for name in ("latency_ms", "wait_ms"):
        assert summary[name]["mean"] == pytest.approx(1499.5)
        assert summary[name]["p50"] == pytest.approx(1499.5) and summary[name]["max"] == pytest.approx(2999.0)


def test_the_tallys_waits_are_the_measured_requests_only():
    """The warm-up's requests (``measured`` False) are simulated but not measured: a wait of 500 ms
    among them leaves the wait distribution of the measured ones (10 ms each) as it is."""
    tally = Tally()
    measured = np.array([False, False, True, True, True, True])
    arrival_s = np.zeros(measured.size)
    tally.add(pd.DataFrame({
        "measured": measured, "dropped": False, "hit": True, "drop_reason": None, "route": "m", "hops": 1,
        "correct": pd.array([pd.NA] * measured.size, dtype="boolean"),
        "latency_ms": np.where(measured, 12.0, 502.0), "arrival_s": arrival_s,
        "hop0_start_s": np.where(measured, 0.010, 0.500)}))
    summary = tally.summary(warmup_s=0.0, duration_s=1.0, deployments={}, price_per_replica_hour=0.0)
    assert summary["wait_ms"]["mean"] == pytest.approx(10.0) and summary["wait_ms"]["max"] == pytest.approx(10.0)
    assert summary["latency_ms"]["max"] == pytest.approx(12.0)
