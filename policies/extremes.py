"""`static-small` and `static-large`: the two fixed extremes every adaptive policy sits between.

`static-small` sends everything to the fastest deployment (lowest profiled median latency at batch
1); `static-large` to the most accurate one (per-sample predictions of the bundle; ties go to the
faster). Neither looks at load or deadlines.
"""

from __future__ import annotations

import math
from typing import Sequence

from .base import Policy, Route
from .registry import register


def fastest(view, among: Sequence[str] | None = None) -> str:
    """The deployment (of ``among``, default all) with the lowest profiled median at batch 1."""
    return min(among or view.deployments, key=lambda d: view.latency_profile(d).percentile_ms(1, 50))


def most_accurate(view) -> str:
    def key(d):
        acc = view.accuracy(d)
        return (-(acc if not math.isnan(acc) else -1.0), view.latency_profile(d).percentile_ms(1, 50))

    return min(view.deployments, key=key)


@register
class StaticSmall(Policy):
    name = "static-small"

    def setup(self, view):
        self._route = Route.single(fastest(view))

    def route(self, request, view):
        return self._route


@register
class StaticLarge(Policy):
    name = "static-large"

    def setup(self, view):
        self._route = Route.single(most_accurate(view))

    def route(self, request, view):
        return self._route
