"""Waiting lines of a batcher: FIFO, and EDF (earliest absolute deadline first).

Both also answer ``oldest_s()``, the earliest enqueue time among waiting requests, which the
batcher's wait timeout is measured from whatever the service order is.
"""

from __future__ import annotations

import heapq
from collections import deque


class FifoQueue:
    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[tuple[float, int]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, request: int, enqueue_s: float, deadline_s: float) -> None:
        self._items.append((enqueue_s, request))

    def pop(self) -> int:
        return self._items.popleft()[1]

    def oldest_s(self) -> float:
        return self._items[0][0]

    def drain(self) -> list[int]:
        out = [r for _, r in self._items]
        self._items.clear()
        return out


class EdfQueue:
    """A heap on (deadline, arrival order); ties are served in arrival order."""

    __slots__ = ("_heap", "_by_age", "_taken", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._by_age: deque[tuple[float, int]] = deque()
        self._taken: set[int] = set()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, request: int, enqueue_s: float, deadline_s: float) -> None:
        seq = self._seq
        self._seq = seq + 1
        heapq.heappush(self._heap, (deadline_s, seq, request))
        self._by_age.append((enqueue_s, seq))

    def pop(self) -> int:
        _, seq, request = heapq.heappop(self._heap)
        self._taken.add(seq)
        return request

    def oldest_s(self) -> float:
        by_age, taken = self._by_age, self._taken
        while by_age[0][1] in taken:
            taken.discard(by_age.popleft()[1])
        return by_age[0][0]

    def drain(self) -> list[int]:
        out = [r for _, _, r in sorted(self._heap)]
        self._heap.clear()
        self._by_age.clear()
        self._taken.clear()
        return out


def make_queue(discipline: str) -> FifoQueue | EdfQueue:
    return EdfQueue() if discipline == "edf" else FifoQueue()
