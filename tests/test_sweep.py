"""Sweeps: grid expansion, parallel and serial runs agree, resumption, bounds, and Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sim.cli import main
from sim.sweep import expand, run_sweep

BASE = """duration_s = 6.0
warmup_s = 1.0
bundle = "{bundle}"
[arrivals]
kind = "poisson"
rate_rps = 60.0
[requests]
deadline_ms = 20.0
[[deployments]]
name = "fast"
variant = "fast/int8/cpu"
max_batch_size = 4
batch_wait_timeout_ms = 1.0
[[deployments]]
name = "slow"
variant = "slow/fp32/cpu"
max_batch_size = 4
batch_wait_timeout_ms = 1.0
[policy]
name = "static-small"
"""

SWEEP = """base = "base.toml"
seeds = [1, 2]
[axes]
"requests.deadline_ms" = [8.0, 40.0]
[groups.policy]
small = {{ policy = {{ name = "static-small" }} }}
large = {{ policy = {{ name = "static-large" }} }}
planner = {{ policy = {{ name = "planner" }} }}
infaas = {{ policy = {{ name = "infaas", accuracy_floor = 0.9 }} }}
oracle = {{ policy = {{ name = "oracle-static" }} }}
isolation = {{ policy = {{ name = "isolation-bound" }} }}
{extra}"""


@pytest.fixture
def sweep_file(tmp_path, tiny_bundle):
    (tmp_path / "base.toml").write_text(BASE.format(bundle=tiny_bundle))
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(extra=""))
    return path


def test_expand_grid(sweep_file):
    tasks = expand(sweep_file)
    assert len(tasks) == 2 * 6 * 2
    assert len({t.run_id for t in tasks}) == len(tasks)
    assert tasks[0].point == {"requests.deadline_ms": "8.0", "policy": "small", "seed": 1}


def test_parallel_and_serial_agree_and_resume(sweep_file, tmp_path):
    serial = run_sweep(sweep_file, tmp_path / "serial", workers=1)
    parallel = run_sweep(sweep_file, tmp_path / "parallel", workers=2)
    assert len(serial) == 24
    metrics = ["hit_rate", "accuracy", "ontime_accuracy", "latency_ms.p99"]
    pd.testing.assert_frame_equal(serial[["run_id"] + metrics], parallel[["run_id"] + metrics])
    marker = tmp_path / "serial" / "runs" / serial["run_id"][0] / "summary.json"
    before = marker.stat().st_mtime_ns
    again = run_sweep(sweep_file, tmp_path / "serial", workers=1)
    assert marker.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(again[metrics], serial[metrics])
    assert pd.read_parquet(tmp_path / "serial" / "results.parquet").shape[0] == 24


def test_bounds_dominate_static_configurations(sweep_file, tmp_path):
    frame = run_sweep(sweep_file, tmp_path / "out", workers=2)
    for (deadline, seed), group in frame.groupby(["requests.deadline_ms", "seed"]):
        by = group.set_index("policy")["ontime_accuracy"]
        assert by["oracle"] >= by["small"] - 1e-12 and by["oracle"] >= by["large"] - 1e-12
        assert by["isolation"] >= by["oracle"] - 0.02
    oracle_runs = frame[frame["policy"] == "oracle"]
    summary = json.loads((tmp_path / "out" / "runs" / oracle_runs["run_id"].iloc[0] / "summary.json").read_text())
    tried = summary["policy"]["candidates"]
    assert len(tried) > 2 and summary["ontime_accuracy"] == max(t["ontime_accuracy"] for t in tried)


def test_ray_and_local_agree(sweep_file, tmp_path):
    pytest.importorskip("ray", reason="the optional extra 'dist' (ray) is not installed")
    path = sweep_file
    path.write_text(SWEEP.format(extra="").replace("seeds = [1, 2]", "seeds = [3]"))
    local = run_sweep(path, tmp_path / "local", workers=1)
    ray = run_sweep(path, tmp_path / "ray", executor="ray")
    metrics = ["hit_rate", "accuracy", "ontime_accuracy", "latency_ms.p99"]
    pd.testing.assert_frame_equal(local[["run_id"] + metrics], ray[["run_id"] + metrics])


def test_sweep_cli_and_bad_axis(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "o"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "24 runs" in out and "planner" in out
    sweep_file.write_text(SWEEP.format(extra='[axes2]\nx = 1\n'))
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "p")]) == 2
    assert "axes2" in capsys.readouterr().err
    sweep_file.write_text(SWEEP.format(extra="").replace('"requests.deadline_ms" = [8.0, 40.0]',
                                                        '"requests.deadline_ms" = [-1.0]'))
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "q")]) == 2
    assert "requests.deadline_ms" in capsys.readouterr().err


def test_load_axis_scales_rates(sweep_file):
    text = sweep_file.read_text().replace('"requests.deadline_ms" = [8.0, 40.0]', "load = [0.5, 2.0]")
    sweep_file.write_text(text)
    rates = {t.point["load"]: t.raw["arrivals"]["rate_rps"] for t in expand(sweep_file)}
    assert rates == {"0.5": 30.0, "2.0": 120.0}
    assert np.isclose(rates["2.0"] / rates["0.5"], 4.0)
