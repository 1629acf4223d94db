"""Parametric service-time distributions, kept only to check the engine against queueing theory.

Each distribution describes the service time of one batch in milliseconds. A batch of b requests
has mean ``mean_ms + per_item_ms * (b - 1)``; the shape (coefficient of variation) stays the same
at every batch size, so a draw is a unit-mean variate scaled by that mean. Each class knows its
analytic mean and variance, which the theory tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .checks import number, reject_unknown, text
from .errors import InputError


@dataclass(frozen=True)
class ServiceDistribution:
    """Base: a service time with a per-batch mean and a fixed coefficient of variation."""

    mean_ms: float
    per_item_ms: float = 0.0

    kind = "abstract"

    def batch_mean_ms(self, batch_size: int) -> float:
        return self.mean_ms + self.per_item_ms * (batch_size - 1)

    @property
    def cv(self) -> float:
        raise NotImplementedError

    def mean(self, batch_size: int = 1) -> float:
        """Analytic mean service time (ms) of a batch."""
        return self.batch_mean_ms(batch_size)

    def variance(self, batch_size: int = 1) -> float:
        """Analytic variance (ms^2) of a batch's service time."""
        return (self.cv * self.batch_mean_ms(batch_size)) ** 2

    def second_moment(self, batch_size: int = 1) -> float:
        m = self.batch_mean_ms(batch_size)
        return self.variance(batch_size) + m * m

    def unit_draws(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n independent unit-mean variates of this shape."""
        raise NotImplementedError


@dataclass(frozen=True)
class Deterministic(ServiceDistribution):
    kind = "deterministic"

    @property
    def cv(self) -> float:
        return 0.0

    def unit_draws(self, rng, n):
        return np.ones(n)


@dataclass(frozen=True)
class Exponential(ServiceDistribution):
    kind = "exponential"

    @property
    def cv(self) -> float:
        return 1.0

    def unit_draws(self, rng, n):
        return rng.standard_exponential(n)


@dataclass(frozen=True)
class LogNormal(ServiceDistribution):
    cv_value: float = 1.0
    kind = "lognormal"

    @property
    def cv(self) -> float:
        return self.cv_value

    def unit_draws(self, rng, n):
        sigma2 = math.log1p(self.cv_value**2)
        return rng.lognormal(mean=-sigma2 / 2.0, sigma=math.sqrt(sigma2), size=n)


@dataclass(frozen=True)
class Gamma(ServiceDistribution):
    cv_value: float = 1.0
    kind = "gamma"

    @property
    def cv(self) -> float:
        return self.cv_value

    def unit_draws(self, rng, n):
        shape = 1.0 / self.cv_value**2
        return rng.gamma(shape, 1.0 / shape, size=n)


_KINDS = {cls.kind: cls for cls in (Deterministic, Exponential, LogNormal, Gamma)}
_SHAPED = {"lognormal", "gamma"}


def service_from_config(cfg: dict, where: str) -> ServiceDistribution:
    """Build a distribution from ``{kind, mean_ms, per_item_ms?, cv?}``, naming the bad key."""
    if not isinstance(cfg, dict):
        raise InputError(where, f"must be a table like {{ kind = \"exponential\", mean_ms = 2.0 }}, got {cfg!r}")
    kind = text(cfg, "kind", where, choices=_KINDS)
    reject_unknown(cfg, {"kind", "mean_ms", "per_item_ms"} | ({"cv"} if kind in _SHAPED else set()), where)
    mean_ms = number(cfg, "mean_ms", where, low=0, strict=True)
    per_item_ms = number(cfg, "per_item_ms", where, default=0.0, low=0)
    if kind in _SHAPED:
        return _KINDS[kind](mean_ms, per_item_ms, number(cfg, "cv", where, low=0, strict=True))
    return _KINDS[kind](mean_ms, per_item_ms)
