"""Speed-up and parallel efficiency of a fixed sweep: 1 and 2 local workers, 1 and 2 Ray CPUs.

The sweep: the demo scenario (``examples/demo.toml``: a cascade on the bundled digits bundle) at
two loads, two cascade thresholds and ``--seeds`` seeds, each run ``--duration`` simulated seconds. Every
configuration sweeps into a fresh directory and must give a byte-identical ``results.parquet``.

Ray runs on a private loopback instance of 1 or 2 CPUs started here. Its first sweep pays for the
instance, the workers' start and the shipping of the code and the bundle ("cold", printed for
reference); the timed sweep follows on the same, warm instance, with other settings (so the
workers' remembered scenarios do not help it). Printed per configuration: wall seconds, speed-up
and efficiency from 1 to 2 CPUs of the same executor, and the overhead per run against local
processes with as many CPUs. Target (issue 16): under 0.2 s per run on a warm instance.

    python bench/sweep_scaling.py [--seeds 4] [--duration 600]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SWEEP = """base = "base.toml"
seeds = [{seeds}]
[axes]
load = [0.8, 1.0]
"policy.threshold" = [0.8, 0.9]
"""


def write_study(directory: Path, seeds: list[int], duration_s: float) -> Path:
    """The demo scenario lasting ``duration_s`` and a 2 x 2 x len(seeds) sweep over it, in ``directory``."""
    directory.mkdir(parents=True)
    base = (ROOT / "examples" / "demo.toml").read_text().replace("duration_s = 60.0", f"duration_s = {duration_s}")
    (directory / "base.toml").write_text(base)
    (directory / "sweep.toml").write_text(SWEEP.format(seeds=", ".join(map(str, seeds))))
    return directory / "sweep.toml"


def timed(sweep: Path, out: Path, **options) -> float:
    from sim.sweep import run_sweep

    start = time.perf_counter()
    run_sweep(sweep, out, log=lambda line: None, **options)
    return time.perf_counter() - start


def ray_times(sweep: Path, warmup: Path, root: Path, cpus: int) -> tuple[float, float]:
    """(cold, warm) seconds on a private Ray instance of ``cpus`` CPUs: the cold sweep includes
    starting the instance; the warm one runs on it after a warm-up sweep of other settings."""
    from sim.cluster import CONNECT_TIMEOUT_S, connected

    start = time.perf_counter()
    with connected(None, cpus, CONNECT_TIMEOUT_S):
        timed(warmup, root / f"warmup-{cpus}", executor="ray")
        cold = time.perf_counter() - start
        warm = timed(sweep, root / f"ray-{cpus}", executor="ray")
    return cold, warm


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per grid point (default 4: 16 runs)")
    parser.add_argument("--duration", type=float, default=600.0, help="simulated seconds per run (default 600: about 1 s of work)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sweep-scaling-"))
    (root / "node-tmp").mkdir()
    os.environ["TMPDIR"] = str(root / "node-tmp")  # the Ray workers' copies of the inputs, removed below
    try:
        sweep = write_study(root / "study", list(range(1, args.seeds + 1)), args.duration)
        warmup = write_study(root / "warmup", list(range(101, 101 + args.seeds)), args.duration / 2)
        runs = 4 * args.seeds
        times = {("local", n): timed(sweep, root / f"local-{n}", workers=n) for n in (1, 2)}
        cold = {}
        for n in (1, 2):
            cold[n], times[("ray (warm)", n)] = ray_times(sweep, warmup, root, n)
        reference = (root / "local-1" / "results.parquet").read_bytes()
        same = all((root / name / "results.parquet").read_bytes() == reference
                   for name in ("local-2", "ray-1", "ray-2"))
        print(f"sweep: {runs} runs of {args.duration:g} simulated s (demo scenario); "
              f"results.parquet byte-identical across all four: {same}")
        print(f"{'executor':<12} {'cpus':>4} {'wall_s':>8} {'per_run_s':>9} {'speed-up':>8} {'efficiency':>10} "
              f"{'overhead_per_run_s':>18}")
        for (kind, n), seconds in times.items():
            speedup = times[(kind, 1)] / seconds
            overhead = (seconds - times[("local", n)]) / runs
            print(f"{kind:<12} {n:>4} {seconds:>8.2f} {seconds / runs:>9.3f} {speedup:>8.2f} {speedup / n:>10.0%} "
                  f"{overhead:>18.3f}")
        print("ray (cold: starting the instance, then a warm-up sweep of the same size at half the duration): "
              + ", ".join(f"{n} CPU(s) {cold[n]:.2f} s" for n in (1, 2)))
        return 0 if same else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
