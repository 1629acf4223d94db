"""Latency and accuracy profiles derived from a bundle: what policies plan with, what the engine samples.

Batch sizes between two measured sizes are served by *quantile interpolation*: with measured sizes
b0 < b < b1 and w = (b - b0) / (b1 - b0), the latency at probability p is
(1 - w) * Q_b0(p) + w * Q_b1(p), where Q is the empirical (inverted-CDF) quantile function, on the
grid p_k = (k + 0.5) / m, m = max(n_b0, n_b1). At a measured size the grid is exactly its sorted
samples, so sampling the grid uniformly is sampling the measurements. Sizes outside the measured
range are refused rather than extrapolated.

A machine has slow and fast spells that outlast a batch (another tenant, a clock change): in a
real server the service times of successive batches are correlated, and it is the slow spells
that build queues. ``SlowSpells`` measures them from the bundle's timed runs in the order they
ran; the engine then draws each replica's service quantiles from a latent process with that
correlation, which keeps every batch size's distribution exactly as measured.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .bundle import TraceBundle
from .distributions import ServiceDistribution
from .features import feature_matrix, feature_names

_PARAMETRIC_GRID = 2000


def _quantile(sorted_samples: np.ndarray, probs: np.ndarray) -> np.ndarray:
    n = sorted_samples.size
    index = np.clip(np.ceil(probs * n).astype(np.int64) - 1, 0, n - 1)
    return sorted_samples[index]


class LatencyProfile:
    """The latency distribution (ms) of one variant or parametric service at each batch size."""

    def __init__(self, grids_by_batch: dict[int, np.ndarray], *, measured: bool,
                 spells: "SlowSpells | None" = None, after_idle: tuple = ()):
        if not grids_by_batch:
            raise ValueError("a latency profile needs at least one batch size")
        self._measured = {int(b): np.sort(np.asarray(g, dtype=np.float64)) for b, g in grids_by_batch.items()}
        self.measured_batch_sizes = tuple(sorted(self._measured))
        self.is_measured = measured
        self.spells = spells if spells is not None else SlowSpells()
        # (idle_s, LatencyProfile) of batches timed after longer idle gaps, ascending; this profile
        # itself is the shortest gap measured (back to back), the one policies plan with
        self.after_idle: tuple[tuple[float, "LatencyProfile"], ...] = tuple(after_idle)
        # batch size -> (start times s, latencies ms) in time order, to replay a served run's own
        # timeline (scenario ``service_order = "timeline"``); None: draw at random
        self.timeline: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
        self._cache: dict[int, np.ndarray] = {}

    @classmethod
    def from_bundle(cls, bundle: TraceBundle, variant: str, *, spells: bool = False, idle_classes: bool = True,
                    timeline: bool = False) -> "LatencyProfile":
        """The variant's measured profile: back to back, with its idle classes, and (when asked)
        its slow spells and its timeline."""
        classes = bundle.idle_classes_ms(variant)
        after = tuple((gap / 1000.0, cls(bundle.latency_samples(variant, gap), measured=True))
                      for gap in classes[1:]) if idle_classes else ()
        profile = cls(bundle.latency_samples(variant, classes[0]), measured=True,
                      spells=bundle.slow_spells(variant) if spells else None, after_idle=after)
        if timeline:
            profile.timeline = bundle.timeline(variant)
        return profile

    @property
    def idle_gaps_s(self) -> tuple[float, ...]:
        """The idle classes' gaps (s), this profile's own (back to back) first."""
        return (0.0,) + tuple(gap_s for gap_s, _ in self.after_idle)

    def covers(self, batch_size: int) -> bool:
        return self.min_batch_size <= batch_size <= self.max_batch_size

    def mean_ms_after_idle(self, batch_size: int, idle_s: float) -> float:
        """The mean service at this size after this much idleness, interpolated between idle
        classes as the simulator's sampler does (a size an idle class lacks: back to back)."""
        classes = (self,) + tuple(p for _, p in self.after_idle)
        j, w = idle_bracket(self.idle_gaps_s, idle_s)
        means = [(p if p.covers(batch_size) else self).mean_ms(batch_size) for p in classes[j:j + 2]]
        return means[0] if w == 0.0 else (1.0 - w) * means[0] + w * means[1]

    @classmethod
    def from_distribution(cls, dist: ServiceDistribution, max_batch_size: int) -> "LatencyProfile":
        """A profile of a parametric service: its exact quantiles on a fine grid at every batch size."""
        probs = (np.arange(_PARAMETRIC_GRID) + 0.5) / _PARAMETRIC_GRID
        unit = _unit_quantiles(dist, probs)
        grids = {b: unit * dist.batch_mean_ms(b) for b in range(1, max_batch_size + 1)}
        return cls(grids, measured=False)

    @property
    def min_batch_size(self) -> int:
        return self.measured_batch_sizes[0]

    @property
    def max_batch_size(self) -> int:
        return self.measured_batch_sizes[-1]

    def grid(self, batch_size: int) -> np.ndarray:
        """Sorted latencies whose uniform sampling is this batch size's distribution."""
        if batch_size in self._measured:
            return self._measured[batch_size]
        if batch_size in self._cache:
            return self._cache[batch_size]
        if not self.min_batch_size <= batch_size <= self.max_batch_size:
            raise ValueError(f"batch size {batch_size} is outside the measured range "
                             f"{self.min_batch_size}..{self.max_batch_size}")
        sizes = np.asarray(self.measured_batch_sizes)
        hi = int(sizes[np.searchsorted(sizes, batch_size)])
        lo = int(sizes[np.searchsorted(sizes, batch_size) - 1])
        s_lo, s_hi = self._measured[lo], self._measured[hi]
        m = max(s_lo.size, s_hi.size)
        probs = (np.arange(m) + 0.5) / m
        w = (batch_size - lo) / (hi - lo)
        grid = (1.0 - w) * _quantile(s_lo, probs) + w * _quantile(s_hi, probs)
        self._cache[batch_size] = grid
        return grid

    def percentile_ms(self, batch_size: int, q: float) -> float:
        return float(np.percentile(self.grid(batch_size), q))

    def mean_ms(self, batch_size: int) -> float:
        return float(self.grid(batch_size).mean())

    def throughput_rps(self, batch_size: int, replicas: int = 1) -> float:
        """Requests per second that back-to-back batches of this size sustain."""
        return replicas * batch_size * 1000.0 / self.mean_ms(batch_size)


