"""`simulate`: run, validate and list scenarios. Bad input -> one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import policies
from traces.bundle import TraceBundle
from traces.cli import run_command
from traces.scenario import load_scenario, parse_seeds
from traces.summary import summary_table

from .runner import prepare, run_seeds

BUNDLED_DATA = Path(__file__).resolve().parents[1] / "traces" / "data"


def cmd_run(args) -> int:
    scenario = load_scenario(args.scenario, args.set)
    seeds = parse_seeds(args.seeds) if args.seeds else [scenario.seed]
    out = Path(args.out) if args.out else Path("runs") / Path(args.scenario).stem
    prepared = prepare(scenario)
    summaries = run_seeds(prepared, seeds, out, force=args.force)
    print(summary_table(summaries))
    print(f"wrote {out}/ (seed-<n>/config.json, requests.parquet, summary.json; runs.csv)")
    return 0


def cmd_validate(args) -> int:
    scenario = load_scenario(args.scenario, args.set)
    prepared = prepare(scenario)
    print(f"scenario {args.scenario}: ok")
    rate = scenario.arrivals.mean_rate_rps(scenario.duration_s)
    print(f"  arrivals: {scenario.arrivals.kind}, mean {rate:.1f} rps over {scenario.duration_s:g} s "
          f"(warm-up {scenario.warmup_s:g} s), about {rate * scenario.duration_s:.0f} requests")
    print(f"  deadlines (ms): {', '.join(f'{d:g}' for d in scenario.requests.deadline_ms)}")
    if prepared.bundle is not None:
        print(f"  bundle: {prepared.bundle.path} ({len(prepared.bundle.variants)} variants)")
    for dep in scenario.deployments:
        profile = prepared.profiles[dep.name]
        source = dep.variant or f"{dep.service.kind} service"
        capacity = profile.throughput_rps(dep.max_batch_size, dep.replicas)
        print(f"  deployment {dep.name}: {source}, {dep.replicas} replica(s), batch <= {dep.max_batch_size}, "
              f"wait {dep.batch_wait_timeout_ms:g} ms, {dep.queue}; p50 at batch 1 "
              f"{profile.percentile_ms(1, 50):.3f} ms; capacity ~{capacity:.0f} rps at full batches")
    params = ", ".join(f"{k}={v!r}" for k, v in scenario.policy.params.items())
    print(f"  policy: {scenario.policy.name}({params})")
    return 0


def find_bundles(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        if root.is_dir():
            found.extend(sorted(p.parent for p in root.glob("*/bundle.json")))
            if (root / "bundle.json").is_file():
                found.append(root)
    return found


def cmd_list(args) -> int:
    roots = [Path(p) for p in args.bundles] if args.bundles else [BUNDLED_DATA]
    bundles = find_bundles(roots)
    print("bundles:" if bundles else f"bundles: none found in {', '.join(map(str, roots))}")
    for path in bundles:
        bundle = TraceBundle.load(path)
        print(f"  {path}: {bundle.meta.get('description', '')}")
        for variant in bundle.variants:
            sizes = sorted(bundle.latency_samples(variant))
            acc = bundle.predictions.loc[bundle.predictions["variant"] == variant, "correct"]
            accuracy = f", accuracy {acc.mean():.4f}" if len(acc) else ""
            print(f"    {variant}: batch {sizes[0]}..{sizes[-1]}{accuracy}")
    print("policies: " + ", ".join(policies.names()) + "; bounds: oracle-static, isolation-bound")
    return 0


def cmd_sweep(args) -> int:
    from traces.progress import show_progress

    from .sweep import run_sweep

    frame = run_sweep(args.sweep, args.out, executor=args.executor, workers=args.workers, address=args.address,
                      progress=show_progress())
    print(f"{len(frame)} runs; results in {Path(args.out) / 'results.parquet'}")
    axes = [a for a in frame.attrs.get("axes", []) if a != "seed"]
    shown = [c for c in ("hit_rate", "accuracy", "ontime_accuracy", "latency_ms.p99") if c in frame.columns]
    if axes:
        print(frame.groupby(axes, sort=False)[shown].mean().round(4).to_string())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulate", description="Simulate ML serving on measured traces.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and write its run output")
    run.add_argument("scenario")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key, e.g. arrivals.rate_rps=300 or deployments.small.replicas=2")
    run.add_argument("--seeds", help="seeds to run: 3, 1-5 or 1,4,9 (default: the scenario's seed)")
    run.add_argument("--out", help="output directory (default: runs/<scenario name>)")
    run.add_argument("--force", action="store_true", help="replace an existing output directory")
    run.set_defaults(func=cmd_run)
    validate = sub.add_parser("validate", help="check a scenario and its bundle, print what would run")
    validate.add_argument("scenario")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    validate.set_defaults(func=cmd_validate)
    sweep = sub.add_parser("sweep", help="expand a sweep file into a grid of runs (parallel, resumable)")
    sweep.add_argument("sweep")
    sweep.add_argument("--out", required=True, help="directory for runs/ and results.parquet (resumed if it exists)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local")
    sweep.add_argument("--workers", type=int, help="local worker processes (default: all cores)")
    sweep.add_argument("--address", help="with --executor ray: the address of an existing Ray cluster")
    sweep.set_defaults(func=cmd_sweep)
    listing = sub.add_parser("list", help="list bundles, their variants, and the policies")
    listing.add_argument("bundles", nargs="*", help="directories to search (default: the bundled traces)")
    listing.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
