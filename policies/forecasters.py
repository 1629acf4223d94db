"""Load forecasters: the peak request rate of the next few seconds, from the peaks of the last few.

A planner that re-plans every 10 s (IPA, Ghafouri et al., "Inference Pipeline Adaptation") must size
its replicas for the load *until the next plan*, and the load that hurts is the peak, not the mean:
a plan that carries the mean rate falls behind in every burst above it. So the unit of history is
the **window peak**, the highest per-second request count of a 10 s window (``window_peaks``), and
the quantity to predict is the highest of the next ``horizon`` window peaks: IPA reads 12 windows
(2 minutes) and predicts the peak of the next 20 s (2 windows).

A small story. The last six peaks were 20, 22, 21, 30, 24, 23 requests/s. ``reactive`` says 23
(the last peak), ``window-max`` says 30 (the worst of the window: rarely under, often wasteful),
``ewma`` says 23.5 (a smoothed level: it trails every rise, so it under-predicts more than half
the time), ``ar`` weighs the twelve peaks by coefficients learned by least squares to predict the
maximum of the next two, and ``quantile-ar`` adds to that the margin its training residuals were
below 90% of the time, so it under-predicts about one window in ten. On IPA's Twitter setup the
simple ones match or beat IPA's LSTM on mean absolute percentage error; what keeps a plan from
under-provisioning is a window maximum or a margin (``bench/forecast.py`` has the figures).

A forecaster is a small object: ``fit(peaks, horizon)`` trains it on a series of window peaks (a
no-op for the untrained ones) and ``predict(recent)`` maps the recent peaks, oldest first, to a rate
>= 0. ``predict`` reads only its argument and the fitted coefficients, so one instance serves any
number of callers. The AR forecasters fall back to the window maximum of what they were given while
they are unfitted or have fewer than ``lags`` peaks (as IPA does with under two minutes of history),
and ``fit`` is cheap enough to call online on the peaks seen so far (at most ``max_rows`` rows of
``numpy.linalg.lstsq``) and leaves the forecaster as it was when there are too few rows to fit.

Parameters are checked against their annotations on construction (``policies.params``), so a bad
one raises ``InputError("forecaster.<key>", ...)`` however the forecaster is built;
``make_forecaster`` also names unknown forecasters and parameters.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import numpy as np

from traces.errors import InputError

from .params import Range, check

Windows = Annotated[int, Range(1)]
OpenFraction = Annotated[float, Range(0, 1, low_open=True, high_open=True)]
Alpha = Annotated[float, Range(0, 1, low_open=True)]

HISTORY_WINDOWS = 12  # IPA's input: 12 windows of 10 s
HORIZON_WINDOWS = 2  # IPA's target: the peak of the next 20 s
ONLINE_MAX_ROWS = 4096  # the most recent training rows an online refit reads (about 11 hours of 10 s windows)


def window_peaks(counts_per_s: np.ndarray, window_s: int = 10) -> np.ndarray:
    """The highest count of each whole window of ``window_s`` seconds (a trailing partial one is left out)."""
    counts = _series(counts_per_s, "counts_per_s")
    check(window_s, Windows, "window_s")
    whole = len(counts) // window_s
    return counts[:whole * window_s].reshape(whole, window_s).max(axis=1)


def lagged_windows(peaks: np.ndarray, history: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every position of a sliding window over ``peaks``, one window apart: ``history`` peaks in
    (oldest first, one row each) and the maximum of the ``horizon`` peaks after them as the target."""
    series = _series(peaks, "peaks")
    check(history, Windows, "history")
    check(horizon, Windows, "horizon")
    rows = len(series) - history - horizon + 1
    if rows <= 0:
        return np.empty((0, history)), np.empty(0)
    views = np.lib.stride_tricks.sliding_window_view(series, history + horizon)[:rows]
    return views[:, :history].astype(float), views[:, history:].max(axis=1).astype(float)


