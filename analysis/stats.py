"""Statistics over seeds: Student-t intervals of a mean, and paired differences between policies.

Runs of two policies on the same seed see the same arrivals, deadlines and samples, so their
difference is paired: the paired interval is much tighter than the two separate ones suggest.

``paired_tests`` runs every test a pre-declared protocol (``analysis.protocol``) reports on one
paired sample, each from scipy or statsmodels: the paired t-test and its interval; the Wilcoxon
signed-rank test, which does not assume normal differences; Cohen's d_z, the mean difference in
units of the differences' spread, which unlike a p-value does not grow with the number of seeds;
Shapiro-Wilk (are the differences normal enough for the t-test?) and Levene (do the two policies
vary alike?); and the power of the t-test at the observed d_z, with the seeds a study would need to
detect an effect of that size. Power computed from the observed effect is a function of the
p-value and no evidence of its own; the seeds needed are what it is for, to plan the next study.
A case where a test is undefined (too few pairs, no difference on any seed, Shapiro-Wilk without
spread) gives NaN and a note, never an error or a stream of warnings. ``holm`` adjusts a family of
p-values for multiple comparisons.

Both ``paired_difference`` and ``paired_tests`` compute the differences one way
(``paired_differences``: pairs with a NaN left out, rounded to 12 significant digits of the
largest value, so that float noise such as 0.3 - (0.1 + 0.2) is neither a gap nor a spread) and
take the t-test's p-value from one function (``t_test``), with one rule where the differences do
not vary. The same non-zero gap on every seed gives t = ±inf and p = 0 (scipy's answer, and the
only one consistent with the zero-width interval that excludes 0: a deterministic gap, such as the
cost of two fixed configurations, is certain); no gap on any seed gives NaN (0 / 0: no test
applies, and ``holm`` leaves it out of the family).
"""

from __future__ import annotations

import math
import warnings
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
    """Student-t interval of the mean of ``values`` (nan values are left out); equal values have a
    zero-width interval at their value."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(math.nan, math.nan, 0)
    if x.size == 1:
        return Interval(float(x[0]), math.nan, 1)
    if np.ptp(x) == 0:  # exactly: the float mean and deviation of equal values need not be x[0] and 0
        return Interval(float(x[0]), 0.0, int(x.size))
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return Interval(float(x.mean()), float(half), int(x.size))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired runs, its interval, and the paired t-test's two-sided p-value."""

    difference: Interval
    p_value: float
    wins: int      # pairs where a > b
    losses: int    # pairs where a < b


DIFFERENCE_DIGITS = 12  # differences are rounded to 12 significant digits, so 0.3 - 0.1 ties 0.2 - 0.0


