"""The widened study: is the planner at least as good as the best fixed configuration everywhere?

The study (``examples/study/``) has one shape, on which a planner could be tuned; this script runs
its policies on a grid of shapes, paired by seed (a cell's policies see the same arrivals):

- bundle: ``digits`` (``examples/study/base.toml``) or ``sst2`` (``examples/study/sst2-base.toml``);
- replicas of each accurate model (every deployment but ``small``, which keeps one): 1 or 2;
- deployments: the base's 3, or 4 with a fourth (``BASES``): for digits the medium model under ONNX
  Runtime (MobileNetV2 FP32: the medium INT8's 98.3% at a third of its batch-1 time, 0.95 ms, and
  about 4,000/s at batch 8), the better serving stack a team would add; for SST-2 BERT-6 FP32, the
  bundle's most accurate variant. (On the bundles measured before 2026-12-05 the digits fourth was
  channel-pruned ResNet-18, then more accurate than ResNet-18 INT8; re-measured it is less accurate
  and slower, a dominated option);
- deadline: ``single`` (the base's class: 20 ms digits, 40 ms SST-2) or ``mixed`` (half the
  requests at half of it, half at twice it: 10/40 and 20/80 ms);
- workload: ``poisson``; ``bursty`` (a two-state MMPP at 0.5x and 2x the mean rate, as the study's
  950/3,800 around 1,900, dwelling ``--dwell`` 4 and 2 s on average, shrunk to the short runs);
  ``twitter`` (the study's Twitter window, ``study.toml``, from ``--twitter-offset`` 22 s into it,
  so the trace's jump from about 45 to 130 requests/s, at its 27th second, falls in the middle of
  a run's measured window; scaled to the cell's mean rate);
- load: 0.5, 1 and 1.5x the accurate models' capacity: their replicas' throughput at full batches
  (``LatencyProfile.throughput_rps`` at ``max_batch_size``, the rate a queue of full batches
  sustains, as ``infaas`` and ``simulate validate`` compute it), summed over the replicas.

Per cell and seed it runs ``planner``, ``oracle-static``, ``infaas`` (``accuracy_floor`` as in the
study: the accurate models only), ``aimd-batching`` around that ``infaas`` (as in the study),
``degrade`` around the planner and the isolation bound, and writes into ``--out`` (atomically;
``--force`` replaces an earlier output of its own):

- ``results.parquet``: one row per cell x seed x policy (every axis, on-time accuracy, hit rate,
  accuracy, p99, cost, replica-seconds, dropped and missed requests, route shares, utilisation);
- ``widened.md``: per cell, the planner's on-time accuracy and its paired differences to
  ``oracle-static``, ``infaas`` and ``aimd-batching`` (and degrade's to it): mean, min..max over
  seeds and a verdict (``analysis.verdicts``: ``tie`` when |mean| <= the 95% Student-t half-width
  of the differences, the interval holds 0, else ``win`` or ``loss``; one seed: the sign); then
  wins, ties and losses per comparison with the worst cell.

Every finished (cell, seed, policy) is appended to ``--cache`` as a JSON line keyed by the exact
scenario it ran (every setting included), the seed and a digest of the bundles it runs on, so an
interrupted study resumes and a changed setting, a re-measured bundle or a changed policy (its
module and the ``policies`` modules it uses) reruns; a changed engine is not seen (a change that
keeps scenarios' bytes, `bench/same_bytes.py`, should not rerun hours of runs): delete the cache then.

    python bench/widened_study.py --out docs/results/widened --jobs 2 [--seeds 1-5] [--duration 8]
    python bench/widened_study.py --out /tmp/one --bundles digits --replicas 2 --deployments 4 \\
        --workloads poisson --loads 1.5 --deadlines single --seeds 1        # one cell, one seed
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import inspect
import itertools
import json
import multiprocessing
import sys
import time
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.runs import markdown_table  # noqa: E402
from analysis.stats import paired_differences  # noqa: E402
from analysis.verdicts import Verdict, verdict  # noqa: E402
from sim.runner import prepare, run_once  # noqa: E402
from traces.arrivals import Replay  # noqa: E402
from traces.cli import run_command  # noqa: E402
from traces.errors import InputError  # noqa: E402
from traces.outputs import atomic_output, check_target  # noqa: E402
from traces.scenario import PolicyConfig, parse_seeds, scenario_from_dict  # noqa: E402

STUDY = ROOT / "examples" / "study"
BOUNDS = ("oracle-static", "isolation-bound")   # run by sim.bounds, not policies
SCHEMA = 1   # part of every cache key: bump when a cached line's meaning changes


@dataclass(frozen=True)
class Base:
    """A bundle's base scenario and what the grid adds to it."""

    path: Path
    fourth: tuple[str, str]          # (name, variant) of the fourth deployment
    mixed_ms: tuple[float, float]    # the mixed class: (tight, loose), half the requests each
    accuracy_floor: float            # infaas's floor: the accurate models' accuracy and above


