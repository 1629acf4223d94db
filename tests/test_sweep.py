"""Sweeps: grid expansion, parallel and serial runs agree, resumption, bounds, and Ray; run ids
follow content, stale or foreign outputs are refused, resumes are byte-identical, workers die with
the driver, and errors raised in workers reach the user as one line. Every path a run reads is made
absolute by the driver, and a batch of runs on shipped copies of its inputs (what a Ray worker does,
here without Ray or the driver's files) writes the same run outputs as local workers. A real
cluster: tests/test_ray_cluster.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sim.sweep
from sim.cli import main
from sim.core.prepare import BUNDLED
from sim.sweep import expand, run_sweep, run_task, sweep_identity
from sim.workers import Shipment, run_batch
from traces.errors import InputError

REPO = Path(__file__).resolve().parents[1]
# a time limit where pytest-timeout is installed; a marker that does nothing otherwise
LIMIT_300_S = (pytest.mark.timeout(300) if importlib.util.find_spec("pytest_timeout")
               else pytest.mark.usefixtures())

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


@LIMIT_300_S
def test_ray_and_local_agree(sweep_file, tmp_path, monkeypatch, capsys):
    if importlib.util.find_spec("ray") is None:  # not imported here: the sweep imports it for a private instance
        pytest.skip("the optional extra 'dist' (ray) is not installed")
    # a cluster address in the environment must not be joined (nothing listens there): the
    # sweep starts a private, loopback-only instance of its own
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    (tmp_path / "node-tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "node-tmp"))  # the workers' copies of the inputs go here
    path = sweep_file
    path.write_text(SWEEP.format(extra="").replace("seeds = [1, 2]", "seeds = [3]"))
    local = run_sweep(path, tmp_path / "local", workers=1)
    ray = run_sweep(path, tmp_path / "ray", executor="ray", workers=2)
    metrics = ["hit_rate", "accuracy", "ontime_accuracy", "latency_ms.p99"]
    pd.testing.assert_frame_equal(local[["run_id"] + metrics], ray[["run_id"] + metrics])
    assert (tmp_path / "local" / "results.parquet").read_bytes() == (tmp_path / "ray" / "results.parquet").read_bytes()
    # an error raised inside a Ray task: the same clean line as a local worker's
    path.write_text(SMALL.replace('"requests.deadline_ms" = [8.0, 40.0]', '"deployments.fast.max_batch_size" = [4, 64]'))
    code = main(["sweep", str(path), "--out", str(tmp_path / "bad"), "--executor", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and _one_error_line(err, "deployments.fast.max_batch_size", "measured at batch sizes 1..4")


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


SMALL = SWEEP.format(extra="").replace("seeds = [1, 2]", "seeds = [1]").split("planner =")[0]  # 2 x 2 runs


def _one_error_line(err: str, *parts: str) -> bool:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    return len(errors) == 1 and "Traceback" not in err and all(p in errors[0] for p in parts)


def _copy_study(src: Path, dst: Path, bundle: Path) -> Path:
    """The sweep and base files of ``src`` plus the bundle, in ``dst``, the base naming it relatively."""
    dst.mkdir()
    shutil.copytree(bundle, dst / "tiny")
    (dst / "base.toml").write_text((src / "base.toml").read_text().replace(str(bundle), "tiny"))
    (dst / "sweep.toml").write_text((src / "sweep.toml").read_text())
    return dst / "sweep.toml"


def test_run_ids_follow_contents_not_paths(sweep_file, tmp_path, tiny_bundle):
    first = _copy_study(tmp_path, tmp_path / "a", tiny_bundle)
    moved = _copy_study(tmp_path, tmp_path / "b", tiny_bundle)
    ids = [t.run_id for t in expand(first)]
    assert ids == [t.run_id for t in expand(moved)]          # same contents elsewhere: same runs
    assert ids == [t.run_id for t in expand(sweep_file)]     # bundle named by an absolute path: same
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)

    base = moved.parent / "base.toml"
    base.write_text(base.read_text().replace("duration_s = 6.0", "duration_s = 7.0"))
    assert not set(ids) & {t.run_id for t in expand(moved)}  # a changed base: every run is new
    base.write_text((first.parent / "base.toml").read_text())
    service = moved.parent / "tiny" / "service.csv"
    service.write_text(service.read_text().replace(",2.0\n", ",2.5\n", 1))
    assert not set(ids) & {t.run_id for t in expand(moved)}  # a changed bundle table: every run is new
    shutil.copy(first.parent / "tiny" / "service.csv", service)
    assert ids == [t.run_id for t in expand(moved)]
    moved.write_text(moved.read_text().replace("[8.0, 40.0]", "[8.0, 41.0]"))
    changed = {t.point["requests.deadline_ms"]: t.run_id for t in expand(moved) if t.point["policy"] == "small"
               and t.seed == 1}
    before = {t.point["requests.deadline_ms"]: t.run_id for t in expand(first) if t.point["policy"] == "small"
              and t.seed == 1}
    assert changed["8.0"] == before["8.0"] and changed["41.0"] != before["40.0"]


def test_a_deployments_own_bundle_counts_by_contents_not_path(sweep_file, tmp_path, tiny_bundle):
    """A deployment may name its own bundle (a pipeline stage's): like the scenario's, its contents
    decide the run id and where it lives does not."""
    sweeps = []
    for name in ("a", "b"):
        sweeps.append(_copy_study(tmp_path, tmp_path / name, tiny_bundle))
        base = sweeps[-1].parent / "base.toml"
        base.write_text(base.read_text().replace('name = "slow"', 'name = "slow"\nbundle = "tiny"'))
    ids = [t.run_id for t in expand(sweeps[0])]
    assert ids == [t.run_id for t in expand(sweeps[1])]
    service = sweeps[1].parent / "tiny" / "service.csv"
    service.write_text(service.read_text().replace(",2.0\n", ",2.5\n", 1))
    assert not set(ids) & {t.run_id for t in expand(sweeps[1])}


def test_a_bundles_startup_table_is_part_of_the_id(sweep_file, tmp_path, tiny_bundle):
    """A new replica's cold start is drawn from the bundle's startup table: editing it must not
    reuse the runs made with the old one."""
    sweep = _copy_study(tmp_path, tmp_path / "a", tiny_bundle)
    bundle = sweep.parent / "tiny"
    without = [t.run_id for t in expand(sweep)]
    startup = bundle / "startup.csv"
    startup.write_text("variant,startup_s\nslow/fp32/cpu,2.0\nslow/fp32/cpu,2.5\n")
    first = [t.run_id for t in expand(sweep)]
    startup.write_text("variant,startup_s\nslow/fp32/cpu,4.0\nslow/fp32/cpu,4.5\n")
    assert not set(first) & {t.run_id for t in expand(sweep)} and not set(without) & set(first)


def test_replayed_trace_contents_are_part_of_the_id(sweep_file, tmp_path):
    trace = tmp_path / "trace.txt"
    trace.write_text(" ".join(["60"] * 10) + "\n")
    base = tmp_path / "base.toml"
    base.write_text(base.read_text().replace('kind = "poisson"\nrate_rps = 60.0',
                                             'kind = "replay"\npath = "trace.txt"'))
    ids = {t.run_id for t in expand(sweep_file)}
    trace.write_text(" ".join(["61"] * 10) + "\n")
    assert not ids & {t.run_id for t in expand(sweep_file)}


def test_duplicate_axis_values_are_refused(sweep_file):
    sweep_file.write_text(SMALL.replace("[8.0, 40.0]", "[8.0, 8.0]"))
    with pytest.raises(InputError, match=r"axes\.requests\.deadline_ms.*value 8\.0 twice"):
        expand(sweep_file)
    sweep_file.write_text(SMALL.replace('large = { policy = { name = "static-large" } }',
                                        'again = { policy = { name = "static-small" } }'))
    with pytest.raises(InputError, match=r"groups\.policy.*'small' and 'again' set the same keys"):
        expand(sweep_file)
    sweep_file.write_text(SMALL.replace("seeds = [1]", "seeds = [1, 1]"))
    with pytest.raises(InputError, match="seeds.*twice"):
        expand(sweep_file)
    sweep_file.write_text(SMALL.replace("seeds = [1]", "seeds = [true]"))  # a bool is no seed
    with pytest.raises(InputError, match="seeds: must be a list of non-negative integers"):
        expand(sweep_file)


def test_stale_and_foreign_outputs_are_refused_and_force_reuses_runs(sweep_file, tmp_path, capsys):
    sweep_file.write_text(SMALL)
    out = tmp_path / "out"
    lines: list[str] = []
    first = run_sweep(sweep_file, out, workers=1, log=lines.append)
    assert lines == [] and json.loads((out / "sweep.json").read_text())["identity"] == sweep_identity(expand(sweep_file))
    again = run_sweep(sweep_file, out, workers=1, log=lines.append)
    assert lines == ["resumed: 4 runs done before, 0 run now"]
    pd.testing.assert_frame_equal(first, again)

    kept = {rid: (out / "runs" / rid / "summary.json").stat().st_ino for rid in first["run_id"]}
    sweep_file.write_text(SMALL.replace("[8.0, 40.0]", "[8.0, 41.0]"))   # the sweep changed under --out
    code = main(["sweep", str(sweep_file), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and _one_error_line(err, str(out), "pass --force", f"sweep {sweep_file.resolve()}",
                                         "identity " + json.loads((out / "sweep.json").read_text())["identity"])
    assert (out / "results.parquet").read_bytes() == (out / "results.parquet").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), first)  # untouched

    lines.clear()
    new = run_sweep(sweep_file, out, workers=1, force=True, log=lines.append)
    assert lines[0].startswith("replacing sweep ")
    assert lines[1].startswith("resumed: 2 runs done before, 2 run now; 2 run directories in runs/ not in this sweep "
                               "left alone")
    assert sorted(new["requests.deadline_ms"].unique()) == ["41.0", "8.0"]
    reused = new.loc[new["requests.deadline_ms"] == "8.0", "run_id"]
    assert all((out / "runs" / rid / "summary.json").stat().st_ino == kept[rid] for rid in reused)  # linked
    assert all((out / "runs" / rid / "summary.json").is_file() for rid in kept)   # old runs left alone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]       # no staging left

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes")
    for force in (False, True):
        with pytest.raises(InputError, match="not an output of ours"):
            run_sweep(sweep_file, mine, workers=1, force=force)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_resumed_sweep_writes_identical_results(sweep_file, tmp_path, monkeypatch):
    one_go = tmp_path / "one-go"
    run_sweep(sweep_file, one_go, workers=1)
    real = sim.sweep.run_task
    calls = []

    def interrupted(task, runs_dir):  # Ctrl-C after five runs
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(task.run_id)
        return real(task, runs_dir)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(sim.sweep, "run_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep_file, resumed, workers=1)
    monkeypatch.setattr(sim.sweep, "run_task", real)
    assert not (resumed / "results.parquet").exists() and len(list((resumed / "runs").iterdir())) == 5
    lines: list[str] = []
    run_sweep(sweep_file, resumed, workers=2, log=lines.append)   # the rest, finishing in any order
    assert lines == ["resumed: 5 runs done before, 19 run now"]
    assert (resumed / "results.parquet").read_bytes() == (one_go / "results.parquet").read_bytes()
    assert (resumed / "sweep.json").read_bytes() == (one_go / "sweep.json").read_bytes()


def test_errors_in_workers_are_one_line_and_workers_must_be_positive(sweep_file, tmp_path, capsys):
    assert pickle.loads(pickle.dumps(InputError("where", "what"))).args == InputError("where", "what").args
    # the bundle measured batches up to 4: only preparing the run, in the worker, finds out
    sweep_file.write_text(SMALL.replace('"requests.deadline_ms" = [8.0, 40.0]',
                                        '"deployments.fast.max_batch_size" = [4, 64]'))
    assert len(expand(sweep_file)) == 4
    for workers in ("1", "2"):
        code = main(["sweep", str(sweep_file), "--out", str(tmp_path / f"out{workers}"), "--workers", workers])
        err = capsys.readouterr().err
        assert code == 2 and _one_error_line(err, str(sweep_file), "deployments.fast.max_batch_size",
                                             "measured at batch sizes 1..4; got 64")
        assert not (tmp_path / f"out{workers}" / "results.parquet").exists()
    for workers in ("0", "-3"):
        assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "w"), "--workers", workers]) == 2
        assert capsys.readouterr().err == f"error: --workers: must be an integer >= 1, got {workers}\n"
    assert not (tmp_path / "w").exists()


DRIVER = """import sys
from sim.sweep import run_sweep
run_sweep(sys.argv[1], sys.argv[2], workers=2)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:")]
    except OSError:
        return False
    return bool(state) and "Z" not in state[0].split()[1]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="finds the workers through /proc")