def idle_bracket(gaps_s, idle_s: float) -> tuple[int, float]:
    """The idle class at or below ``idle_s`` (ascending ``gaps_s``, the first 0) and the weight of
    the next one in a linear interpolation; 0 at or beyond the longest gap."""
    j = max(bisect.bisect_right(gaps_s, idle_s) - 1, 0)
    if j + 1 >= len(gaps_s):
        return j, 0.0
    return j, (idle_s - gaps_s[j]) / (gaps_s[j + 1] - gaps_s[j])


@dataclass(frozen=True)
class SlowSpells:
    """Correlation of successive service times: corr(z(t), z(t + d)) = ``share`` * exp(-d / ``tau_s``).

    z is a run's normal score (its rank among the runs of its batch size); ``share`` is the part of
    the variation that comes in spells, the rest is independent from run to run. None: tau_s = 0.
    """

    share: float = 0.0
    tau_s: float = 0.0

    @property
    def none(self) -> bool:
        return self.share <= 0 or self.tau_s <= 0


MAX_SPELL_LAG = 64        # runs apart, at most, in the correlation fit
MIN_SPELL_PAIRS = 50


def measure_spells(group, latency_ms, started_at_s) -> SlowSpells:
    """Fit ``SlowSpells`` to timed runs: normal scores (ranks within each ``group``, e.g. batch
    size), their correlation at lags 1..64 runs, and a least-squares line through log(correlation)
    against the mean time apart (lags whose correlation is above 0.05). Runs more than a second
    apart (another sitting) are never paired."""
    b = np.asarray(group)
    x = np.asarray(latency_ms, dtype=np.float64)
    t = np.asarray(started_at_s, dtype=np.float64)
    z = np.empty_like(x)
    for size in np.unique(b):
        mask = b == size
        z[mask] = stats.norm.ppf(stats.rankdata(x[mask]) / (mask.sum() + 1))
    order = np.argsort(t, kind="stable")
    z, t = z[order], t[order]
    lags, logs = [], []
    for k in range(1, min(MAX_SPELL_LAG, z.size - 1) + 1):
        dt = t[k:] - t[:-k]
        ok = (dt > 0) & (dt <= 1.0)
        if ok.sum() < MIN_SPELL_PAIRS:
            break
        rho = float(np.corrcoef(z[:-k][ok], z[k:][ok])[0, 1])
        if not np.isfinite(rho) or rho <= 0.05:
            break
        lags.append(float(dt[ok].mean()))
        logs.append(np.log(rho))
    if len(lags) < 3:
        return SlowSpells()
    slope, intercept = np.polyfit(lags, logs, 1)
    if slope >= 0:
        return SlowSpells()
    return SlowSpells(share=float(min(1.0, np.exp(intercept))), tau_s=float(-1.0 / slope))


