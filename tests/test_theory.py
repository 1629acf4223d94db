"""The engine against queueing theory (formulas in ../shared/REFERENCE.md).

Each case runs several independent seeds; the mean queueing wait of each seed is one observation,
and theory must lie inside a 99% Student-t confidence interval of their mean. The interval comes
from the runs themselves, so it widens where waits converge slowly (high load, heavy tails); a
relative floor of 3% keeps a lucky tight interval from demanding more precision than the run
length gives (runs of ~40k customers at rho 0.7 have a relative standard error of a few percent).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from conftest import simulate

SEEDS = range(1, 9)


def erlang_c_wait_s(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    top = a**c / math.factorial(c) * c / (c - a)
    prob_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return prob_wait / (c * mu - lam)


def pk_wait_s(lam: float, mean_s: float, cv: float) -> float:
    rho = lam * mean_s
    return lam * (1 + cv * cv) * mean_s**2 / (2 * (1 - rho))


def mean_waits_s(service: dict, replicas: int, rate_rps: float, duration_s: float) -> np.ndarray:
    raw = {"duration_s": duration_s, "warmup_s": duration_s * 0.1,
           "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
           "requests": {"deadline_ms": 1e9}, "policy": {"name": "static"},
           "deployments": [{"name": "q", "service": service, "replicas": replicas, "drop_expired": False}]}
    waits = []
    for seed in SEEDS:
        requests, _ = simulate(raw, seed=seed)
        measured = requests[requests["measured"]]
        waits.append((measured["hop0_start_s"] - measured["arrival_s"]).mean())
    return np.array(waits)


def assert_matches(waits_s: np.ndarray, theory_s: float) -> None:
    mean = waits_s.mean()
    half = stats.t.ppf(0.995, len(waits_s) - 1) * waits_s.std(ddof=1) / math.sqrt(len(waits_s))
    tolerance = max(half, 0.03 * theory_s)
    assert abs(mean - theory_s) <= tolerance, (
        f"simulated mean wait {mean * 1e3:.4f} ms vs theory {theory_s * 1e3:.4f} ms (tolerance {tolerance * 1e3:.4f} ms)")
    # and the interval is informative: narrower than a tenth of the value being checked
    assert half < 0.1 * theory_s


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mm1_mean_wait(rho):
    mean_ms = 1.0
    lam = rho / (mean_ms / 1000)
    mu = 1000 / mean_ms
    waits = mean_waits_s({"kind": "exponential", "mean_ms": mean_ms}, 1, lam, 60.0 if rho < 0.7 else 150.0)
    assert_matches(waits, rho / (mu - lam))


def test_md1_mean_wait():
    mean_ms, rho = 1.0, 0.7
    lam = rho / (mean_ms / 1000)
    waits = mean_waits_s({"kind": "deterministic", "mean_ms": mean_ms}, 1, lam, 60.0)
    assert_matches(waits, rho * (mean_ms / 1000) / (2 * (1 - rho)))


@pytest.mark.parametrize("kind", ["lognormal", "gamma"])
def test_mg1_pollaczek_khinchine(kind):
    mean_ms, rho, cv = 1.0, 0.7, 1.5
    lam = rho / (mean_ms / 1000)
    waits = mean_waits_s({"kind": kind, "mean_ms": mean_ms, "cv": cv}, 1, lam, 100.0)
    assert_matches(waits, pk_wait_s(lam, mean_ms / 1000, cv))


@pytest.mark.parametrize("servers", [2, 4])
def test_mmc_erlang_c(servers):
    mean_ms, rho = 2.0, 0.8
    mu = 1000 / mean_ms
    lam = rho * servers * mu
    waits = mean_waits_s({"kind": "exponential", "mean_ms": mean_ms}, servers, lam, 60.0)
    assert_matches(waits, erlang_c_wait_s(lam, mu, servers))


def test_utilization_and_throughput_match_offered_load():
    """Busy fraction of an M/M/2 equals rho and completions equal arrivals (no drops, no loss)."""
    raw = {"duration_s": 60.0, "warmup_s": 5.0, "arrivals": {"kind": "poisson", "rate_rps": 1200.0},
           "requests": {"deadline_ms": 1e9}, "policy": {"name": "static"},
           "deployments": [{"name": "q", "service": {"kind": "exponential", "mean_ms": 1.0}, "replicas": 2}]}
    requests, summary = simulate(raw, seed=3)
    assert summary["dropped"] == 0 and summary["completed"] == summary["requests"]
    assert summary["utilization"]["q"] == pytest.approx(0.6, abs=0.02)
    assert summary["throughput_rps"] == pytest.approx(1200.0, rel=0.03)
    assert summary["cost"]["replica_seconds"] == pytest.approx(2 * 55.0)
