"""Load-aware predictions from profiles, shared by the policies that plan with them.

All are closed-form and cheap. For a deployment with R replicas, maximum batch B, batch wait
timeout T, arrival rate lambda and a batch of b served in S(b) (the profile's distribution; mean
m(b)), they rest on **the batch the batcher forms** at that rate, derived from its rule
(``sim/core/batcher.py``: a free replica takes up to B waiting requests as soon as B wait or the
oldest has waited T).

One replica first. Count time from the start of a batch, which empties the queue (below overload).
Its service lasts D = S(b); the first request after it arrives at t1 ~ Exp(lambda), and:

- t1 > D (none came during the service): the replica is idle when it arrives, so the batch closes
  at B requests or T after it: size g = 1 + E[min(B - 1, N(T))] (``traces.batching``);
- D - T < t1 < D: at the end of the service the oldest has waited less than T, so the replica
  waits for the timer: again 1 + N(T), of mean g;
- t1 < D - T: the oldest has waited T when the replica frees, so it takes everything at once:
  1 + N(D - t1), of mean 1 + lambda (D - t1).

Averaged over t1, with D' = max(D - T, 0) and e = exp(-lambda D'):

    b = E_D[ e g + (1 - e)(1 + lambda T) + lambda D' - (1 - e) ] = E_D[ e g + lambda T (1 - e) + lambda D' ]

and b appears on both sides (D is the service of the previous batch, S(b)): the batch is the
fixed point, found by bisection on [1, B] (fractional b interpolates between sizes), capped at B.
Its limits are exact: no traffic gives 1; a timeout longer than every service gives g, the
timeout batch; far below capacity e -> 1 and b -> g; near it e -> 0 and b -> lambda m(b), the
batch that piles up during one service, so the busy share lambda m(b) / b -> 1; past it
(lambda m(B) >= B) every batch is full. For one replica whose service takes the same time at every
size it is exact whenever no batch overflows B (the queue then never carries over).

With R replicas two things change, both by the same rule. (1) Under load a replica frees every
m(b) / R on average, and a freeing replica takes what arrived since the last batch started: the
interval D is S / R; but the freeings of R independent replicas are less regular than one replica's
services (their superposition tends to a Poisson stream as R grows, Palm-Khintchine), so D is taken
as S / R with weight 1 / R and an exponential interval of the same mean with weight 1 - 1 / R (for
the exponential, E[e] and E[D'] have closed forms). (2) A batch can only start busy (on a freeing
replica, from a queue) when the other R - 1 replicas are busy too; otherwise the first request
finds an idle one and its batch closes by the timeout, size g. With each replica busy U of the time,
independently, b = (1 - U^(R-1)) g + U^(R-1) b_busy, and U = lambda m(b) / (R b) is itself the
fixed point's (the share of replica time that rate keeps busy, ``utilization``). One replica gives
back the rule above; light load gives g; heavy load gives b_busy, the pile-up over m(b) / R.

Checked against the simulator over rates of 0.1 to 0.9 of full-batch capacity, 1, 2 and 4
replicas, measured and parametric services (``tests/test_load_model.py``, 48 cells): it requires
the busy share within 0.05 and the batch within 15% up to 0.7 of capacity and 25% at 0.9 (near
capacity the batch is ill-conditioned, since b = lambda m(b) / R amplifies an error in m by
1 / (1 - lambda m'(b) / R)); the worst errors it measures are 0.04 for the busy share and 7% (up
to 0.7) and 15% (at 0.9) for the batch, where the previous estimate (the pile-up alone, iterated
from b = 1) was off by up to 0.33 and 89%.

What the busy share says: since b grows with the load, it nears 1 long before the deployment is
overloaded (a replica with a flat profile is busy 96% of the time at 40% of its capacity at full
batches, lambda m(B) / (R B), the limit of a stable queue). It is no measure of stability, nor on
its own of latency: where it is high, most requests find every replica busy and wait part of a
service, which for a flat profile is short. ``steady_latency_ms`` turns it into a latency, with
the queue that carries over near capacity; ``policies.planner`` tests its options with that.

Per request: a request arriving now waits for the batches ahead of it, ``queue / (R b)`` service
rounds, plus half a service when every replica is busy (the mean residual), plus the time for its
own batch to fill or time out when a replica is idle and the batch is not full; its predicted
latency is that wait plus the profiled service time of b at a chosen percentile.

A deployment with no live replica (R = 0: every replica crashed) has zero capacity: its predicted
latency and its utilisation are infinite, so a policy comparing them never picks it and never
divides by its replica count.
"""