BASES = {"digits": Base(STUDY / "base.toml", ("fourth", "mobilenet_v2/fp32/cpu/onnxruntime"), (10.0, 40.0), 0.98),
         "sst2": Base(STUDY / "sst2-base.toml", ("fourth", "bert-6/fp32/cpu"), (20.0, 80.0), 0.78)}
AXES = {"bundles": ("digits", "sst2"), "replicas": (1, 2), "deployments": (3, 4), "deadlines": ("single", "mixed"),
        "workloads": ("poisson", "bursty", "twitter"), "loads": (0.5, 1.0, 1.5)}
POLICIES = ("planner", "oracle-static", "infaas", "aimd-batching", "degrade", "isolation-bound")
COMPARISONS = (("planner", "oracle-static"), ("planner", "infaas"), ("planner", "aimd-batching"), ("degrade", "planner"))


@dataclass(frozen=True)
class Settings:
    duration_s: float = 8.0
    warmup_s: float = 2.0
    dwell_s: tuple[float, float] = (4.0, 2.0)
    twitter_offset_s: float = 22.0


@dataclass(frozen=True)
class Cell:
    bundle: str
    replicas: int
    deployments: int
    deadline: str
    workload: str
    load: float
    capacity_rps: float              # the accurate models' capacity at full batches
    rate_rps: float                  # the mean arrival rate, load x capacity

    @property
    def label(self) -> str:
        return (f"{self.bundle} r{self.replicas} d{self.deployments} {self.deadline} {self.workload} "
                f"{self.load:g}x")


def shape(bundle: str, replicas: int, deployments: int) -> dict:
    """The base scenario of ``bundle`` with ``replicas`` of each accurate model and 3 or 4 deployments."""
    base = BASES[bundle]
    raw = tomllib.loads(base.path.read_text())
    deps = raw["deployments"]
    if "small" not in {d["name"] for d in deps}:
        raise InputError(str(base.path), "needs a deployment named 'small' (the fast one, kept at one replica)")
    if deployments == 4:
        deps = [*deps, {**deps[-1], "name": base.fourth[0], "variant": base.fourth[1]}]
    raw["deployments"] = [d if d["name"] == "small" else {**d, "replicas": replicas} for d in deps]
    return raw


def capacity_rps(raw: dict) -> float:
    """The accurate deployments' throughput at full batches, summed over their replicas."""
    profiles = prepare(scenario_from_dict({**raw, "policy": {"name": "static-small"}}, base_dir=STUDY)).profiles
    return sum(profiles[d["name"]].throughput_rps(min(d["max_batch_size"], profiles[d["name"]].max_batch_size),
                                                  d["replicas"])
               for d in raw["deployments"] if d["name"] != "small")


