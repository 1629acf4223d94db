"""`analyse theory`: the queueing formulas against closed forms, the per-deployment report against a
hand-made run and a real M/M/c run, competitive ratios against a hand computation, and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from traces import queueing
from analysis.cli import main as analyse
from analysis.competitive import competitive_ratios, ratios_report
from analysis.runs import read_run
from analysis.theory import REPORT_MARKER, batch_service, run_theory

ROOT = Path(__file__).resolve().parents[1]


def erlang_c_by_sums(c: int, a: float) -> float:
    """The textbook Erlang C (README of shared/REFERENCE.md), with a^k / k! = e^a P(N = k), N ~ Poisson(a)."""
    top = stats.poisson.pmf(c, a) * c / (c - a)
    return top / (stats.poisson.cdf(c - 1, a) + top)


# --- formulas -----------------------------------------------------------------------------------

@pytest.mark.parametrize("c, a", [(1, 0.5), (2, 1.2), (4, 3.2), (8, 7.5), (50, 45.0), (300, 280.0)])
def test_erlang_c_is_the_textbook_sum(c, a):
    assert queueing.erlang_c(c, a) == pytest.approx(erlang_c_by_sums(c, a), rel=1e-9)


def test_mm1_wait_is_rho_over_mu_minus_lambda():
    for lam, mean_ms in ((100.0, 5.0), (400.0, 2.0), (10.0, 90.0)):
        mu = 1000.0 / mean_ms
        rho = lam / mu
        assert queueing.mmc_wait_ms(lam, mean_ms, 1) == pytest.approx(1000.0 * rho / (mu - lam))
        assert queueing.erlang_c(1, rho) == pytest.approx(rho)


@pytest.mark.parametrize("c, lam, mean_ms", [(2, 700.0, 2.0), (4, 1600.0, 2.0), (16, 150.0, 100.0)])
def test_mmc_wait_is_erlang_c_over_c_mu_minus_lambda(c, lam, mean_ms):
    mu = 1000.0 / mean_ms
    want_ms = 1000.0 * erlang_c_by_sums(c, lam / mu) / (c * mu - lam)
    assert queueing.mmc_wait_ms(lam, mean_ms, c) == pytest.approx(want_ms, rel=1e-9)


def test_allen_cunneen_is_pollaczek_khinchine_for_one_server():
    lam, mean_ms = 150.0, 5.0
    rho = lam * mean_ms / 1000.0
    # M/D/1: Wq = rho S / (2 (1 - rho))
    assert queueing.allen_cunneen_wait_ms(lam, mean_ms, 1, 1.0, 0.0) == pytest.approx(rho * mean_ms / (2 * (1 - rho)))
    # M/G/1: Wq = lambda E[S^2] / (2 (1 - rho)), E[S^2] = (1 + cv^2) E[S]^2
    for cs2 in (0.25, 2.25):
        second_s2 = (1 + cs2) * (mean_ms / 1000.0) ** 2
        want_ms = 1000.0 * lam * second_s2 / (2 * (1 - rho))
        assert queueing.allen_cunneen_wait_ms(lam, mean_ms, 1, 1.0, cs2) == pytest.approx(want_ms)
    # G/G/1 is Kingman's: rho / (1 - rho) (Ca^2 + Cs^2) / 2 E[S]
    assert queueing.allen_cunneen_wait_ms(lam, mean_ms, 1, 0.3, 0.5) == pytest.approx(
        rho / (1 - rho) * 0.4 * mean_ms)


def test_unstable_loads_have_no_finite_wait():
    assert queueing.mmc_wait_ms(500.0, 2.0, 1) == math.inf          # rho = 1
    assert queueing.allen_cunneen_wait_ms(3000.0, 2.0, 4, 0.5, 0.5) == math.inf
    assert queueing.erlang_c(4, 5.0) == 1.0
    full = queueing.BatchService(10.0, 0.1, 4.0, 20.0, 0.05, 8)
    est = queueing.batching_wait(500.0, 1, full, 1.0, 2.0)           # full batches: 500 * 20 ms / 8 = 1.25
    assert not est.stable and est.total_ms == math.inf and est.rho_full == pytest.approx(1.25)
    assert queueing.mmc_wait_ms(0.0, 2.0, 1) == 0.0


def test_batching_without_batches_is_allen_cunneen():
    service = queueing.BatchService(4.0, 0.6, 1.0, 4.0, 0.6, 1)
    est = queueing.batching_wait(600.0, 3, service, 1.3, timeout_ms=5.0)
    assert est.formation_ms == 0.0
    assert est.total_ms == pytest.approx(queueing.allen_cunneen_wait_ms(600.0, 4.0, 3, 1.3, 0.6), rel=1e-12)
    assert est.rho == est.rho_full == pytest.approx(0.8)


def test_batch_formation_wait_closed_forms():
    lam = 200.0
    # no timeout: a request waits for the (b - 1 - j) arrivals behind it, on average (b - 1) / (2 lambda)
    for b in (2, 4, 8):
        assert queueing.batch_formation_wait_ms(lam, b, math.inf) == pytest.approx(1000.0 * (b - 1) / (2 * lam))
    # b = 2, timeout T: the pair's total wait is E[min(T, X)] = (1 - e^{-lT}) / l, its size 2 - e^{-lT}
    t_s = 0.004
    p = math.exp(-lam * t_s)
    assert queueing.batch_formation_wait_ms(lam, 2, 1000.0 * t_s) == pytest.approx(1000.0 * (1 - p) / lam / (2 - p))
    assert queueing.batch_formation_wait_ms(lam, 1, 5.0) == 0.0
    assert queueing.batch_formation_wait_ms(lam, 8, 0.0) == 0.0


def test_batch_formation_wait_matches_a_direct_simulation():
    """Batches opened by an arrival, closed at the b-th arrival or after T: simulated with numpy."""
    lam, b, t_s = 300.0, 6, 0.008
    rng = np.random.default_rng(7)
    offsets = np.cumsum(rng.exponential(1 / lam, size=(200_000, b - 1)), axis=1)   # arrivals after the first
    close = np.minimum(t_s, offsets[:, -1])
    inside = offsets <= close[:, None]
    waits = close + np.where(inside, close[:, None] - offsets, 0.0).sum(axis=1)    # first + the others
    want_ms = 1000.0 * waits.sum() / (1 + inside.sum(axis=1)).sum()
    assert queueing.batch_formation_wait_ms(lam, b, 1000.0 * t_s) == pytest.approx(want_ms, rel=0.01)


# --- service moments ----------------------------------------------------------------------------

def test_service_moments_from_a_bundle_mix_the_sizes_served(tiny_bundle):
    config = {"bundle": str(tiny_bundle)}
    deployment = {"name": "x", "variant": "fast/int8/cpu", "max_batch_size": 4}
    # fast: a constant 2 ms at batch 1, 3 ms at 2, 5 ms at 4; two batches of 1, one of 2
    service, request_ms = batch_service(config, deployment, pd.Series({1: 2, 2: 1}), "x", {})
    mean = (2 * 2.0 + 3.0) / 3
    variance = (2 * 4.0 + 9.0) / 3 - mean**2
    assert service.mean_ms == pytest.approx(mean)
    assert service.cs2 == pytest.approx(variance / mean**2)
    assert service.mean_batch_size == pytest.approx(4 / 3)
    assert (service.full_mean_ms, service.full_cs2, service.max_batch_size) == (5.0, 0.0, 4)
    assert request_ms == pytest.approx((2 * 1 * 2.0 + 1 * 2 * 3.0) / 4)   # batches weighted by size
    between, _ = batch_service(config, deployment, pd.Series({3: 1}), "x", {})
    assert between.mean_ms == pytest.approx(4.0)                          # quantile-interpolated 3 and 5


def test_service_moments_of_a_parametric_service_are_analytic():
    deployment = {"name": "g", "service": {"kind": "gamma", "mean_ms": 2.0, "per_item_ms": 1.0, "cv": 0.5},
                  "max_batch_size": 4}
    service, request_ms = batch_service({}, deployment, pd.Series({1: 1, 3: 1}), "g", {})
    # sizes 1 and 3: means 2 and 4, variances (0.5 * mean)^2 = 1 and 4
    assert service.mean_ms == pytest.approx(3.0)
    assert service.cs2 == pytest.approx((0.5 * (1 + 4 + 4 + 16) - 9.0) / 9.0)
    assert (service.full_mean_ms, service.full_cs2) == (pytest.approx(5.0), pytest.approx(0.25))
    assert request_ms == pytest.approx((1 * 2.0 + 3 * 4.0) / 4)


# --- a hand-made run ----------------------------------------------------------------------------

def _hand_run(root: Path) -> Path:
    """Deployment a (deterministic 10 ms, one replica), then b for some: the window is [1, 5) s."""
    seed = root / "seed-1"
    seed.mkdir(parents=True)
    config = {"warmup_s": 1.0, "duration_s": 5.0, "deployments": [
        {"name": "a", "service": {"kind": "deterministic", "mean_ms": 10.0}, "replicas": 1, "max_batch_size": 1},
        {"name": "b", "service": {"kind": "exponential", "mean_ms": 20.0}, "replicas": 2, "max_batch_size": 1}]}
    (seed / "config.json").write_text(json.dumps(config))
    (seed / "summary.json").write_text(json.dumps({"seed": 1}))
    enqueue = np.array([0.5, 1.0, 1.05, 1.2, 1.3, 2.0, 2.5, 3.1, 4.0, 4.995])
    start = enqueue + np.array([0, 0, 0.005, 0, 0, 0.002, 0, 0, 0.001, 0.004])
    frame = pd.DataFrame({
        "arrival_s": enqueue, "deadline_ms": [50.0] * 5 + [100.0] * 5, "hops": [1, 1, 2, 2, 2, 1, 1, 1, 1, 1],
        "hop0_deployment": "a", "hop0_replica": 0, "hop0_enqueue_s": enqueue, "hop0_start_s": start,
        "hop0_finish_s": start + 0.01, "hop0_batch_size": 1,
        "hop1_deployment": [None, None, "b", "b", "b"] + [None] * 5,
        "hop1_replica": [None, None, 0, 1, None] + [None] * 5,
        "hop1_enqueue_s": [np.nan, np.nan, 1.065, 1.21, 1.31] + [np.nan] * 5,
        "hop1_start_s": [np.nan, np.nan, 1.065, 1.22, np.nan] + [np.nan] * 5,
        "hop1_finish_s": [np.nan, np.nan, 1.08, 1.25, np.nan] + [np.nan] * 5,
        "hop1_batch_size": [None, None, 1, 1, None] + [None] * 5,
        "drop_reason": ["", "", "", "", "queue_full"] + [""] * 5,
        "measured": enqueue >= 1.0})
    frame["hop1_replica"] = frame["hop1_replica"].astype("Int64")
    frame["hop1_batch_size"] = frame["hop1_batch_size"].astype("Int64")
    frame.to_parquet(seed / "requests.parquet")
    return root


def test_a_hand_made_run_gives_the_definitions(tmp_path):
    a, b = run_theory(read_run(_hand_run(tmp_path / "run")))
    joined = np.array([1.0, 1.05, 1.2, 1.3, 2.0, 2.5, 3.1, 4.0, 4.995])       # 0.5 is before the window
    assert a.offered_rps == pytest.approx(joined.size / 4.0)
    gaps = np.diff(joined)
    assert a.ca2 == pytest.approx(gaps.var() / gaps.mean() ** 2)
    assert a.simulated_wait.mean == pytest.approx(1000 * np.mean([0, 0.005, 0, 0, 0.002, 0, 0, 0.001, 0.004]))
    rho = a.offered_rps * 0.010                                                # deterministic: Cs^2 = 0
    assert a.wait.total_ms == pytest.approx(rho / (1 - rho) * a.ca2 / 2 * 10.0)  # Kingman
    assert b.offered_rps == pytest.approx(2 / 4.0)            # the full queue's rejection never joined
    assert b.simulated_wait.mean == pytest.approx(1000 * 0.01 / 2)
    assert any("earlier hop" in note for note in b.notes)
    # EDF check of a: class 50 ms and class 100 ms, each fits with t0 = 0
    assert [(d, fits) for d, _, _, _, fits in a.classes] == [(50.0, True), (100.0, True)]
    assert b.classes[0][1] == pytest.approx(1000 * np.mean([1.065 - 1.05, 1.21 - 1.2]))  # those that joined


# --- a real M/M/c run ---------------------------------------------------------------------------

def test_a_real_mmc_run_waits_what_erlang_c_says(tmp_path):
    out = tmp_path / "mmc"
    subprocess.run([sys.executable, "-m", "sim.cli", "run", str(ROOT / "examples/mmc.toml"), "--seeds", "1-3",
                    "--set", "duration_s=6", "--set", "warmup_s=1", "--out", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    runs = read_run(out)
    results = run_theory(runs)
    chunks = []
    for run, r in zip(runs, results):
        # the estimate is Erlang C at the run's own rate, scaled by (Ca^2 + 1) / 2
        lam = r.offered_rps
        want = 1000.0 * erlang_c_by_sums(4, lam / 500.0) / (4 * 500.0 - lam) * (r.ca2 + 1.0) / 2.0
        assert r.wait.total_ms == pytest.approx(want, rel=1e-9)
        req = run.requests
        req = req[req["measured"]].sort_values("hop0_enqueue_s")
        waits = 1000.0 * (req["hop0_start_s"] - req["hop0_enqueue_s"]).to_numpy()
        assert r.simulated_wait.mean == pytest.approx(waits.mean())
        chunks += [c.mean() for c in np.array_split(waits, 20)]
    # M/M/c is exact, so the only gap is sampling noise in the simulated mean. Means of 1/20 of a
    # 5 s window (about 400 requests per replica each) are nearly independent (the wait forgets its
    # start within tens of ms at rho 0.8), so a 99% t-interval from the 60 pooled chunk means holds
    # the true mean wait; the estimate (from the run's own rate, within ~1% of 1600/s) must lie in it,
    # and so must the exact Erlang C wait at the configured rate.
    chunks = np.asarray(chunks)
    half = stats.t.ppf(0.995, chunks.size - 1) * chunks.std(ddof=1) / math.sqrt(chunks.size)
    estimate = np.mean([r.wait.total_ms for r in results])
    assert abs(estimate - chunks.mean()) <= half, (estimate, chunks.mean(), half)
    assert abs(queueing.mmc_wait_ms(1600.0, 2.0, 4) - chunks.mean()) <= half


# --- competitive ratios -------------------------------------------------------------------------

def _results(policies=("planner", "iso", "oracle-static")) -> pd.DataFrame:
    names = {"planner": "planner", "iso": "isolation-bound", "oracle-static": "oracle-static"}
    ontime = {"planner": [0.90, 0.80, 0.85], "iso": [0.95, 1.00, 0.90], "oracle-static": [0.92, 0.84, 0.0]}
    rows = []
    for workload, shift in (("poisson", 0.0), ("bursty", -0.05)):
        for policy in policies:
            for seed in (1, 2, 3):
                value = ontime[policy][seed - 1] + (shift if ontime[policy][seed - 1] else 0.0)
                rows.append({"run_id": f"{workload}-{policy}-{seed}", "workload": workload, "policy": policy,
                             "seed": seed, "accuracy": 0.97, "hit_rate": 0.9, "ontime_accuracy": value,
                             "latency_ms.p99": 10.0, "policy.name": names[policy], "requests": 100})
    return pd.DataFrame(rows)


def test_competitive_ratios_are_paired_by_seed():
    ratios = competitive_ratios(_results())
    assert ratios.bounds == {"isolation-bound": "iso", "oracle-static": "oracle-static"} and not ratios.missing
    assert ratios.axes == ["workload"]
    row = {(key, policy): cells for key, policy, cells in ratios.rows}
    planner = np.array([0.90, 0.80, 0.85])
    by_hand = planner / np.array([0.95, 1.00, 0.90])
    got = row[(("poisson",), "planner")]["isolation-bound"]
    half = stats.t.ppf(0.975, 2) * by_hand.std(ddof=1) / math.sqrt(3)
    assert (got.mean, got.half_width, got.n) == (pytest.approx(by_hand.mean()), pytest.approx(half), 3)
    bursty = row[(("bursty",), "planner")]["isolation-bound"]
    assert bursty.mean == pytest.approx(np.mean((planner - 0.05) / (np.array([0.95, 1.00, 0.90]) - 0.05)))
    oracle = row[(("poisson",), "planner")]["oracle-static"]       # seed 3: the bound scored 0, left out
    assert oracle.n == 2 and oracle.mean == pytest.approx(np.mean([0.90 / 0.92, 0.80 / 0.84]))
    assert row[(("poisson",), "iso")]["isolation-bound"].mean == 1.0
    text = ratios_report(ratios)
    # seeds: those each ratio is over, 3 for isolation-bound and 2 for oracle-static (seed 3 scored 0)
    assert f"| poisson | planner | 3 / 2 | {by_hand.mean():.4f} ± {half:.4f} |" in text
    assert "| poisson | iso | 3 / 2 | 1.0000 ± 0.0000 |" in text


def test_a_missing_bound_is_one_line(tmp_path, capsys):
    only_iso = competitive_ratios(_results(("planner", "iso")))
    assert only_iso.missing == ["oracle-static"] and list(only_iso.bounds) == ["isolation-bound"]
    text = ratios_report(only_iso)
    assert text.count("oracle-static") == 1 and "ontime_accuracy / isolation-bound" in text
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _results(("planner",)).to_parquet(sweep / "results.parquet")
    assert analyse(["theory", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "No `isolation-bound` runs" in out and "No `oracle-static` runs" in out and "|" not in out


# --- the command --------------------------------------------------------------------------------

def test_out_writes_a_report_of_ours_and_replaces_it_only_with_force(tmp_path, capsys):
    run = _hand_run(tmp_path / "run")
    report = tmp_path / "theory.md"
    assert analyse(["theory", str(run), "--out", str(report)]) == 0
    text = report.read_text()
    assert text.startswith(REPORT_MARKER + "\n") and "## a" in text and "## b" in text
    assert analyse(["theory", str(run), "--out", str(report)]) == 2
    assert analyse(["theory", str(run), "--out", str(report), "--force"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("case", ["missing", "not-a-run", "bad-results", "policy-axis", "foreign-out", "no-hops"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    args = ["theory", str(tmp_path / "nothing")]
    if case == "not-a-run":
        (tmp_path / "empty").mkdir()
        args = ["theory", str(tmp_path / "empty")]
    elif case == "bad-results":
        pd.DataFrame({"seed": [1], "policy": ["x"]}).to_parquet(tmp_path / "results.parquet")
        args = ["theory", str(tmp_path / "results.parquet")]
    elif case == "policy-axis":
        _results().to_parquet(tmp_path / "results.parquet")
        args = ["theory", str(tmp_path), "--policy-axis", "router"]
    elif case == "foreign-out":
        (tmp_path / "mine.md").write_text("my notes\n")
        args = ["theory", str(_hand_run(tmp_path / "run")), "--out", str(tmp_path / "mine.md")]
    elif case == "no-hops":
        run = _hand_run(tmp_path / "run")
        pd.read_parquet(run / "seed-1/requests.parquet").drop(columns="hops").to_parquet(run / "seed-1/requests.parquet")
        args = ["theory", str(run)]
    assert analyse(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    if case == "foreign-out":
        assert (tmp_path / "mine.md").read_text() == "my notes\n"


def test_a_missing_axis_value_keeps_its_group():
    frame = _results()
    frame["workload"] = frame["workload"].replace({"bursty": None})
    ratios = competitive_ratios(frame)
    keys = {key for key, _, _ in ratios.rows}
    assert len(keys) == 2 and ("poisson",) in keys                         # the None group is not dropped
    assert all(cells["isolation-bound"].n == 3 for _, _, cells in ratios.rows)