def _series(values: object, where: str) -> np.ndarray:
    """``values`` as a 1-D array of finite numbers >= 0 (counts or rates), else ``InputError``."""
    try:
        array = np.asarray(values)
        ok = array.ndim == 1 and np.issubdtype(array.dtype, np.number) and bool(np.all(np.isfinite(array))) \
            and bool(np.all(array >= 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(where, "must be a one-dimensional sequence of finite numbers >= 0")
    return array


class Forecaster(abc.ABC):
    """Predicts the peak rate (requests/s) of the next ``horizon`` windows from the recent window peaks."""

    name: ClassVar[str]

    def __post_init__(self) -> None:
        """Check every parameter against its annotation: ``InputError("forecaster.<key>", ...)``."""
        hints = typing.get_type_hints(type(self), include_extras=True)
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            if item.init:
                check(getattr(self, item.name), hints[item.name], f"forecaster.{item.name}")

    @property
    @abc.abstractmethod
    def history(self) -> int:
        """How many of the most recent window peaks ``predict`` reads."""

    def fit(self, peaks: np.ndarray, horizon: int = HORIZON_WINDOWS) -> Forecaster:
        """Train on a series of window peaks, to predict the maximum of the next ``horizon`` peaks.
        The untrained forecasters only check the input."""
        lagged_windows(peaks, self.history, horizon)
        return self

    def predict(self, recent: np.ndarray) -> float:
        """The predicted peak rate (>= 0) from the recent peaks, oldest first; 0 when there are none."""
        series = _series(recent, "recent")
        if len(series) == 0:
            return 0.0
        return max(0.0, self._predict(series[-self.history:].astype(float)))

    @abc.abstractmethod
    def _predict(self, recent: np.ndarray) -> float:
        """The prediction from at most ``history`` peaks (at least one), oldest first."""


@dataclass
class Reactive(Forecaster):
    """The last window's peak: what a purely reactive scaler provisions for."""

    name: ClassVar[str] = "reactive"

    @property
    def history(self) -> int:
        return 1

    def _predict(self, recent: np.ndarray) -> float:
        return float(recent[-1])


@dataclass
class WindowMax(Forecaster):
    """The highest of the last ``windows`` peaks (12 = 120 s): IPA's fallback, rarely under."""

    name: ClassVar[str] = "window-max"
    windows: Windows = HISTORY_WINDOWS

    @property
    def history(self) -> int:
        return self.windows

    def _predict(self, recent: np.ndarray) -> float:
        return float(recent.max())


@dataclass
class Ewma(Forecaster):
    """Exponentially weighted moving average of the last ``windows`` peaks, seeded with the oldest:
    e = alpha * peak + (1 - alpha) * e, from the oldest peak to the newest."""

    name: ClassVar[str] = "ewma"
    alpha: Alpha = 0.3
    windows: Windows = HISTORY_WINDOWS

    @property
    def history(self) -> int:
        return self.windows

    def _predict(self, recent: np.ndarray) -> float:
        ages = np.arange(len(recent) - 1, -1, -1)  # the newest peak has age 0
        weights = self.alpha * (1.0 - self.alpha) ** ages
        weights[0] = (1.0 - self.alpha) ** ages[0]  # the seed keeps what the others leave
        return float(weights @ recent)


@dataclass
class AutoRegressive(Forecaster):
    """Least-squares AR(p) with intercept: target = c + phi_1 * newest peak + ... + phi_p * p-th newest.

    ``coefficients`` is [c, phi_1, ..., phi_p]: given (to ship a fitted model) or learned by ``fit``
    from the last ``max_rows`` rows of ``lagged_windows`` (None: all of them). A fit with fewer than
    2 (p + 1) rows, or whose rows do not determine the coefficients (a constant series), changes
    nothing. Unfitted, or with fewer than p peaks, it predicts their maximum.
    """

    name: ClassVar[str] = "ar"
    lags: Windows = HISTORY_WINDOWS
    coefficients: list[float] | None = None
    max_rows: Windows | None = ONLINE_MAX_ROWS
    _weights: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.coefficients, (tuple, np.ndarray)):
            self.coefficients = [float(value) for value in self.coefficients]
        super().__post_init__()
        if self.coefficients is not None:
            if len(self.coefficients) != self.lags + 1:
                raise InputError("forecaster.coefficients", f"must hold lags + 1 = {self.lags + 1} numbers "
                                 f"(intercept, then one per lag, newest first), got {len(self.coefficients)}")
            self._weights = np.array(self.coefficients, dtype=float)

    @property
    def history(self) -> int:
        return self.lags

    @property
    def fitted(self) -> bool:
        return self._weights is not None

    def fit(self, peaks: np.ndarray, horizon: int = HORIZON_WINDOWS) -> AutoRegressive:
        inputs, targets = lagged_windows(peaks, self.lags, horizon)
        if self.max_rows is not None:
            inputs, targets = inputs[-self.max_rows:], targets[-self.max_rows:]
        if len(targets) < 2 * (self.lags + 1):
            return self
        design = np.column_stack([np.ones(len(targets)), inputs[:, ::-1]])  # intercept, newest ... oldest
        solution, _, rank, _ = np.linalg.lstsq(design, targets, rcond=None)
        if rank < design.shape[1]:
            return self
        self._weights = solution
        self.coefficients = [float(value) for value in solution]
        self._fitted(targets - design @ solution)
        return self

    def _fitted(self, residuals: np.ndarray) -> None:
        """What a subclass learns from the training residuals (target - prediction)."""

    def _margin_rps(self) -> float:
        return 0.0

    def _predict(self, recent: np.ndarray) -> float:
        if self._weights is None or len(recent) < self.lags:
            return float(recent.max())
        return float(self._weights[0] + self._weights[1:] @ recent[::-1]) + self._margin_rps()


@dataclass
class QuantileAutoRegressive(AutoRegressive):
    """AR plus the ``quantile`` of its training residuals, so it predicts below the target about
    (1 - quantile) of the time. ``margin_rps`` is that margin: set by ``fit``, or given together
    with ``coefficients`` to ship a fitted model. Unfitted, it predicts the window maximum."""

    name: ClassVar[str] = "quantile-ar"
    quantile: OpenFraction = 0.9
    margin_rps: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.coefficients is None) != (self.margin_rps is None):
            raise InputError("forecaster.margin_rps", "must be given together with coefficients (or neither)")

    def _fitted(self, residuals: np.ndarray) -> None:
        self.margin_rps = float(np.quantile(residuals, self.quantile))

    def _margin_rps(self) -> float:
        return self.margin_rps or 0.0


FORECASTERS: dict[str, type[Forecaster]] = {
    cls.name: cls for cls in (Reactive, WindowMax, Ewma, AutoRegressive, QuantileAutoRegressive)
}


def make_forecaster(name: str, /, **params: object) -> Forecaster:
    """The forecaster registered as ``name`` built from ``params``; ``InputError`` names an unknown
    forecaster or parameter and a value of the wrong kind or range."""
    if not isinstance(name, str) or name not in FORECASTERS:
        raise InputError("forecaster", f"unknown forecaster {name!r}; known: {', '.join(sorted(FORECASTERS))}")
    cls = FORECASTERS[name]
    accepted = sorted(item.name for item in dataclasses.fields(cls) if item.init)  # type: ignore[arg-type]
    for key in params:
        if key not in accepted:
            raise InputError(f"forecaster.{key}", f"unknown parameter for forecaster {name!r}; "
                             f"allowed: {', '.join(accepted) or 'none'}")
    return cls(**params)
