"""Peak memory and speed of a long run: the canonical scenario of ``bench/sim_speed.py`` at growing sizes.

Each size runs in a fresh subprocess (so each peak is its own): the simulation, its summary and
the run output written to a temporary directory, as ``simulate run`` does. Printed per size: peak
RSS (``ru_maxrss`` of the child), that peak over the first size's, and wall microseconds per
request (workload, simulation, summary and writing). Targets (issue 9): 10M
requests under 1.5 GB peak RSS, and the 2M-request peak within 1.3x of the 200k one.

    python bench/scale.py [--requests 200000,2000000,10000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def child(requests: int) -> None:
    import policies
    from sim.engine import Simulation
    from sim_speed import canonical
    from traces.runoutput import write_into
    from traces.scenario import scenario_from_dict

    raw, profiles, _, _ = canonical(requests)
    scenario = scenario_from_dict(raw)
    start = time.perf_counter()
    sim = Simulation(scenario, policies.create("static", {}), profiles=profiles, predictions=None, seed=0)
    result = sim.run()
    summary = result.summary(scenario)
    with tempfile.TemporaryDirectory() as out:
        write_into(Path(out) / "run", scenario.resolved(), result.requests, summary)
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"requests": len(result.requests), "peak_mb": peak_kib / 1024,
                      "us_per_request": elapsed / len(result.requests) * 1e6}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", default="200000,2000000,10000000",
                        help="comma-separated request counts (default: 200000,2000000,10000000)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    sizes = [int(float(s)) for s in args.requests.split(",") if s.strip()]
    results = []
    print(f"{'requests':>10s} {'peak RSS MB':>12s} {'x first':>8s} {'us/request':>11s}")
    for n in sizes:
        done = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                              check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(row)
        ratio = row["peak_mb"] / results[0]["peak_mb"]
        print(f"{row['requests']:>10d} {row['peak_mb']:>12.0f} {ratio:>8.2f} {row['us_per_request']:>11.2f}",
              flush=True)


if __name__ == "__main__":
    main()
