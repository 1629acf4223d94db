"""Waiting lines of a batcher: FIFO, and EDF (earliest absolute deadline first); the tenants' lines
(strict priority, weighted fair) are in ``sim.core.tenancy``.

Both also answer ``oldest_s()``, the earliest enqueue time among waiting requests, which the
batcher's wait timeout is measured from whatever the service order is. They subclass the builtin
containers so that ``len()`` and truth tests, the hottest calls, run in C.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Callable


class FifoQueue(deque):
    """Items are (enqueue_s, request)."""

    def push(self, request: int, enqueue_s: float) -> None:
        self.append((enqueue_s, request))

    def take(self) -> int:
        return self.popleft()[1]

    def take_n(self, n: int) -> list[int]:
        """The next ``n`` (at most ``len``) in one call: the batch-taking hot path."""
        if n == 1:  # batches of one are the most common of all
            return [self.popleft()[1]]
        pop = self.popleft
        return [pop()[1] for _ in range(n)]

    def oldest_s(self) -> float:
        return self[0][0]

    def requests(self):
        """The waiting requests (any order): what a per-tenant count reads."""
        return (r for _, r in self)

    def drain(self) -> list[int]:
        out = [r for _, r in self]
        self.clear()
        return out


class EdfQueue(list):
    """A heap of (deadline_s, arrival order, request); ties are served in arrival order."""

    def __init__(self, deadlines_s: list[float]) -> None:
        super().__init__()
        self._deadlines_s = deadlines_s
        self._by_age: deque[tuple[float, int]] = deque()
        self._taken: set[int] = set()
        self._seq = 0

    def push(self, request: int, enqueue_s: float) -> None:
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self, (self._deadlines_s[request], seq, request))
        self._by_age.append((enqueue_s, seq))

    def take(self) -> int:
        _, seq, request = heapq.heappop(self)
        self._taken.add(seq)
        return request

    def take_n(self, n: int) -> list[int]:
        return [self.take() for _ in range(n)]

    def requests(self):
        return (r for _, _, r in self)

    def oldest_s(self) -> float:
        by_age, taken = self._by_age, self._taken
        while by_age[0][1] in taken:
            taken.discard(by_age.popleft()[1])
        return by_age[0][0]

    def drain(self) -> list[int]:
        out = [r for _, _, r in sorted(self)]
        self.clear()
        self._by_age.clear()
        self._taken.clear()
        return out


def make_queue(discipline: str, deadlines_s: list[float], tenancy=None):
    """``deadlines_s[request]`` is each request's absolute deadline, which EDF orders by;
    ``tenancy`` (``sim.core.tenancy.QueueTenancy``) what the tenants' queues order by:
    ``priority`` and ``priority-edf`` (strict priority, FIFO or EDF within a level) and ``fair``."""
    if discipline in ("priority", "priority-edf"):
        from .tenancy import PriorityQueue

        return PriorityQueue(tenancy.tenant_of, tenancy.priority_of, deadlines_s,
                             within="edf" if discipline == "priority-edf" else "fifo", level_limits=tenancy.level_limits,
                             level_timeouts=tenancy.level_timeouts)
    if discipline == "fair":
        from .tenancy import FairQueue

        return FairQueue(tenancy.tenant_of, tenancy.weight_of, len(tenancy.weight_of))
    return EdfQueue(deadlines_s) if discipline == "edf" else FifoQueue()


def take_batch(queue: FifoQueue | EdfQueue, max_b: int, now: float, deadlines_s: list[float] | None,
               drop: Callable[[int, float, str], None]) -> list[int]:
    """The next batch, up to ``max_b`` requests in service order. With ``deadlines_s`` (the
    deployment drops expired requests), a request whose deadline has been reached is dropped via
    ``drop(request, now, "expired")`` and the next one taken in its place. Both executors batch here.
    """
    if deadlines_s is None:
        return queue.take_n(min(max_b, len(queue)))
    n = min(max_b, len(queue))
    kept: list[int] = []
    if n == 1:  # one request (batches of one are the most common of all)
        request = queue.take()
        if deadlines_s[request] > now:
            return [request]
        drop(request, now, "expired")
    elif n > 1:
        batch = queue.take_n(n)
        if min([deadlines_s[r] for r in batch]) > now:
            return batch  # nobody expired: the common case, in one pass
        for request in batch:  # the rare batch with expired requests: drop them, take others in their place
            if deadlines_s[request] <= now:
                drop(request, now, "expired")
            else:
                kept.append(request)
    while queue and len(kept) < max_b:
        request = queue.take()
        if deadlines_s[request] <= now:
            drop(request, now, "expired")
        else:
            kept.append(request)
    return kept
