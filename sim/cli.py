"""`simulate`: run, validate and list scenarios, sweep grids of them, and recommend a configuration.

Bad input -> one line on stderr, exit status 2. ``validate`` runs exactly the checks ``run`` runs
before its first seed (``sim.core.driver.prepare``), and also warns where the offered load exceeds what
a deployment can serve.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import policies
from policies.base import Route
from traces.bundle import TraceBundle
from traces.cli import CommandLine, run_command
from sim.core.prepare import Prepared
from traces.scenario import load_scenario, parse_seeds
from traces.summary import legend, summary_table
from traces.tracking import add_track_arguments, parse_track, seed_runs, sweep_run, track

from . import leaving, recommend
from .cluster import CONNECT_TIMEOUT_S
from .runner import first_route, prepare, run_seeds

BUNDLED_DATA = Path(__file__).resolve().parents[1] / "traces" / "data"
KNOWN_ROUTES = ("static", "static-small", "static-large")  # policies whose route is fixed before the run


def cmd_run(args) -> int:
    target = parse_track(args.track, args.track_experiment)  # before anything runs
    scenario = load_scenario(args.scenario, args.set)
    seeds = parse_seeds(args.seeds, scenario.limits) if args.seeds else [scenario.seed]
    out = Path("runs") / Path(args.scenario).stem if args.out is None else Path(args.out)
    prepared = prepare(scenario)
    summaries = run_seeds(prepared, seeds, out, force=args.force)
    print(summary_table(summaries))
    print(legend(len(summaries)))
    print(f"wrote {out}/ (seed-<n>/config.json, requests.parquet, summary.json; runs.csv)")
    stem = Path(args.scenario).stem
    return track(target, stem, lambda: seed_runs(out, seeds, stem), out)


def offered_rps(prepared: Prepared) -> dict[str, tuple[float, str]]:
    """Mean requests per second each deployment is offered, with how, for the policies whose
    route is known before the run (a single deployment, or a cascade: each next hop gets the share
    of the samples that no earlier hop was confident enough on). Empty for the other policies."""
    scenario = prepared.scenario
    if scenario.policy.name not in KNOWN_ROUTES:
        return {}
    route = first_route(prepared)
    if not isinstance(route, Route):
        return {}
    rate = scenario.arrivals.mean_rate_rps(scenario.duration_s)
    table = prepared.predictions
    offered: dict[str, tuple[float, str]] = {}
    share, passing, how = 1.0, None, "all arrivals"
    for hop in route.hops:
        name = hop.deployment
        rps = offered.get(name, (0.0, ""))[0] + rate * share
        offered[name] = (rps, how if name not in offered else "several hops")
        if hop.threshold is None:
            break
        variant = scenario.deployment(name).variant
        confidence = table.confidence[variant]  # the engine checked that a cascade hop has predictions
        unsure = confidence < hop.threshold
        passing = unsure if passing is None else passing & unsure
        share = float(passing.mean())
        how = f"{share:.1%} passed on by {name}@{hop.threshold:g}"
    return offered


def overload_warnings(prepared: Prepared) -> list[str]:
    warnings = []
    for name, (rps, how) in offered_rps(prepared).items():
        dep = prepared.scenario.deployment(name)
        capacity = prepared.profiles[name].throughput_rps(dep.max_batch_size, dep.replicas)
        if rps > capacity:
            warnings.append(f"warning: deployment {name!r} is offered ~{rps:.1f} rps ({how}) but serves at most "
                            f"~{capacity:.1f} rps ({dep.replicas} replica(s) at full batches of {dep.max_batch_size}); "
                            "its queue will grow and requests miss their deadlines")
    return warnings


def cmd_validate(args) -> int:
    scenario = load_scenario(args.scenario, args.set)
    prepared = prepare(scenario)
    print(f"scenario {args.scenario}: ok")
    rate = scenario.arrivals.mean_rate_rps(scenario.duration_s)
    print(f"  arrivals: {scenario.arrivals.kind}, mean {rate:.1f} rps over {scenario.duration_s:g} s "
          f"(warm-up {scenario.warmup_s:g} s), about {rate * scenario.duration_s:.0f} requests")
    print(f"  deadlines (ms): {', '.join(f'{d:g}' for d in scenario.requests.deadline_ms)}")
    bundles = {id(b): b for b in [prepared.bundle, *prepared.bundles.values()] if b is not None}
    for bundle in bundles.values():
        print(f"  bundle: {bundle.path} ({len(bundle.variants)} variants)")
    if scenario.stages:
        print("  stages: " + " > ".join(f"{s.name} ({', '.join(s.deployments)})" for s in scenario.stages))
    for dep in scenario.deployments:
        profile = prepared.profiles[dep.name]
        source = dep.variant or f"{dep.service.kind} service"
        capacity = profile.throughput_rps(dep.max_batch_size, dep.replicas)
        print(f"  deployment {dep.name}: {source}, {dep.replicas} replica(s), batch <= {dep.max_batch_size}, "
              f"wait {dep.batch_wait_timeout_ms:g} ms, {dep.queue}; p50 at batch 1 "
              f"{profile.percentile_ms(1, 50):.3f} ms; capacity ~{capacity:.0f} rps at full batches")
        if dep.autoscaling is not None:
            scaling = dep.autoscaling
            print(f"    autoscaling: {scaling.policy}, {scaling.min_replicas}..{scaling.max_replicas} replicas, "
                  f"every {scaling.tick_s:g} s")
    params = ", ".join(f"{k}={v!r}" for k, v in scenario.policy.params.items())
    print(f"  policy: {scenario.policy.name}({params})")
    sys.stdout.flush()
    for line in overload_warnings(prepared):
        print(line, file=sys.stderr)
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
    from .sweep import run_sweep

    target = parse_track(args.track, args.track_experiment)  # before anything runs
    frame = run_sweep(args.sweep, args.out, executor=args.executor, workers=args.workers, address=args.address,
                      force=args.force, progress=True, connect_timeout_s=args.connect_timeout)
    print(f"{len(frame)} runs; results in {Path(args.out) / 'results.parquet'}")
    axes = [a for a in frame.attrs.get("axes", []) if a != "seed"]
    shown = [c for c in ("hit_rate", "accuracy", "ontime_accuracy", "latency_ms.p99") if c in frame.columns]
    if axes:
        print(frame.groupby(axes, sort=False)[shown].mean().round(4).to_string())
    out = Path(args.out)
    return track(target, Path(args.sweep).stem, lambda: [sweep_run(out, list(frame["run_id"]), Path(args.sweep))], out)


SET_HELP = ("override a scenario key (repeatable), e.g. arrivals.rate_rps=300, deployments.small.replicas=2, "
            "policy='{name=\"planner\"}'; also the limits, e.g. limits.max_requests=2e8")
LIMITS = ("Limits: a run is refused when it would need more than 50,000,000 requests (or rate intervals, plans,\n"
          "crashes), a deployment more than 1024 replicas or batches over 4096, random crashes with mttf_s\n"
          "under 10 batch-1 service times, or more than 1000 seeds. Raise them in the scenario ([limits]\n"
          "max_requests, max_replicas, max_batch_size, mttf_service_ratio, max_seeds) or with --set limits.<key>=N.")

EXAMPLES = {
    "simulate": """examples:
  simulate list                                      # bundled traces, their variants, the policies
  simulate validate examples/demo.toml               # check a scenario, print what would run
  simulate run examples/demo.toml --seeds 1-3        # run it; results in runs/demo/
  simulate sweep examples/study/study.toml --out runs/study""",
    "run": f"""examples:
  simulate run examples/demo.toml
  simulate run examples/demo.toml --seeds 1-5 --out runs/demo5 --force
  simulate run examples/demo.toml --set arrivals.rate_rps=300 --set deployments.large.replicas=3
  simulate run examples/demo.toml --seeds 1-3 --track mlflow   # and log each seed to MLflow (mlruns.db)

