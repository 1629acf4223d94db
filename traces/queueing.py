"""Queueing formulas that predict a deployment's mean wait: Erlang C, Allen-Cunneen, batch formation.

A deployment with ``c`` replicas pulling from one queue is a multi-server queue. When requests
arrive as a Poisson stream of rate lambda and every service time is exponential with mean E[S]
(M/M/c), the mean wait in queue is exact:

    a = lambda E[S]                     (offered load, in replicas kept busy)
    rho = a / c                         (utilisation; the queue is stable only when rho < 1)
    Wq = C(c, a) E[S] / (c - a)         (Erlang C: C(c, a) is the probability that a request waits)

For anything else (G/G/c) there is no closed form, and the standard approximation is
**Allen-Cunneen**: scale the M/M/c wait by the variability of arrivals and service,

    Wq ~= C(c, a) E[S] / (c - a) * (Ca^2 + Cs^2) / 2,

with Ca^2 and Cs^2 the squared coefficients of variation (variance over squared mean) of the
interarrival and the service times. Both are 1 for M/M/c, so the estimate is then exact. For one
server it is **Kingman's** G/G/1 formula, rho / (1 - rho) * (Ca^2 + Cs^2) / 2 * E[S], and for Poisson
arrivals (Ca^2 = 1) it is the Pollaczek-Khinchine M/G/1 result, exact again. Past rho = 1 the wait
grows without bound: the functions here return ``inf`` there, never a negative number.

A dynamic batcher adds a wait of its own: a batch that opens on an idle replica leaves when
``b`` requests wait or the first has waited the timeout ``T``, whichever comes first; a request
waits ``batch_formation_wait_ms`` for it on average under Poisson arrivals (derived in
``traces.batching``, which the policies share; with no timeout this is (b - 1) / (2 lambda)).

**Batching deployments** (``batching_wait``): a replica serves up to ``b`` waiting requests at once,
so the queue has no single service unit, and no closed form; the estimate splits the Allen-Cunneen
wait the way it decomposes for b = 1, where C E[S] k / (c - a) = C E[S] k / c * (1 + a / (c - a)),
k = (Ca^2 + Cs^2) / 2:

- *residual*: a request that finds every replica busy (probability C(c, a_B), a_B = lambda E[S_B] / B,
  B the mean batch size served, S_B a served batch's service: the mixture of the sizes served)
  waits for a replica to free, C(c, a_B) E[S_B] (Ca^2 + Cs_B^2) / (2c);
- *queue ahead*: the requests beyond the next batch are served a full batch (b, service S_b) at a
  time, so the part of the wait that a queue of full batches adds is
  C(c, a_b) E[S_b] k_b / c * a_b / (c - a_b), a_b = lambda E[S_b] / b, k_b = (Ca^2 / b + Cs_b^2) / 2
  (b arrivals make one full batch, and the sum of b interarrival times has squared CV Ca^2 / b);
- *formation*: a batch that finds a replica free (probability 1 - C(c, a_B)) waits to close,
  ``batch_formation_wait_ms``.

With b = 1 the three parts add up to Allen-Cunneen exactly (B = b = 1, the formation is 0). The
utilisation is rho = lambda E[S_B] / (c B) (the share of replica time busy); a dynamic batcher
grows its batches with the load, so rho near 1 is not overload: the queue is stable only while
full batches keep up, rho_full = lambda E[S_b] / (c b) < 1 (and rho < 1). On the bundled digits
ResNet-18 INT8 (``examples/batching.toml``: one replica, b = 8, timeout 2 ms, no slow spells) the
estimate is 6% below the simulated mean wait at rho 0.54, within 0.5% of it at rho 0.75 and 27%
above it at rho 0.99 (rho_full 0.88), where overflowing batches make the queue-ahead part the
rougher one.

They live in ``traces`` because two sides use them: ``analysis theory`` sets them beside a run,
and the ``ipa`` policy (``policies.ipa_model``) plans each stage's queueing wait with them.

Why the formulas and not only the simulator: they say in one line what the simulation should give
where theory is exact (a check of the engine), and where it is not, how far queueing alone explains
what the simulation shows (the rest is batching, slow spells, idle classes, bursts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from traces.batching import batch_formation_wait_ms  # derived there, shared with the policies


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in M/M/c: ``servers`` = c, ``offered_load`` = a = lambda E[S].

    Computed through the Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1)), B(0) = 1, which stays
    finite for any c (the textbook sum of a^k / k! overflows near c = 170), and
    C = c B / (c - a (1 - B)). Returns 1.0 when a >= c (every arrival waits, the queue is unstable).
    """
    if servers < 1:
        raise ValueError(f"servers must be at least 1, got {servers}")
    if offered_load < 0:
        raise ValueError(f"offered load must be >= 0, got {offered_load}")
    if offered_load >= servers:
        return 1.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_load * blocking / (k + offered_load * blocking)
    return servers * blocking / (servers - offered_load * (1.0 - blocking))