@functools.lru_cache(maxsize=None)
def _twitter(settings: Settings) -> tuple[dict, float]:
    """The study's Twitter window from ``twitter_offset_s`` on, and its mean rate over a run."""
    spec = tomllib.loads((STUDY / "study.toml").read_text())["groups"]["workload"]["twitter"]["arrivals"]
    arrivals = {"kind": "replay", "path": spec["path"], "start_s": spec["start_s"] + settings.twitter_offset_s}
    mean = Replay(STUDY / spec["path"], start_s=arrivals["start_s"]).mean_rate_rps(settings.duration_s)
    return arrivals, mean


def arrivals(workload: str, rate_rps: float, settings: Settings) -> dict:
    if workload == "poisson":
        return {"kind": "poisson", "rate_rps": rate_rps}
    if workload == "bursty":
        low, high = settings.dwell_s
        lo_rate = rate_rps * (low + high) / (low + 4 * high)   # high = 4 x low, the mean is rate_rps
        return {"kind": "bursty", "rates_rps": [round(lo_rate, 6), round(4 * lo_rate, 6)], "mean_dwell_s": [low, high]}
    window, mean = _twitter(settings)
    return {**window, "rate_scale": round(rate_rps / mean, 6)}


def grid(settings: Settings, **axes) -> list[tuple[Cell, dict]]:
    """Every cell (in axis order) with its scenario (no policy); ``axes`` restricts ``AXES``."""
    values = {name: axes.get(name) or default for name, default in AXES.items()}
    cells = []
    for bundle, replicas, deployments in itertools.product(values["bundles"], values["replicas"], values["deployments"]):
        raw = shape(bundle, replicas, deployments)
        capacity = round(capacity_rps(raw), 3)
        single = raw["requests"]["deadline_ms"]
        classes = {"single": {"deadline_ms": single},
                   "mixed": {"deadline_ms": list(BASES[bundle].mixed_ms), "weights": [0.5, 0.5]}}
        for deadline, workload, load in itertools.product(values["deadlines"], values["workloads"], values["loads"]):
            cell = Cell(bundle, replicas, deployments, deadline, workload, load, capacity, round(load * capacity, 3))
            scenario = {**raw, "duration_s": settings.duration_s, "warmup_s": settings.warmup_s,
                        "requests": classes[deadline], "arrivals": arrivals(workload, cell.rate_rps, settings)}
            scenario.pop("policy", None)
            cells.append((cell, scenario))
    return cells


def policy_table(name: str, bundle: str) -> dict:
    floor = {"accuracy_floor": BASES[bundle].accuracy_floor}
    extra = {"infaas": floor, "degrade": {"inner": "planner"},   # aimd-batching as in the study (study.toml)
             "aimd-batching": {"inner": "infaas", "inner_params": floor, "plan_interval_s": 1.0}}
    return {"name": name, **extra.get(name, {})}


