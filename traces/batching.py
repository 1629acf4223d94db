"""Closed forms of the dynamic batcher's timeout rule, shared by the policies and the analysis.

A batch that opens on an idle replica leaves when ``b`` requests wait or its first request has
waited the timeout ``T``, whichever comes first (``sim/core/batcher.py``). With Poisson arrivals
of rate lambda, the arrivals after the first in ``[0, t]`` number N(t) ~ Poisson(lambda t), and the
batch closes at tau = min(T, time of the (b-1)-th of them). So:

- its size is 1 + min(b - 1, N(T)), of mean E[K] = 1 + sum_{k=1}^{b-1} P(N(T) >= k)
  (``timeout_batch_mean``);
- its requests wait, together, E[sum of waits] = int_0^T sum_{k=0}^{b-2} (k + 1) P(N(t) = k) dt
  = sum_{k=0}^{b-2} (k + 1) P(N(T) >= k + 1) / lambda (before t, the k arrivals so far and the
  first request are all still waiting, as long as k <= b - 2), so a request waits
  E[sum] / E[K] on average (``batch_formation_wait_ms``). With no timeout this is (b - 1) / (2 lambda).

``policies.estimates`` builds the batch a loaded deployment forms on the first;
``traces.queueing`` adds the second to a request's predicted wait.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def timeout_batch_mean(rate_rps: float, max_batch_size: int, timeout_ms: float) -> float:
    """Mean size of a batch that opens on an idle replica and closes at ``max_batch_size``
    requests or after ``timeout_ms``: 1 + E[min(b - 1, N(T))]; 1 for batches of one, no timeout or
    no traffic; ``timeout_ms = inf`` waits for full batches."""
    if max_batch_size <= 1 or timeout_ms <= 0 or rate_rps <= 0:
        return 1.0
    if math.isinf(timeout_ms):
        return float(max_batch_size)
    mean_arrivals = rate_rps * timeout_ms / 1000.0
    # sum_{k=1}^{b-1} P(N >= k), with the pmf walked up from P(N = 0) (no scipy call per request)
    pmf, below, total = math.exp(-mean_arrivals), 0.0, 0.0
    for k in range(1, max_batch_size):
        below += pmf                     # P(N <= k - 1)
        total += max(0.0, 1.0 - below)   # P(N >= k)
        pmf *= mean_arrivals / k
    return 1.0 + total


def batch_formation_wait_ms(rate_rps: float, max_batch_size: int, timeout_ms: float) -> float:
    """Mean wait (ms) of a request for its batch to close, when the batch opens on an idle replica
    under Poisson arrivals of ``rate_rps``: the derivation is in the module docstring. 0 for batches
    of one or no timeout; ``timeout_ms = inf`` waits for full batches."""
    if max_batch_size <= 1 or timeout_ms <= 0 or rate_rps <= 0:
        return 0.0
    mean_arrivals = rate_rps * timeout_ms / 1000.0
    k = np.arange(max_batch_size - 1)                   # 0 .. b-2
    reached = stats.poisson.sf(k, mean_arrivals)        # P(N(T) >= k + 1); 1 when T is infinite
    total_s = float(((k + 1) * reached).sum()) / rate_rps
    return 1000.0 * total_s / timeout_batch_mean(rate_rps, max_batch_size, timeout_ms)
