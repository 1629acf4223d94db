"""`measure table`: a bundle's medians and accuracy per variant, per backend side by side, and its start-ups."""

from __future__ import annotations

import pandas as pd
import pytest

from measure.cli import main
from measure.tables import backend_rows, startup_rows, variant_rows
from traces.bundle import TraceBundle

# m/fp32 under eager and ONNX Runtime at batch 1 and 8; m/int8 eager only, at batch 1 only
RUNS_MS = {("m/fp32/cpu", 1): [1.0, 3.0, 2.0], ("m/fp32/cpu", 8): [5.0, 4.0, 6.0, 7.0],
           ("m/fp32/cpu/onnxruntime", 1): [0.5, 0.7, 0.6], ("m/fp32/cpu/onnxruntime", 8): [1.0, 2.0, 3.0],
           ("m/int8/cpu", 1): [1.5, 1.5, 1.5]}
CORRECT = {"m/fp32/cpu": [True, True, False, True], "m/fp32/cpu/onnxruntime": [True, False, False, True],
           "m/int8/cpu": [True, True, True, True]}


@pytest.fixture
def bundle_dir(tmp_path):
    service = pd.DataFrame([(v, "m", v.split("/")[1], "cpu", b, ms)
                            for (v, b), values in RUNS_MS.items() for ms in values],
                           columns=["variant", "model", "precision", "device", "batch_size", "latency_ms"])
    predictions = pd.DataFrame([(v, s, 0, 0 if ok else 1, 0.9, ok)
                                for v, oks in CORRECT.items() for s, ok in enumerate(oks)],
                               columns=["variant", "sample_id", "label", "pred", "confidence", "correct"])
    return TraceBundle(meta={"name": "t", "units": {"latency": "ms"}}, service=service,
                       predictions=predictions).save(tmp_path / "t", fmt="csv")


def test_variant_rows_are_medians_of_the_measured_runs(bundle_dir):
    rows = {r["variant"]: r for r in variant_rows(TraceBundle.load(bundle_dir), (1, 8))}
    fp32 = rows["m/fp32/cpu"]
    assert fp32["p50_b1_ms"] == pytest.approx(2.0) and fp32["runs_b1"] == 3
    assert fp32["p50_b8_ms"] == pytest.approx(5.5) and fp32["runs_b8"] == 4   # median of an even count
    assert fp32["accuracy"] == pytest.approx(0.75)
    int8 = rows["m/int8/cpu"]
    assert int8["p50_b8_ms"] is None and int8["runs_b8"] == 0   # not measured: blank, not interpolated
    assert rows["m/fp32/cpu/onnxruntime"]["accuracy"] == pytest.approx(0.5)


def test_backend_rows_put_each_backend_of_a_model_and_precision_side_by_side(bundle_dir):
    backends, rows = backend_rows(TraceBundle.load(bundle_dir), (1, 8))
    assert backends == ["eager", "onnxruntime"]
    by_key = {(r["model"], r["precision"]): r["by"] for r in rows}
    assert set(by_key) == {("m", "fp32")}   # INT8 is eager only: nothing to put beside it
    assert by_key[("m", "fp32")]["onnxruntime"]["p50_b8_ms"] == pytest.approx(2.0)
    eager_only = TraceBundle.load(bundle_dir)
    eager_only.service = eager_only.service[~eager_only.service["variant"].str.endswith("/onnxruntime")]
    eager_only.predictions = eager_only.predictions[~eager_only.predictions["variant"].str.endswith("/onnxruntime")]
    backends, rows = backend_rows(eager_only, (1, 8))
    assert backends == ["eager"] and {(r["model"], r["precision"]) for r in rows} == {("m", "fp32"), ("m", "int8")}


def test_the_command_prints_markdown_and_refuses_bad_input(bundle_dir, tmp_path, capsys):
    assert main(["table", str(bundle_dir), "--by-backend", "--markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ("| model | precision | p50 b1 eager | p50 b1 onnxruntime | p50 b8 eager | p50 b8 onnxruntime "
                        "| accuracy eager / onnxruntime |")
    assert "| m | fp32 | 2.000 | 0.600 | 5.500 | 2.000 | 0.7500 / 0.5000 |" in lines
    assert not any(line.startswith("| m | int8 |") for line in lines)
    assert main(["table", str(bundle_dir), "--batch-sizes", "8"]) == 0
    out = capsys.readouterr().out
    assert "p50 batch 8 (ms)" in out and "p50 batch 1" not in out
    assert main(["table", str(tmp_path / "missing")]) == 2
    assert "is not a trace bundle" in capsys.readouterr().err
    assert main(["table", str(bundle_dir), "--batch-sizes", "0,8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-sizes" in err[0]


def test_with_idle_gaps_the_median_and_its_count_are_of_the_back_to_back_runs(tmp_path):
    rows = [("m/fp32/cpu", "m", "fp32", "cpu", 1, ms, gap) for ms, gap in
            ((1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (10.0, 50.0), (11.0, 50.0), (12.0, 50.0))]
    service = pd.DataFrame(rows, columns=["variant", "model", "precision", "device", "batch_size", "latency_ms",
                                          "idle_ms"])
    bundle = TraceBundle(meta={"name": "g", "units": {"latency": "ms"}}, service=service, predictions=pd.DataFrame())
    (row,) = variant_rows(bundle, (1,))
    assert row["p50_b1_ms"] == pytest.approx(2.0) and row["runs_b1"] == 3 and row["accuracy"] is None


def test_the_startup_table_gives_each_variants_median_range_and_phases(bundle_dir, capsys):
    bundle = TraceBundle.load(bundle_dir)
    assert main(["table", str(bundle_dir), "--startup"]) == 2   # none timed yet: refused in one line
    assert "no startup table" in capsys.readouterr().err
    bundle.startup = pd.DataFrame({"variant": ["m/fp32/cpu"] * 3 + ["m/int8/cpu"] * 2,
                                   "startup_s": [4.0, 6.0, 5.0, 3.0, 2.0],
                                   "spawn_s": [0.5, 0.3, 0.4, None, None],
                                   "import_s": [1.0, 1.2, 1.1, 1.0, 1.0]})
    saved = bundle.save(bundle_dir.parent / "with-startup", fmt="csv")
    rows = {r["variant"]: r for r in startup_rows(TraceBundle.load(saved))}
    fp32, int8 = rows["m/fp32/cpu"], rows["m/int8/cpu"]
    assert (fp32["startups"], fp32["median_s"], fp32["min_s"], fp32["max_s"]) == (3, 5.0, 4.0, 6.0)
    assert fp32["spawn_s"] == pytest.approx(0.4) and fp32["import_s"] == pytest.approx(1.1)
    assert int8["median_s"] == 2.5 and int8["spawn_s"] is None and int8["build_s"] is None
    assert main(["table", str(saved), "--startup", "--markdown"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| variant | startup_s median (min-max) | runs | spawn | import | load | build | warmup |"
    assert "| m/fp32/cpu | 5.00 (4.00-6.00) | 3 | 0.40 | 1.10 | - | - | - |" in lines