@functools.lru_cache(maxsize=None)
def code_digest(name: str) -> str:
    """A digest of the code that decides a policy's runs: the module defining it and the modules
    of ``policies`` whose functions and classes it uses (``policies.estimates`` for the planner),
    so changing a policy reruns its runs and no other's; the two bounds are ``sim.bounds``."""
    from policies import registry

    module = importlib.import_module("sim.bounds" if name in BOUNDS else registry.get(name).__module__)
    used = {module.__name__}
    for value in vars(module).values():
        origin = getattr(value, "__module__", None)
        if isinstance(origin, str) and origin.startswith("policies.") and (inspect.isfunction(value) or inspect.isclass(value)):
            used.add(origin)
    text = "".join(inspect.getsource(sys.modules[m]) for m in sorted(used))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _files_digest(directory: str) -> str:
    """A digest of the tables of a bundle that a run reads (latencies, predictions, start-ups), not
    of its metadata or of tables these runs do not read, so that rewriting a bundle with the same
    measurements reruns nothing."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and path.name.split(".")[0] in ("service", "predictions", "startup"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


_DATA_DIGESTS: dict[str, list[str]] = {}


def data_digest(scenario: dict) -> list[str]:
    """Digests of the bundles a cell runs on, so that a re-measured bundle reruns its cells (worked
    out once per distinct set of variants and bundles: loading them is what takes the time)."""
    which = json.dumps([scenario.get("bundle"), [(d.get("bundle"), d.get("variant")) for d in scenario["deployments"]]])
    if which not in _DATA_DIGESTS:
        prepared = _prepared(json.dumps(scenario, sort_keys=True))
        paths = {str(Path(b.path).resolve()) for b in (prepared.bundle, *prepared.bundles.values())
                 if b is not None and b.path is not None}
        _DATA_DIGESTS[which] = sorted(_files_digest(path) for path in paths)
    return _DATA_DIGESTS[which]


def cache_key(scenario: dict, policy: dict, seed: int) -> str:
    code = [code_digest(n) for n in (policy["name"], policy.get("inner")) if n]
    text = json.dumps({"schema": SCHEMA, "scenario": scenario, "policy": policy, "code": code, "seed": seed,
                       "data": data_digest(scenario)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --- running -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _prepared(scenario_json: str):
    return prepare(scenario_from_dict({**json.loads(scenario_json), "policy": {"name": "planner"}}, base_dir=STUDY))


def simulate(scenario: dict, policy: dict, seed: int) -> dict:
    """One policy on one cell and seed: the figures of a results row."""
    prepared = _prepared(json.dumps(scenario, sort_keys=True))
    params = {k: v for k, v in policy.items() if k not in ("name", "plan_interval_s")}
    config = PolicyConfig(policy["name"], policy.get("plan_interval_s", 0.0), params)
    prepared = replace(prepared, scenario=replace(prepared.scenario, policy=config))
    _, requests, summary = run_once(prepared, seed)
    measured = requests.column("measured").astype(bool)
    routes = Counter(str(r) for r in requests.column("route")[measured])
    total = max(sum(routes.values()), 1)
    hits = round(summary["hit_rate"] * summary["requests"]) if summary["requests"] else 0
    return {"ontime_accuracy": summary["ontime_accuracy"], "hit_rate": summary["hit_rate"],
            "accuracy": summary["accuracy"], "latency_p99_ms": summary["latency_ms"]["p99"],
            "cost": summary["cost"]["total"], "replica_seconds": summary["cost"]["replica_seconds"],
            "requests": summary["requests"], "dropped": summary["dropped"], "missed": summary["requests"] - hits,
            "choice": summary["policy"].get("choice"),
            "overrides": int(sum(summary["policy"].get("overrides", {}).values())),
            "routes": json.dumps({k: round(v / total, 4) for k, v in routes.most_common()}),
            "utilization": json.dumps({k: round(v, 4) for k, v in summary["utilization"].items()})}


Unit = tuple[dict, list[tuple[str, dict]], int, float]   # scenario, (key, policy) to run, seed, mean rate


def _work(unit: Unit) -> float:
    """A unit's simulated requests per simulated second, roughly: the oracle simulates every single
    and every cascade of a faster and a slower deployment at each of its 9 thresholds."""
    scenario, policies, _, rate_rps = unit
    n = len(scenario["deployments"])
    return rate_rps * sum(n + 9 * n * (n - 1) // 2 if p["name"] == "oracle-static" else 1 for _, p in policies)


def _run_unit(unit: Unit) -> list[tuple[str, dict]]:
    scenario, policies, seed, _ = unit
    return [(key, simulate(scenario, policy, seed)) for key, policy in policies]


def read_cache(path: Path) -> dict[str, dict]:
    """The cached results by key; a line cut short by a kill is skipped."""
    cached = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                cached[entry["key"]] = entry["result"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return cached


def run_grid(cells: list[tuple[Cell, dict]], seeds: list[int], cache: Path, jobs: int,
             progress_s: float = 30.0) -> pd.DataFrame:
    """Every policy on every cell and seed (the cached ones read back), one row each, in grid order."""
    cached = read_cache(cache)
    rows = [(index, seed, name, cache_key(scenario, policy_table(name, cell.bundle), seed))
            for index, (cell, scenario) in enumerate(cells) for seed in seeds for name in POLICIES]
    units = []   # seed by seed, so a study cut short holds whole seeds
    for seed, (cell, scenario) in itertools.product(seeds, cells):
        policies = [policy_table(name, cell.bundle) for name in POLICIES]
        todo = [(key, p) for key, p in zip([cache_key(scenario, p, seed) for p in policies], policies) if key not in cached]
        if todo:
            units.append((scenario, todo, seed, cell.rate_rps))
    total = sum(len(u[1]) for u in units)
    print(f"widened: {len(cells)} cells x {len(seeds)} seeds x {len(POLICIES)} policies = {len(rows)} runs, "
          f"{len(rows) - total} cached, {total} to simulate in {len(units)} units on {jobs} job(s)", file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    start = last = time.monotonic()
    done, work, work_done = 0, sum(map(_work, units)), 0.0
    pool = multiprocessing.get_context("fork").Pool(jobs) if jobs > 1 else contextlib.nullcontext()
    with open(cache, "a", encoding="utf-8") as out, pool:   # one job: in this process (tests count calls)
        for unit, results in zip(units, pool.imap(_run_unit, units) if jobs > 1 else map(_run_unit, units)):
            for key, result in results:
                cached[key] = result
                out.write(json.dumps({"key": key, "result": result}) + "\n")
            out.flush()
            done, work_done = done + len(results), work_done + _work(unit)
            if time.monotonic() - last >= progress_s or done == total:
                last = time.monotonic()
                elapsed = last - start
                print(f"widened: {done}/{total} runs simulated, {elapsed / 60:.1f} min, about "
                      f"{elapsed / work_done * (work - work_done) / 60:.1f} min left", file=sys.stderr)
    return pd.DataFrame([{"cell": cells[i][0].label, **asdict(cells[i][0]), "seed": seed, "policy": name, **cached[key]}
                         for i, seed, name, key in rows])


# --- the verdicts (analysis.verdicts) -----------------------------------------------------------

def compare(frame: pd.DataFrame, a: str, b: str, metric: str = "ontime_accuracy") -> Verdict:
    """``a`` - ``b`` in one cell's rows, paired by seed."""
    wide = frame.pivot(index="seed", columns="policy", values=metric)
    return verdict(paired_differences(wide[a], wide[b])[2])


