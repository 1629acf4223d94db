"""Slow spells: measured from the order of timed runs, replayed by the engine's service sampler."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sim.service import MeasuredSampler
from traces.bundle import TraceBundle
from traces.profiles import LatencyProfile, SlowSpells, measure_spells

SHARE, TAU_S, STEP_S = 0.6, 0.2, 0.005


def _timed_runs(n: int = 4000, share: float = SHARE, seed: int = 0):
    """Interleaved runs of sizes 1..8, STEP_S apart, whose normal scores have known spells."""
    rng = np.random.default_rng(seed)
    rho = math.exp(-STEP_S / TAU_S)
    level = np.empty(n)
    level[0] = rng.normal()
    for i in range(1, n):
        level[i] = rho * level[i - 1] + math.sqrt(1 - rho * rho) * rng.normal()
    z = math.sqrt(share) * level + math.sqrt(1 - share) * rng.normal(size=n)
    sizes = np.tile(np.arange(1, 9), n // 8)
    return sizes, np.exp(0.2 * z) * sizes, 1.7e9 + STEP_S * np.arange(n)


def test_spells_are_measured_from_the_order_of_runs():
    got = measure_spells(*_timed_runs())
    assert got.share == pytest.approx(SHARE, abs=0.1)
    assert got.tau_s == pytest.approx(TAU_S, rel=0.25)
    sizes, latency, started = _timed_runs(share=0.0)
    assert measure_spells(sizes, latency, started).none
    # the same runs shuffled in time have no spells
    order = np.random.default_rng(1).permutation(sizes.size)
    sizes, latency, _ = _timed_runs()
    assert measure_spells(sizes[order], latency[order], started).none


def test_sampler_keeps_each_sizes_distribution_and_replays_the_spells():
    grid = {1: np.linspace(1.0, 2.0, 101), 4: np.linspace(3.0, 5.0, 101)}
    profile = LatencyProfile(grid, measured=True, spells=SlowSpells(SHARE, TAU_S))
    sampler = MeasuredSampler(profile, 4, np.random.default_rng(7))
    n = 20000
    draws = np.array([sampler.draw_s(1 if i % 2 else 4, i * STEP_S) for i in range(n)]) * 1000.0
    for size, values in ((1, draws[1::2]), (4, draws[0::2])):  # marginals as measured
        assert stats.ks_2samp(values, grid[size]).pvalue > 0.01
    z = np.empty(n)
    for size, mask in ((1, np.arange(n) % 2 == 1), (4, np.arange(n) % 2 == 0)):
        z[mask] = stats.norm.ppf((np.searchsorted(grid[size], draws[mask]) + 0.5) / grid[size].size)
    for lag in (1, 10, 40):
        rho = np.corrcoef(z[:-lag], z[lag:])[0, 1]
        assert rho == pytest.approx(SHARE * math.exp(-lag * STEP_S / TAU_S), abs=0.06)
    independent = MeasuredSampler(LatencyProfile(grid, measured=True), 4, np.random.default_rng(7))
    plain = np.array([independent.draw_s(4, i * STEP_S) for i in range(4000)])
    assert abs(np.corrcoef(plain[:-1], plain[1:])[0, 1]) < 0.06


def test_a_bundle_with_run_times_has_spells_and_a_scenario_may_turn_them_off(tmp_path, tiny_bundle):
    from sim.core.prepare import check_against_bundle
    from traces.scenario import scenario_from_dict

    bundle = TraceBundle.load(tiny_bundle)
    assert bundle.slow_spells(bundle.variants[0]).none  # no run times: independent draws
    sizes, latency, started = _timed_runs()
    service = pd.DataFrame({"variant": "m/fp32/cpu", "model": "m", "precision": "fp32", "device": "cpu",
                            "batch_size": sizes, "latency_ms": latency, "started_at_s": started})
    service.loc[:7, "started_at_s"] = np.nan  # rows merged from a bundle that had no run times
    TraceBundle(meta={"name": "spells"}, service=service, predictions=bundle.predictions.iloc[:0]).save(tmp_path / "b")
    assert TraceBundle.load(tmp_path / "b").service["started_at_s"].isna().sum() == 8
    raw = {"duration_s": 1.0, "bundle": str(tmp_path / "b"), "arrivals": {"kind": "poisson", "rate_rps": 10.0},
           "requests": {"deadline_ms": 100.0}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "variant": "m/fp32/cpu", "max_batch_size": 8}]}
    spells = check_against_bundle(scenario_from_dict(raw)).profiles["m"].spells
    assert spells.share == pytest.approx(SHARE, abs=0.1)
    raw["deployments"][0]["slow_spells"] = False
    assert check_against_bundle(scenario_from_dict(raw)).profiles["m"].spells.none


# --- the fit, step by step against its definition ----------------------------------------------

def _fit_by_definition(group, latency_ms, started_s) -> SlowSpells:
    """measure_spells' docstring, written out run by run: normal scores rank / (n + 1) within each
    group, runs taken in time order (ties as given), lags 1..64 while at least 50 pairs lie in
    (0, 1] s and their correlation is above 0.05, a line through log(correlation)."""
    n = len(latency_ms)
    z = [0.0] * n
    for g in sorted(set(group)):
        members = [i for i in range(n) if group[i] == g]
        for i, rank in zip(members, stats.rankdata([latency_ms[i] for i in members])):
            z[i] = float(stats.norm.ppf(rank / (len(members) + 1)))
    order = sorted(range(n), key=lambda i: started_s[i])
    lags, logs = [], []
    for k in range(1, 65):
        pairs = [(order[j], order[j + k]) for j in range(n - k) if 0 < started_s[order[j + k]] - started_s[order[j]] <= 1.0]
        if len(pairs) < 50:
            break
        rho = np.corrcoef([z[a] for a, _ in pairs], [z[b] for _, b in pairs])[0, 1]
        if rho <= 0.05:
            break
        lags.append(np.mean([started_s[b] - started_s[a] for a, b in pairs]))
        logs.append(math.log(rho))
    if len(lags) < 3:
        return SlowSpells()
    slope, intercept = np.polyfit(lags, logs, 1)
    return SlowSpells() if slope >= 0 else SlowSpells(min(1.0, math.exp(intercept)), -1.0 / slope)


def _long_spells(n: int, step_s: float, tau_s: float, seed: int):
    rng = np.random.default_rng(seed)
    rho = math.exp(-step_s / tau_s)
    level = np.empty(n)
    level[0] = rng.normal()
    for i in range(1, n):
        level[i] = rho * level[i - 1] + math.sqrt(1 - rho * rho) * rng.normal()
    return np.exp(0.2 * (math.sqrt(0.7) * level + math.sqrt(0.3) * rng.normal(size=n)))


def _two_replicas_two_sittings():
    """Runs started two at a time (ties) 5 ms apart, correlated well past 64 runs, in two sittings
    100 s apart; sizes 1..4 interleaved; listed out of time order."""
    n = 4000
    started = 0.005 * (np.arange(n) // 2) + np.where(np.arange(n) >= n // 2, 100.0, 0.0)
    sizes = np.tile(np.arange(1, 5), n // 4)
    shuffled = np.random.default_rng(5).permutation(n)
    return sizes[shuffled], (_long_spells(n, 0.0025, 1.0, 3) * sizes)[shuffled], started[shuffled]


def _quarter_second_apart():
    """Runs exactly 0.25 s apart: lag 4 is exactly 1 s, lag 5 beyond the pairing window."""
    n = 2000
    return np.ones(n, dtype=int), _long_spells(n, 0.25, 2.0, 4), 0.25 * np.arange(n)


@pytest.mark.parametrize("runs", [_two_replicas_two_sittings, _quarter_second_apart])
def test_the_fit_follows_its_definition(runs):
    sizes, latency, started = runs()
    got = measure_spells(sizes, latency, started)
    want = _fit_by_definition(sizes.tolist(), latency.tolist(), started.tolist())
    assert not want.none
    assert got.share == pytest.approx(want.share, rel=1e-9) and got.tau_s == pytest.approx(want.tau_s, rel=1e-9)


def test_three_lags_of_fifty_pairs_are_enough_for_a_fit():
    # 53 runs 10 ms apart, latencies rising: lags 1, 2, 3 have 52, 51 and 50 pairs, lag 4 too few
    started = 0.01 * np.arange(53)
    latency = 1.0 + 0.01 * np.arange(53) + 0.002 * np.sin(np.arange(53))
    got = measure_spells(np.ones(53, dtype=int), latency, started)
    want = _fit_by_definition([1] * 53, latency.tolist(), started.tolist())
    assert isinstance(got, SlowSpells) and not want.none
    assert got.share == pytest.approx(want.share, rel=1e-9) and got.tau_s == pytest.approx(want.tau_s, rel=1e-9)
    # one run fewer: two lags of at least fifty pairs, no fit
    assert measure_spells(np.ones(52, dtype=int), latency[:52], started[:52]) == SlowSpells()


def test_whole_millisecond_latencies_and_single_precision_times_fit_as_float64():
    sizes, latency, started = _timed_runs()
    whole_ms = np.round(latency * 100).astype(np.int64)  # latencies in integer units
    assert measure_spells(sizes, whole_ms, started) == measure_spells(sizes, whole_ms.astype(np.float64), started)
    relative = (started - started[0]).astype(np.float32)  # seconds from the run's start, single precision
    assert measure_spells(sizes, latency, relative) == measure_spells(sizes, latency, relative.astype(np.float64))
