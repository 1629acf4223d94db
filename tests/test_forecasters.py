"""The load forecasters against loops, hand computations and simulated processes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.forecasters import FORECASTERS, lagged_windows, make_forecaster, window_peaks
from traces.errors import InputError


def simulate_ar2(rng: np.random.Generator, n: int, c: float, phi1: float, phi2: float) -> np.ndarray:
    """x_t = c + phi1 x_{t-1} + phi2 x_{t-2} + N(0, 1), started at its mean, 500 steps of burn-in dropped."""
    mean = c / (1 - phi1 - phi2)
    x = [mean, mean]
    for noise in rng.normal(size=n + 500):
        x.append(c + phi1 * x[-1] + phi2 * x[-2] + noise)
    return np.array(x[502:])


def test_window_peaks_match_a_loop():
    rng = np.random.default_rng(1)
    for length, window_s in [(0, 10), (9, 10), (10, 10), (137, 10), (50, 1), (50, 7)]:
        counts = rng.integers(0, 100, size=length)
        expected = [max(counts[start:start + window_s]) for start in range(0, length - window_s + 1, window_s)]
        assert window_peaks(counts, window_s).tolist() == expected


def test_lagged_windows_match_a_loop():
    peaks = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    inputs, targets = lagged_windows(peaks, history=3, horizon=2)
    assert inputs.tolist() == [peaks[i:i + 3].tolist() for i in range(4)]
    assert targets.tolist() == [max(peaks[i + 3:i + 5]) for i in range(4)]
    assert lagged_windows(peaks, history=7, horizon=2)[1].size == 0


def test_untrained_forecasters_by_hand():
    recent = [10, 30, 20, 25]
    assert make_forecaster("reactive").predict(recent) == 25
    assert make_forecaster("window-max").predict(recent) == 30
    assert make_forecaster("window-max", windows=2).predict(recent) == 25
    # 10 -> 0.5*30 + 0.5*10 = 20 -> 0.5*20 + 0.5*20 = 20 -> 0.5*25 + 0.5*20 = 22.5
    assert make_forecaster("ewma", alpha=0.5).predict(recent) == pytest.approx(22.5)
    # 10 -> 16 -> 17.2 -> 19.54 with alpha 0.3; only the last 2 (seed 20): 20 -> 21.5
    assert make_forecaster("ewma").predict(recent) == pytest.approx(19.54)
    assert make_forecaster("ewma", windows=2).predict(recent) == pytest.approx(21.5)
    assert make_forecaster("ewma", alpha=1.0).predict(recent) == 25
    for name in FORECASTERS:
        assert make_forecaster(name).predict([]) == 0.0
        assert make_forecaster(name).predict([7.5]) == 7.5


@pytest.mark.parametrize("lags", [2, 12])
def test_ar_recovers_a_simulated_ar2(lags):
    c, phi1, phi2 = 10.0, 0.5, 0.3
    series = simulate_ar2(np.random.default_rng(7), 20_000, c, phi1, phi2)
    model = make_forecaster("ar", lags=lags, max_rows=None).fit(series, horizon=1)
    assert model.fitted
    got = model.coefficients
    # standard errors here are about 0.007 for each phi and 0.3 for c: tolerances of about 5 of them
    assert got[1] == pytest.approx(phi1, abs=0.04)
    assert got[2] == pytest.approx(phi2, abs=0.04)
    assert got[0] == pytest.approx(c, abs=1.5)
    assert np.all(np.abs(got[3:]) < 0.04)
    recent = series[-lags:]
    assert model.predict(recent) == pytest.approx(c + phi1 * recent[-1] + phi2 * recent[-2], abs=0.3)


def test_ar_with_given_coefficients_predicts_the_closed_form():
    model = make_forecaster("ar", lags=3, coefficients=[1.0, 0.5, 0.25, 0.125])
    assert model.predict([8, 4, 2]) == pytest.approx(1 + 0.5 * 2 + 0.25 * 4 + 0.125 * 8)
    assert model.predict([100, 8, 4, 2]) == pytest.approx(4.0)  # only the last 3 are read
    assert make_forecaster("ar", lags=1, coefficients=[-50.0, 1.0]).predict([10]) == 0.0  # clipped at 0
    shipped = make_forecaster("ar", lags=3, coefficients=np.array(model.coefficients))
    assert shipped.predict([8, 4, 2]) == model.predict([8, 4, 2])


def test_quantile_ar_under_predicts_about_one_minus_q_of_held_out_iid_noise():
    rng = np.random.default_rng(11)
    train, test = rng.normal(100, 10, size=20_000), rng.normal(100, 10, size=20_000)
    for quantile in (0.5, 0.9):
        model = make_forecaster("quantile-ar", quantile=quantile, max_rows=None).fit(train, horizon=1)
        inputs, targets = lagged_windows(test, model.history, 1)
        under = np.mean([model.predict(row) < target for row, target in zip(inputs, targets)])
        p = 1 - quantile
        # binomial spread of the held-out rate plus that of the quantile estimated from the training rows
        tolerance = 4 * math.sqrt(p * (1 - p) / len(targets)) + 4 * math.sqrt(p * (1 - p) / len(train))
        assert abs(under - p) < tolerance, (quantile, under)


def test_quantile_ar_adds_its_margin_to_the_ar_prediction():
    rng = np.random.default_rng(3)
    series = rng.poisson(30, size=3000).astype(float)
    plain = make_forecaster("ar").fit(series, horizon=2)
    margin = make_forecaster("quantile-ar").fit(series, horizon=2)
    inputs, targets = lagged_windows(series[-4096 - 13:], 12, 2)
    residuals = targets - np.array([plain.predict(row) for row in inputs])
    assert margin.coefficients == pytest.approx(plain.coefficients)
    assert margin.margin_rps == pytest.approx(np.quantile(residuals, 0.9))
    assert margin.predict(series[-12:]) == pytest.approx(plain.predict(series[-12:]) + margin.margin_rps)


@pytest.mark.parametrize("name", ["ar", "quantile-ar"])
def test_ar_falls_back_to_the_window_max_until_fitted_and_with_short_history(name):
    model = make_forecaster(name)
    rising = np.arange(1.0, 41.0)
    assert not model.fitted
    assert model.predict(rising) == 40.0  # unfitted: the max of the last 12
    assert model.predict([5, 9, 4]) == 9.0
    model.fit(rising[:37], horizon=2)  # 24 rows: fewer than 2 (12 + 1), so nothing changes
    assert not model.fitted
    model.fit(np.full(200, 17.0), horizon=2)  # a constant series does not determine the coefficients
    assert not model.fitted
    model.fit(np.random.default_rng(5).poisson(20, size=400), horizon=2)
    assert model.fitted
    assert model.predict([5, 9, 4]) == 9.0  # fewer than 12 peaks: still the window max
    before = list(model.coefficients)
    model.fit(rising[:20], horizon=2)  # too few rows again: keeps what it learned
    assert model.coefficients == before


def test_bad_names_and_parameters_name_themselves():
    with pytest.raises(InputError, match="unknown forecaster 'lstm'"):
        make_forecaster("lstm")
    cases = [
        ("ewma", {"alpha": 0.0}, "forecaster.alpha"),
        ("ewma", {"alpha": 1.5}, "forecaster.alpha"),
        ("window-max", {"windows": 0}, "forecaster.windows"),
        ("window-max", {"windows": 2.5}, "forecaster.windows"),
        ("ar", {"lags": 0}, "forecaster.lags"),
        ("ar", {"max_rows": -1}, "forecaster.max_rows"),
        ("ar", {"lags": 2, "coefficients": [1.0, 2.0]}, "forecaster.coefficients"),
        ("ar", {"coefficients": ["a"] * 13}, "forecaster.coefficients"),
        ("quantile-ar", {"quantile": 1.0}, "forecaster.quantile"),
        ("quantile-ar", {"lags": 1, "coefficients": [0.0, 1.0]}, "forecaster.margin_rps"),
        ("reactive", {"windows": 3}, "forecaster.windows"),
    ]
    for name, params, where in cases:
        with pytest.raises(InputError) as caught:
            make_forecaster(name, **params)
        assert caught.value.where == where, (name, params)


def test_bad_series_are_input_errors():
    model = make_forecaster("ar")
    for bad in ([[1, 2], [3, 4]], [1.0, float("nan")], [3, -1], ["a", "b"]):
        with pytest.raises(InputError, match="recent"):
            model.predict(bad)
        with pytest.raises(InputError, match="peaks"):
            model.fit(bad, horizon=2)
    with pytest.raises(InputError, match="horizon"):
        model.fit(np.ones(100), horizon=0)
    with pytest.raises(InputError, match="window_s"):
        window_peaks(np.ones(20), window_s=0)
