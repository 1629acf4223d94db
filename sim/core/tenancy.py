"""Sharing one deployment between tenants: admission by token bucket, strict priority, fair share.

A tenant is a client with its own traffic; ``tenant_of[request]`` says whose a request is. Three
mechanisms decide what each tenant gets, and they answer different questions:

* **How much may a tenant send?** A ``TokenBucket`` per tenant admits a request when a token is
  there; tokens refill at ``rate_rps`` up to ``burst``. Over any interval of length T a tenant
  gets at most ``burst + rate_rps * T`` requests in, however it bunches them, so one tenant's
  flood is turned away at the door instead of filling the queue that others share.
* **Who goes first?** ``PriorityQueue`` serves by level, 1 the highest as Triton numbers them
  (``priority_levels``; each level may have its own ``max_queue_size``). Strict priority is
  simple and gives premium traffic the latency of an empty system, but it has no memory: a lower
  level is served only while every higher level is empty, so premium load at or above capacity
  *starves* the lower levels (their wait grows without bound). Triton bounds the damage with
  per-level queue limits and timeouts; the batcher's deadlines and expiry do the same here.
* **Who gets how much of the machine?** ``FairQueue`` shares service time in proportion to
  weights whatever each tenant sends, after the Virtual Token Counter (VTC) of Sheng et al.
  (OSDI'24): each tenant has a counter of the service it has received divided by its weight, and
  the next request comes from the backlogged tenant with the smallest counter. It is
  work-conserving (it never idles while anyone waits) and nobody starves: a tenant that falls
  behind is the next one served. Counters count *service*, not requests: requests cost different
  amounts (a request served alone occupies a replica for a whole batch, one in a full batch for a
  fraction of it), and counting requests would let the tenant with the costly requests take more
  of the machine than its weight. Only service received is charged, so a tenant sending little
  is not charged for what it did not use. A tenant idle for a while must not bank credit either:
  on its return its counter is *lifted* to the level of those backlogged (``FairQueue`` says
  how), or it would monopolise the replicas until it had caught up on its idle time.

The service-gap bound of ``FairQueue``
--------------------------------------
Assumptions: one shared ``FairQueue`` feeds c replicas; each takes batches of at most B requests
and serves one batch at a time; a batch's service is split evenly among its requests, so a
request of tenant i in a batch of k lasting s seconds is charged a = s / k / w_i; requests are
neither dropped nor refunded after being taken. Let s_hat be the largest per-request share
s / k of any batch (s_hat <= S_max, the longest batch service time) and u_i = s_hat / w_i the
largest charge of a request of tenant i. Let tenants i and j be backlogged from before the first
selection (counters equal) up to T, and N_i(t) their normalised service: the charges of their
requests whose batches have ended by t (W_i(t) / w_i, W_i the service seconds received).

Write C_i = N_i + P_i for i's counter, P_i being the provisional charges of its requests taken
but not yet served ("in flight"; no lifts happen while a tenant stays backlogged). A provisional
charge is the mean per-request share seen so far over w_i, so 0 <= p <= u_i. Fix t and let tau be
i's last selection before t (if none, N_i(t) = 0 <= N_j(t)), F_i its requests in flight just
after it and F_j j's just before. Then:
  1. N_i(tau) <= C_i(tau-), since C_i(tau+) = C_i(tau-) + p = N_i(tau) + P_i(tau+) with p in P_i;
  2. C_i(tau-) <= C_j(tau-), the selection rule, j being backlogged;
  3. C_j(tau-) = N_j(tau) + P_j(tau-) <= N_j(tau) + |F_j| u_j;
  4. N_i(t) <= N_i(tau) + |F_i| u_i, as only requests of F_i can end for i in (tau, t];
  5. N_j(t) >= N_j(tau).
So D(t) = N_i(t) - N_j(t) <= |F_i| u_i + |F_j| u_j <= c B max(u_i, u_j), because at most c batches
of at most B requests are in flight (the one being formed included). By symmetry D(t) >= the
same bound negated, so over ANY interval [t1, t2] the normalised services drift apart by at most

    |D(t2) - D(t1)| <= 2 c B s_hat / min(w_i, w_j)      (<= 2 c B S_max / min(w_i, w_j)).

For c = B = 1 this is VTC's 2U. It does not grow with time, so the shares W_i / sum W of tenants
backlogged for long converge to w_i / sum w at rate O(1 / T). ``tests/test_tenancy.py`` checks
both on a discrete-event loop.
"""