The table lists each seed and, over several, their mean; its legend is printed below it.
{LIMITS}""",
    "validate": f"""examples:
  simulate validate examples/demo.toml
  simulate validate examples/demo.toml --set policy='{{name="planner"}}'

It runs the checks `simulate run` runs before its first seed, so ok means the run will start, and
warns (on stderr, exit status still 0) where the offered load exceeds what a deployment can serve.
{LIMITS}""",
    "sweep": """examples:
  simulate sweep examples/study/study.toml --out runs/study
  simulate sweep examples/study/study.toml --out runs/study --workers 2     # again: resumes
  simulate sweep examples/study/study.toml --out runs/study --force         # after an edit: reuses matching runs
  simulate sweep examples/study/study.toml --out runs/study --executor ray --workers 2  # a private Ray instance
  simulate sweep examples/study/study.toml --out runs/study --executor ray --address auto      # a running cluster
  simulate sweep examples/study/study.toml --out runs/study --executor ray --address 10.0.0.5:6379
  simulate sweep examples/study/study.toml --out runs/study --track mlflow:sqlite:////tmp/study.db""",
    "recommend": recommend.EXAMPLES,
    "list": """examples:
  simulate list
  simulate list my-bundles/ runs/                    # bundles (directories with bundle.json) found there""",
}


