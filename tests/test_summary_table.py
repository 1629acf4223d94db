"""The printed summary table (traces.summary.summary_table) and the cascade bookkeeping of a
whole table (route_hops_of, summarize), pinned cell by cell on hand-made summaries and tables.

The table is what ``simulate run`` and ``measure serve`` print: a row per seed, then (with more
than one seed) a mean row whose ± is the 95% Student-t half-width of the mean over seeds,
recomputed here with scipy; a missing value (None in a summary read back from JSON, or NaN)
prints as "-".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from traces.summary import COLUMNS, legend, route_hops_of, summarize, summary_table


def _summary(seed, requests, dropped, hit, acc, ontime, p50, p95, p99, tput, batch, cost) -> dict:
    return {"seed": seed, "requests": requests, "dropped": dropped, "hit_rate": hit, "accuracy": acc,
            "ontime_accuracy": ontime, "latency_ms": {"p50": p50, "p90": -1.0, "p95": p95, "p99": p99},
            "throughput_rps": tput, "mean_batch_size": batch, "cost": {"total": cost, "per_1k_requests": -1.0}}


ONE = _summary(1, 1000, 10, 0.9, 0.8125, 0.75, 12.3456, 30.5, 45.25, 99.0, 2.5, 0.0123)
TWO = _summary(2, 1002, 4, 0.95, None, 0.8, 10.0, 28.0, 40.75, 101.0, 3.0, 0.0125)


def _half_width(values, digits: int) -> str:
    values = np.asarray(values, dtype=float)
    n = len(values)
    return f"{stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n):.{digits}f}"


def test_one_seed_prints_its_row_right_aligned_under_the_header():
    assert summary_table([ONE]) == (
        "seed  requests  dropped     hit     acc  ontime  p50 ms  p95 ms  p99 ms   rps  batch    cost\n"
        "   1      1000       10  0.9000  0.8125  0.7500   12.35   30.50   45.25  99.0   2.50  0.0123")


def test_two_seeds_add_a_mean_row_with_the_student_t_half_width():
    table = summary_table([ONE, TWO])
    assert table == (
        "seed  requests  dropped            hit     acc         ontime       p50 ms       p95 ms       p99 ms"
        "         rps      batch           cost\n"
        "   1      1000       10         0.9000  0.8125         0.7500        12.35        30.50        45.25"
        "        99.0       2.50         0.0123\n"
        "   2      1002        4         0.9500       -         0.8000        10.00        28.00        40.75"
        "       101.0       3.00         0.0125\n"
        "mean                     0.9250±0.3177     -±-  0.7750±0.3177  11.17±14.90  29.25±15.88  43.00±28.59"
        "  100.0±12.7  2.75±3.18  0.0124±0.0013")
    # every ± above is t(0.975, n - 1) s / sqrt(n), recomputed from the two summaries
    mean_row = table.splitlines()[-1].split()[1:]
    for (_, _, path, digits), cell in zip(COLUMNS, mean_row):
        values = []
        for s in (ONE, TWO):
            for key in path:
                s = s[key]
            values.append(math.nan if s is None else s)
        mean, half = cell.split("±")
        if any(math.isnan(v) for v in values):
            assert (mean, half) == ("-", "-")
        else:
            assert mean == f"{np.mean(values):.{digits}f}" and half == _half_width(values, digits)


def test_three_seeds_use_two_degrees_of_freedom():
    hits = (0.9, 0.95, 0.7)
    rows = [_summary(i, 10, 0, hit, 0.5, 0.5, 1.0, 2.0, 3.0, 4.0, 1.0, 0.1) for i, hit in enumerate(hits)]
    mean_row = summary_table(rows).splitlines()[-1].split()
    assert mean_row[0] == "mean"
    assert mean_row[1] == f"{np.mean(hits):.4f}±{_half_width(hits, 4)}"
    assert _half_width(hits, 4) == "0.3286"  # 4.303 x 0.1323 / sqrt(3)
    assert mean_row[2] == "0.5000±0.0000"  # no spread, no width


def test_a_nan_prints_as_a_dash_like_a_missing_value():
    row = summary_table([{**ONE, "hit_rate": math.nan, "cost": {"total": None}}]).splitlines()[1].split()
    assert row[3] == "-" and row[-1] == "-" and row[4] == "0.8125"


# --- how far each route went, for a table that does not say ------------------------------------

def _requests(columns=("hop0_deployment", "hop1_deployment")) -> pd.DataFrame:
    """Two requests of the cascade f>s (one passed on to s), one of the single hop f (an empty
    hop-1 cell) and one of x>y that stopped at x (a missing hop-1 cell)."""
    frame = pd.DataFrame({
        "id": [0, 1, 2, 3], "route": ["f>s", "f>s", "f", "x>y"], "hops": [2, 1, 1, 1],
        "hop0_deployment": ["f", "f", "f", "x"], "hop1_deployment": ["s", None, "", None],
        "measured": [True] * 4, "dropped": [False] * 4, "drop_reason": [""] * 4, "hit": [True, True, False, True],
        "correct": pd.array([True, True, None, False], dtype="boolean"),
        "arrival_s": [1.0, 1.5, 2.0, 2.5], "hop0_start_s": [1.001, 1.502, 2.003, 2.504],
        "latency_ms": [5.0, 3.0, 4.0, 2.0]})
    return frame[[c for c in frame.columns if not c.endswith("_deployment")] + list(columns)]


def test_each_route_has_as_many_hops_as_its_requests_reached():
    assert route_hops_of(_requests()) == {"f>s": 2, "f": 1, "x>y": 1}
    # the order of the hop columns does not matter
    assert route_hops_of(_requests(("hop1_deployment", "hop0_deployment"))) == {"f>s": 2, "f": 1, "x>y": 1}
    # a table without routes has none
    assert route_hops_of(_requests().drop(columns=["route"])) == {}


def test_a_whole_table_is_summarised_with_the_routes_it_went_or_those_it_is_told():
    kwargs = dict(warmup_s=0.0, duration_s=4.0, deployments={}, price_per_replica_hour=1.0)
    found = summarize(_requests(), **kwargs)
    assert found["cascade"] == {"f>s": {"hop0": {"reached": 2, "passed_on": 1, "passed_on_share": 0.5}}}
    assert (found["requests"], found["completed"], found["hit_rate"]) == (4, 4, 0.75)
    assert found["accuracy"] == pytest.approx(2 / 3) and found["ontime_accuracy"] == 0.5
    told = summarize(_requests(), route_hops={"x>y": 2}, **kwargs)
    assert told["cascade"] == {"x>y": {"hop0": {"reached": 1, "passed_on": 0, "passed_on_share": 0.0}}}


def test_a_three_hop_cascade_counts_what_reached_each_hop():
    """Hop k is reached by the requests that went past hop k - 1: on a three-hop cascade the second
    hop's count leaves out those that stopped at the first (the two-hop tables cannot tell)."""
    frame = _requests()
    frame["route"], frame["hops"] = "a>b>c", [1, 2, 3, 3]
    found = summarize(frame, warmup_s=0.0, duration_s=4.0, deployments={}, price_per_replica_hour=1.0,
                      route_hops={"a>b>c": 3})
    assert found["cascade"] == {"a>b>c": {"hop0": {"reached": 4, "passed_on": 3, "passed_on_share": 0.75},
                                          "hop1": {"reached": 3, "passed_on": 2, "passed_on_share": 2 / 3}}}


