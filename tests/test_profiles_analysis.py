"""analysis.profiles: the tables of a bundle against hand computations on a tiny hand-made bundle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import profiles as pf
from traces.bundle import TraceBundle
from traces.errors import InputError

# Model "m": the reference m/fp32/cpu, an INT8 variant and an L1-pruned one; model "k" has no FP32
# unpruned variant, so nothing can be compared with it. The INT8 variant was timed at batch 1 only.
LATENCY_MS = {
    ("m/fp32/cpu", 1): [4.0, 1.0, 3.0, 2.0],
    ("m/fp32/cpu", 8): [10.0, 30.0, 20.0],
    ("m/int8/cpu", 1): [1.0, 1.0, 2.0],
    ("m-l1/fp32/cpu", 1): [2.0, 6.0],
    ("m-l1/fp32/cpu", 8): [5.0, 25.0],
    ("k/int8/cpu", 1): [7.0],
}
SAMPLES = 8
CORRECT = {  # per sample 0..7
    "m/fp32/cpu": [False, True, True, True, True, True, True, True],
    "m/int8/cpu": [True, False, False, False, False, True, True, True],    # gained 1, lost 4
    "m-l1/fp32/cpu": [False, True, True, True, True, True, True, True],   # the same as the reference
    "k/int8/cpu": [True] * SAMPLES,
}
CONFIDENCE = {
    "m/fp32/cpu": [0.6, 0.9, 0.95, 0.99, 0.7, 0.8, 0.9, 1.0],
    "m/int8/cpu": [0.5, 0.9, 0.95, 0.6, 0.7, 0.8, 0.9, 0.99],
    "m-l1/fp32/cpu": [0.55] * SAMPLES,
    "k/int8/cpu": [0.9] * SAMPLES,
}


def _service() -> pd.DataFrame:
    rows = []
    for (variant, batch_size), values in LATENCY_MS.items():
        base, precision, device = variant.split("/")
        for ms in values:
            rows.append((variant, base.split("-")[0], precision, device, batch_size, ms))
    return pd.DataFrame(rows, columns=["variant", "model", "precision", "device", "batch_size", "latency_ms"])


def _predictions() -> pd.DataFrame:
    rows = []
    for variant, correct in CORRECT.items():
        for sample, (right, confidence) in enumerate(zip(correct, CONFIDENCE[variant])):
            label = sample % 3
            rows.append((variant, f"s{sample}", label, label if right else (label + 1) % 3, confidence, right))
    return pd.DataFrame(rows, columns=["variant", "sample_id", "label", "pred", "confidence", "correct"])


@pytest.fixture
def bundle(tmp_path) -> TraceBundle:
    made = TraceBundle(meta={"name": "tiny-profiles", "description": "hand-made", "units": {"latency": "ms"}},
                       service=_service(), predictions=_predictions())
    return TraceBundle.load(made.save(tmp_path / "tiny", fmt="csv"))


def test_the_parts_of_each_variant_come_from_its_id(bundle):
    parts = pf.variant_table(bundle).set_index("variant")
    assert sorted(parts.index) == sorted(CORRECT)
    assert parts.loc["m-l1/fp32/cpu", ["model", "precision", "pruning"]].tolist() == ["m", "fp32", "l1"]
    assert parts.loc["m/int8/cpu", ["model", "precision", "pruning"]].tolist() == ["m", "int8", "none"]


def test_latency_percentiles_and_throughput_match_hand_computation(bundle):
    table = pf.latency_table(bundle).set_index(["variant", "batch_size"])
    assert len(table) == len(LATENCY_MS)
    row = table.loc[("m/fp32/cpu", 1)]
    # sorted 1, 2, 3, 4: the median halfway between 2 and 3; p95 at rank 0.95 x 3 = 2.85 -> 3 + 0.85 x 1
    assert (row["runs"], row["mean_ms"], row["p50_ms"]) == (4, 2.5, 2.5)
    assert row["p95_ms"] == pytest.approx(3.85)
    assert row["p99_ms"] == pytest.approx(3.97)
    batch8 = table.loc[("m/fp32/cpu", 8)]
    assert batch8["mean_ms"] == pytest.approx(20.0)
    assert batch8["throughput_rps"] == pytest.approx(8 * 1000 / 20.0)
    assert table.loc[("m/int8/cpu", 1), "throughput_rps"] == pytest.approx(1000 / (4.0 / 3))
    custom = pf.latency_table(bundle, (10,))
    assert "p10_ms" in custom and "p50_ms" not in custom


def test_accuracy_has_the_wilson_interval_and_the_confidence_when_right_and_wrong(bundle):
    table = pf.accuracy_table(bundle).set_index("variant")
    row = table.loc["m/int8/cpu"]
    right, n = 4, SAMPLES
    assert (row["samples"], row["accuracy"]) == (n, right / n)
    z = stats.norm.ppf(0.975)  # Wilson's score interval, written out
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert row["accuracy_low"] == pytest.approx(centre - half)
    assert row["accuracy_high"] == pytest.approx(centre + half)
    assert row["confidence_right"] == pytest.approx(np.mean([0.5, 0.8, 0.9, 0.99]))
    assert row["confidence_wrong"] == pytest.approx(np.mean([0.9, 0.95, 0.6, 0.7]))
    assert row["confidence_median"] == pytest.approx(np.median(CONFIDENCE["m/int8/cpu"]))
    assert math.isnan(table.loc["k/int8/cpu", "confidence_wrong"])  # never wrong


def test_coverage_and_selective_accuracy_keep_confidence_at_or_above_the_threshold(bundle):
    table = pf.threshold_table(bundle, (0.9, 0.999)).set_index(["variant", "threshold"])
    row = table.loc[("m/fp32/cpu", 0.9)]
    # confidences >= 0.9: samples 1, 2, 3, 6, 7 (0.9 itself counts), all correct
    assert (row["answered"], row["coverage"], row["selective_accuracy"]) == (5, 5 / 8, 1.0)
    row = table.loc[("m/int8/cpu", 0.9)]  # samples 1, 2, 6, 7: two right
    assert (row["answered"], row["selective_accuracy"]) == (4, 0.5)
    empty = table.loc[("m-l1/fp32/cpu", 0.999)]
    assert empty["answered"] == 0 and math.isnan(empty["selective_accuracy"])
    with pytest.raises(InputError, match="thresholds"):
        pf.threshold_table(bundle, (0.5, 1.5))


def test_each_compression_is_priced_against_the_fp32_unpruned_model_of_its_architecture(bundle):
    table = pf.cost_table(bundle).set_index("variant")
    assert "m/fp32/cpu" not in table.index  # the reference itself
    int8 = table.loc["m/int8/cpu"]
    assert int8["reference"] == "m/fp32/cpu"
    assert int8["latency_ratio_b1"] == pytest.approx(1.0 / 2.5)  # medians 1 and 2.5
    assert math.isnan(int8["latency_ratio_b8"])  # never timed at batch 8
    assert table.loc["m-l1/fp32/cpu", "latency_ratio_b8"] == pytest.approx(15.0 / 20.0)
    mine, theirs = np.array(CORRECT["m/int8/cpu"], float), np.array(CORRECT["m/fp32/cpu"], float)
    d = mine - theirs
    assert int8["accuracy_diff"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert int8["accuracy_diff_low"] == pytest.approx(d.mean() - half)
    assert int8["accuracy_diff_high"] == pytest.approx(d.mean() + half)
    assert (int8["gained"], int8["lost"], int8["paired_samples"]) == (1, 4, SAMPLES)
    assert int8["p_mcnemar"] == pytest.approx(stats.binomtest(1, 5, 0.5).pvalue)
    same = table.loc["m-l1/fp32/cpu"]
    assert (same["accuracy_diff"], same["gained"], same["lost"], same["p_mcnemar"]) == (0.0, 0, 0, 1.0)
    orphan = table.loc["k/int8/cpu"]  # no k/fp32/cpu to compare with
    assert pd.isna(orphan["reference"]) and math.isnan(orphan["latency_ratio_b1"])
    assert math.isnan(orphan["accuracy_diff"]) and orphan["paired_samples"] == 0


def test_a_bundle_without_predictions_has_latency_but_no_accuracy(tmp_path, bundle):
    latency_only = TraceBundle(meta=bundle.meta, service=bundle.service,
                               predictions=bundle.predictions.iloc[0:0])
    loaded = TraceBundle.load(latency_only.save(tmp_path / "latency-only", fmt="csv"))
    assert len(pf.latency_table(loaded)) == len(LATENCY_MS)
    with pytest.raises(InputError, match="no predictions"):
        pf.accuracy_table(loaded)
    assert pf.cost_table(loaded)["accuracy_diff"].isna().all()
    with pytest.raises(InputError, match="percentile"):
        pf.latency_table(loaded, (50, 120))


def test_the_figures_draw_the_tables_values(bundle, tmp_path):
    from analysis.figures import save_figure

    latency = pf.latency_table(bundle)
    fig = pf.latency_figure(latency, title="tiny")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == sorted(CORRECT)
    np.testing.assert_allclose(lines["m/fp32/cpu"].get_ydata(), [2.5, 20.0])
    costs = pf.cost_table(bundle)
    fig = pf.cost_figure(costs)
    drawn = [bars.lines[0].get_xdata()[0] for bars in fig.axes[1].containers]  # one errorbar per variant
    expected = 100 * costs.sort_values("variant")["accuracy_diff"].dropna()
    np.testing.assert_allclose(sorted(drawn), sorted(expected))
    path = tmp_path / "confidence.png"
    save_figure(pf.confidence_figure(bundle, title="tiny"), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_paired_sample_has_no_interval_not_a_zero_wide_one(tmp_path, bundle):
    """A variant evaluated on a single sample the reference also has: the difference is known, its
    interval is not (``paired_difference``'s half-width is NaN), and the bounds say so."""
    predictions = bundle.predictions
    lone = predictions[(predictions["variant"] != "m/int8/cpu") | (predictions["sample_id"] == "s0")]
    one = TraceBundle(meta=bundle.meta, service=bundle.service, predictions=lone)
    loaded = TraceBundle.load(one.save(tmp_path / "one", fmt="csv"))
    row = pf.cost_table(loaded).set_index("variant").loc["m/int8/cpu"]
    assert row["paired_samples"] == 1 and row["accuracy_diff"] == 1.0        # right where the reference was wrong
    assert math.isnan(row["accuracy_diff_low"]) and math.isnan(row["accuracy_diff_high"])


def test_a_backend_variant_is_priced_against_eager_fp32_of_its_model(tmp_path, bundle):
    """The backend is an id's fourth part; TorchScript and ONNX Runtime variants, FP32 ones included,
    are compared with the eager FP32 variant (an FP32 backend variant is not a reference itself)."""
    service, predictions = _service(), _predictions()
    extra_service, extra_predictions = [], []
    for backend, factor in (("onnxruntime", 0.5), ("torchscript", 0.8)):
        for precision in ("fp32", "int8"):
            variant = f"m/{precision}/cpu/{backend}"
            source = f"m/{precision}/cpu"
            rows = service[service["variant"] == source].assign(variant=variant)
            extra_service.append(rows.assign(latency_ms=rows["latency_ms"] * factor))
            extra_predictions.append(predictions[predictions["variant"] == source].assign(variant=variant))
    made = TraceBundle(meta={"name": "tiny-backends", "description": "hand-made", "units": {"latency": "ms"}},
                       service=pd.concat([service, *extra_service]),
                       predictions=pd.concat([predictions, *extra_predictions]))
    bundle = TraceBundle.load(made.save(tmp_path / "backends", fmt="csv"))
    parts = pf.variant_table(bundle).set_index("variant")
    assert parts.loc["m/fp32/cpu/onnxruntime", ["model", "precision", "pruning", "backend"]].tolist() == \
        ["m", "fp32", "none", "onnxruntime"]
    assert parts.loc["m/fp32/cpu", "backend"] == "eager"
    costs = pf.cost_table(bundle).set_index("variant")
    assert set(costs["reference"].dropna()) == {"m/fp32/cpu"}
    assert "m/fp32/cpu" not in costs.index
    # the ONNX Runtime copy runs at half the eager latencies: at batch 1 the medians are 1.25 against 2.5
    assert costs.loc["m/fp32/cpu/onnxruntime", "latency_ratio_b1"] == pytest.approx(0.5)
    assert costs.loc["m/fp32/cpu/torchscript", "latency_ratio_b8"] == pytest.approx(0.8)
    assert costs.loc["m/fp32/cpu/onnxruntime", "accuracy_diff"] == 0.0
    figure = pf.cost_figure(costs.reset_index())
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert "m fp32 onnxruntime" in labels and "m int8" in labels