def _main_route(runs: pd.DataFrame, policy: str) -> str:
    """The route that took most of ``policy``'s requests, over the seeds (oracle-static: its choice)."""
    shares = Counter()
    for routes in runs.loc[runs.policy == policy, "routes"]:
        shares.update(json.loads(routes))
    route, share = shares.most_common(1)[0] if shares else ("-", 0.0)
    return f"{route} ({share / max(len(runs.seed.unique()), 1):.0%})"


def report(frame: pd.DataFrame, cells: list[tuple[Cell, dict]], command: str) -> str:
    verdicts: dict[tuple[str, str], list[tuple[Cell, Verdict]]] = {c: [] for c in COMPARISONS}
    rows = []
    for (cell, _), (_, runs) in zip(cells, frame.groupby("cell", sort=False)):
        line = [cell.label, f"{cell.rate_rps:.0f}", f"{runs.loc[runs.policy == 'planner', 'ontime_accuracy'].mean():.4f}"]
        for pair in COMPARISONS:
            verdicts[pair].append((cell, compare(runs, *pair)))
            line.append(verdicts[pair][-1][1].format())
        rows.append(line + [_main_route(runs, "planner"), _main_route(runs, "oracle-static"),
                            f"{runs.loc[runs.policy == 'isolation-bound', 'ontime_accuracy'].mean():.4f}"])
    summary, losing = [], []
    for (a, b), found in verdicts.items():
        count = Counter(v.label for _, v in found)
        cell, worst = min(found, key=lambda cv: cv[1].mean)
        summary.append([f"{a} − {b}", count["win"], count["tie"], count["loss"], f"{cell.label}: {worst.format()}"])
        losing += [f"- {a} − {b}, {cell.label}: {v.format()}" for cell, v in found if v.label == "loss"]
    seeds = ", ".join(map(str, sorted(frame.seed.unique())))
    header = ["cell", "rate/s", "planner", *(f"{a} − {b}" for a, b in COMPARISONS),
              "planner's main route", "oracle's route", "isolation"]
    return "\n".join([
        "# The widened study", "", f"`{command}`", "",
        f"{len(cells)} cells x seeds {seeds}; on-time accuracy. Differences in points (a − b x 100), paired by "
        "seed: mean [min..max over seeds] and the verdict, `tie` when |mean| <= the 95% Student-t half-width of "
        "the differences (the interval holds 0). Cells: bundle, replicas of each accurate model (r), deployments "
        "(d), deadline class, workload, load x the accurate models' capacity. Routes: the one with the largest "
        "share of measured requests, averaged over seeds.", "",
        "## Summary", "", markdown_table(["comparison", "wins", "ties", "losses", "worst cell"], summary), "",
        "## Losses", "", *(losing or ["none"]), "", "## Every cell", "", markdown_table(header, rows), ""])


