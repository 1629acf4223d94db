"""Paired verdicts: did policy a win, tie or lose against b over seeds that saw the same arrivals?

A comparison of two policies run on the same arrivals (paired by seed) is a set of differences
a - b, one per seed. Its verdict is ``tie`` when the mean difference lies within the 95% Student-t
half-width of those differences (the interval of the mean holds 0), and ``win`` or ``loss`` by its
sign otherwise. With one seed there is no spread: the sign decides, and a zero difference ties.
The widened study (``bench/widened_study.py``) counts them over its cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import mean_interval


@dataclass(frozen=True)
class Verdict:
    mean: float       # mean paired difference a - b
    low: float        # the smallest and largest difference over the seeds
    high: float
    spread: float     # half-width of the 95% Student-t interval of the mean (nan for one seed)
    label: str        # win, tie or loss

    def format(self, scale: float = 100.0) -> str:
        """The mean, its range over the seeds (x ``scale``: points by default) and the label."""
        return f"{scale * self.mean:+.2f} [{scale * self.low:+.2f}..{scale * self.high:+.2f}] {self.label}"


def verdict(differences) -> Verdict:
    """``tie`` when |mean| is within the 95% t half-width of the paired differences, else the sign's."""
    d = np.asarray(differences, dtype=np.float64)
    interval = mean_interval(d)   # t(0.975, n-1) s / sqrt(n) from scipy.stats
    spread = interval.half_width
    bound = 0.0 if np.isnan(spread) else spread
    label = "tie" if abs(interval.mean) <= bound else ("win" if interval.mean > 0 else "loss")
    return Verdict(interval.mean, float(d.min()), float(d.max()), spread, label)
