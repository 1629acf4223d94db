"""Sweeps on a real two-node Ray cluster on loopback, started in its own directory: a sweep written
with relative paths (a relative bundle, a relative replayed trace) run from the driver's directory
gives results byte-identical to local processes in the driver's --out; killed (SIGKILL) or
interrupted (SIGINT) and resumed, the same; a node lost mid-sweep is retried elsewhere and
reported; every failure is one line and exit status 2.

The cluster runs in a helper process (``ray.cluster_utils.Cluster``, every node on 127.0.0.1, the
helper's working directory elsewhere than the driver's); each sweep's driver is a ``simulate
sweep`` subprocess run from the study's directory, as a user would run it."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from conftest import tiny_bundle_frames
from test_sweep import BASE, SMALL

from sim.cli import main
from sim.sweep import finished_runs, run_sweep
from traces.bundle import TraceBundle
from traces.errors import InputError

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="the optional extra 'dist' (ray) is not installed")]

# the helper: a cluster of a head and one more node (one CPU each) on loopback; on stdin,
# "kill" removes the second node (answering once the cluster counts it dead), "add" adds one; end
# of input shuts the cluster down
CLUSTER = """import json, os, shutil, sys, tempfile
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's single-machine mode: every address 127.0.0.1
import ray._private.utils
from ray.cluster_utils import Cluster
ray._private.utils.write_ray_address = lambda *args, **kwargs: None  # no machine-wide 'current cluster' file
fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
        "health_check_failure_threshold": 2}
temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                  "include_dashboard": False, "temp_dir": temp, "_system_config": fast})
nodes = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(int(sys.argv[1]))]
print(json.dumps({"address": cluster.address}), flush=True)
for line in sys.stdin:
    if line.strip() == "kill":
        cluster.remove_node(nodes.pop(), allow_graceful=False)
        cluster.wait_for_nodes()
    elif line.strip() == "add":
        nodes.append(cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1"))
    print("done", flush=True)
cluster.shutdown()
shutil.rmtree(temp, ignore_errors=True)
"""

STUDY_BASE = BASE.format(bundle="tiny").replace('kind = "poisson"\nrate_rps = 60.0', 'kind = "replay"\npath = "trace.txt"')


class Helper:
    """A cluster in a helper process, its working directory ``home``."""

    def __init__(self, home: Path, nodes: int, env: dict | None = None):
        home.mkdir()
        (home.parent / "node-tmp").mkdir()  # the nodes' temporary directory: their copies of the inputs
        self.home = home
        self.process = subprocess.Popen([sys.executable, "-c", CLUSTER, str(nodes)], cwd=home, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "TMPDIR": str(home.parent / "node-tmp"), **(env or {})})
        line = self.process.stdout.readline()
        assert line, "the cluster did not start"
        self.address = json.loads(line)["address"]
        assert self.address.startswith("127.0.0.1:")

    def tell(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "done"

    def stop(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    helper = Helper(tmp_path_factory.mktemp("cluster") / "head", nodes=1)
    yield helper
    helper.stop()


def _study(directory: Path, seeds: int, duration_s: float) -> Path:
    """A study written with relative paths: the sweep, its base, the bundle and a counts trace."""
    directory.mkdir()
    service, predictions = tiny_bundle_frames()
    TraceBundle(meta={"name": "tiny", "description": "hand-made", "units": {"latency": "ms"}}, service=service,
                predictions=predictions).save(directory / "tiny", fmt="csv")
    (directory / "trace.txt").write_text(" ".join(["100"] * int(duration_s + 5)) + "\n")
    (directory / "base.toml").write_text(STUDY_BASE.replace("duration_s = 6.0", f"duration_s = {duration_s}"))
    (directory / "sweep.toml").write_text(SMALL.replace("seeds = [1]", f"seeds = {list(range(1, seeds + 1))}"))
    return directory


def _ctrl_c_heard() -> None:
    """In the sweep's process: SIGINT as at a terminal, heard even where the tests were started in
    the background (a shell's background jobs, and so their children, ignore SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sweep(study: Path, *args: str, env: dict | None = None, wait: bool = True):
    """``simulate sweep sweep.toml --out out ARGS`` run from the study's directory."""
    command = [sys.executable, "-m", "sim", "sweep", "sweep.toml", "--out", "out", *args]
    process = subprocess.Popen(command, cwd=study, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, preexec_fn=_ctrl_c_heard)
    if not wait:
        return process
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def _finished_runs(out: Path) -> int:
    """Runs in place under ``out/runs``, not a stopped run's staging directory with its summary
    (which the resume removes and runs again)."""
    return len(finished_runs(out / "runs"))


def _wait_for_runs(out: Path, count: int, process, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while _finished_runs(out) < count:
        assert process.poll() is None and time.monotonic() < deadline, "the sweep did not get going"
        time.sleep(0.05)


def _same_runs(a: Path, b: Path) -> None:
    """Byte-identical results and run files; config.json the same but for the study's directory
    and the code's provenance (a commit may land between two sweeps)."""
    assert (a / "results.parquet").read_bytes() == (b / "results.parquet").read_bytes()
    runs = sorted(p.name for p in (a / "runs").iterdir())
    assert runs == sorted(p.name for p in (b / "runs").iterdir()) and runs
    for run in runs:
        for name in ("requests.parquet", "summary.json"):
            assert (a / "runs" / run / name).read_bytes() == (b / "runs" / run / name).read_bytes(), (run, name)
        configs = [json.loads((d / "runs" / run / "config.json").read_text().replace(str(d.parent.resolve()), "STUDY"))
                   for d in (a, b)]
        assert all(c.pop("servesim")["version"] for c in configs) and configs[0] == configs[1]


def _one_line(err: str, *parts: str) -> bool:
    """One error line and no traceback; the periodic progress lines a sweep prints off a terminal
    (every ~10 s, so more of them on a busy machine) are not part of the error."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("progress: ")]
    return len(lines) == 1 and lines[0].startswith("error: ") and all(p in lines[0] for p in parts)


def _local_reference(tmp_path_factory, duration_s: float) -> Path:
    """The same study on one local process: what a cluster's sweep must give byte for byte."""
    study = _study(tmp_path_factory.mktemp("local") / "study", seeds=2, duration_s=duration_s)
    run_sweep(study / "sweep.toml", study / "out", workers=1)
    return study / "out"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The reference of the studies of 600 s runs."""
    return _local_reference(tmp_path_factory, 600.0)


def test_relative_paths_on_a_cluster_give_the_local_results(cluster, local, tmp_path):
    study = _study(tmp_path / "study", seeds=2, duration_s=600.0)
    before = sorted(cluster.home.iterdir())
    code, out, err = _sweep(study, "--executor", "ray", "--address", cluster.address)
    assert code == 0, err
    assert "8 runs" in out
    _same_runs(local, study / "out")
    config = json.loads(next((study / "out" / "runs").glob("*/config.json")).read_text())
    assert config["bundle"] == str((study / "tiny").resolve())                  # the driver's paths, as run
    assert config["arrivals"]["path"] == str((study / "trace.txt").resolve())
    assert sorted(cluster.home.iterdir()) == before                             # nothing in the head's directory


WHERE_CODE_RUNS = """import sys
from sim.cluster import connected
with connected(sys.argv[1], None) as ray:
    print(ray.get(ray.remote(lambda: __import__("sim").__file__).remote()))
"""


def test_workers_run_the_shipped_code_not_the_checkout(cluster):
    """Even with the driver run from the checkout (which Ray would put first on a worker's path)."""
    found = subprocess.run([sys.executable, "-c", WHERE_CODE_RUNS, cluster.address], capture_output=True, text=True,
                           timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    where = Path(found.stdout.strip())
    assert found.returncode == 0 and where.name == "__init__.py", found.stderr
    assert REPO not in where.parents and "runtime_resources" in where.parts   # Ray's copy of the code sent


def test_killed_and_interrupted_sweeps_resume_to_the_same_bytes(cluster, local, tmp_path):
    study = _study(tmp_path / "study", seeds=2, duration_s=600.0)
    for stop in (signal.SIGKILL, signal.SIGINT):
        done = _finished_runs(study / "out")
        process = _sweep(study, "--executor", "ray", "--address", cluster.address, wait=False)
        _wait_for_runs(study / "out", done + 1, process)
        process.send_signal(stop)
        _, err = process.communicate(timeout=30)
        if stop == signal.SIGINT:
            assert process.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    done = _finished_runs(study / "out")
    assert 0 < done < 8 and not (study / "out" / "results.parquet").exists()
    code, _, err = _sweep(study, "--executor", "ray", "--address", "auto", env={"RAY_ADDRESS": cluster.address})
    assert code == 0, err
    assert f"resumed: {done} runs done before, {8 - done} run now" in err
    _same_runs(local, study / "out")


@pytest.fixture(scope="module")
def local_long(tmp_path_factory):
    """The reference for a sweep that outlasts the loss of a node: runs four times as long."""
    return _local_reference(tmp_path_factory, 2400.0)


def test_a_lost_node_is_retried_elsewhere_and_reported(cluster, local_long, tmp_path):
    """The node goes after the first runs are written; the helper answers once the cluster counts it
    dead, which the sweep, with most of its runs (seconds of work) still to do, then reports. With
    the shorter runs of the other tests the sweep could end before Ray noticed: nothing to report."""
    study = _study(tmp_path / "study", seeds=2, duration_s=2400.0)
    process = _sweep(study, "--executor", "ray", "--address", cluster.address, wait=False)
    try:
        _wait_for_runs(study / "out", 1, process)
        cluster.tell("kill")
        still_running = process.poll() is None
        _, err = process.communicate(timeout=120)
    finally:
        cluster.tell("add")
    assert process.returncode == 0, err
    assert still_running, "the sweep ended before the node was counted dead: nothing was lost to report"
    assert "warning: lost node" in err and "Ray retries its runs on the other nodes" in err
    _same_runs(local_long, study / "out")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cluster_failures_are_one_line(cluster, tmp_path, capsys):
    study = _study(tmp_path / "study", seeds=1, duration_s=4.0)
    started = time.monotonic()
    code, _, err = _sweep(study, "--executor", "ray", "--address", f"127.0.0.1:{_free_port()}",
                          "--connect-timeout", "3")
    assert code == 2 and _one_line(err, "nothing listens there") and time.monotonic() - started < 20
    assert not (study / "out").exists()  # refused before anything is written
    with socket.socket() as mute:         # something listens, but no Ray: --connect-timeout ends it
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        started = time.monotonic()
        code, _, err = _sweep(study, "--executor", "ray", "--address", "127.0.0.1:%d" % mute.getsockname()[1],
                              "--connect-timeout", "3")
    assert code == 2 and _one_line(err, "no Ray cluster answered within 3 s") and time.monotonic() - started < 20
    assert not (study / "out").exists()
    # an error inside a task: the task's own line, naming the driver's files, not the worker's copies
    sweep = study / "sweep.toml"
    sweep.write_text(sweep.read_text().replace('"requests.deadline_ms" = [8.0, 40.0]',
                                               '"deployments.fast.variant" = ["fast/int8/cpu", "nope/int8/cpu"]'))
    code, _, err = _sweep(study, "--executor", "ray", "--address", cluster.address)
    assert code == 2 and _one_line(err, "sweep.toml: point", "'nope/int8/cpu' is not in bundle",
                                   str((study / "tiny").resolve()))
    assert not (study / "out" / "results.parquet").exists()
    # --address belongs to Ray; nothing is written
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "x"), "--address", cluster.address]) == 2
    assert _one_line(capsys.readouterr().err, "--address", "needs --executor ray")
    assert not (tmp_path / "x").exists()


def test_a_cluster_that_wants_a_token_is_one_line(tmp_path):
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0123456789abcdef" * 4}
    secured = Helper(tmp_path / "head", nodes=0, env=token)
    try:
        study = _study(tmp_path / "study", seeds=1, duration_s=4.0)
        started = time.monotonic()
        code, _, err = _sweep(study, "--executor", "ray", "--address", secured.address,
                              env={"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""})
        assert code == 2 and _one_line(err, secured.address, "refused the connection (authentication)")
        assert time.monotonic() - started < 20 and not (study / "out").exists()
        code, _, err = _sweep(study, "--executor", "ray", "--address", secured.address, env=token)
        assert code == 0, err
    finally:
        secured.stop()


class FakeRay:
    """What ``_Watch`` asks of Ray: the nodes, as a list of states played in turn."""

    def __init__(self, states: list[list[dict]]):
        self.states = states

    def nodes(self) -> list[dict]:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def test_watch_reports_lost_nodes_and_gives_up_without_cpus(monkeypatch):
    import sim.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "WATCH_EVERY_S", 0.0)
    monkeypatch.setattr(cluster_module, "NO_CPU_GRACE_S", 0.2)
    head = {"NodeID": "a" * 56, "Alive": True, "NodeManagerAddress": "127.0.0.1", "Resources": {}}
    worker = {"NodeID": "b" * 56, "Alive": True, "NodeManagerAddress": "127.0.0.1", "Resources": {"CPU": 2.0}}
    lines: list[str] = []
    watch = cluster_module._Watch(FakeRay([[head, worker], [head, {**worker, "Alive": False}]]), "--address x",
                                  lines.append)
    watch.check(5)
    assert lines == ["warning: lost node bbbbbbbbbbbb (127.0.0.1) of the cluster; Ray retries its runs on the "
                     "other nodes (up to 3 times)"]
    time.sleep(0.3)
    with pytest.raises(InputError, match=r"--address x: the cluster has had no CPU for 0.2 s .* 5 runs unfinished"):
        watch.check(5)


def test_watch_looks_now_when_asked_between_its_looks(monkeypatch):
    """Between looks the watch does not ask Ray (a look costs a round trip); at the sweep's end it
    looks at once, so a node lost since the last look is still reported."""
    import sim.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "WATCH_EVERY_S", 3600.0)
    worker = {"NodeID": "b" * 56, "Alive": True, "NodeManagerAddress": "127.0.0.1", "Resources": {"CPU": 1.0}}
    lines: list[str] = []
    watch = cluster_module._Watch(FakeRay([[worker], [{**worker, "Alive": False}]]), "--address x", lines.append)
    watch.check(3)
    assert lines == []
    watch.check(0, now=True)
    assert len(lines) == 1 and lines[0].startswith("warning: lost node bbbbbbbbbbbb")


class InterruptedRay(FakeRay):
    """Ray as ``run_on_ray`` sees it, on a one-CPU cluster, until Ctrl-C comes in its first wait."""

    class exceptions:  # what run_on_ray catches; never raised here
        RayError = RayTaskError = type("NeverRaised", (Exception,), {})

    def __init__(self, open_before: bool):
        super().__init__([[]])
        self.open_before, self.submitted, self.cancelled = open_before, [], []

    def is_initialized(self) -> bool:
        return self.open_before

    def cluster_resources(self) -> dict:
        return {"CPU": 1.0}

    def remote(self, **options):
        return lambda function: type("Remote", (), {"remote": lambda _, batch, shipped: self._submit(batch)})()

    def _submit(self, batch) -> str:
        self.submitted.append(f"ref{len(self.submitted)}")
        return self.submitted[-1]

    def wait(self, refs, num_returns, timeout):
        raise KeyboardInterrupt

    def cancel(self, ref) -> None:
        self.cancelled.append(ref)


@pytest.mark.parametrize("open_before", [False, True])
def test_ctrl_c_cancels_tasks_only_on_a_connection_that_outlives_the_sweep(monkeypatch, tmp_path, open_before):
    """A connection the sweep opened is left after Ctrl-C (sim/leaving.py), which ends the job's tasks;
    cancelling them as well races their replies, on which Ray can abort the driver (exit 1). A
    connection open before the sweep stays open: there each outstanding task is cancelled."""
    import sim.cluster as cluster_module

    ray = InterruptedRay(open_before)
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.exceptions", ray.exceptions)
    monkeypatch.setattr(cluster_module, "connected", lambda *args: contextlib.nullcontext(ray))
    tasks = [types.SimpleNamespace(inputs=(), run_id=f"run{i}") for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        cluster_module.run_on_ray(tasks, tmp_path, address=None, cpus=1, timeout_s=1.0, advance=lambda: None,
                                  log=lambda line: None)
    assert len(ray.submitted) == 3
    assert ray.cancelled == (ray.submitted if open_before else [])