def test_workers_die_with_the_driver(sweep_file, tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(base.read_text().replace("duration_s = 6.0", "duration_s = 100000.0"))  # runs for ages
    sweep_file.write_text(SMALL)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "driver.log"
    with open(log, "wb") as sink:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(sweep_file), str(tmp_path / "out")], env=env,
                                  stdout=sink, stderr=sink)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
            workers = [p for p in _children(driver.pid) if _running(p)]
        assert len(workers) >= 2, f"the sweep did not start its two workers: {log.read_text()[-2000:]}"
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 10
        while any(_running(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if _running(p)], "workers outlived their driver"
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


WATCHED = """import os, sys, time
sys.platform = "darwin"  # no prctl: the watchdog thread
from sim.workers import die_with_parent
die_with_parent(os.getppid())
print("watching", flush=True)
time.sleep(60)
"""
MIDDLE = """import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="finds the worker through /proc")
def test_watchdog_ends_a_worker_whose_parent_died():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE, WATCHED], env=env, stdout=subprocess.PIPE)
    child = int(middle.stdout.readline())
    try:
        assert _running(child)
        middle.kill()
        middle.wait(10)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(child), "the watched process outlived its parent"
    finally:
        if _running(child):
            os.kill(child, signal.SIGKILL)


def test_study_sweep_expands(shared_data):
    tasks = expand(REPO / "examples" / "study" / "study.toml")
    assert len(tasks) == 540 and len({t.run_id for t in tasks}) == 540


def test_driver_resolves_every_path_and_names_the_default_bundle(sweep_file, tmp_path):
    base = tmp_path / "base.toml"
    base.write_text(base.read_text().replace('kind = "poisson"\nrate_rps = 60.0', 'kind = "replay"\npath = "trace.txt"'))
    (tmp_path / "trace.txt").write_text(" ".join(["60"] * 10) + "\n")
    task = expand(sweep_file)[0]
    assert task.raw["arrivals"]["path"] == str((tmp_path / "trace.txt").resolve())
    assert task.inputs == (str((tmp_path / "tiny").resolve()), str((tmp_path / "trace.txt").resolve()))
    assert Path(task.base_dir).is_absolute()
    demo = tmp_path / "demo.toml"   # no bundle key: the bundled bundle with its variants, named
    demo.write_text((REPO / "examples" / "demo.toml").read_text())
    sweep_file.write_text(SMALL.replace('base = "base.toml"', 'base = "demo.toml"'))
    task = expand(sweep_file)[0]
    assert task.raw["bundle"] == str(BUNDLED / "digits-cpu") and task.inputs == (str(BUNDLED / "digits-cpu"),)


def test_a_batch_on_shipped_inputs_writes_what_local_workers_write(sweep_file, tmp_path, monkeypatch):
    """What a Ray worker does, without Ray: the inputs shipped as bytes, the driver's files gone."""
    base = tmp_path / "base.toml"
    base.write_text(base.read_text().replace('kind = "poisson"\nrate_rps = 60.0', 'kind = "replay"\npath = "trace.txt"')
                    .replace("duration_s = 6.0", "duration_s = 4.0"))
    (tmp_path / "trace.txt").write_text(" ".join(["60"] * 10) + "\n")
    tasks = expand(sweep_file)[:4]   # two grid points, two seeds each
    local = tmp_path / "local"
    for task in tasks:
        run_task(task, str(local))
    shipped = {path: (Shipment.read(path).digest, Shipment.read(path)) for path in tasks[0].inputs}
    (tmp_path / "tiny").rename(tmp_path / "elsewhere")   # the worker cannot read the driver's files
    (tmp_path / "trace.txt").unlink()
    node = tmp_path / "node"
    node.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(node))
    results = run_batch(tasks, shipped, fetch=lambda shipment: shipment)
    assert [r.run_id for r in results] == [t.run_id for t in tasks]
    for result in results:
        result.write(tmp_path / "ray" / result.run_id)
        for name in ("config.json", "requests.parquet", "summary.json"):
            assert (tmp_path / "ray" / result.run_id / name).read_bytes() == (local / result.run_id / name).read_bytes()
    # an error inside the batch names the driver's bundle, not the node's copy of it
    wrong = dataclasses.replace(tasks[0], raw={**tasks[0].raw, "deployments": [
        {**tasks[0].raw["deployments"][0], "variant": "nope/int8/cpu"}, tasks[0].raw["deployments"][1]]})
    with pytest.raises(InputError, match="'nope/int8/cpu' is not in bundle " + str(tmp_path / "tiny")) as caught:
        run_batch([wrong], shipped, fetch=lambda shipment: shipment)
    assert str(node) not in str(caught.value)


def test_ray_options_are_checked_before_anything_runs(sweep_file, tmp_path, capsys):
    out = str(tmp_path / "out")
    cases = [(["--address", "127.0.0.1:6379"], "--address: names a Ray cluster; it needs --executor ray"),
             (["--executor", "ray", "--address", "127.0.0.1:6379", "--workers", "2"], "--workers: sets the CPUs"),
             (["--executor", "ray", "--connect-timeout", "0"], "--connect-timeout: must be a number of seconds > 0"),
             (["--executor", "ray", "--address", "nowhere"], "--address nowhere: expected host:port")]
    for options, line in cases:
        assert main(["sweep", str(sweep_file), "--out", out, *options]) == 2
        err = capsys.readouterr().err
        assert _one_error_line(err, line) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
