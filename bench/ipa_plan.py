"""Milliseconds per plan of the IPA-style solver (``policies.ipa_solver``) on random pipelines.

Each instance is a pipeline of ``--stages`` stages with ``--variants`` variants each, batch sizes
1..32 (``--batches`` of them) and, per (variant, batch), every replica count from the least that
sustains the arrival rate (ceil(rate / throughput), one more when that is exactly saturated) up to
``--max-replicas``: up to
10 x 6 x 32 = 1920 options per stage. The profiles are random but shaped like measured ones:
latency grows sublinearly with batch (b^p, p in [0.55, 0.9]), throughput is batch / latency,
accuracy rises with latency, and a bigger variant costs more per replica-hour. An option's latency
is what the caller would predict: the batch's service time, the mean wait to fill the batch,
(b - 1) / (2 rate), and the M/M/c queueing wait of batches (``traces.queueing``). The SLA is the
sum of each stage's fastest latency times a random factor in [1.2, 3].

    python bench/ipa_plan.py [--instances 50] [--seed 1] [--alpha 2] [--price-per-core-hour 0.04]

Prints the median and p95 of the wall time per ``solve`` call for both scores (validation, presolve
and every MILP round included) and the most rounds the product score needed; a score passes when
both its median and its p95 are under the target (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traces.queueing import mmc_wait_ms  # noqa: E402
from policies.ipa_solver import Infeasible, Option, solve  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32)


def stage_options(rng: np.random.Generator, rate_rps: float, variants: int, batches: tuple[int, ...],
                  max_replicas: int, stage: int, price_per_core_hour: float) -> list[Option]:
    """The candidate options of one stage at ``rate_rps``, as a caller would build them."""
    base_ms = np.sort(rng.uniform(4.0, 120.0, variants))  # batch-1 latency, smallest variant first
    accuracy = np.sort(np.clip(0.55 + 0.4 * np.log(base_ms / 4.0) / np.log(30.0) + rng.normal(0, 0.02, variants),
                               0.05, 0.99))
    cores = np.maximum(1, np.round(base_ms / 15.0))
    options = []
    for v in range(variants):
        exponent = rng.uniform(0.55, 0.9)
        for b in batches:
            service_ms = base_ms[v] * b ** exponent
            throughput_rps = 1000.0 * b / service_ms
            fill_ms = 1000.0 * (b - 1) / (2.0 * rate_rps)
            for replicas in range(math.floor(rate_rps / throughput_rps) + 1, max_replicas + 1):
                wait_ms = mmc_wait_ms(rate_rps / b, service_ms, replicas)
                options.append(Option(f"s{stage}v{v}", f"s{stage}v{v}-b{b}", b, replicas, float(accuracy[v]),
                                      service_ms + fill_ms + wait_ms,
                                      replicas * cores[v] * price_per_core_hour))
    return options


def instance(rng: np.random.Generator, args: argparse.Namespace) -> tuple[list[list[Option]], float]:
    rate_rps = rng.uniform(5.0, 200.0)
    stages = [stage_options(rng, rate_rps, args.variants, BATCHES[:args.batches], args.max_replicas, s,
                            args.price_per_core_hour) for s in range(args.stages)]
    fastest = sum(min(o.latency_ms for o in stage) for stage in stages if stage)
    return stages, fastest * rng.uniform(1.2, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50, help="random pipelines to plan (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the instances (default 1)")
    parser.add_argument("--stages", type=int, default=5, help="stages per pipeline (default 5)")
    parser.add_argument("--variants", type=int, default=10, help="variants per stage (default 10)")
    parser.add_argument("--batches", type=int, default=6, choices=range(1, len(BATCHES) + 1),
                        help="batch sizes, the first of 1, 2, 4, 8, 16, 32 (default 6)")
    parser.add_argument("--max-replicas", type=int, default=32, help="replica cap per option (default 32)")
    parser.add_argument("--alpha", type=float, default=2.0, help="weight of the accuracy score (default 2, IPA's)")
    parser.add_argument("--price-per-core-hour", type=float, default=0.04,
                        help="cost of a replica-hour per core; a variant has 1-8 cores (default 0.04)")
    parser.add_argument("--target-ms", type=float, default=50.0, help="speed target per plan (default 50)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    instances = [instance(rng, args) for _ in range(args.instances)]
    sizes = [len(stage) for stages, _ in instances for stage in stages]
    print(f"{args.instances} instances: {args.stages} stages x {args.variants} variants x {args.batches} batch sizes "
          f"x replicas ceil(rate/throughput)..{args.max_replicas}, alpha {args.alpha:g}, "
          f"{args.price_per_core_hour:g} per core-hour; options per stage: median "
          f"{statistics.median(sizes):.0f}, max {max(sizes)}")
    print(f"{'score':8s} {'median ms':>10s} {'p95 ms':>8s} {'max rounds':>10s} {'infeasible':>10s}  target",
          flush=True)
    failed = False
    for score in ("sum", "product"):
        times, rounds, infeasible = [], [], 0
        for i, (stages, sla_ms) in enumerate(instances):
            start = time.perf_counter()
            result = solve(stages, sla_ms, score=score, alpha=args.alpha)
            times.append((time.perf_counter() - start) * 1e3)
            if isinstance(result, Infeasible):
                infeasible += 1
            else:
                rounds.append(result.rounds)
            if (i + 1) % 10 == 0:
                print(f"  {score}: {i + 1}/{len(instances)} solved", file=sys.stderr, flush=True)
        median, p95 = float(np.median(times)), float(np.percentile(times, 95))
        ok = p95 < args.target_ms
        failed |= not ok
        print(f"{score:8s} {median:10.1f} {p95:8.1f} {max(rounds, default=0):10d} {infeasible:10d}  "
              f"{'pass' if ok else 'FAIL'} (median and p95 < {args.target_ms:g} ms)", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
