"""How a deployment with per-replica queues picks the queue an arriving request joins.

Shared by both executors (the simulator's batchers and the real server's), which is why it sees a
batcher only as something with a ``queue`` and a ``busy`` count.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, Sized

import numpy as np


class Batcher(Protocol):
    queue: Sized

    @property
    def busy(self) -> int: ...


Balancer = Callable[[Sequence[Batcher]], Batcher]


def _load(batcher: Batcher) -> int:
    return len(batcher.queue) + batcher.busy


def round_robin() -> Balancer:
    state = {"next": 0}

    def pick(batchers: Sequence[Batcher]) -> Batcher:
        index = state["next"] % len(batchers)
        state["next"] = index + 1
        return batchers[index]

    return pick


def least_loaded() -> Balancer:
    """Fewest waiting plus in-service requests; ties go to the lowest index."""
    return lambda batchers: min(batchers, key=_load)


def power_of_two(rng: np.random.Generator) -> Balancer:
    """Two distinct queues drawn at random, the less loaded of them (Mitzenmacher's two choices)."""
    block: list[float] = []

    def pick(batchers: Sequence[Batcher]) -> Batcher:
        n = len(batchers)
        if n == 1:
            return batchers[0]
        if len(block) < 2:
            block.extend(rng.random(4096).tolist())
        first = int(block.pop() * n)
        second = int(block.pop() * (n - 1))
        second += second >= first
        a, b = batchers[first], batchers[second]
        return b if _load(b) < _load(a) else a

    return pick


def make_balancer(name: str, rng: np.random.Generator) -> Balancer | None:
    """None for the default shared queue, where every replica pulls from one line."""
    if name == "shared":
        return None
    if name == "round_robin":
        return round_robin()
    if name == "least_loaded":
        return least_loaded()
    if name == "power_of_two":
        return power_of_two(rng)
    raise ValueError(f"unknown balancer {name!r}")
