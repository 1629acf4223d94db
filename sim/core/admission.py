"""Admission of tenants' requests: rate limits and quotas, before a request is routed.

In a scenario with ``[[tenants]]`` every arrival passes here first (``traces.tenants`` has the
keys). A tenant's **token bucket** (``rate_limit``) admits an arrival if it holds a token and
takes it; an arrival that finds none is rejected as ``rate_limited``. A tenant's **quota**
(``max_in_flight``) counts its requests admitted and not yet finished (completed, dropped or
failed); an arrival over it is rejected as ``quota`` (``action = "reject"``) or held, in arrival
order, until one of the tenant's requests finishes (``"wait"``): it is then routed at that moment,
its latency counting from its arrival. A held request still waiting when the run ends is recorded
as ``unfinished``: nothing is silently lost. Admitted requests go on to the policy (which sees
``request.tenant``) exactly as without tenants. Both executors run this code.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .tenancy import TokenBucket

if TYPE_CHECKING:
    from traces.tenants import TenantConfig

    from .serving import ServingCore

@dataclass(frozen=True)
class QueueTenancy:
    """What the tenants' queues (``sim.core.tenancy``) order by: each request's tenant, each
    tenant's priority level and weight, and per level the most that may wait (the smallest
    ``max_queue_size`` its tenants set; 0: unbounded)."""

    tenant_of: Sequence[int]
    priority_of: tuple[int, ...]
    weight_of: tuple[float, ...]
    level_limits: dict[int, int]
    level_timeouts: dict[int, tuple[float, str]]  # level -> (seconds, "reject" | "delay")

    @classmethod
    def of(cls, tenant_of: Sequence[int], tenants: "tuple[TenantConfig, ...]") -> "QueueTenancy":
        limits: dict[int, int] = {}
        timeouts: dict[int, tuple[float, str]] = {}
        for t in tenants:
            if t.max_queue_size:
                limits[t.priority] = min(limits.get(t.priority, t.max_queue_size), t.max_queue_size)
            if t.queue_timeout_ms:  # the smallest timeout of a level's tenants, with its action
                timeouts[t.priority] = min(timeouts.get(t.priority, (math.inf, "")), (t.queue_timeout_ms / 1000.0, t.timeout_action))
        return cls(tenant_of, tuple(t.priority for t in tenants), tuple(t.weight for t in tenants), limits, timeouts)


NOT_ADMITTED = ("rate_limited", "quota")  # drop reasons of requests that never entered: no quota held


class Admission:
    """The tenants' buckets, in-flight counts and held requests over one core (module docstring)."""

    def __init__(self, core: "ServingCore", tenants: "tuple[TenantConfig, ...]"):
        self.core = core
        self.tenant_of = core.tenant
        self.buckets = [TokenBucket(t.rate_limit.rate_rps, t.rate_limit.burst) if t.rate_limit else None
                        for t in tenants]
        self.limits = [t.quota.max_in_flight if t.quota else None for t in tenants]
        self.waits = [bool(t.quota and t.quota.action == "wait") for t in tenants]
        self.in_flight = [0] * len(tenants)
        self.held: list[deque[int]] = [deque() for _ in tenants]
        self.held_most = [0] * len(tenants)
        self.counted = any(limit is not None for limit in self.limits)

    def wrap(self, route: Callable[[int, float], None]) -> Callable[[int, float], None]:
        """``arrive(i, now)`` for the core: admission, then ``route`` (the core's own arrive)."""
        core, tenant_of, buckets, limits = self.core, self.tenant_of, self.buckets, self.limits
        arrival_times = core.arrival_times
        self._route = route

        def arrive(i: int, now: float) -> None:
            k = tenant_of[i]
            bucket = buckets[k]
            # the bucket fills on the arrivals' own times, so both executors decide alike (a real
            # server's clock reaches an arrival a little after its time)
            if bucket is not None and not bucket.admit(arrival_times[i]):
                core.arrivals_seen = i + 1
                core.drop(i, now, "rate_limited")
                return
            limit = limits[k]
            if limit is not None and self.in_flight[k] >= limit:
                core.arrivals_seen = i + 1
                if self.waits[k]:
                    self.held[k].append(i)
                    self.held_most[k] = max(self.held_most[k], len(self.held[k]))
                else:
                    core.drop(i, now, "quota")
                return
            self.in_flight[k] += 1
            route(i, now)
        return arrive

    def ended(self, i: int, now: float, reason: str | None) -> None:
        """Request ``i`` finished (``reason``: its drop reason, None when it completed)."""
        if reason in NOT_ADMITTED or not self.counted:
            return
        k = self.tenant_of[i]
        if self.limits[k] is None:
            return
        self.in_flight[k] -= 1
        held = self.held[k]
        if held:  # the oldest waiting request of the tenant takes the freed place
            nxt = held.popleft()
            self.in_flight[k] += 1
            seen = self.core.arrivals_seen
            self._route(nxt, now)
            self.core.arrivals_seen = seen  # a late admission is not a new arrival

    def report(self) -> dict:
        """Per tenant with a quota that waits: the most requests it ever held at once."""
        names = self.core.tenant_names
        return {names[k]: {"held_most": self.held_most[k]} for k, waits in enumerate(self.waits) if waits}
