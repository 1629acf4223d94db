"""How a sweep on Ray ends on Ctrl-C, counted over many interrupts at random moments.

Each round writes a fresh study (the demo scenario, as in ``bench/sweep_scaling.py``: 4 grid
points x 3 seeds), starts ``simulate sweep`` on Ray, kills it (SIGKILL) once its first run is
written, resumes it, and interrupts the resumed sweep (SIGINT) a random 0-0.8 s after its next run
is written: the moments of ``tests/test_ray_cluster.py``, where CI met Ray aborting the driver.
An interrupt ends well when the sweep exits with status 130 and ``interrupted`` as its last line;
any other ending is counted with Ray's first line.

By default the sweeps run on a two-node cluster (one CPU each) started here on loopback, in its
own temporary directory. With ``--private`` each sweep starts its own private instance
(``--executor ray --workers 2``); then also counted, 10 s after each interrupt: the interrupted
sweep's Ray processes still running, and its instance's temporary directory left behind (a killed
sweep's instance keeps its directory: nothing runs after SIGKILL).

    python bench/ray_interrupt.py [--rounds 40] [--seed 1] [--private]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sweep_scaling import write_study

ROOT = Path(__file__).resolve().parents[1]
DELAY_S = 0.8  # the interrupt comes up to this long after a run is written


def finished(out: Path) -> int:
    from sim.sweep import finished_runs

    return len(finished_runs(out / "runs"))


def start(study: Path, ray_args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sim", "sweep", "sweep.toml", "--out", "out", *ray_args],
                            cwd=study, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # heard if run in the background


def wait_for_runs(out: Path, count: int, process: subprocess.Popen, limit_s: float = 120.0) -> bool:
    deadline = time.monotonic() + limit_s
    while finished(out) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def instance_dir(pids: set[int]) -> Path | None:
    """A private instance's temporary directory, as its processes name it in their command lines."""
    for pid in pids:
        with contextlib.suppress(OSError):
            found = re.search(rb"/tmp/ray\w{8}", Path(f"/proc/{pid}/cmdline").read_bytes())
            if found:
                return Path(found.group().decode())
    return None


def one_round(study: Path, ray_args: list[str], rng: random.Random) -> tuple[str, set[int], Path | None]:
    """Kill, resume, interrupt: how the interrupted sweep ended, its child processes and its private
    instance's directory (the killed sweep's is not counted: nothing cleans up after SIGKILL)."""
    for stop in (signal.SIGKILL, signal.SIGINT):
        process = start(study, ray_args)
        if not wait_for_runs(study / "out", finished(study / "out") + 1, process):
            process.kill()
            return "no run written (sweep ended or stalled first)", set(), None
        if stop == signal.SIGINT:
            time.sleep(rng.uniform(0.0, DELAY_S))
        children = {int(p) for p in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                                   text=True).stdout.split()}
        directory = instance_dir(children)
        process.send_signal(stop)
        _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("progress: ")]
    if process.returncode == 130 and lines and lines[-1] == "interrupted":
        return "ok", children, directory
    said = next((line for line in lines if "Check failed" in line), None)  # Ray's abort: its check's words
    said = re.sub(r" [0-9a-f]{32,}$", "", said[said.index("Check failed"):]) if said else next(iter(lines[-1:]), "")
    return f"exit {process.returncode}: {said[:120]}", children, directory


def start_cluster(home: Path):
    """A head and one more node on 127.0.0.1, one CPU each, in ``home`` (no machine-wide files)."""
    import ray._private.utils
    from ray.cluster_utils import Cluster

    ray._private.utils.write_ray_address = lambda *args, **kwargs: None
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False, "temp_dir": str(home)})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    return cluster


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="interrupts to count (default 40)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the moments of the interrupts")
    parser.add_argument("--private", action="store_true", help="a private instance per sweep, not a cluster")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="ray-interrupt-"))
    cluster = home = None
    endings: dict[str, int] = {}
    left_processes = left_dirs = 0
    try:
        if args.private:
            ray_args = ["--executor", "ray", "--workers", "2"]
        else:
            home = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Unix socket paths are short
            cluster = start_cluster(home)
            ray_args = ["--executor", "ray", "--address", cluster.address]
        for index in range(args.rounds):
            study = write_study(root / f"study-{index}", [1, 2, 3], 600.0).parent
            ending, children, directory = one_round(study, ray_args, rng)
            endings[ending] = endings.get(ending, 0) + 1
            if args.private:
                time.sleep(10)
                left_processes += sum(Path(f"/proc/{pid}").exists() for pid in children)
                left_dirs += directory is None or directory.exists()
            print(f"round {index + 1}/{args.rounds}: {ending}", flush=True)
            shutil.rmtree(study, ignore_errors=True)
    finally:
        if cluster is not None:
            cluster.shutdown()
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    where = "private instances (--workers 2)" if args.private else "a two-node loopback cluster"
    print(f"interrupts: {args.rounds} on {where}; ended with 130 and 'interrupted': {endings.get('ok', 0)}")
    for ending, count in sorted(endings.items()):
        if ending != "ok":
            print(f"  {count} x {ending}")
    if args.private:
        print(f"left 10 s after the interrupts: {left_processes} Ray processes, {left_dirs} temporary directories")
    return 0


if __name__ == "__main__":
    sys.exit(main())
