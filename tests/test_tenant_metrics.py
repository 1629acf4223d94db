"""Per-tenant metrics (traces.tenant_metrics) on hand-built request tables.

Expected values come from hand arithmetic on tiny schedules, from traces.summary (one tenant must
get exactly the whole-run figures), or from a brute-force evaluation of the service gap on an
integer time grid; the gap tests also show that crediting service at a hop's finish instead of
over its service interval would give a different answer.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from traces.errors import InputError
from traces.summary import summarize
from traces.tenant_metrics import attribute_replica_seconds, fairness, jain_index, tenant_summary

WINDOW = (0.0, 100.0)
COLUMNS = ["tenant", "arrival_s", "measured", "hit", "dropped", "drop_reason", "latency_ms", "finish_s", "hops",
           "hop0_deployment", "hop0_enqueue_s", "hop0_start_s", "hop0_finish_s", "hop0_batch_size"]


def table(hops: list[tuple], *, window_s=WINDOW, **extra) -> pd.DataFrame:
    """One single-hop request per ``(tenant, enqueue_s, start_s, finish_s, batch_size[, deployment])``
    (NaN start: never served); it arrives at its enqueue and completes on time when served."""
    rows = []
    for tenant, enqueue, start, finish, size, *dep in hops:
        served = not math.isnan(start)
        rows.append({"tenant": tenant, "arrival_s": enqueue, "measured": window_s[0] <= enqueue < window_s[1],
                     "hit": served, "dropped": not served, "drop_reason": "" if served else "expired",
                     "latency_ms": (finish - enqueue) * 1e3 if served else math.nan,
                     "finish_s": finish if served else math.nan, "hops": 1,
                     "hop0_deployment": dep[0] if dep else "d", "hop0_enqueue_s": enqueue, "hop0_start_s": start,
                     "hop0_finish_s": finish, "hop0_batch_size": size if served else math.nan})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["correct"] = pd.array([None] * len(frame), dtype="boolean")
    return frame.assign(**extra)


def random_table(rng: np.random.Generator, n: int, tenants: list[str]) -> pd.DataFrame:
    """A two-hop table with drops, late completions and unknown predictions (not a consistent
    schedule: the figures only need the columns)."""
    arrival = rng.uniform(0, 10, n)
    dropped = rng.random(n) < 0.2
    wait = rng.exponential(0.05, n)
    service = rng.uniform(0.01, 0.1, n)
    second = rng.random(n) < 0.4
    latency = np.where(dropped, np.nan, (wait + service) * 1e3 * np.where(second, 2, 1))
    correct = pd.array(np.where(rng.random(n) < 0.3, None, rng.random(n) < 0.8), dtype="boolean")
    correct[dropped] = pd.NA
    frame = pd.DataFrame({
        "tenant": rng.choice(tenants, n), "arrival_s": arrival, "measured": arrival >= 2.0,
        "dropped": dropped, "drop_reason": np.where(dropped, rng.choice(["expired", "queue_full", "quota"], n), ""),
        "hit": ~dropped & (latency < 120), "latency_ms": latency, "correct": correct,
        "route": np.where(second, "a@0.5>b", "a"), "hops": np.where(second, 2, 1),
        "hop0_deployment": "a", "hop0_enqueue_s": arrival, "hop0_start_s": arrival + wait,
        "hop0_finish_s": arrival + wait + service, "hop0_batch_size": rng.integers(1, 5, n).astype(float),
        "hop1_deployment": np.where(second, "b", None),
        "hop1_enqueue_s": np.where(second, arrival + wait + service, np.nan)})
    frame["hop1_start_s"] = frame["hop1_enqueue_s"] + wait
    frame["hop1_finish_s"] = frame["hop1_start_s"] + service
    frame["hop1_batch_size"] = np.where(second, 2.0, np.nan)
    frame.loc[dropped, ["hop0_start_s", "hop0_finish_s", "hop0_batch_size"]] = np.nan
    frame.loc[dropped, ["hop1_deployment", "hop1_enqueue_s", "hop1_start_s", "hop1_finish_s", "hop1_batch_size"]] = None
    frame["finish_s"] = np.where(dropped, np.nan, arrival + latency / 1e3)
    return frame


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, recursively."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


# --- one tenant is the whole run ---------------------------------------------------------------

def test_one_tenant_gets_exactly_the_whole_run_figures():
    frame = random_table(np.random.default_rng(7), 400, ["only"])
    replica_s = {"a": 23.7, "b": 11.3}
    deployments = {d: {"replica_seconds": s, "batches": 1, "mean_batch_size": 1.0, "utilization": 0.5}
                   for d, s in replica_s.items()}
    whole = summarize(frame, warmup_s=2.0, duration_s=10.0, deployments=deployments, price_per_replica_hour=1.7)
    mine = tenant_summary(frame, tenants=["only"], window_s=(2.0, 10.0), replica_seconds=replica_s,
                          price_per_replica_hour=1.7)["only"]
    assert whole["dropped"] > 0 and not math.isnan(whole["accuracy"])  # the table exercises them
    for key in ("requests", "completed", "dropped", "dropped_by_reason", "hit_rate", "accuracy", "ontime_accuracy",
                "latency_ms", "wait_ms", "throughput_rps", "offered_rps"):
        assert same(mine[key], whole[key]), key
    assert mine["replica_seconds"] == whole["cost"]["replica_seconds"]
    assert mine["cost"]["total"] == whole["cost"]["total"] == mine["cost"]["replica"]
    assert mine["cost"]["per_1k_requests"] == whole["cost"]["per_1k_requests"]
    hits = int((frame["measured"] & frame["hit"]).sum())
    assert mine["goodput_rps"] == pytest.approx(hits / 8.0)


def test_tenants_partition_the_counts():
    frame = random_table(np.random.default_rng(3), 300, ["x", "y", "z"])
    out = tenant_summary(frame, tenants=["z", "x", "y"], window_s=(2.0, 10.0), replica_seconds={"a": 5.0, "b": 2.0},
                         price_per_replica_hour=1.0)
    assert list(out) == ["z", "x", "y"]
    for key in ("requests", "completed", "dropped"):
        assert sum(t[key] for t in out.values()) == int(((frame["measured"]) & (
            ~frame["dropped"] if key == "completed" else frame["dropped"] if key == "dropped" else True)).sum())
    assert sum(t["replica_seconds"] for t in out.values()) == pytest.approx(7.0, rel=1e-12)
    for name, t in out.items():
        mine = frame[frame["tenant"] == name]
        assert t["hit_rate"] == pytest.approx((mine["measured"] & mine["hit"]).sum() / mine["measured"].sum())


# --- service and attribution, by hand ---------------------------------------------------------------

def shared_batches() -> pd.DataFrame:
    """Window [1, 9). On d: a batch [2, 4) of x and y; a batch [4, 5) of x, x, y; a batch [5, 6) of
    y alone; x's batch [0.5, 1.5) started before the window and counts for nothing. On e: y alone
    over [2, 3)."""
    return table([("x", 2, 2, 4, 2), ("y", 2, 2, 4, 2), ("x", 3, 4, 5, 3), ("x", 3, 4, 5, 3), ("y", 3, 4, 5, 3),
                  ("y", 5, 5, 6, 1), ("x", 0.5, 0.5, 1.5, 1), ("y", 2, 2, 3, 1, "e")], window_s=(1.0, 9.0))


def test_a_batch_is_split_evenly_and_replica_time_by_service():
    out = tenant_summary(shared_batches(), tenants=["x", "y"], window_s=(1.0, 9.0),
                         replica_seconds={"d": 10.0, "e": 3.0, "idle": 6.0}, price_per_replica_hour=3.6,
                         price_per_1k_requests={"x": 2.0})
    x, y = out["x"], out["y"]
    assert x["service_seconds"] == pytest.approx(1 + 2 / 3) and y["service_seconds"] == pytest.approx(1 + 1 / 3 + 1 + 1)
    # d by service on d (5:7), e all y's, "idle" served nobody: by service on all deployments (5:10)
    assert x["replica_seconds"] == pytest.approx(10 * 5 / 12 + 6 * 5 / 15)
    assert y["replica_seconds"] == pytest.approx(10 * 7 / 12 + 3.0 + 6 * 10 / 15)
    assert x["replica_seconds"] + y["replica_seconds"] == pytest.approx(19.0, rel=1e-15)
    assert x["requests"] == 3  # the one that arrived at 0.5 is not measured
    assert x["cost"]["replica"] == pytest.approx(x["replica_seconds"] / 3600 * 3.6)
    assert x["cost"]["requests"] == pytest.approx(3 / 1000 * 2.0) and y["cost"]["requests"] == 0.0
    for t in (x, y):
        assert t["cost"]["total"] == t["cost"]["replica"] + t["cost"]["requests"]
        assert t["cost"]["per_1k_requests"] == pytest.approx(t["cost"]["total"] * 1000 / t["requests"])


def test_attribution_falls_back_to_service_then_requests_then_equal_shares():
    service = np.array([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # the last deployment served nobody: 3:2
    assert attribute_replica_seconds(service, np.array([8.0, 2.0, 5.0]), np.array([1, 1])) == pytest.approx([9.0, 6.0])
    none = np.zeros((3, 1))
    assert attribute_replica_seconds(none, np.array([6.0]), np.array([1, 2, 0])) == pytest.approx([2.0, 4.0, 0.0])
    assert attribute_replica_seconds(none, np.array([6.0]), np.array([0, 0, 0])) == pytest.approx([2.0, 2.0, 2.0])


def test_a_tenant_without_requests():
    out = tenant_summary(shared_batches(), tenants=["x", "y", "quiet"], window_s=(1.0, 9.0),
                         replica_seconds={"d": 10.0, "e": 2.0}, price_per_replica_hour=1.0)
    quiet = out["quiet"]
    assert quiet["requests"] == quiet["completed"] == 0 and quiet["dropped_by_reason"] == {}
    assert math.isnan(quiet["hit_rate"]) and math.isnan(quiet["latency_ms"]["p99"])
    assert quiet["goodput_rps"] == 0.0 and quiet["service_seconds"] == 0.0 and quiet["replica_seconds"] == 0.0
    assert quiet["cost"]["total"] == 0.0 and math.isnan(quiet["cost"]["per_1k_requests"])
    nobody = tenant_summary(table([]).astype({"tenant": object}), tenants=["p", "q"], window_s=(0.0, 1.0),
                            replica_seconds={"d": 4.0}, price_per_replica_hour=1.0)
    assert [t["replica_seconds"] for t in nobody.values()] == [2.0, 2.0]


def test_bad_input_is_named():
    frame = shared_batches()
    with pytest.raises(InputError, match="requests.tenant"):
        tenant_summary(frame, tenants=["x"], window_s=(1.0, 9.0), replica_seconds={"d": 1.0}, price_per_replica_hour=1)
    with pytest.raises(InputError, match="replica_seconds"):
        tenant_summary(frame, tenants=["x", "y"], window_s=(1.0, 9.0), replica_seconds={}, price_per_replica_hour=1)
    with pytest.raises(InputError, match="price_per_1k_requests.w"):
        tenant_summary(frame, tenants=["x", "y"], window_s=(1.0, 9.0), replica_seconds={"d": 1.0},
                       price_per_replica_hour=1, price_per_1k_requests={"w": 1.0})
    with pytest.raises(InputError, match="weights.y"):
        fairness(frame, weights={"x": 1.0, "y": 0.0}, window_s=(1.0, 9.0))


# --- Jain's index --------------------------------------------------------------------------------

def test_jain_index_hand_values():
    assert jain_index([1, 1]) == 1.0 and jain_index([1, 0]) == 0.5 and jain_index([5, 0, 0, 0]) == 0.25
    assert jain_index([1, 2, 3]) == pytest.approx(36 / (3 * 14))
    assert math.isnan(jain_index([])) and math.isnan(jain_index([0, 0]))


def test_jain_index_divides_service_by_weight():
    frame = table([("x", 0, 0, 2, 1), ("y", 0, 2, 3, 1)])  # x 2 s of service, y 1 s
    assert fairness(frame, weights={"x": 2.0, "y": 1.0}, window_s=WINDOW)["jain_index"] == 1.0
    even = fairness(frame, weights={"x": 1.0, "y": 1.0}, window_s=WINDOW)
    assert even["jain_index"] == pytest.approx(9 / (2 * 5)) and even["normalised_service_s"] == {"x": 2.0, "y": 1.0}


# --- the service gap -----------------------------------------------------------------------------

def one_server(order: str) -> list[tuple]:
    """Requests all queued at 0 on one server, served one a second in ``order`` (e.g. "ABAB")."""
    return [(t, 0.0, float(k), float(k + 1), 1) for k, t in enumerate(order)]


def test_alternating_service_has_a_gap_of_one_request():
    out = fairness(table(one_server("ABABAB")), weights={"A": 1.0, "B": 1.0}, window_s=WINDOW)
    assert out["max_service_gap_s"] == pytest.approx(1.0) and out["max_service_gap_pair"] == ["A", "B"]


def test_three_in_a_row_while_the_other_waits():
    # A waits over [0, 6) (its last starts at 6), B over [0, 7): both over [0, 6). A gets 4 s, B 2 s,
    # with D back at 0 at t = 4: the gap is 2. Credited at the finishes inside [0, 6) it would be 1
    # (A4 ends at 6, when A stops waiting).
    frame = table(one_server("ABABAAAB"))
    assert fairness(frame, weights={"A": 1.0, "B": 1.0}, window_s=WINDOW)["max_service_gap_s"] == pytest.approx(2.0)
    # weights 2:1: D = W_A/2 - W_B is 0, .5, -.5, 0, -1, -.5, 0 at t = 0..6
    assert fairness(frame, weights={"A": 2.0, "B": 1.0}, window_s=WINDOW)["max_service_gap_s"] == pytest.approx(1.5)
    # the window cuts the interval to [0, 5): D from 0 to 1 (with 0 and 1 both seen before 5)
    assert fairness(frame, weights={"A": 1.0, "B": 1.0}, window_s=(0.0, 5.0))["max_service_gap_s"] == pytest.approx(1.0)


def test_a_tenant_that_is_not_backlogged_does_not_count():
    # C is served at once on its own deployment (it never waits): 6 s of service, no gap with anyone
    frame = table(one_server("ABABAAAB") + [("C", 0.0, 0.0, 6.0, 1, "own")])
    out = fairness(frame, weights={"A": 1.0, "B": 1.0, "C": 1.0}, window_s=WINDOW)
    assert out["max_service_gap_s"] == pytest.approx(2.0) and out["max_service_gap_pair"] == ["A", "B"]
    # ... but C's request that expired unserved (deadline 3 s) kept C waiting over [0, 3), while A,
    # waiting too over [0, 3), got 3 s
    expired = table(one_server("AAAA") + [("C", 0.0, math.nan, math.nan, 1)], deadline_ms=3000.0)
    out = fairness(expired, weights={"A": 1.0, "C": 1.0}, window_s=WINDOW)
    assert out["max_service_gap_pair"] == ["A", "C"] and out["max_service_gap_s"] == pytest.approx(3.0)
    without = fairness(expired.drop(columns="deadline_ms"), weights={"A": 1.0, "C": 1.0}, window_s=WINDOW)
    assert without["max_service_gap_s"] == 0.0  # the table does not say how long it waited


def test_no_pairs_and_no_overlap():
    alone = fairness(table(one_server("AAA")), weights={"A": 1.0}, window_s=WINDOW)
    assert math.isnan(alone["max_service_gap_s"]) and alone["max_service_gap_pair"] is None
    assert alone["jain_index"] == 1.0
    apart = fairness(table([("A", 0.0, 0.0, 1.0, 1), ("B", 5.0, 5.0, 6.0, 1)]), weights={"A": 1.0, "B": 1.0},
                     window_s=WINDOW)
    assert apart["max_service_gap_s"] == 0.0 and apart["max_service_gap_pair"] is None
    nobody = fairness(table([]).astype({"tenant": object}), weights={}, window_s=WINDOW)
    assert math.isnan(nobody["jain_index"]) and math.isnan(nobody["max_service_gap_s"])


def brute_force_gap(frame: pd.DataFrame, weights: dict[str, float], window_s: tuple[int, int]) -> float:
    """The gap on the integer grid: waits and services start and end on integers, so a cell
    [t, t+1) is backlogged or not throughout and D is linear between integers."""
    lo, hi = window_s
    cells = np.arange(lo, hi) + 0.5
    until = np.where(frame["hop0_start_s"].notna(), frame["hop0_start_s"],
                     frame["arrival_s"] + frame["deadline_ms"] / 1e3)
    until = np.where(frame["drop_reason"] == "expired", until, frame["hop0_start_s"])

    def waiting(name):
        mine = (frame["tenant"] == name).to_numpy()
        return ((frame["hop0_enqueue_s"].to_numpy()[mine][:, None] <= cells)
                & (cells < until[mine][:, None])).any(axis=0)

    def w(name, t):
        mine = frame[(frame["tenant"] == name) & frame["hop0_finish_s"].notna()]
        s, f = mine["hop0_start_s"].to_numpy(), mine["hop0_finish_s"].to_numpy()
        share = (f - s) / mine["hop0_batch_size"].to_numpy()
        return float((share * np.clip((t - s) / (f - s), 0, 1)).sum()) / weights[name]

    best = 0.0
    for i, j in itertools.combinations(weights, 2):
        both = waiting(i) & waiting(j)
        for first, run in itertools.groupby(enumerate(both), key=lambda c: c[1]):
            if first:
                cells_in = [c for c, _ in run]
                d = [w(i, t) - w(j, t) for t in range(lo + cells_in[0], lo + cells_in[-1] + 2)]
                best = max(best, max(d) - min(d))
    return best


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_gap_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    hops = []
    for _ in range(40):
        enqueue = int(rng.integers(0, 20))
        start = enqueue + int(rng.integers(0, 5))
        served = rng.random() < 0.85
        hops.append((str(rng.choice(["A", "B", "C"])), float(enqueue), float(start) if served else math.nan,
                     float(start + rng.integers(1, 4)) if served else math.nan, int(rng.integers(1, 4))))
    frame = table(hops, deadline_ms=1000.0 * rng.integers(0, 4, len(hops)))
    weights = {"A": 1.0, "B": float(rng.choice([0.5, 1.0, 2.0])), "C": 3.0}
    window = (int(rng.integers(0, 4)), int(rng.integers(14, 25)))
    expected = brute_force_gap(frame, weights, window)
    assert expected > 0  # the schedule has contention
    assert fairness(frame, weights=weights, window_s=window)["max_service_gap_s"] == pytest.approx(expected, rel=1e-9)
