"""`--track mlflow:URI`: what lands in MLflow is read back and checked against the run outputs on
disk (config.json, summary.json, the files), walked here independently of ``traces.tracking``.
One temporary SQLite store serves the whole file (a fresh store costs seconds of migrations)."""

from __future__ import annotations

import importlib.util
import json
import math
import socket
import sys
from pathlib import Path

import pytest

from sim.cli import main as simulate
from traces.tracking import Target, bundle_run, flat_params, log_runs, mlflow_key

from conftest import FAST_CORRECT, FAST_MS, SLOW_MS

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="needs the optional extra 'track' (pip install -e '.[track]')")

MMC = Path(__file__).resolve().parents[1] / "examples" / "mmc.toml"
TINY = ["--set", "duration_s=2", "--set", "warmup_s=0.5"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 't.db'}"


def numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a JSON tree, dotted (bools and nulls are not metrics)."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[f"{prefix}{key}"] = float(value)
    return found


def client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


def runs_of(store: str, experiment: str) -> list:
    client_ = client(store)
    found = client_.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return client_.search_runs([found.experiment_id], max_results=1000)


def artifact_names(store: str, run_id: str) -> set[str]:
    return {item.path for item in client(store).list_artifacts(run_id)}


def same_numbers(logged: dict, expected: dict) -> bool:
    return logged.keys() == expected.keys() and all(
        logged[k] == expected[k] or (math.isnan(logged[k]) and math.isnan(expected[k])) for k in expected)


@needs_mlflow
def test_run_logs_one_mlflow_run_per_seed(tmp_path, store, capsys):
    out = tmp_path / "out"
    assert simulate(["run", str(MMC), *TINY, "--seeds", "1-2", "--out", str(out), "--track", f"mlflow:{store}"]) == 0
    printed = capsys.readouterr()
    assert "tracked 2 MLflow run(s) in experiment 'mmc'" in printed.out  # the scenario's stem
    assert "INFO" not in printed.err and "arning" not in printed.err  # a fresh store migrates quietly
    runs = runs_of(store, "mmc")
    assert sorted(r.data.tags["servesim.seed"] for r in runs) == ["1", "2"]
    for run in runs:
        seed_dir = out / f"seed-{run.data.tags['servesim.seed']}"
        config = json.loads((seed_dir / "config.json").read_text())
        summary = json.loads((seed_dir / "summary.json").read_text())
        assert same_numbers(run.data.metrics, numbers(summary))
        assert run.data.metrics["latency_ms.p99"] == summary["latency_ms"]["p99"]
        params = run.data.params
        assert params["arrivals.rate_rps"] == str(config["arrivals"]["rate_rps"]) == "1600.0"
        assert params["duration_s"] == "2.0" and params["seed"] == run.data.tags["servesim.seed"]
        assert params["deployments.m.replicas"] == "4"  # a list of named tables, keyed as --set names it
        assert params["requests.deadline_ms"] == json.dumps(config["requests"]["deadline_ms"])
        assert {k for k, v in config.items() if not isinstance(v, (dict, list))} <= params.keys()
        assert artifact_names(store, run.info.run_id) == {p.name for p in seed_dir.iterdir()} == {
            "config.json", "summary.json", "requests.parquet", "timeline.parquet"}
        assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    # the artifacts lie beside the store's database, byte for byte
    stored = Path(store[len("sqlite:///"):]).parent / "mlartifacts" / runs[0].info.run_id / "artifacts"
    seed_dir = out / f"seed-{runs[0].data.tags['servesim.seed']}"
    assert (stored / "summary.json").read_bytes() == (seed_dir / "summary.json").read_bytes()


@needs_mlflow
def test_sweep_is_a_parent_run_with_a_child_per_grid_run(tmp_path, store):
    sweep = tmp_path / "grid.toml"
    sweep.write_text(f'base = "{MMC}"\nseeds = [1, 2]\n[axes]\n"arrivals.rate_rps" = [800.0, 1600.0]\n'
                     'duration_s = [2.0]\nwarmup_s = [0.5]\n')
    out = tmp_path / "sweep"
    assert simulate(["sweep", str(sweep), "--out", str(out), "--workers", "1", "--track", f"mlflow:{store}",
                     "--track-experiment", "grid test"]) == 0
    runs = runs_of(store, "grid test")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 1 + 2 * 2
    parent = parents[0]
    assert {"sweep.json", "results.parquet", "grid.toml"} == artifact_names(store, parent.info.run_id)
    assert parent.data.params["seeds"] == "[1, 2]" and parent.data.params["axes.arrivals.rate_rps"] == "[800.0, 1600.0]"
    children = [r for r in runs if r is not parent]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert sorted((r.data.params["arrivals.rate_rps"], r.data.params["seed"]) for r in children) == [
        ("1600.0", "1"), ("1600.0", "2"), ("800.0", "1"), ("800.0", "2")]
    for child in children:
        run_dir = out / "runs" / child.data.tags["servesim.run_id"]
        assert same_numbers(child.data.metrics, numbers(json.loads((run_dir / "summary.json").read_text())))
        assert artifact_names(store, child.info.run_id) == {"config.json", "summary.json"}  # no requests
    rate = {r.data.params["arrivals.rate_rps"]: r.data.metrics["offered_rps"] for r in children}
    assert rate["800.0"] < rate["1600.0"]