from __future__ import annotations

import math
import weakref
from typing import TYPE_CHECKING

import numpy as np

from traces.batching import timeout_batch_mean

if TYPE_CHECKING:
    from traces.profiles import LatencyProfile

    from .base import Route, SystemView

_POINTS = 32         # quantiles that summarise a size's service distribution in the fixed point
_TOLERANCE = 1e-3    # the bisection stops when the batch is known to this many requests
_SHAPES: "weakref.WeakKeyDictionary[LatencyProfile, dict[int, tuple[np.ndarray, float]]]" = weakref.WeakKeyDictionary()


def _service(profile: "LatencyProfile", size: int) -> tuple[np.ndarray, float]:
    """(``_POINTS`` evenly spaced quantiles, mean) of the service of a batch of ``size``, in ms."""
    shape = _SHAPES.setdefault(profile, {})
    if size not in shape:
        grid = profile.grid(size)
        picks = ((np.arange(_POINTS) + 0.5) / _POINTS * grid.size).astype(int)
        shape[size] = (grid[picks], float(grid.mean()))
    return shape[size]


def _interpolate(values_at, b: float) -> float:
    """A size's figure at a fractional batch size, linear between the sizes around it."""
    lo = int(b)
    w = b - lo
    return values_at(lo) if w <= 0 else (1.0 - w) * values_at(lo) + w * values_at(lo + 1)


def mean_service_ms(profile: "LatencyProfile", b: float) -> float:
    """m(b): the mean service of a batch of (possibly fractional) size ``b``."""
    return _interpolate(lambda size: _service(profile, size)[1], b)


def full_batch_size(profile: "LatencyProfile", max_batch_size: int) -> int:
    """B: the largest batch a deployment forms, its maximum within the sizes its profile covers."""
    return max(1, min(max_batch_size, profile.max_batch_size))


def capacity_rps(profile: "LatencyProfile", replicas: int, max_batch_size: int) -> float:
    """R B / m(B): what the replicas sustain back to back at full batches, the limit of a stable
    queue (0 with no live replica); a rate over it is the load at full batches."""
    return profile.throughput_rps(full_batch_size(profile, max_batch_size), replicas) if replicas > 0 else 0.0


