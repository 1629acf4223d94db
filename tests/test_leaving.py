"""sim.leaving: after Ctrl-C abandons a Ray connection, the process ends with the command's status
at once, what it said flushed, Ray's shutdown at exit never run, and a private instance's
directory removed once the processes naming it are gone. Played with a stand-in for Ray (the
real Ctrl-C of a sweep on a private instance: the last test here; on a cluster:
tests/test_ray_cluster.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim import leaving
from test_ray_cluster import _finished_runs, _study, _sweep, _wait_for_runs
from traces.errors import InputError

REPO = Path(__file__).resolve().parents[1]

# a stand-in for Ray: its shutdown, registered at exit as Ray's is, writes a file if it ever runs
PROGRAM = """import atexit, sys, types
from pathlib import Path
from sim import leaving
marker, temp_dir, mode = Path(sys.argv[1]), sys.argv[2] or None, sys.argv[3]
ray = types.SimpleNamespace(shutdown=lambda: marker.write_text("shut down"))
atexit.register(ray.shutdown)
print("said before leaving", end="")  # no newline: a piped stdout is flushed only on purpose
sys.stderr.write("interrupted\\n")
if mode == "abandon":  # Ctrl-C under the command line
    with leaving.armed():
        assert leaving.abandon(temp_dir)
elif mode == "unarmed":  # Ctrl-C in a Python session that called run_sweep
    assert not leaving.abandon(temp_dir)
assert leaving.abandoned() == (mode == "abandon")
leaving.leave(130)
sys.exit(7)  # only where nothing was abandoned
"""


def _run(tmp_path: Path, temp_dir: str, mode: str) -> subprocess.CompletedProcess:
    """PROGRAM in its own process, its stdout a pipe and buffered (so a missing flush would show)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path / "shutdown-ran"), temp_dir, mode],
                          capture_output=True, text=True, timeout=60, env={**env, "PYTHONPATH": str(REPO)})


def test_an_abandoned_connection_ends_the_process_at_once_with_the_status_given(tmp_path):
    done = _run(tmp_path, "", "abandon")
    assert done.returncode == 130
    assert done.stdout == "said before leaving" and done.stderr == "interrupted\n"
    assert not (tmp_path / "shutdown-ran").exists()  # Ray's exit-time shutdown withdrawn, teardown skipped


@pytest.mark.parametrize("mode", ["keep", "unarmed"])
def test_without_an_abandoned_connection_leave_returns_and_the_process_exits_as_usual(tmp_path, mode):
    """Nothing abandoned, or Ctrl-C outside the command line: Ray's shutdown at exit runs as ever."""
    done = _run(tmp_path, "", mode)
    assert done.returncode == 7 and done.stdout == "said before leaving"
    assert (tmp_path / "shutdown-ran").read_text() == "shut down"


def test_a_private_instances_directory_goes_once_nothing_names_it(tmp_path):
    """The directory outlives the driver while a process naming it in its command line runs (as a
    private instance's raylet does for a moment after its driver), and goes when that ends."""
    instance = tmp_path / "ray-instance"
    (instance / "session" / "logs").mkdir(parents=True)
    (instance / "session" / "logs" / "raylet.out").write_text("log")
    # a process naming the directory, until it is told to end (no race with a busy machine)
    user = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", str(instance)],
                            stdin=subprocess.PIPE)
    try:
        assert _run(tmp_path, str(instance), "abandon").returncode == 130
        time.sleep(1.5)
        assert instance.exists()  # still named by a running process
        user.stdin.close()
        user.wait(timeout=30)
        deadline = time.monotonic() + 20
        while instance.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not instance.exists()
    finally:
        user.kill()


class ConnectingRay:
    """Ray as ``sim.cluster.connected`` sees it: a private instance that starts, and a shutdown counted."""

    def __init__(self):
        self.options, self.shutdowns = None, 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **options) -> None:
        self.options = options

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.mark.parametrize("stop, armed", [(KeyboardInterrupt, True), (KeyboardInterrupt, False), (InputError, True)])
def test_only_ctrl_c_at_the_command_line_abandons_a_connection_the_sweep_opened(monkeypatch, stop, armed):
    """Ctrl-C under the command line leaves the connection to ``leave``; an error, or Ctrl-C in a
    Python session that called ``run_sweep`` (which goes on), shuts it down and removes the
    instance's directory."""
    import sim.cluster as cluster_module

    ray = ConnectingRay()
    monkeypatch.setattr(cluster_module, "import_ray", lambda loopback: ray)
    monkeypatch.setattr(leaving, "_ABANDONED", {})
    with pytest.raises(stop), leaving.armed() if armed else contextlib.nullcontext():
        with cluster_module.connected(None, 1):
            temp_dir = Path(ray.options["_temp_dir"])
            assert ray.options["address"] == "local" and temp_dir.is_dir()
            raise stop("x", "y") if stop is InputError else stop()
    left = stop is KeyboardInterrupt and armed
    assert leaving.abandoned() == left and ray.shutdowns == (0 if left else 1)
    assert temp_dir.is_dir() == left  # an abandoned instance's directory waits for leave's helper
    shutil.rmtree(temp_dir, ignore_errors=True)

@pytest.mark.timeout(240)
@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="the optional extra 'dist' (ray) is not installed")
def test_an_interrupted_sweep_on_a_private_instance_leaves_nothing_behind(tmp_path):
    """Ctrl-C leaves Ray as a killed driver would (sim/leaving.py): the private instance's
    processes die with the driver, and its temporary directory is removed once they are gone."""
    study = _study(tmp_path / "study", seeds=2, duration_s=600.0)
    process = _sweep(study, "--executor", "ray", "--workers", "2", wait=False)
    _wait_for_runs(study / "out", 1, process, limit_s=120)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    named = {m.group().decode() for pid in children  # the instance's directory, in its processes' command lines
             if (m := re.search(rb"/tmp/ray\w{8}", Path(f"/proc/{pid}/cmdline").read_bytes()))}
    assert len(named) == 1 and Path(next(iter(named))).is_dir(), (children, named)
    directory = Path(named.pop())
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    deadline = time.monotonic() + 60
    while (directory.exists() or any(Path(f"/proc/{pid}").exists() for pid in children)) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not directory.exists() and not any(Path(f"/proc/{pid}").exists() for pid in children)
    assert 0 < _finished_runs(study / "out") < 8  # the runs written before the interrupt are kept