def wait_quantile_ms(mean_wait_ms: float, wait_probability: float, q: float) -> float:
    """The q-quantile (0 < q < 1) of the wait in queue when a request waits with probability C and,
    given that it waits, waits an exponential time of mean Wq / C: exact for M/M/c, where
    P(W > t) = C exp(-(c mu - lambda) t) and Wq = C / (c mu - lambda), so
    t_q = (Wq / C) ln(C / (1 - q)), and 0 when C <= 1 - q (most requests do not wait at all).
    For other queues it carries the Allen-Cunneen mean into an exponential tail: the estimate the
    ``ipa`` policy plans its stage latencies with."""
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if math.isinf(mean_wait_ms):
        return math.inf
    if wait_probability <= 1.0 - q or mean_wait_ms <= 0:
        return 0.0
    return mean_wait_ms / wait_probability * math.log(wait_probability / (1.0 - q))


def utilisation(rate_rps: float, service_ms: float, servers: int) -> float:
    """rho = lambda E[S] / c (``rate_rps`` in units of service per second, ``service_ms`` per unit)."""
    return rate_rps * service_ms / 1000.0 / servers


def allen_cunneen_wait_ms(rate_rps: float, service_ms: float, servers: int, ca2: float = 1.0,
                          cs2: float = 1.0) -> float:
    """Mean wait in queue (ms) of G/G/c by Allen-Cunneen; exact for M/M/c (ca2 = cs2 = 1) and M/G/1
    (ca2 = 1). ``inf`` when rho >= 1 (no finite wait)."""
    if rate_rps < 0 or service_ms < 0 or ca2 < 0 or cs2 < 0:
        raise ValueError("rate, service time and squared coefficients of variation must be >= 0")
    if rate_rps == 0 or service_ms == 0:
        return 0.0
    load = rate_rps * service_ms / 1000.0
    if load >= servers:
        return math.inf
    return erlang_c(servers, load) * service_ms / (servers - load) * (ca2 + cs2) / 2.0


def mmc_wait_ms(rate_rps: float, service_ms: float, servers: int) -> float:
    """Mean wait in queue (ms) of M/M/c (Erlang C); ``inf`` when rho >= 1."""
    return allen_cunneen_wait_ms(rate_rps, service_ms, servers, 1.0, 1.0)


def squared_cv(values) -> float:
    """Variance over squared mean of a sample (population variance); nan for fewer than 2 values
    or a zero mean."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2 or x.mean() == 0:
        return math.nan
    return float(x.var() / x.mean() ** 2)


@dataclass(frozen=True)
class BatchService:
    """A deployment's service: its served batches (a mixture over the sizes served) and full batches."""

    mean_ms: float            # E[S_B], a served batch
    cs2: float                # squared CV of a served batch's service time
    mean_batch_size: float    # B, requests per served batch
    full_mean_ms: float       # E[S_b], a full batch
    full_cs2: float
    max_batch_size: int       # b


@dataclass(frozen=True)
class WaitEstimate:
    """The parts of a request's estimated mean wait (ms); ``inf`` when unstable."""

    rho: float
    rho_full: float
    formation_ms: float
    residual_ms: float
    queue_ahead_ms: float

    @property
    def stable(self) -> bool:
        return self.rho < 1 and self.rho_full < 1

    @property
    def total_ms(self) -> float:
        return self.formation_ms + self.residual_ms + self.queue_ahead_ms


def batching_wait(rate_rps: float, servers: int, service: BatchService, ca2: float,
                  timeout_ms: float) -> WaitEstimate:
    """Mean wait in queue (ms) of a request at a batching deployment, by parts (module docstring)."""
    b = service.max_batch_size
    load = rate_rps * service.mean_ms / 1000.0 / service.mean_batch_size         # a_B
    full_load = rate_rps * service.full_mean_ms / 1000.0 / b                      # a_b
    rho, rho_full = load / servers, full_load / servers
    if rho >= 1 or rho_full >= 1:
        return WaitEstimate(rho, rho_full, math.inf, math.inf, math.inf)
    busy = erlang_c(servers, load)
    residual = busy * service.mean_ms * (ca2 + service.cs2) / (2.0 * servers)
    k_full = (ca2 / b + service.full_cs2) / 2.0
    ahead = erlang_c(servers, full_load) * service.full_mean_ms * k_full / servers * full_load / (servers - full_load)
    formation = (1.0 - busy) * batch_formation_wait_ms(rate_rps, b, timeout_ms)
    return WaitEstimate(rho, rho_full, formation, residual, ahead)
