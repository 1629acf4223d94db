"""The routes a router chooses among: each deployment alone, and two-stage cascades.

A cascade sends a request to a faster deployment first and on to a slower one only when the fast
one's confidence is below a threshold. Only faster-then-slower pairs make sense (a slow first stage
costs its latency on every request and saves nothing), and only between deployments whose variants
have per-sample predictions (the exit rule and the expected accuracy need them). The planner, the
oracle-static bound and the learned router all choose among these, so they are enumerated once here.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence


def cascade_pairs(deployments: Sequence[str], speed_ms: Mapping[str, float],
                  predicted: Callable[[str], bool]) -> list[tuple[str, str]]:
    """Every (fast, slow) pair with ``speed_ms[fast] < speed_ms[slow]`` and predictions for both
    (``predicted(deployment)``), in the deployments' order (fast outer, slow inner)."""
    return [(fast, slow) for fast in deployments for slow in deployments
            if speed_ms[fast] < speed_ms[slow] and predicted(fast) and predicted(slow)]