def test_a_tally_sums_its_chunks():
    """The request log retires in chunks: every count is the sum over them, drops included."""
    from traces.summary import Tally

    frame = _requests()
    frame.loc[2, ["dropped", "drop_reason", "latency_ms", "hit"]] = [True, "expired", np.nan, False]
    tally = Tally(keep_values=True)
    for _ in range(3):
        tally.add(frame)
    found = tally.summary(warmup_s=0.0, duration_s=4.0, deployments={}, price_per_replica_hour=1.0)
    assert (found["requests"], found["completed"], found["dropped"]) == (12, 9, 3)
    assert found["dropped_by_reason"] == {"expired": 3} and found["hit_rate"] == 0.75


def test_the_legend_states_the_published_definitions_word_for_word():
    """What is printed under every summary table is the definitions the README publishes: a change
    of wording here is a change of what we tell users the numbers mean, so it is made on purpose."""
    one = ("hit: share of measured arrivals (those arriving in [warmup_s, duration_s)) completed by their deadline\n"
           "acc: correct / completed; ontime: correct and on time / measured arrivals; p50/p95/p99 ms: latency\n"
           "of completed requests; rps: completions per second; batch: mean batch size; cost: replica-hours x\n"
           "price_per_replica_hour (price units)")
    assert legend() == legend(1) == one
    assert legend(2) == one + "\n±: the 95% Student-t half-width of the mean over seeds"