@pytest.mark.parametrize("value", ["wandb", "mlflow:", "mlflowx",
                                   pytest.param("mlflow:nosuchscheme://host/x", marks=needs_mlflow),
                                   pytest.param("mlflow:sqlite:///{tmp}", marks=needs_mlflow),  # a directory
                                   pytest.param("mlflow:file:///{tmp}/mlruns", marks=needs_mlflow)])
def test_a_bad_track_value_is_one_line_before_anything_runs(tmp_path, value, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    value = value.format(tmp=tmp_path)
    out = tmp_path / "out"
    assert simulate(["run", str(MMC), *TINY, "--out", str(out), "--track", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --track:")
    assert not out.exists()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_mlflow
def test_a_server_that_does_not_answer_is_refused_before_the_run(tmp_path, capsys):
    out = tmp_path / "out"
    dead = f"mlflow:http://127.0.0.1:{closed_port()}"
    assert simulate(["run", str(MMC), *TINY, "--out", str(out), "--track", dead]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not answer" in err and not out.exists()


def test_track_experiment_needs_track(tmp_path, capsys):
    assert simulate(["run", str(MMC), *TINY, "--out", str(tmp_path / "o"), "--track-experiment", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: --track-experiment:")


def test_without_mlflow_the_message_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    out = tmp_path / "out"
    assert simulate(["run", str(MMC), *TINY, "--out", str(out), "--track", "mlflow"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optional extra 'track'" in err and "pip install -e '.[track]'" in err
    assert not out.exists()


@needs_mlflow
def test_a_tracking_failure_after_the_run_keeps_the_outputs(tmp_path, store, capsys):
    gone = client(store)
    gone.delete_experiment(gone.create_experiment("gone"))  # a deleted experiment takes no runs
    out = tmp_path / "out"
    assert simulate(["run", str(MMC), *TINY, "--out", str(out), "--track", f"mlflow:{store}",
                     "--track-experiment", "gone"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: tracking to {store} failed") and "are kept" in err
    assert (out / "seed-1" / "summary.json").is_file()


@needs_mlflow
def test_an_mlflow_error_is_one_line_and_status_1(tmp_path, store, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    def refuse(*args, **kwargs):
        raise MlflowException("the server said no\nand a second line")

    monkeypatch.setattr("traces.tracking.log_runs", refuse)
    out = tmp_path / "out"
    assert simulate(["run", str(MMC), *TINY, "--out", str(out), "--track", f"mlflow:{store}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the server said no and a second line" in err
    assert (out / "seed-1" / "requests.parquet").is_file()


@needs_mlflow
def test_a_bundle_is_one_run_with_accuracy_and_latency(tiny_bundle, store):
    profile = {"name": "tiny", "zoo_dir": Path("/zoo"), "latency": {"batch_sizes": (1, 2, 4)}, "variants": ["a", "b"]}
    [run_id] = log_runs(Target(store), "bundles", [bundle_run(tiny_bundle, profile)])
    run = client(store).get_run(run_id)
    metrics, params = run.data.metrics, run.data.params
    for variant, table in (("fast/int8/cpu", FAST_MS), ("slow/fp32/cpu", SLOW_MS)):
        for b, ms in table.items():  # constant latencies: every percentile is the value
            assert metrics[f"{variant}.latency_ms.b{b}.p50"] == metrics[f"{variant}.latency_ms.b{b}.p99"] == ms
    assert metrics["fast/int8/cpu.accuracy"] == sum(FAST_CORRECT) / len(FAST_CORRECT)
    assert metrics["slow/fp32/cpu.accuracy"] == 1.0 and metrics["variants"] == 2
    assert params == {"name": "tiny", "zoo_dir": "/zoo", "latency.batch_sizes": "[1, 2, 4]", "variants": '["a", "b"]'}
    assert artifact_names(store, run_id) == {p.name for p in tiny_bundle.iterdir() if not p.name.startswith(".")}
    assert run.data.tags["servesim.kind"] == "measure all" and run.info.status == "FINISHED"


def test_params_are_flat_and_keys_acceptable():
    config = {"deployments": [{"name": "a", "replicas": 2}, {"name": "b", "replicas": 3}],
              "faults": [], "tenants": [{"rate": 1}], "long": "x" * 7000, "none": None, "empty": {}}
    flat = flat_params(config)
    assert flat["deployments.a.replicas"] == "2" and flat["deployments.b.replicas"] == "3"
    assert flat["faults"] == "[]" and flat["tenants"] == '[{"rate": 1}]'  # unnamed tables: one JSON value
    assert len(flat["long"]) == 6000 and flat["long"].endswith("...")
    assert flat["none"] == "null" and flat["empty"] == "{}"
    assert mlflow_key("tenant[gold]=1") == "tenant_gold__1"
    assert mlflow_key("a//b") == "a__b" and mlflow_key("../x") == "_.._x" and mlflow_key("a/b.c") == "a/b.c"