def formed_batch_size(profile: "LatencyProfile", rate_rps: float, replicas: int, max_batch_size: int,
                      timeout_ms: float) -> float:
    """The mean batch the batcher forms at ``rate_rps`` (the module docstring's fixed point); a
    deployment with no live replica is planned as one."""
    limit = full_batch_size(profile, max_batch_size)
    if rate_rps <= 0 or limit == 1:
        return 1.0
    r = max(replicas, 1)
    lam = rate_rps / 1000.0                       # arrivals per ms
    timeout = max(timeout_ms, 0.0)
    g = timeout_batch_mean(rate_rps, limit, timeout)
    busy_by_size: dict[int, float] = {}

    def busy_start(size: int) -> float:
        """b_busy at this size: the batch a freeing replica takes, over the interval D."""
        if size not in busy_by_size:
            quantiles, mean = _service(profile, size)
            rest = np.maximum(quantiles / r - timeout, 0.0)   # D' = max(D - T, 0), D = S / R
            e = np.exp(-lam * rest)
            own = float(np.mean(e * g + lam * timeout * (1.0 - e) + lam * rest))
            if r > 1:  # an exponential interval of mean m / R: E[e] and E[D'] in closed form
                mu = mean / r
                beyond = math.exp(-timeout / mu) if mu > 0 else 0.0   # P(D > T)
                e_mean = (1.0 - beyond) + beyond / (1.0 + lam * mu)
                poisson = e_mean * g + lam * timeout * (1.0 - e_mean) + lam * mu * beyond
                own = own / r + (1.0 - 1.0 / r) * poisson
            busy_by_size[size] = own
        return busy_by_size[size]

    def formed(b: float) -> float:
        if r > 1:
            busy = min(1.0, lam * mean_service_ms(profile, b) / (r * b)) ** (r - 1)
            value = (1.0 - busy) * g + busy * _interpolate(busy_start, b)
        else:
            value = _interpolate(busy_start, b)
        return min(float(limit), value)

    if formed(float(limit)) >= limit:
        return float(limit)
    lo, hi = 1.0, float(limit)   # formed(lo) >= lo (every batch holds one), formed(hi) < hi
    while hi - lo > _TOLERANCE:
        mid = 0.5 * (lo + hi)
        if formed(mid) >= mid:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def utilization(profile: "LatencyProfile", rate_rps: float, replicas: int, max_batch_size: int,
                timeout_ms: float) -> float:
    """The share of ``replicas``' time that ``rate_rps`` keeps busy at the batch it forms,
    lambda m(b) / (R b) (inf for none; above 1 past capacity)."""
    if replicas <= 0:
        return math.inf
    b = formed_batch_size(profile, rate_rps, replicas, max_batch_size, timeout_ms)
    return _busy_share(profile, rate_rps, replicas, b)


def _busy_share(profile: "LatencyProfile", rate_rps: float, replicas: int, b: float) -> float:
    """lambda m(b) / (R b): the share of the replicas' time that batches of ``b`` at this rate use."""
    return rate_rps * mean_service_ms(profile, b) / 1000.0 / (b * replicas)


def steady_latency_ms(profile: "LatencyProfile", rate_rps: float, replicas: int, max_batch_size: int,
                      timeout_ms: float, q: float = 95.0) -> float:
    """The latency a request can expect when ``rate_rps`` reaches the deployment steadily: what
    ``DeploymentModel.latency_at`` predicts, averaged over the states the rate keeps it in, plus
    the queue that carries over from one batch to the next near capacity (inf with no replica or
    past capacity at full batches).

    With b the formed batch, U the busy share, P = U^R the chance that every replica is busy and
    rho = lambda m(B) / (R B) the load at full batches: the p``q`` service of b; half a service
    more with probability P (the residual of the batch ahead); the time to fill the batch
    otherwise (capped by the timeout); and a carried queue of rho / (1 - rho) / R services, the
    heavy-traffic growth of a queue's wait (Kingman's rho / (1 - rho), spread over R servers). The
    last term is what the busy share cannot say: a service that grows steeply with the batch
    (ResNet-18 INT8) carries a queue from ~0.5 of its full-batch capacity, while a flat one
    (MobileNetV2 INT8) is busy 96% of the time at 0.36 of it with no queue to carry. Against the
    simulator's p95 (``tests/test_load_model.py``) it is within 0.6x to 2x up to 0.7 of that
    capacity; it over-predicts most for flat, low-variance services near capacity, whose queue
    carries less than the heavy-traffic term says (the safe side for a deadline test)."""
    if replicas <= 0:
        return math.inf
    limit = full_batch_size(profile, max_batch_size)
    full_ms = _service(profile, limit)[1]
    load = rate_rps * full_ms / 1000.0 / (limit * replicas)
    if load >= 1.0:
        return math.inf
    b = formed_batch_size(profile, rate_rps, replicas, max_batch_size, timeout_ms)
    busy = min(1.0, _busy_share(profile, rate_rps, replicas, b))
    every_busy = busy ** replicas
    service = _interpolate(lambda size: profile.percentile_ms(size, q), b)
    fill = min(timeout_ms, (b - 1.0) / rate_rps * 1000.0) if rate_rps > 0 and b > 1 else 0.0
    return service * (1.0 + 0.5 * every_busy + load / (1.0 - load) / replicas) + (1.0 - every_busy) * fill


