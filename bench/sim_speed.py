"""Microseconds of wall time per simulated request, and ciw side by side on M/M/4.

Canonical scenario: Poisson arrivals at 80% of capacity, 4 replicas, dynamic batching up to 8 with
a 2 ms wait, service times drawn by the measured-variant sampler from a latency table shaped like
a small CNN on CPU (lognormal, 1.5 ms + 0.35 ms per extra item, cv 0.08). The table is synthetic on
purpose: this benchmark times the engine, not a model. Then M/M/4 at rho = 0.8 (mean service 2 ms)
in our engine and in ciw, same arrivals count, one core each, and bare M/M/4 loops on SimPy and
on heapq alone (``time_bare_loops``), the scale the ratio to ciw is read against. The canonical
scenario is also timed end to end as ``simulate run`` pays it (workload, simulation, summary, run output written),
the figure to compare across versions: since the request log streams, ``Simulation.run`` itself
includes writing the requests to Parquet, which used to come after it.

    python bench/sim_speed.py [--requests 400000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from sim.engine import Simulation  # noqa: E402
from traces.bundle import TraceBundle  # noqa: E402
from traces.profiles import LatencyProfile  # noqa: E402
from traces.scenario import scenario_from_dict  # noqa: E402

REPLICAS, MAX_BATCH, LOAD = 4, 8, 0.8


def synthetic_bundle(rng: np.random.Generator) -> TraceBundle:
    rows = []
    for b in range(1, MAX_BATCH + 1):
        mean = 1.5 + 0.35 * (b - 1)
        sigma = np.sqrt(np.log1p(0.08**2))
        for value in rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, 200):
            rows.append(("cnn/fp32/cpu", "cnn", "fp32", "cpu", b, value))
    service = pd.DataFrame(rows, columns=["variant", "model", "precision", "device", "batch_size", "latency_ms"])
    return TraceBundle(meta={"name": "synthetic"}, service=service, predictions=pd.DataFrame())


def canonical(requests: int) -> tuple[dict, dict, float, float]:
    """The canonical scenario for about ``requests`` arrivals: (raw scenario, profiles, rate, capacity)."""
    bundle = synthetic_bundle(np.random.default_rng(0))
    profile = LatencyProfile.from_bundle(bundle, "cnn/fp32/cpu")
    capacity = profile.throughput_rps(MAX_BATCH, REPLICAS)
    rate = LOAD * capacity
    raw = {"duration_s": requests / rate, "arrivals": {"kind": "poisson", "rate_rps": rate},
           "requests": {"deadline_ms": 50.0}, "policy": {"name": "static"},
           "deployments": [{"name": "cnn", "variant": "cnn/fp32/cpu", "replicas": REPLICAS,
                            "max_batch_size": MAX_BATCH, "batch_wait_timeout_ms": 2.0}]}
    return raw, {"cnn": profile}, rate, capacity


def time_engine(raw: dict, profiles: dict, repeats: int) -> tuple[float, int]:
    """Best wall time per request of ``Simulation.run``, which includes streaming the requests
    table to its Parquet spool (before the streaming log, it ended with the table in memory)."""
    best = float("inf")
    for seed in range(repeats):
        scenario = scenario_from_dict(raw)
        sim = Simulation(scenario, policies.create("static", {}), profiles=profiles, predictions=None, seed=seed)
        start = time.perf_counter()
        result = sim.run()
        elapsed = time.perf_counter() - start
        best = min(best, elapsed / len(result.requests))
    return best * 1e6, len(result.requests)


def time_end_to_end(raw: dict, profiles: dict, repeats: int) -> float:
    """Best wall time per request of what ``simulate run`` pays for one seed: the workload, the
    simulation, the summary and the run output written (``sim.runner.run_once`` + ``write_into``)."""
    import shutil
    import tempfile

    from sim.runner import run_once
    from sim.core.prepare import Prepared
    from traces.runoutput import write_into

    best = float("inf")
    prepared = Prepared(scenario_from_dict(raw), None, profiles, None)
    for seed in range(repeats):
        out = Path(tempfile.mkdtemp(prefix="sim-speed-"))
        try:
            start = time.perf_counter()
            config, requests, summary = run_once(prepared, seed)
            write_into(out / "seed", config, requests, summary)
            best = min(best, (time.perf_counter() - start) / len(requests))
        finally:
            shutil.rmtree(out, ignore_errors=True)
    return best * 1e6


def time_ciw(rate_rps: float, mean_s: float, customers: int, repeats: int) -> float:
    import ciw

    best = float("inf")
    horizon = customers / rate_rps
    for seed in range(repeats):
        network = ciw.create_network(arrival_distributions=[ciw.dists.Exponential(rate_rps)],
                                     service_distributions=[ciw.dists.Exponential(1 / mean_s)],
                                     number_of_servers=[REPLICAS])
        ciw.seed(seed)
        sim = ciw.Simulation(network)
        start = time.perf_counter()
        sim.simulate_until_max_time(horizon)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed / len(sim.get_all_records()))
    return best * 1e6


def time_bare_loops(rate_rps: float, mean_s: float, customers: int, repeats: int) -> tuple[float, float]:
    """Best wall time per customer of two bare M/M/4 loops, for scale: (SimPy, heapq).

    Each keeps only a waiting line, a free-server count and each customer's finish time; arrivals
    are pre-drawn and merged into the event loop as this engine merges them. The SimPy loop makes
    one ``Timeout`` per service, as this engine does per batch, with the customer on the event and
    one shared callback; the heapq loop has no SimPy at all. Nothing routes, batches, accounts or
    logs: they are the scale a ratio to ciw is read against, not a proof that nothing runs faster."""
    import heapq
    from collections import deque

    import simpy
    from simpy.events import Timeout

    best_simpy = best_heap = float("inf")
    for seed in range(repeats):
        rng = np.random.default_rng(seed)
        arrival_s = np.cumsum(rng.exponential(1 / rate_rps, customers)).tolist()
        service_s = rng.exponential(mean_s, customers).tolist()
        finish_s = [0.0] * customers

        env = simpy.Environment()
        waiting: deque = deque()
        free = [REPLICAS]

        def serve(i: int, now: float) -> None:
            event = Timeout(env, now + service_s[i] - env.now)
            event.customer = i
            event.callbacks.append(done)

        def done(event) -> None:
            now = env.now
            finish_s[event.customer] = now
            if waiting:
                serve(waiting.popleft(), now)
            else:
                free[0] += 1

        start = time.perf_counter()
        i, peek, step = 0, env.peek, env.step
        while i < customers or peek() != math.inf:
            if i < customers and arrival_s[i] < peek():
                if free[0]:
                    free[0] -= 1
                    serve(i, arrival_s[i])
                else:
                    waiting.append(i)
                i += 1
            else:
                step()
        best_simpy = min(best_simpy, (time.perf_counter() - start) / customers)

        start = time.perf_counter()
        heap: list = []
        waiting.clear()
        idle, i = REPLICAS, 0
        while i < customers or heap:
            if i < customers and (not heap or arrival_s[i] < heap[0][0]):
                if idle:
                    idle -= 1
                    heapq.heappush(heap, (arrival_s[i] + service_s[i], i))
                else:
                    waiting.append(i)
                i += 1
            else:
                now, j = heapq.heappop(heap)
                finish_s[j] = now
                if waiting:
                    k = waiting.popleft()
                    heapq.heappush(heap, (now + service_s[k], k))
                else:
                    idle += 1
        best_heap = min(best_heap, (time.perf_counter() - start) / customers)
    return best_simpy * 1e6, best_heap * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    raw, profiles, rate, capacity = canonical(args.requests)
    us, n = time_engine(raw, profiles, args.repeats)
    print(f"canonical: Poisson {rate:.0f} rps (80% of {capacity:.0f}), {REPLICAS} replicas, batch <= {MAX_BATCH}, "
          f"{n} requests: {us:.2f} us per simulated request")
    print(f"canonical, end to end as `simulate run` (workload, simulation, summary, run output written): "
          f"{time_end_to_end(raw, profiles, args.repeats):.2f} us per request")

    mean_ms = 2.0
    mm4_rate = LOAD * REPLICAS * 1000.0 / mean_ms
    mm4 = {"duration_s": args.requests / mm4_rate, "arrivals": {"kind": "poisson", "rate_rps": mm4_rate},
           "requests": {"deadline_ms": 1e6}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": {"kind": "exponential", "mean_ms": mean_ms},
                            "replicas": REPLICAS}]}
    ours, n = time_engine(mm4, {"m": None}, args.repeats)
    theirs = time_ciw(mm4_rate, mean_ms / 1000.0, n, args.repeats)
    print(f"M/M/4 rho=0.8, {n} customers: engine {ours:.2f} us, ciw {theirs:.2f} us per customer; "
          f"engine is {theirs / ours:.1f}x faster")
    simpy_loop_us, heap_loop_us = time_bare_loops(mm4_rate, mean_ms / 1000.0, n, args.repeats)
    print(f"M/M/4 bare loops, nothing logged or decided: on SimPy {simpy_loop_us:.2f} us "
          f"({theirs / simpy_loop_us:.1f}x ciw), on heapq {heap_loop_us:.2f} us; 8x ciw would be {theirs / 8:.2f} us, "
          f"{theirs / 8 / simpy_loop_us:.2f}x the bare SimPy loop")


if __name__ == "__main__":
    main()
