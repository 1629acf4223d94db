"""Dynamic batching against results derivable by hand: Poisson arrivals into one replica whose
service is short enough (1 us) that it is free whenever a batch is ready, so every wait is the
batcher's own.

- Without a timeout that fires first, a batch leaves when its b-th request arrives: the request
  at position j (0-based, by arrival) waits for the b - 1 - j arrivals after it, a Gamma(b-1-j, lam)
  time, of mean (b - 1 - j) / lam.
- With a timeout T, a batch leaves T after its first request arrives or at its b-th arrival,
  whichever is first: its size is 1 + min(N, b - 1), N ~ Poisson(lam T), so its mean is
  1 + sum_{k=1}^{b-1} P(N >= k), and the first request waits min(T, Gamma(b - 1, lam)).

Each check pools several seeds; the interval is a 99% normal interval from the sample itself.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from conftest import simulate

SERVICE = {"kind": "deterministic", "mean_ms": 0.001}
RATE = 500.0
SEEDS = range(1, 5)


def _batched(max_batch: int, timeout_ms: float, seed: int):
    raw = {"duration_s": 40.0, "warmup_s": 2.0, "arrivals": {"kind": "poisson", "rate_rps": RATE},
           "requests": {"deadline_ms": 1e9}, "policy": {"name": "static"},
           "deployments": [{"name": "b", "service": SERVICE, "max_batch_size": max_batch,
                            "batch_wait_timeout_ms": timeout_ms, "drop_expired": False}]}
    requests, _ = simulate(raw, seed=seed)
    requests = requests[requests["measured"]]
    batches = requests.groupby("hop0_start_s", sort=True)
    return requests, batches


def _within(values: np.ndarray, expected: float) -> bool:
    half = 2.576 * values.std(ddof=1) / math.sqrt(values.size)
    return abs(values.mean() - expected) <= half


def test_full_batches_wait_for_the_arrivals_behind_them():
    b = 4
    by_position = {j: [] for j in range(b)}
    for seed in SEEDS:
        _, batches = _batched(b, timeout_ms=1e6, seed=seed)
        for _, batch in batches:
            if len(batch) != b:
                continue  # the window's edges cut a batch
            waits = (batch["hop0_start_s"] - batch["arrival_s"]).sort_index().to_numpy()
            for j, wait in enumerate(waits):
                by_position[j].append(wait)
    for j, waits in by_position.items():
        waits = np.asarray(waits)
        assert waits.size > 1000
        assert _within(waits, (b - 1 - j) / RATE), (j, waits.mean(), (b - 1 - j) / RATE)
    last = np.asarray(by_position[b - 1])
    assert last.max() < 1e-6  # the b-th arrival leaves at once


def test_a_timeout_closes_the_batch_that_fills_too_slowly():
    b, timeout_ms = 6, 4.0
    lam_t = RATE * timeout_ms / 1000.0  # 2 arrivals expected within the timeout
    want_size = 1 + sum(stats.poisson.sf(k - 1, lam_t) for k in range(1, b))
    sizes, first_waits = [], []
    for seed in SEEDS:
        _, batches = _batched(b, timeout_ms, seed)
        for _, batch in batches:
            sizes.append(len(batch))
            batch = batch.sort_index()
            first_waits.append(batch["hop0_start_s"].iloc[0] - batch["arrival_s"].iloc[0])
    sizes, first_waits = np.asarray(sizes, dtype=float), np.asarray(first_waits)
    assert _within(sizes, want_size), (sizes.mean(), want_size)
    assert first_waits.max() <= timeout_ms / 1000.0 + 1e-9  # never past the timeout
    # E[min(T, Gamma(b-1, lam))] = T P(G > T) + E[G; G <= T], G ~ Gamma(b - 1, scale 1/lam)
    t, g = timeout_ms / 1000.0, stats.gamma(b - 1, scale=1 / RATE)
    want_wait = t * g.sf(t) + (b - 1) / RATE * stats.gamma(b, scale=1 / RATE).cdf(t)
    assert _within(first_waits, want_wait), (first_waits.mean(), want_wait)