# --- the command -----------------------------------------------------------------------------------

def _list(text: str, kind, option: str, allowed: tuple) -> tuple:
    """A comma-separated list of ``allowed`` values (any positive number when ``allowed`` is empty)."""
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v not in allowed if allowed else not v > 0 for v in values):
        expected = ", ".join(map(str, allowed)) or "positive numbers"
        raise InputError(option, f"expected a comma-separated list of {expected}; got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for results.parquet and widened.md")
    parser.add_argument("--force", action="store_true", help="replace an --out this script wrote before")
    parser.add_argument("--seeds", default="1-5", help="seeds, e.g. 1-5 or 1,3 (default 1-5)")
    parser.add_argument("--duration", type=float, default=Settings.duration_s, help="simulated seconds per run")
    parser.add_argument("--warmup", type=float, default=Settings.warmup_s, help="unmeasured seconds at the start")
    parser.add_argument("--dwell", default="4,2", help="bursty: mean seconds in the low and the high state")
    parser.add_argument("--twitter-offset", type=float, default=Settings.twitter_offset_s, help="seconds into the "
                        "study's Twitter window where a run starts")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "widened-cache.jsonl",
                        help="JSON-lines cache of finished runs (default runs/widened-cache.jsonl)")
    for name, values in AXES.items():
        parser.add_argument(f"--{name}", help=f"restrict the axis (default {','.join(map(str, values))})")
    args = parser.parse_args(argv)
    return run_command(lambda: study(args, argv if argv is not None else sys.argv[1:]))


def study(args, argv: list[str]) -> int:
    check_target(args.out, force=args.force, kind="report")   # before any work
    seeds = parse_seeds(args.seeds)
    dwell = _list(args.dwell, float, "--dwell", ())
    if len(dwell) != 2 or not 0 <= args.warmup < args.duration or args.jobs < 1 or args.twitter_offset < 0:
        raise InputError("--dwell/--warmup/--duration/--jobs/--twitter-offset", "expected two dwell times, "
                         "0 <= warmup < duration, jobs >= 1 and a non-negative offset")
    settings = Settings(args.duration, args.warmup, dwell, args.twitter_offset)
    kinds = {"bundles": str, "replicas": int, "deployments": int, "deadlines": str, "workloads": str, "loads": float}
    axes = {name: _list(getattr(args, name), kinds[name], f"--{name}", values if name != "loads" else ())
            for name, values in AXES.items() if getattr(args, name)}
    cells = grid(settings, **axes)
    frame = run_grid(cells, seeds, args.cache, args.jobs)
    command = " ".join(["python bench/widened_study.py", *argv])
    with atomic_output(args.out, force=args.force, kind="report") as staging:
        frame.to_parquet(staging / "results.parquet", index=False)
        (staging / "widened.md").write_text(report(frame, cells, command))
    print(f"wrote {args.out}/ (results.parquet: {len(frame)} rows; widened.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