def paired_differences(a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a`` and ``b`` (paired by position, one sequence each) without the pairs holding a NaN, and
    their differences ``a - b`` rounded to ``DIFFERENCE_DIGITS`` significant digits of the largest
    absolute value of either. ``ValueError`` for sequences of different shapes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two sequences of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    scale = float(np.max(np.abs(np.concatenate([a, b])), initial=0.0))
    d = a - b
    if scale > 0:
        d = np.round(d, DIFFERENCE_DIGITS - int(math.ceil(math.log10(scale))))
    return a, b, d


def t_test(d: np.ndarray) -> tuple[float, float]:
    """The paired t-test of the differences ``d`` against 0: (t, two-sided p), scipy's
    ``ttest_1samp``. Fewer than 2 differences: NaN. No spread: t = ±inf and p = 0 for the same
    non-zero gap on every seed, NaN when every difference is 0 (the module docstring says why)."""
    if d.size < 2:
        return math.nan, math.nan
    if np.ptp(d) == 0:
        return (math.copysign(math.inf, d[0]), 0.0) if d[0] != 0 else (math.nan, math.nan)
    result = stats.ttest_1samp(d, 0.0)
    return float(result.statistic), float(result.pvalue)


def paired_difference(a, b, level: float = 0.95) -> PairedDifference:
    """Paired comparison of two equally long sequences (one value per seed each): the mean of the
    differences (``paired_differences``: NaN pairs left out, rounded) with its Student-t interval,
    the t-test's p (``t_test``: 0 for the same non-zero gap on every seed, NaN for none), wins and
    losses."""
    _, _, d = paired_differences(a, b)
    return PairedDifference(mean_interval(d, level), t_test(d)[1], int((d > 0).sum()), int((d < 0).sum()))


# --- the tests of one paired sample, as a pre-declared protocol reports them (analysis.protocol) ---

# Cohen's conventional labels for |d|: below 0.2 negligible, then small, medium, and large from 0.8
EFFECT_LABELS = ((0.2, "negligible"), (0.5, "small"), (0.8, "medium"), (math.inf, "large"))
# Wilcoxon signed-rank: ``wilcox`` drops zero differences, a seed on which both policies score the
# same (they often take the same decisions on the same arrivals: a real tie, not rounding) says
# nothing about which is better; ``auto`` takes the exact null distribution for up to 50 pairs
# without ties or zeros and, in scipy >= 1.15, an exhaustive sign-flip permutation for up to 13
# pairs with them: exact for the handful of seeds a study has, asymptotic only beyond.
WILCOXON = {"zero_method": "wilcox", "method": "auto"}
FEW_SEEDS = 10        # seeds needed for power: tried one by one up to here, solved for beyond


def effect_label(d: float) -> str:
    """Cohen's label for a standardised effect ``d``: negligible, small, medium or large (by |d|)."""
    if math.isnan(d):
        return "n/a"
    return next((label for bound, label in EFFECT_LABELS if abs(d) < bound), EFFECT_LABELS[-1][1])


@dataclass(frozen=True)
class PairedTests:
    """Every test of one paired sample (a and b per seed). NaN where a test is undefined (too few
    pairs, no gap on any seed, a library warning), t and d_z ±inf where every seed shows the same
    gap (``t_test``); ``notes`` says which."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float          # mean of a - b
    ci_low: float             # Student-t interval of the mean difference at level 1 - alpha
    ci_high: float
    t_stat: float             # paired t-test (``t_test``), two-sided
    p_t: float
    w_stat: float             # Wilcoxon signed-rank (scipy.stats.wilcoxon, ``WILCOXON``), two-sided
    p_wilcoxon: float
    cohens_dz: float          # mean difference / sd of the differences
    effect: str               # ``effect_label(cohens_dz)``
    shapiro_p: float          # Shapiro-Wilk on the differences: small p = not normal, trust Wilcoxon
    levene_p: float           # Levene (median-centred) on the two samples: do their spreads differ?
    power: float              # of the paired t-test at the observed d_z, n and alpha
    seeds_for_power: float    # seeds for the target power at the observed d_z
    notes: tuple[str, ...] = ()


def paired_tests(a, b, alpha: float = 0.05, power_target: float = 0.8) -> PairedTests:
    """All tests of ``a`` against ``b``, paired by position; pairs with a NaN on either side are left
    out, and the differences are rounded (``paired_differences``). The same non-zero gap on every
    seed has t = ±inf, p = 0, d_z = ±inf, power 1 at 2 seeds (the limits; ``t_test``); no gap on
    any seed leaves every test NaN."""
    total = np.asarray(a).size
    a, b, d = paired_differences(a, b)
    notes: list[str] = []
    if d.size < total:
        notes.append(f"{total - d.size} pair(s) with a missing value left out")
    n = int(d.size)
    spread = n >= 2 and np.ptp(d) > 0
    interval = mean_interval(d, 1 - alpha)
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        t_stat, p_t = _t_test(d, notes)
        w_stat, p_w = _wilcoxon(d, notes)
        dz = float(d.mean() / d.std(ddof=1)) if spread else t_stat  # the limit, like t: ±inf or NaN
        shapiro_p = _shapiro(d, spread, notes)
        levene_p = _levene(a, b, notes)
        power, seeds = _power(dz, n, alpha, power_target, notes)
    notes += sorted({f"{w.category.__name__}: {str(w.message).strip().splitlines()[0]}" for w in caught})
    if n and not np.any(d):  # one sentence instead of one per test
        notes = [note for note in notes if "pair(s)" in note] + ["a and b are equal on every seed: no test applies"]
    return PairedTests(n, _mean(a), _mean(b), interval.mean, interval.mean - interval.half_width,
                       interval.mean + interval.half_width, t_stat, p_t, w_stat, p_w, dz, effect_label(dz),
                       shapiro_p, levene_p, power, seeds, tuple(notes))


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def _t_test(d: np.ndarray, notes: list[str]) -> tuple[float, float]:
    """``t_test``, with a note where it is undefined or at its limit (no gap at all: one note later)."""
    if d.size < 2:
        notes.append(f"paired t-test, d_z and power need 2 pairs, have {d.size}")
    elif np.ptp(d) == 0 and np.any(d):
        notes.append("the same difference on every seed (no variance): t and d_z are infinite, p = 0, power 1; "
                     "Shapiro-Wilk undefined")
    return t_test(d)


def _wilcoxon(d: np.ndarray, notes: list[str]) -> tuple[float, float]:
    if not np.any(d != 0):
        notes.append("no non-zero difference: Wilcoxon signed-rank undefined")
        return math.nan, math.nan
    result = stats.wilcoxon(d, **WILCOXON)
    return float(result.statistic), float(result.pvalue)


def _shapiro(d: np.ndarray, spread: bool, notes: list[str]) -> float:
    if d.size < 3:
        notes.append(f"Shapiro-Wilk needs 3 pairs, have {d.size}")
        return math.nan
    return float(stats.shapiro(d).pvalue) if spread else math.nan


def _levene(a: np.ndarray, b: np.ndarray, notes: list[str]) -> float:
    if a.size < 2:
        return math.nan  # already said by the t-test
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        notes.append("neither sample varies: Levene undefined")
        return math.nan
    return float(stats.levene(a, b, center="median").pvalue)


def _t_power(power, effect: float, n: int, alpha: float) -> float:
    """statsmodels' two-sided power at ``effect`` >= 0; where it is NaN because scipy's noncentral t
    gives NaN for the far tail (it does so only once that tail is below ~1e-15), the near tail alone."""
    value = float(power.power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided"))
    if math.isnan(value):
        value = float(power.power(effect_size=effect, nobs=n, alpha=alpha / 2, alternative="larger"))
    return value


def _power(dz: float, n: int, alpha: float, target: float, notes: list[str]) -> tuple[float, float]:
    """Achieved power of the two-sided paired t-test at |d_z| and n, and the seeds for ``target``:
    the fewest from 2 to ``FEW_SEEDS`` that reach it, else statsmodels' root rounded up (its solver
    fails for the huge effects that need only a few seeds, hence the small ones are tried first)."""
    if math.isnan(dz):
        return math.nan, math.nan
    if math.isinf(dz):  # the limits: any test of 2 or more seeds rejects an infinite effect
        return 1.0, 2.0
    from statsmodels.stats.power import TTestPower

    power = TTestPower()
    achieved = _t_power(power, abs(dz), n, alpha)
    for seeds in range(2, FEW_SEEDS + 1):
        if _t_power(power, abs(dz), seeds, alpha) >= target:
            return achieved, float(seeds)
    if dz == 0:
        notes.append("the mean difference is 0: no number of seeds gives the t-test power against it")
        return achieved, math.nan
    try:
        solved = float(power.solve_power(effect_size=abs(dz), nobs=None, alpha=alpha, power=target,
                                         alternative="two-sided"))
    except (ValueError, RuntimeError, ArithmeticError):
        solved = math.nan
    if not math.isfinite(solved):
        notes.append("statsmodels could not solve for the seeds needed")
        return achieved, math.nan
    return achieved, float(math.ceil(solved))


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests``, method "holm"): the family is the
    finite p-values; a NaN p-value is left out of it and stays NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="holm")[1]
    return adjusted
