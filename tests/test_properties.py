"""Invariants of the engine over small random scenarios (Hypothesis), checked from the request table.

Hand-picked scenarios test one rule where it matters; these test that the rules hold everywhere a
small scenario can reach: any arrival rate, batch size, wait timeout, replica count, queue order,
balancer, deadline mix, queue bound and expiry setting. Each invariant is recomputed here from the
raw times in the request table (batches are the groups of requests sharing a replica and a start),
not read back from the code that produced them. Examples are derandomized so a run is repeatable,
and no example database is written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from conftest import simulate
from traces.scenario import scenario_from_dict
from sim.core.workload import make_workload

if not os.getenv("HYPOTHESIS_STORAGE_DIRECTORY"):  # keep Hypothesis's caches out of the working tree
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "servesim-hypothesis")

EPS_S = 1e-9
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw) -> dict:
    """A one-deployment scenario of at most a few thousand arrivals. Each list starts with its most
    telling value (Hypothesis leans towards the first), so that batches form, queues grow and fill,
    and requests expire in most examples rather than in a few."""
    rate_rps = draw(st.sampled_from([1500.0, 300.0, 4000.0, 50.0]))
    duration_s = draw(st.sampled_from([0.5, 0.25, 1.0]))
    deadlines = draw(st.lists(st.sampled_from([2.0, 0.5, 5.0, 1.0, 20.0, 1e4]), min_size=1, max_size=3, unique=True))
    service = {"kind": draw(st.sampled_from(["exponential", "deterministic"])),
               "mean_ms": draw(st.sampled_from([1.0, 0.25, 4.0, 0.5, 2.0])),
               "per_item_ms": draw(st.sampled_from([0.25, 0.0, 1.0]))}
    dep = {"name": "d", "service": service,
           "replicas": draw(st.sampled_from([2, 1, 3])),
           "max_batch_size": draw(st.sampled_from([4, 1, 2, 3, 8])),
           "batch_wait_timeout_ms": draw(st.sampled_from([1.0, 0.0, 0.5, 3.0])),
           "queue": draw(st.sampled_from(["edf", "fifo"])),
           "max_queue_size": draw(st.sampled_from([0, 3, 1, 10])),
           "drop_expired": draw(st.sampled_from([True, False])),
           "balancer": draw(st.sampled_from(["shared", "least_loaded", "shared", "round_robin"]))}
    return {"seed": draw(st.integers(0, 2**16)), "duration_s": duration_s,
            "warmup_s": draw(st.sampled_from([0.125, 0.0, 0.25])) * duration_s,
            "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
            "requests": {"deadline_ms": deadlines, "weights": [1.0] * len(deadlines)},
            "deployments": [dep], "policy": {"name": "static"},
            "price_per_replica_hour": draw(st.sampled_from([3.0, 1.0, 0.5]))}


def run(raw: dict):
    requests, summary = simulate(raw)
    return scenario_from_dict(raw), requests, summary


def served(requests: pd.DataFrame) -> pd.DataFrame:
    return requests[requests["hop0_start_s"].notna()]


def batches(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per batch: replica, start_s, finish_s, size."""
    rows = served(requests).groupby(["hop0_replica", "hop0_start_s"], sort=True)
    out = rows.agg(finish_s=("hop0_finish_s", "first"), finish_max=("hop0_finish_s", "max"),
                   size=("id", "size"), recorded=("hop0_batch_size", "first")).reset_index()
    return out.rename(columns={"hop0_replica": "replica", "hop0_start_s": "start_s"})


def lines(dep: dict, requests: pd.DataFrame) -> list[np.ndarray]:
    """The waiting lines as boolean masks over requests: one shared line, or one per replica."""
    if dep["balancer"] == "shared":
        return [np.ones(len(requests), dtype=bool)]
    replica = requests["hop0_replica"].fillna(-1).to_numpy(dtype=np.int64)  # -1 or null: never served
    return [replica == r for r in range(dep["replicas"])]


@PROPERTY
@given(scenarios())
def test_batches_respect_their_maximum_and_never_overlap_on_a_replica(raw):
    _, requests, _ = run(raw)
    dep = raw["deployments"][0]
    table = batches(requests)
    assert (table["size"] <= dep["max_batch_size"]).all()
    assert (table["size"] == table["recorded"]).all()  # the recorded batch size is the batch's
    assert (table["finish_s"] == table["finish_max"]).all()  # a batch's requests finish together
    assert set(table["replica"]) <= set(range(dep["replicas"]))
    for _, mine in table.groupby("replica"):
        assert (mine["start_s"].to_numpy()[1:] >= mine["finish_s"].to_numpy()[:-1] - EPS_S).all()


@PROPERTY
@given(scenarios())
def test_no_request_waits_past_the_timeout_while_its_replica_is_idle(raw):
    """Once a request has waited the timeout, it waits on only while every replica of its line is busy."""
    _, requests, _ = run(raw)
    dep = raw["deployments"][0]
    timeout_s = dep["batch_wait_timeout_ms"] / 1000.0
    table = batches(requests)
    end_s = max(requests["arrival_s"].max(), table["finish_s"].max()) + 1.0
    for line, replicas in zip(lines(dep, requests), [range(dep["replicas"])] if dep["balancer"] == "shared"
                              else [[r] for r in range(dep["replicas"])]):
        waited = served(requests[line])
        overdue_from = waited["hop0_enqueue_s"].to_numpy() + timeout_s + EPS_S
        overdue_to = waited["hop0_start_s"].to_numpy() - EPS_S
        late = overdue_to > overdue_from
        waited, overdue_from, overdue_to = waited[late], overdue_from[late], overdue_to[late]
        for r in replicas:
            mine = table[table["replica"] == r]
            idle_from = np.concatenate([[0.0], mine["finish_s"].to_numpy()])
            idle_to = np.concatenate([mine["start_s"].to_numpy(), [end_s]])
            gap = idle_to > idle_from + EPS_S
            idle_from, idle_to = idle_from[gap], idle_to[gap]  # disjoint and in time order
            first = np.searchsorted(idle_to, overdue_from, side="right")  # the first gap ending after
            k = np.minimum(first, len(idle_to) - 1)
            idle_meanwhile = (first < len(idle_to)) & (idle_from[k] < overdue_to)
            assert not idle_meanwhile.any(), (r, waited.iloc[np.flatnonzero(idle_meanwhile)[:3]])