from __future__ import annotations

import heapq
import math
import numbers
from collections.abc import Sequence

from traces.errors import InputError

from .queues import EdfQueue, FifoQueue

WITHIN_LEVEL_ORDERS = ("fifo", "edf")
_TOKEN_EPS = 1e-9  # a token due exactly at t is there at t, whatever the float rounding of the refill


def _is_int(value: object, least: int) -> bool:
    """An integer (numpy's too, not a bool) of at least ``least``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


class TokenBucket:
    """Admission at ``rate_rps`` on average with bursts of up to ``burst`` requests.

    The bucket starts full. ``admit(now_s)`` first adds ``rate_rps * (now_s - last)`` tokens
    (capped at ``burst``), then takes one if there is one. Time only moves forward: an earlier
    ``now_s`` than the last refill adds nothing. Tokens are a float; a token short by less than
    1e-9 counts as there (and the bucket is then left empty), so a token due exactly at t is
    available at t whatever the rounding of ``rate_rps * elapsed``.
    """

    __slots__ = ("rate_rps", "burst", "_tokens", "_last_s")

    def __init__(self, rate_rps: float, burst: int, start_s: float = 0.0):
        if not (_is_number(rate_rps) and rate_rps >= 0):
            raise InputError("token bucket rate_rps", f"a finite number >= 0, not {rate_rps!r}")
        if not _is_int(burst, 1):
            raise InputError("token bucket burst", f"an integer >= 1, not {burst!r}")
        self.rate_rps = float(rate_rps)
        self.burst = int(burst)
        self._tokens = float(burst)
        self._last_s = start_s

    @property
    def tokens(self) -> float:
        """Tokens left after the last ``admit`` (no refill since then)."""
        return self._tokens

    def admit(self, now_s: float) -> bool:
        elapsed_s = now_s - self._last_s
        if elapsed_s > 0:
            self._tokens = min(float(self.burst), self._tokens + self.rate_rps * elapsed_s)
            self._last_s = now_s
        if self._tokens >= 1.0 - _TOKEN_EPS:
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False


def _check_levels(priority_of: Sequence[int], level_limits: dict[int, int] | None) -> None:
    for tenant, level in enumerate(priority_of):
        if not _is_int(level, 1):
            raise InputError(f"priority of tenant {tenant}", f"an integer level >= 1 (1 is the highest), not {level!r}")
    for level, limit in (level_limits or {}).items():
        if not _is_int(level, 1):
            raise InputError("level_limits", f"keys are integer levels >= 1, not {level!r}")
        if not _is_int(limit, 0):
            raise InputError(f"level_limits[{level}]", f"an integer >= 0 (0: unbounded), not {limit!r}")


class PriorityQueue:
    """Strict priority by the tenant's level, FIFO or EDF within a level.

    One sub-queue per level present in ``priority_of`` (``FifoQueue`` or ``EdfQueue``, which
    orders by ``deadlines_s[request]`` and breaks ties by arrival); ``take`` serves the lowest
    level number that has anyone waiting. ``level_limits[level]`` caps how many may wait at that
    level (Triton's per-level ``max_queue_size``; 0 or absent: unbounded; a level no tenant has is
    ignored): ``push`` then returns False and enqueues nothing. ``oldest_s`` is over all levels,
    since the batcher's wait timeout counts from the oldest waiting request whatever the order.
    """

    __slots__ = ("levels", "_subs", "_sub_of_tenant", "_limit_of_tenant", "_tenant_of", "_n", "_timeouts", "_delayed")

    def __init__(self, tenant_of: Sequence[int], priority_of: Sequence[int], deadlines_s: Sequence[float],
                 within: str = "fifo", level_limits: dict[int, int] | None = None,
                 level_timeouts: dict[int, tuple[float, str]] | None = None):
        if within not in WITHIN_LEVEL_ORDERS:
            raise InputError("priority queue within", f"one of {', '.join(WITHIN_LEVEL_ORDERS)}, not {within!r}")
        _check_levels(priority_of, level_limits)
        self.levels: tuple[int, ...] = tuple(sorted({int(level) for level in priority_of}))
        self._subs: list[FifoQueue | EdfQueue] = [
            EdfQueue(deadlines_s) if within == "edf" else FifoQueue() for _ in self.levels]  # type: ignore[arg-type]
        sub_of_level = dict(zip(self.levels, self._subs))
        limits = level_limits or {}
        self._sub_of_tenant = [sub_of_level[level] for level in priority_of]
        self._limit_of_tenant = [limits.get(level, 0) for level in priority_of]
        self._tenant_of = tenant_of
        self._n = 0
        # Triton's per-level queue policy: a request that waited its level's timeout is rejected,
        # or delayed: moved behind every level, into a last line served only when all are empty
        # (FIFO within levels only: the oldest of a level is then its head)
        timeouts = level_timeouts or {}
        if timeouts and within != "fifo":
            raise InputError("queue timeout", "applies to queue = 'priority' (FIFO within a level)")
        self._timeouts = [(k, timeouts[level][0], timeouts[level][1]) for k, level in enumerate(self.levels)
                          if level in timeouts]
        self._delayed = FifoQueue()
        if self._timeouts:
            self._subs.append(self._delayed)

    def expire(self, now_s: float) -> list[int]:
        """Apply the levels' timeouts at ``now_s``: the requests rejected (the delayed ones move
        to the last line, keeping their enqueue time)."""
        rejected: list[int] = []
        for k, timeout_s, action in self._timeouts:
            sub = self._subs[k]
            while sub and sub[0][0] + timeout_s <= now_s:
                enqueue_s, request = sub.popleft()
                if action == "reject":
                    rejected.append(request)
                    self._n -= 1
                else:
                    self._delayed.append((enqueue_s, request))
        return rejected

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def waiting(self, level: int) -> int:
        """How many wait at ``level`` (0 for a level no tenant has)."""
        return len(self._subs[self.levels.index(level)]) if level in self.levels else 0

    def push(self, request: int, enqueue_s: float) -> bool | None:
        """Enqueue; False (nothing enqueued) when the request's level is at its limit."""
        tenant = self._tenant_of[request]
        sub = self._sub_of_tenant[tenant]
        limit = self._limit_of_tenant[tenant]
        if limit and len(sub) >= limit:
            return False
        sub.push(request, enqueue_s)
        self._n += 1
        return None

    def take(self) -> int:
        for sub in self._subs:
            if sub:
                self._n -= 1
                return sub.take()
        raise IndexError("take from an empty PriorityQueue")

    def take_n(self, n: int) -> list[int]:
        """The next ``n`` (at most ``len``) in priority order, higher levels first."""
        out: list[int] = []
        for sub in self._subs:
            want = n - len(out)
            if want <= 0:
                break
            if sub:
                out += sub.take_n(min(want, len(sub)))
        self._n -= len(out)
        return out

    def oldest_s(self) -> float:
        oldest = math.inf
        for sub in self._subs:
            if sub:
                s = sub.oldest_s()
                if s < oldest:
                    oldest = s
        if oldest == math.inf:
            raise IndexError("oldest_s of an empty PriorityQueue")
        return oldest

    def requests(self):
        """The waiting requests (any order)."""
        return (r for sub in self._subs for r in sub.requests())

    def drain(self) -> list[int]:
        """Everyone waiting, in service order (level by level), leaving the queue empty."""
        out = [r for sub in self._subs for r in sub.drain()]
        self._n = 0
        return out


