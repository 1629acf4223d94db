"""`throughput-autotuner`: the variant and batch size with the highest throughput that fits the deadline.

Every plan interval it scores each (deployment, batch size) by sustained throughput, replicas x b /
mean batch latency, among those whose profiled p95 batch latency fits the deadline, and sends all
traffic to the winner with its maximum batch set to that b. Accuracy plays no part: this is the
batch-size tuning of throughput-oriented servers (Triton's model analyzer, Clipper's batch sizing).
The deadline is the ``deadline_ms`` parameter, or else the tightest deadline seen so far. A
deployment with no live replica has no throughput: it is never chosen, and when it is the current
choice and nothing fits, traffic moves to the fastest live deployment.
"""

from __future__ import annotations

import math

from .base import PlanAction, Policy, Route
from .extremes import fastest
from .params import Percentile, Positive
from .registry import register


@register
class ThroughputAutotuner(Policy):
    name = "throughput-autotuner"

    def __init__(self, deadline_ms: Positive | None = None, q: Percentile = 95.0):
        self.deadline_ms = deadline_ms
        self.q = q
        self._seen_ms = math.inf

    def setup(self, view):
        self._routes = {d: Route.single(d) for d in view.deployments}
        self._current = self._routes[fastest(view)]
        self._choose(view, self.deadline_ms or math.inf)

    def _choose(self, view, deadline_ms: float) -> PlanAction | None:
        best, best_tput = None, -1.0
        live = [d for d in view.deployments if view.replicas(d) > 0]  # a crashed deployment has no throughput
        for dep in live:
            profile = view.latency_profile(dep)
            for b in range(profile.min_batch_size, profile.max_batch_size + 1):
                if profile.percentile_ms(b, self.q) > deadline_ms:
                    break
                tput = profile.throughput_rps(b, view.replicas(dep))
                if tput > best_tput:
                    best, best_tput = (dep, b), tput
        if best is None:
            if live and view.replicas(self._current.hops[0].deployment) <= 0:
                self._current = self._routes[fastest(view, live)]  # nothing fits: at least a live one
            return None
        self._current = self._routes[best[0]]
        return PlanAction(best[0], max_batch_size=best[1])

    def route(self, request, view):
        if request.deadline_ms < self._seen_ms:
            self._seen_ms = request.deadline_ms
        return self._current

    def plan(self, view):
        deadline = self.deadline_ms or self._seen_ms
        action = self._choose(view, deadline) if math.isfinite(deadline) else None
        return [action] if action is not None else []
