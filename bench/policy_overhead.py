"""Microseconds per routing decision for each policy, and simulated requests per second with each.

The decision benchmark calls ``route`` in a loop on a live simulation's view (a 4-deployment system
built from the bundle, mid-run, with queues), so per-request predictions read real state. The
throughput benchmark simulates the same scenario end to end with each policy.

    python bench/policy_overhead.py [--bundle traces/data/digits-cpu] [--requests 50000] [--repeats 5]
                                    [--learned examples/learned/digits.toml]

Decision times are the median of ``--repeats`` passes over the same requests, with the garbage
collector paused during the passes (as ``timeit`` does).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from policies.base import Request  # noqa: E402
from sim.engine import Simulation  # noqa: E402
from sim.runner import prepare  # noqa: E402
from traces.bundle import TraceBundle  # noqa: E402
from traces.scenario import read_toml, scenario_from_dict  # noqa: E402

POLICIES = {
    "static-small": {}, "static-large": {}, "throughput-autotuner": {}, "infaas": {"accuracy_floor": 0.0},
    "planner": {}, "degrade": {"inner": "planner"}, "aimd-batching": {"inner": "planner"},
}


LEARNED = Path(__file__).resolve().parents[1] / "examples" / "learned" / "digits.toml"


def scenario(bundle: Path, variants: list[str], rate_rps: float, duration_s: float, policy: str) -> dict:
    return {"duration_s": duration_s, "bundle": str(bundle), "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
            "requests": {"deadline_ms": [20.0, 80.0], "weights": [0.5, 0.5]},
            "deployments": [{"name": v.split("/")[0], "variant": v, "replicas": 2, "max_batch_size": 8,
                             "batch_wait_timeout_ms": 2.0} for v in variants],
            "policy": {"name": policy, "plan_interval_s": 1.0, **POLICIES[policy]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=str(Path(__file__).resolve().parents[1] / "traces" / "data" / "digits-cpu"))
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--learned", type=Path, default=LEARNED if LEARNED.is_file() else None,
                        help="a scenario of the learned router, timed on its own system beside the planner")
    args = parser.parse_args()
    bundle = TraceBundle.load(args.bundle)
    variants = [v for v in bundle.variants if v.endswith("/fp32/cpu") and "-" not in v.split("/")[0]][:4]
    if len(variants) < 2:
        variants = bundle.variants[:4]
    # about 60% of the fastest variant's capacity at full batches
    from traces.profiles import LatencyProfile
    fastest = min(LatencyProfile.from_bundle(bundle, v).throughput_rps(8, 2) for v in variants)
    rate = 0.6 * fastest
    print(f"bundle {args.bundle}: deployments {', '.join(variants)}; Poisson {rate:.0f} rps, deadlines 20/80 ms")
    print(f"{'policy':22s} {'us/decision':>12s} {'sim requests/s':>15s}")
    for name in POLICIES:
        raw = scenario(Path(args.bundle), variants, rate, args.requests / rate, name)
        print(f"{name:22s} " + timed(raw, Path("."), name, POLICIES[name], args))
    if args.learned is not None:
        # the learned router runs only on the system it was trained on: its own scenario, at its rate
        raw = read_toml(args.learned)
        params = {k: v for k, v in raw["policy"].items() if k != "name"}
        raw = {**raw, "duration_s": args.requests / float(raw["arrivals"]["rate_rps"])}
        print(f"{args.learned} (its own system):")
        for name, extra in (("learned", params), ("planner", {})):
            print(f"{name:22s} " + timed(raw, args.learned.parent, name, extra, args))


def timed(raw: dict, base_dir: Path, name: str, params: dict, args) -> str:
    """Microseconds per decision (mid-run, on a live view) and simulated requests per second."""
    raw = {**raw, "policy": {"name": name, "plan_interval_s": 1.0, **params}}
    prepared = prepare(scenario_from_dict(raw, base_dir=base_dir))
    scenario = prepared.scenario
    sim = Simulation(scenario, policies.create(name, scenario.policy.params), profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=1)
    sim.core.log.ensure_hops(2)
    sim.core.start()
    sim._run_until(scenario.duration_s / 2)  # mid-run: queues, rates and plans are live
    policy, view = sim.core.policy, sim.view
    samples = prepared.predictions.sample_ids.size if prepared.predictions is not None else 100
    requests = [Request(i, view.now_s, 20.0 if i % 2 else 80.0, i % min(100, samples)) for i in range(args.decisions)]
    timings = []
    gc.disable()  # as timeit does: a collection of the previous runs' objects is not a decision's cost
    for _ in range(args.repeats):  # the median of several passes: this machine has slow spells
        start = time.perf_counter()
        for request in requests:
            policy.route(request, view)
        timings.append((time.perf_counter() - start) / len(requests) * 1e6)
    gc.enable()
    per_decision = statistics.median(timings)
    sim = Simulation(scenario, policies.create(name, scenario.policy.params), profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=1)
    start = time.perf_counter()
    result = sim.run()
    rps = len(result.requests) / (time.perf_counter() - start)
    return f"{per_decision:12.2f} {rps:15.0f}"

if __name__ == "__main__":
    main()