def _unit_quantiles(dist: ServiceDistribution, probs: np.ndarray) -> np.ndarray:
    cv = dist.cv
    if cv == 0:
        return np.ones_like(probs)
    if dist.kind == "exponential":
        return stats.expon.ppf(probs)
    if dist.kind == "lognormal":
        sigma = np.sqrt(np.log1p(cv * cv))
        return stats.lognorm.ppf(probs, s=sigma, scale=np.exp(-sigma * sigma / 2))
    shape = 1.0 / (cv * cv)
    return stats.gamma.ppf(probs, a=shape, scale=1.0 / shape)


@dataclass
class PredictionTable:
    """Per-sample outcomes of each variant on the samples every listed variant was evaluated on.

    Arrays are aligned: index i is ``sample_ids[i]`` in every variant, and row i of ``features``
    (float64 [n_samples, k], columns ``feature_names``; None when the bundle has no features
    table, see ``traces.features``).
    """

    sample_ids: np.ndarray
    pred: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]
    correct: dict[str, np.ndarray]
    labels: np.ndarray | None = None  # each sample's true label (the first variant's rows say it)
    features: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()

    @classmethod
    def from_bundle(cls, bundle: TraceBundle, variants: list[str]) -> "PredictionTable":
        variants = [v for v in variants if v in set(bundle.predicted_variants)]
        ids = bundle.common_sample_ids(variants)
        pred, conf, correct, labels = {}, {}, {}, None
        for variant in variants:
            rows = bundle.predictions[bundle.predictions["variant"] == variant].set_index("sample_id")
            rows = rows.loc[list(ids)]
            if labels is None:
                labels = rows["label"].to_numpy()
            pred[variant] = rows["pred"].to_numpy()
            conf[variant] = rows["confidence"].to_numpy(dtype=np.float64)
            correct[variant] = rows["correct"].to_numpy(dtype=bool)
        features, names = None, ()
        if len(bundle.features):
            features = feature_matrix(bundle.features, ids, f"bundle {bundle.path or bundle.name}")
            names = feature_names(bundle.features)
        return cls(ids, pred, conf, correct, labels, features, names)

    @property
    def variants(self) -> list[str]:
        return sorted(self.pred)

    def accuracy(self, variant: str) -> float:
        return float(self.correct[variant].mean()) if self.sample_ids.size else float("nan")