def build_parser() -> argparse.ArgumentParser:
    cli = CommandLine("simulate", "Simulate ML serving on measured traces.", EXAMPLES)
    parser, _sub = cli.parser, cli.command
    run = _sub("run", "run a scenario and write its run output")
    run.add_argument("scenario", help="the scenario file (TOML)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    run.add_argument("--seeds", help="seeds to run: 3, 1-5 or 1,4,9 (default: the scenario's seed)")
    run.add_argument("--out", help="output directory (default: runs/<scenario name>)")
    run.add_argument("--force", action="store_true", help="replace an existing run output there")
    add_track_arguments(run)
    run.set_defaults(func=cmd_run)
    validate = _sub("validate", "check a scenario and its bundle, print what would run")
    validate.add_argument("scenario", help="the scenario file (TOML)")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    validate.set_defaults(func=cmd_validate)
    sweep = _sub("sweep", "expand a sweep file into a grid of runs (parallel, resumable)")
    sweep.add_argument("sweep", help="the sweep file (TOML): a base scenario, seeds and axes")
    sweep.add_argument("--out", required=True,
                       help="directory for runs/ and results.parquet (resumed if it holds this same sweep)")
    sweep.add_argument("--force", action="store_true",
                       help="replace an --out holding a different sweep (its finished runs that match are reused)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local worker processes (default) or Ray (needs the 'dist' extra): without --address "
                       "a private Ray instance started here, loopback only, that never joins a running cluster")
    sweep.add_argument("--workers", type=int,
                       help="local worker processes, or the CPUs of the private Ray instance (default: all cores)")
    sweep.add_argument("--address", help="with --executor ray: join the Ray cluster at HOST:PORT (what `ray status` "
                       "prints on its head), or 'auto' for one running on this machine; its nodes need Ray and the "
                       "project's dependencies, nothing shared (docs/sweeps.md)")
    sweep.add_argument("--connect-timeout", type=float, default=CONNECT_TIMEOUT_S, metavar="SECONDS",
                       help="give up on a cluster that does not answer within this many seconds "
                       f"(default {CONNECT_TIMEOUT_S:g})")
    add_track_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)
    advice = _sub("recommend", "choose variant, batch size and replicas per stage for a rate and SLA, then simulate it")
    recommend.add_arguments(advice)
    listing = _sub("list", "list bundles, their variants, and the policies")
    listing.add_argument("bundles", nargs="*", help="directories to search (default: the bundled traces)")
    listing.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with leaving.armed():
        code = run_command(lambda: args.func(args))
    leaving.leave(code)  # where Ctrl-C left a Ray connection open, the process ends here (sim/leaving.py)
    return code


if __name__ == "__main__":
    sys.exit(main())