class TrafficMeter:
    """What a policy sends each deployment (by index), counted between two readings and read back
    as rates: the rate behind each deployment's predictions is the one the policy itself causes.
    A route's later hops count at the share expected to reach them (``route_shares``)."""

    __slots__ = ("counts", "since_s")

    def __init__(self, deployments: int, now_s: float):
        self.counts = [0.0] * deployments
        self.since_s = now_s

    def take_rates(self, now_s: float) -> list[float] | None:
        """Requests per second to each deployment since the last reading (None when no time
        passed or nothing was sent), and a fresh count from ``now_s``."""
        span = now_s - self.since_s
        rates = [c / span for c in self.counts] if span > 0 and any(self.counts) else None
        self.counts = [0.0] * len(self.counts)
        self.since_s = now_s
        return rates


def route_shares(route: "Route", view: "SystemView", index: dict[str, int]) -> tuple[tuple[int, float], ...]:
    """(deployment index, expected share of the route's requests) of each hop: a hop with a
    threshold keeps the share its variant is unsure about (confidence below the threshold, over the
    bundle's samples); a hop without one ends a stage, and the next stage starts with every request.
    A variant the prediction table lacks passes everything on."""
    table = view.predictions
    out, share = [], 1.0
    for hop in route.hops:
        out.append((index[hop.deployment], share))
        if hop.threshold is None:
            share = 1.0
            continue
        variant = view.variant(hop.deployment)
        if table is not None and variant in table.confidence:
            share *= 1.0 - float((table.confidence[variant] >= hop.threshold).mean())  # 1 - its coverage
    return tuple(out)


class DeploymentModel:
    """A deployment's profile summarised for fast per-request predictions at the current rate."""

    __slots__ = ("name", "profile", "q", "batch", "service_ms", "timeout_ms", "rate_rps", "by_size_ms", "limit")

    def __init__(self, name: str, profile: "LatencyProfile", q: float = 95.0):
        self.name = name
        self.profile = profile
        self.q = q
        self.batch = 1.0
        self.by_size_ms = [profile.percentile_ms(size, q) for size in range(1, profile.max_batch_size + 1)]
        self.service_ms = self.by_size_ms[0]
        self.timeout_ms = 0.0
        self.rate_rps = 0.0
        self.limit = profile.max_batch_size

    def update(self, view: "SystemView", rate_rps: float) -> None:
        """Recompute the formed batch and its service time for ``rate_rps`` reaching this deployment."""
        self.rate_rps = rate_rps
        self.timeout_ms = view.batch_wait_timeout_ms(self.name)
        self.limit = full_batch_size(self.profile, view.max_batch_size(self.name))
        self.batch = formed_batch_size(self.profile, rate_rps, view.replicas(self.name), self.limit, self.timeout_ms)
        self.service_ms = _interpolate(lambda size: self.by_size_ms[size - 1], self.batch)

    def latency_ms(self, view: "SystemView") -> float:
        """Predicted latency of a request joining this deployment now."""
        return self.latency_at(*view.load(self.name))

    def latency_at(self, waiting: int, busy: int, replicas: int) -> float:
        """Predicted latency of a request joining this deployment with this load: the service of
        its own batch plus the wait of the module docstring (written out flat: it runs per
        request); infinite with no live replica.

        Its batch holds at least the requests waiting ahead and itself (up to the maximum): a
        request that finds two waiting is served in a batch of three or more, whatever the mean
        batch b at this rate, so its service is the larger of b's and that size's."""
        if replicas <= 0:
            return math.inf
        service, batch = self.service_ms, self.batch
        joins = waiting + 1
        own = service
        if joins > batch:
            at_least = self.by_size_ms[(joins if joins < self.limit else self.limit) - 1]
            if at_least > own:
                own = at_least
        delay = own + (waiting // batch) / replicas * service
        if busy >= replicas:
            return delay + 0.5 * service
        if joins < batch and self.timeout_ms > 0:
            rate = self.rate_rps
            to_fill = (batch - joins) / rate * 1000.0 if rate > 0 else math.inf
            return delay + (to_fill if to_fill < self.timeout_ms else self.timeout_ms)
        return delay
