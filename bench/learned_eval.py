"""The learned router against the planner, ``infaas``, ``oracle-static`` and the isolation bound,
on arrivals it was not trained on, paired by seed, with each policy's route entropy.

The router was trained (``python -m learn train``) on Poisson and bursty episodes of its training
scenarios at 0.5x, 1x and 1.5x their rate, with episode seeds drawn at random. Here every policy
runs on the same system under workloads and seeds training never used:

- ``poisson-0.5x``, ``poisson-1x``, ``poisson-1.5x``: new seeds (``--seeds``, default 101-105);
- ``bursty``: the study's Markov-modulated process (10 s and 5 s mean dwells, not training's 4 s
  and 2 s), at the base rate's mean;
- ``twitter-a``, ``twitter-b``: two 120 s windows of the real Twitter trace (the study's, inside
  IPA's most replayed window, and one from another day), scaled to the base rate's mean;

each at every deadline of ``--deadlines`` (one deadline class per cell). For each cell it prints
the mean on-time accuracy of every policy, the learned router's paired difference to the planner
(mean, 95% Student-t interval over the seeds, and wins/losses), and the entropy in bits of each
policy's route distribution over the measured requests (0: one route for everything; the
Adaptive Router seed's PPO collapsed to 0). With ``--out FILE.md`` it also writes the table.

    python bench/learned_eval.py examples/learned/digits.toml [--seeds 101-105] [--deadlines 10,20,40]
                                 [--duration 30] [--out docs/results/learned/digits.md [--force]]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.runs import markdown_table  # noqa: E402
from analysis.stats import paired_difference  # noqa: E402
from policies.learned import entropy_bits  # noqa: E402
from sim.runner import prepare, run_once  # noqa: E402
from traces.outputs import atomic_file, check_file_target  # noqa: E402
from traces.cli import run_command  # noqa: E402
from traces.errors import InputError  # noqa: E402
from traces.scenario import parse_seeds, read_toml, scenario_from_dict  # noqa: E402

MARKER = "<!-- written by bench/learned_eval.py; replaced by its --force -->"
TWITTER = REPO.parent / "shared" / "data" / "twitter_trace_ipa" / "workload.txt"
# (start_s, mean rate over its 120 s): the study's window and one from another day
TWITTER_WINDOWS = {"twitter-a": (1301520, 168.1), "twitter-b": (900000, 63.54)}
POLICIES = {"learned": None, "planner": {"name": "planner"}, "infaas": {"name": "infaas"},
            "oracle-static": {"name": "oracle-static"}, "isolation-bound": {"name": "isolation-bound"}}


def accurate_floor(raw: dict, base_dir: Path) -> float:
    """``infaas``'s accuracy floor as in the study: the accurate models only, every deployment but
    ``small`` (the lowest accuracy among them), read from the scenario's own bundle so that it holds
    on either bundle (a fixed 0.98 is above every SST-2 variant, and a floor nothing meets is none)."""
    prepared = prepare(scenario_from_dict({**raw, "policy": {"name": "planner"}}, base_dir=base_dir))
    variants = {d.name: d.variant for d in prepared.scenario.deployments}
    accurate = [prepared.predictions.accuracy(v) for name, v in variants.items() if name != "small"]
    if not accurate:
        raise InputError("scenario: deployments", "expected deployments besides 'small' (infaas's accurate models)")
    return min(accurate)


def workloads(rate_rps: float) -> dict[str, dict]:
    out = {f"poisson-{f:g}x": {"kind": "poisson", "rate_rps": rate_rps * f} for f in (0.5, 1.0, 1.5)}
    out["bursty"] = {"kind": "bursty", "rates_rps": [rate_rps / 2, rate_rps * 2], "mean_dwell_s": [10.0, 5.0]}
    if TWITTER.is_file():
        for name, (start_s, mean_rps) in TWITTER_WINDOWS.items():
            out[name] = {"kind": "replay", "path": str(TWITTER), "start_s": start_s, "length_s": 120,
                         "rate_scale": round(rate_rps / mean_rps, 4)}
    else:
        print(f"note: {TWITTER} not found: the Twitter windows are left out", file=sys.stderr)
    return out


def route_entropy_bits(routes) -> float:
    _, counts = np.unique(np.asarray(routes, dtype=object).astype(str), return_counts=True)
    return entropy_bits(counts) if counts.size else math.nan


def run_cell(raw: dict, base_dir: Path, policy: dict, seed: int) -> tuple[float, float]:
    """On-time accuracy and route entropy (bits) of one policy on one seed."""
    _, requests, summary = run_once(prepare(scenario_from_dict({**raw, "policy": policy}, base_dir=base_dir)), seed)
    table = requests.to_pandas()
    measured = table[table["measured"]]
    if policy["name"] == "oracle-static":
        entropy = 0.0  # one fixed route
    elif policy["name"] == "isolation-bound":
        entropy = math.nan  # no route is taken: the bound is computed per request
    else:
        entropy = route_entropy_bits(measured["route"])
    return float(summary["ontime_accuracy"]), entropy


def evaluate(scenario_path: Path, seeds: list[int], deadlines: list[float], duration_s: float,
             infaas_floor: float, log=print) -> list[list]:
    raw = read_toml(scenario_path)
    if raw.get("policy", {}).get("name") != "learned":
        raise InputError(str(scenario_path), "expected a scenario whose [policy] is the learned router")
    policies = {**POLICIES, "learned": raw["policy"], "infaas": {**POLICIES["infaas"], "accuracy_floor": infaas_floor}}
    if raw.get("arrivals", {}).get("kind") != "poisson":
        raise InputError(f"{scenario_path}: arrivals",
                         "the base scenario must have Poisson arrivals (its rate_rps is the base rate)")
    base_rate = float(raw["arrivals"]["rate_rps"])
    rows = []
    started = time.perf_counter()
    for workload, arrivals in workloads(base_rate).items():
        for deadline_ms in deadlines:
            cell = {**raw, "arrivals": arrivals, "duration_s": duration_s, "warmup_s": min(5.0, duration_s / 6),
                    "requests": {"deadline_ms": deadline_ms}}
            if arrivals["kind"] == "replay":
                cell["duration_s"] = min(duration_s, 120.0)
            results = {name: [run_cell(cell, scenario_path.parent, p, s) for s in seeds]
                       for name, p in policies.items()}
            acc = {name: [r[0] for r in values] for name, values in results.items()}
            ent = {name: float(np.nanmean([r[1] for r in values])) if name != "isolation-bound" else math.nan
                   for name, values in results.items()}
            diff = paired_difference(acc["learned"], acc["planner"])
            iv = diff.difference
            rows.append([workload, f"{deadline_ms:g}",
                         *(f"{np.mean(acc[n]):.4f}" for n in policies),
                         f"{iv.mean:+.4f} ± {iv.half_width:.4f} ({diff.wins}/{diff.losses})",
                         *(f"{ent[n]:.2f}" for n in ("learned", "planner", "infaas"))])
            log(f"  {workload:>13s} {deadline_ms:5g} ms: " + "  ".join(f"{n} {np.mean(acc[n]):.4f}" for n in policies)
                + f"  entropy {ent['learned']:.2f} bits  ({time.perf_counter() - started:.0f} s)")
    return rows


HEADER = ["workload", "deadline ms", "learned", "planner", "infaas", "oracle-static", "isolation bound",
          "learned - planner (95% CI, wins/losses)", "H learned", "H planner", "H infaas"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path, help="a scenario with [policy] name = 'learned'")
    parser.add_argument("--seeds", default="101-105")
    parser.add_argument("--deadlines", default="10,20,40", help="one cell per deadline (ms)")
    parser.add_argument("--duration", type=float, default=30.0, help="simulated seconds per run")
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    parser.add_argument("--force", action="store_true", help="replace an earlier table of this command at --out")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.out is not None:
            check_file_target(args.out, force=args.force, marker_line=MARKER)
        seeds = parse_seeds(args.seeds)
        try:
            deadlines = [float(x) for x in args.deadlines.split(",")]
        except ValueError:
            raise InputError("--deadlines", f"expected comma-separated numbers, got {args.deadlines!r}") from None
        floor = accurate_floor(read_toml(args.scenario), args.scenario.parent)
        note = f"infaas: accuracy floor {floor:.4f}, the accurate models only (every deployment but small)."
        print(note)
        rows = evaluate(args.scenario, seeds, deadlines, args.duration, floor)
        table = markdown_table(HEADER, rows)
        print(table)
        if args.out is not None:
            command = " ".join(["python bench/learned_eval.py", *(argv if argv is not None else sys.argv[1:])])
            with atomic_file(args.out, force=args.force, marker_line=MARKER) as tmp:
                tmp.write_text(f"{MARKER}\nOn-time accuracy, mean over seeds {args.seeds}; H: route entropy in bits; {note}\n"
                               f"Command: `{command}`\n\n{table}\n")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
