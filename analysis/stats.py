"""Statistics over seeds: Student-t intervals of a mean, and paired differences between policies.

Runs of two policies on the same seed see the same arrivals, deadlines and samples, so their
difference is paired: the paired interval is much tighter than the two separate ones suggest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A mean and the half-width of its two-sided confidence interval (nan with fewer than 2 values)."""

    mean: float
    half_width: float
    n: int

    def format(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "-"
        if math.isnan(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_interval(values, level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` (nan values are left out)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(math.nan, math.nan, 0)
    if x.size == 1:
        return Interval(float(x[0]), math.nan, 1)
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return Interval(float(x.mean()), float(half), int(x.size))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired runs, its interval, and the paired t-test's two-sided p-value."""

    difference: Interval
    p_value: float
    wins: int      # pairs where a > b
    losses: int    # pairs where a < b


def paired_difference(a, b, level: float = 0.95) -> PairedDifference:
    """Paired comparison of two equally long sequences (one value per seed each)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must match in length, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if d.size < 2:
        p = math.nan
    elif np.ptp(d) == 0:  # no spread: identical runs (p = 1), or the same non-zero gap every time (p = 0)
        p = 1.0 if d[0] == 0 else 0.0
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return PairedDifference(mean_interval(d, level), p, int((d > 0).sum()), int((d < 0).sum()))
