"""Trace bundles: round trips, validation, and the latency profiles the engine samples from."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_bundle_frames
from traces.bundle import TraceBundle
from traces.distributions import Exponential, LogNormal
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_round_trip(tmp_path, fmt):
    service, predictions = tiny_bundle_frames()
    TraceBundle({"name": "t"}, service, predictions).save(tmp_path / "b", fmt=fmt)
    loaded = TraceBundle.load(tmp_path / "b")
    assert loaded.variants == ["fast/int8/cpu", "slow/fp32/cpu"]
    assert loaded.latency_samples("fast/int8/cpu")[2].tolist() == [3.0] * 5
    assert len(loaded.predictions) == 8 and loaded.predictions["correct"].dtype == bool


def test_save_refuses_to_overwrite(tmp_path):
    service, predictions = tiny_bundle_frames()
    bundle = TraceBundle({"name": "t"}, service, predictions)
    bundle.save(tmp_path / "b")
    with pytest.raises(InputError, match="already exists"):
        bundle.save(tmp_path / "b")
    bundle.save(tmp_path / "b", force=True)


def test_duplicate_prediction_is_named(tmp_path):
    service, predictions = tiny_bundle_frames()
    predictions = pd.concat([predictions, predictions.iloc[[2]]])
    TraceBundle({"name": "t"}, service, predictions).save(tmp_path / "b", fmt="csv")
    with pytest.raises(InputError, match=r"predictions.csv row 9: duplicate prediction"):
        TraceBundle.load(tmp_path / "b")


def test_profile_samples_measured_sizes_exactly_and_interpolates_quantiles():
    rng = np.random.default_rng(0)
    low, high = np.sort(rng.uniform(1, 2, 100)), np.sort(rng.uniform(3, 5, 60))
    profile = LatencyProfile({1: low, 5: high}, measured=True)
    assert np.array_equal(profile.grid(1), low)
    grid = profile.grid(3)  # w = 0.5 between sizes 1 and 5, on a grid of max(100, 60) points
    assert grid.size == 100
    probs = (np.arange(100) + 0.5) / 100
    q = lambda s: s[np.ceil(probs * s.size).astype(int) - 1]  # noqa: E731
    assert np.allclose(grid, 0.5 * q(low) + 0.5 * q(high))
    assert profile.percentile_ms(3, 50) == pytest.approx(0.5 * np.median(low) + 0.5 * np.median(high), rel=0.02)
    with pytest.raises(ValueError, match="outside the measured range"):
        profile.grid(6)


def test_parametric_profile_matches_analytic_quantiles():
    profile = LatencyProfile.from_distribution(Exponential(2.0, 0.5), 8)
    assert profile.percentile_ms(1, 50) == pytest.approx(2.0 * math.log(2), rel=1e-3)
    assert profile.mean_ms(4) == pytest.approx(3.5, rel=2e-3)
    lognormal = LogNormal(1.0, 0.0, 0.5)
    assert lognormal.mean(1) == 1.0 and lognormal.variance(1) == pytest.approx(0.25)
    draws = lognormal.unit_draws(np.random.default_rng(1), 200_000)
    assert draws.mean() == pytest.approx(1.0, abs=4 * 0.5 / math.sqrt(200_000))
    assert draws.std() == pytest.approx(0.5, rel=0.02)


def test_prediction_table_aligns_common_samples():
    service, predictions = tiny_bundle_frames()
    predictions = predictions[~((predictions["variant"] == "slow/fp32/cpu") & (predictions["sample_id"] == 0))]
    table = PredictionTable.from_bundle(TraceBundle({}, service, predictions), ["fast/int8/cpu", "slow/fp32/cpu"])
    assert table.sample_ids.tolist() == [1, 2, 3]
    assert table.confidence["fast/int8/cpu"].tolist() == [0.90, 0.60, 0.55]
    assert table.accuracy("fast/int8/cpu") == pytest.approx(2 / 3)


# ---------------------------------------------------------------- rows that disagree with themselves


def _saved(tmp_path, service=None, predictions=None):
    base_service, base_predictions = tiny_bundle_frames()
    path = tmp_path / "b"
    TraceBundle({"name": "t"}, base_service if service is None else service,
                base_predictions if predictions is None else predictions).save(path, fmt="csv")
    return path


def test_correct_that_disagrees_with_label_and_pred_is_named(tmp_path):
    _, predictions = tiny_bundle_frames()
    predictions.loc[5, "correct"] = not predictions.loc[5, "correct"]
    with pytest.raises(InputError, match=r"predictions.csv row 6: correct is False but label 0 and pred 0 agree"):
        TraceBundle.load(_saved(tmp_path, predictions=predictions))


@pytest.mark.parametrize("column, value, part", [("precision", "fp32", "precision is 'int8'"),
                                                 ("device", "cuda", "device is 'cpu'"),
                                                 ("model", "slow", "model[-pruning] is 'fast'")])
def test_service_column_that_disagrees_with_the_variant_id_is_named(tmp_path, column, value, part):
    service, _ = tiny_bundle_frames()
    service.loc[3, column] = value
    with pytest.raises(InputError, match=rf"service.csv row 4: {column} '{value}' disagrees with variant "
                                         rf"'fast/int8/cpu', whose {part.replace('[', '.').replace(']', '.')}"):
        TraceBundle.load(_saved(tmp_path, service=service))


def test_a_pruned_variant_names_its_base_model(tmp_path):
    service, predictions = tiny_bundle_frames()
    service["variant"] = service["variant"].str.replace("fast/", "fast-l1/")
    predictions["variant"] = predictions["variant"].str.replace("fast/", "fast-l1/")
    assert "fast-l1/int8/cpu" in TraceBundle.load(_saved(tmp_path, service, predictions)).variants
    service["model"] = service["model"].str.replace("fast", "fas")
    with pytest.raises(InputError, match="model 'fas' disagrees"):
        TraceBundle.load(_saved(tmp_path / "2", service, predictions))


def test_a_variant_that_is_not_an_id_is_named(tmp_path):
    service, _ = tiny_bundle_frames()
    service.loc[0, "variant"] = "fast-int8"
    with pytest.raises(InputError, match=r"service.csv row 1: variant 'fast-int8' is not a variant id"):
        TraceBundle.load(_saved(tmp_path, service=service))


@pytest.mark.parametrize("name", ["digits-cpu", "sst2-cpu"])
def test_shipped_bundles_load(name):
    from pathlib import Path

    bundle = TraceBundle.load(Path(__file__).resolve().parents[1] / "traces" / "data" / name)
    assert len(bundle.variants) > 5 and len(bundle.predictions) > 0


@pytest.mark.parametrize("table", ["service.csv", "predictions.csv", "bundle.json"])
def test_a_file_that_is_not_utf8_is_named(tmp_path, table):
    path = _saved(tmp_path)
    raw = (path / table).read_bytes()
    (path / table).write_bytes(raw + b"\xff\xfe")
    with pytest.raises(InputError, match=rf"{table}: not UTF-8 text \(byte 0xff"):
        TraceBundle.load(path)