@PROPERTY
@given(scenarios())
def test_each_line_serves_in_its_queue_order(raw):
    """FIFO: starts never decrease in arrival order. EDF: a batch forming at t takes requests due no
    later than any that waited at t and was left (a request that later expired is not known to
    have waited then, so it is left out of the check)."""
    scenario, requests, _ = run(raw)
    dep = raw["deployments"][0]
    due = (requests["arrival_s"] + requests["deadline_ms"] / 1000.0).to_numpy()
    start = requests["hop0_start_s"].to_numpy()
    enqueue = requests["hop0_enqueue_s"].to_numpy()
    for line in lines(dep, requests):
        took = line & ~np.isnan(start)
        if dep["queue"] == "fifo":
            assert (np.diff(start[took]) >= 0).all()  # rows are in arrival (= id) order
            continue
        for t in np.unique(start[took]):
            chosen = took & (start == t)
            left = took & (enqueue < t) & (start > t)
            if left.any():
                assert due[chosen].max() <= due[left].min() + EPS_S


@PROPERTY
@given(scenarios())
def test_every_arrival_ends_exactly_once(raw):
    scenario, requests, _ = run(raw)
    dep = raw["deployments"][0]
    arrivals = make_workload(scenario, scenario.seed, 0).arrival_s
    assert np.array_equal(requests["arrival_s"].to_numpy(), arrivals)
    assert requests["id"].tolist() == list(range(len(arrivals)))
    dropped = requests["dropped"].to_numpy(dtype=bool)
    reasons = np.array([r if isinstance(r, str) else "" for r in requests["drop_reason"]], dtype=object)
    assert (requests["finish_s"].notna().to_numpy() == ~dropped).all()
    assert (reasons[~dropped] == "").all() and (reasons[dropped] != "").all()
    allowed = {"queue_full"} if dep["max_queue_size"] else set()
    allowed |= {"expired"} if dep["drop_expired"] else set()
    assert set(reasons[dropped]) <= allowed
    # a completed request was in exactly one batch and ended when it did; a dropped one in none
    assert (requests.loc[~dropped, "finish_s"] == requests.loc[~dropped, "hop0_finish_s"]).all()
    assert requests.loc[dropped, "hop0_start_s"].isna().all()
    assert (requests.loc[~dropped, "hop0_start_s"] >= requests.loc[~dropped, "arrival_s"]).all()
    if dep["drop_expired"]:
        still_due = requests["hop0_start_s"] < requests["arrival_s"] + requests["deadline_ms"] / 1000.0
        assert still_due[~dropped].all()


@PROPERTY
@given(scenarios())
def test_the_summary_agrees_with_the_request_table(raw):
    scenario, requests, summary = run(raw)
    dep = raw["deployments"][0]
    lo, hi = scenario.warmup_s, scenario.duration_s
    arrival = requests["arrival_s"].to_numpy()
    measured = (arrival >= lo) & (arrival < hi)
    assert (requests["measured"].to_numpy(dtype=bool) == measured).all()
    done = requests["finish_s"].notna().to_numpy()
    latency_ms = (requests["finish_s"] - requests["arrival_s"]).to_numpy() * 1000.0
    hit = done & (latency_ms <= requests["deadline_ms"].to_numpy())
    assert (requests["hit"].to_numpy(dtype=bool) == hit).all()
    assert summary["requests"] == measured.sum()
    assert summary["completed"] == (measured & done).sum()
    assert summary["dropped"] == (measured & ~done).sum()
    assert summary["completed"] + summary["dropped"] == summary["requests"]
    reasons = requests.loc[measured & ~done, "drop_reason"].value_counts().to_dict()
    assert summary["dropped_by_reason"] == {str(k): int(v) for k, v in reasons.items()}
    if measured.any():
        assert summary["hit_rate"] == pytest.approx(hit[measured].mean())
    assert summary["throughput_rps"] == pytest.approx((measured & done).sum() / (hi - lo))
    # utilisation: busy time clipped to the window over the replica-seconds in it, within [0, 1]
    table = batches(requests)
    busy_s = (np.minimum(table["finish_s"], hi) - np.maximum(table["start_s"], lo)).clip(lower=0).sum()
    replica_s = dep["replicas"] * (hi - lo)
    assert 0.0 <= summary["utilization"]["d"] <= 1.0
    assert summary["utilization"]["d"] == pytest.approx(busy_s / replica_s, abs=1e-9)
    assert summary["cost"]["replica_seconds"] == pytest.approx(replica_s)
    assert summary["cost"]["total"] == pytest.approx(replica_s * raw["price_per_replica_hour"] / 3600.0)
    inside = table[(table["start_s"] >= lo) & (table["start_s"] < hi)]
    if len(inside):
        assert summary["mean_batch_size"] == pytest.approx(inside["size"].mean())