class FairQueue:
    """Weighted fair sharing of service time between tenants (VTC), work-conserving.

    Each tenant has a FIFO sub-queue and a counter in seconds of service divided by its weight.
    ``take`` serves the head of the backlogged tenant (one with requests waiting) whose counter
    is smallest, ties to the lowest tenant index.

    Charging. What a request costs is known only when its batch ends, after it was chosen, so
    ``take`` charges a provisional estimate (the mean per-request service seen so far over the
    weight; 0 before any batch ended), which lets the requests of one batch alternate between
    tenants, and ``served(batch, service_s)`` replaces it by the real charge,
    ``service_s / len(batch) / weight``. A request that is taken but gets no service (dropped as
    expired, lost to a crash) should be handed to ``refund``, which takes its estimate back.

    The lift. When a tenant becomes backlogged (its sub-queue was empty), its counter is raised to
    at least the smallest counter among the tenants backlogged at that moment; if none is, to at
    least the counter of the tenant whose request was taken last (no change before any take). A
    counter is never lowered by a lift. So a returning tenant competes from where the others are
    now, not from where it left off, and can bank no credit while idle (VTC's rule). Hence a
    counter is the tenant's normalised service received, plus its in-flight estimates, plus the
    lifts it got; for a tenant backlogged all along it is exactly its service over its weight once
    its batches have ended. The module docstring bounds how far two backlogged tenants drift.
    """

    __slots__ = ("_tenant_of", "_weight_of", "_subs", "_counters", "_provisional", "_served_s", "_served_n",
                 "_last", "_n")

    def __init__(self, tenant_of: Sequence[int], weight_of: Sequence[float], n_tenants: int):
        if not _is_int(n_tenants, 1):
            raise InputError("fair queue n_tenants", f"an integer >= 1, not {n_tenants!r}")
        if len(weight_of) != n_tenants:
            raise InputError("fair queue weights", f"one weight per tenant ({n_tenants}), not {len(weight_of)}")
        for tenant, weight in enumerate(weight_of):
            if not (_is_number(weight) and weight > 0):
                raise InputError(f"weight of tenant {tenant}", f"a finite number > 0, not {weight!r}")
        self._tenant_of = tenant_of
        self._weight_of = [float(w) for w in weight_of]
        self._subs = [FifoQueue() for _ in range(n_tenants)]
        self._counters = [0.0] * n_tenants
        self._provisional: dict[int, float] = {}  # request taken, not yet served -> its estimate
        self._served_s = 0.0
        self._served_n = 0
        self._last = -1  # the tenant of the last take
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    @property
    def counters(self) -> tuple[float, ...]:
        """Each tenant's virtual counter (service seconds / weight, estimates and lifts included)."""
        return tuple(self._counters)

    def waiting(self, tenant: int) -> int:
        return len(self._subs[tenant])

    def _lift(self, tenant: int) -> None:
        counters = self._counters
        floor = math.inf
        for t, sub in enumerate(self._subs):
            if sub and counters[t] < floor:
                floor = counters[t]
        if floor == math.inf:
            if self._last < 0:
                return
            floor = counters[self._last]
        if counters[tenant] < floor:
            counters[tenant] = floor

    def push(self, request: int, enqueue_s: float) -> None:
        tenant = self._tenant_of[request]
        sub = self._subs[tenant]
        if not sub:
            self._lift(tenant)
        sub.push(request, enqueue_s)
        self._n += 1

    def take(self) -> int:
        counters = self._counters
        best, best_counter = -1, math.inf
        for t, sub in enumerate(self._subs):
            if sub and counters[t] < best_counter:
                best, best_counter = t, counters[t]
        if best < 0:
            raise IndexError("take from an empty FairQueue")
        request = self._subs[best].take()
        charge = self._served_s / self._served_n / self._weight_of[best] if self._served_n else 0.0
        counters[best] = best_counter + charge
        self._provisional[request] = charge
        self._last = best
        self._n -= 1
        return request

    def take_n(self, n: int) -> list[int]:
        """The next ``n`` (at most ``len``), each chosen after the previous one's estimate is charged."""
        take = self.take
        return [take() for _ in range(min(n, self._n))]

    def served(self, batch: Sequence[int], service_s: float) -> None:
        """``batch`` ended after ``service_s`` seconds: charge each request its even share, in
        place of its estimate, and fold the batch into the estimate of future takes."""
        if not batch:
            return
        share_s = service_s / len(batch)
        counters, weight_of, tenant_of, provisional = self._counters, self._weight_of, self._tenant_of, self._provisional
        for request in batch:
            tenant = tenant_of[request]
            counters[tenant] += share_s / weight_of[tenant] - provisional.pop(request, 0.0)
        self._served_s += service_s
        self._served_n += len(batch)

    def refund(self, requests: Sequence[int]) -> None:
        """These taken requests got no service: take back their estimates."""
        for request in requests:
            charge = self._provisional.pop(request, None)
            if charge is not None:
                self._counters[self._tenant_of[request]] -= charge

    def oldest_s(self) -> float:
        oldest = math.inf
        for sub in self._subs:
            if sub and sub[0][0] < oldest:
                oldest = sub[0][0]
        if oldest == math.inf:
            raise IndexError("oldest_s of an empty FairQueue")
        return oldest

    def requests(self):
        """The waiting requests (any order)."""
        return (r for sub in self._subs for r in sub.requests())

    def drain(self) -> list[int]:
        """Everyone waiting, oldest first, leaving the queue empty (counters unchanged)."""
        out = [r for _, r in heapq.merge(*self._subs)]
        for sub in self._subs:
            sub.clear()
        self._n = 0
        return out
