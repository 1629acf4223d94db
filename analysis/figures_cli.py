"""`analyse figures`: every figure a sweep's axes allow (or a run's), as PNGs in one directory.

    analyse figures SWEEP_DIR --out DIR [--force] [--protocol analysis/protocol.toml]
    analyse figures RUN_DIR --out DIR [--force]

A sweep (``simulate sweep --out SWEEP_DIR``: ``results.parquet``, one row per run, and
``runs/<run id>/`` with each run's output) is read through its axes, and each figure is made when
the axes it needs vary:

==========================  ==================================  =========================================
figure                      needs                               one file per value of
==========================  ==================================  =========================================
``pareto``                  two grid points or more             the workload axes
``baseline``                a policy axis and a deadline axis   the other axes
``threshold``               an axis named ``*threshold``        the other axes, given a policy axis
``workload``                a ``workload``/``load`` axis        the other axes
``effects``                 ``--protocol``                      each of its metrics with a defined test
``latency-cdf``             the runs' ``requests.parquet``      every axis but the policy
==========================  ==================================  =========================================

Without a policy axis (e.g. a threshold sweep of one cascade), the other axes' values become the
series of a figure instead of separate files. A run directory (``simulate run --out DIR``, or one
``seed-<n>/`` in it, or a sweep's ``runs/<id>/``) gives its latency CDF (all seeds pooled) and one
time series per seed. The command says on stdout which figures it made and which it skipped, and why.

The directory appears whole or not at all (``traces.outputs.atomic_output``); an earlier one of
ours is replaced only with ``--force``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from traces.errors import InputError

EXAMPLES = """examples:
  analyse figures runs/study --out docs/figures --protocol analysis/protocol.toml
  analyse figures runs/threshold --out figures/threshold --force
  analyse figures runs/demo --out figures/demo
"""
WORKLOAD_AXES = re.compile(r"^(workload|load|arrivals\..*)$")


@dataclass
class Plan:
    """The figures to make (file name, what it shows, how to draw it) and those skipped, with why."""

    made: list[tuple[str, str, Callable]]
    skipped: list[tuple[str, str]]

    def add(self, name: str, what: str, draw: Callable) -> None:
        self.made.append((name, what, draw))

    def skip(self, figure: str, why: str) -> None:
        self.skipped.append((figure, why))


def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="SWEEP_DIR", help="a `simulate sweep` output, or a run output")
    parser.add_argument("--out", required=True,
                        help="the directory the PNGs are written into (made whole or not at all)")
    parser.add_argument("--force", action="store_true", help="replace an earlier figures directory of ours at --out")
    parser.add_argument("--protocol", metavar="TOML",
                        help="a statistical protocol (e.g. analysis/protocol.toml): adds its effect-size figures")
    parser.add_argument("--policy-axis", default="policy", metavar="AXIS",
                        help="the sweep axis whose values are policies (default: policy)")


def slug(pairs) -> str:
    """``workload-bursty_deadline_ms-20``: a file-name part naming a group's axis values."""
    from .plots_sweep import point_label

    parts = []
    for axis, value in pairs:
        text = point_label(axis, value).replace(" ms", "").split("=")[-1]
        parts.append(f"{axis.rsplit('.', 1)[-1]}-{text}")
    return safe("_".join(parts))


def safe(text: str) -> str:
    """``text`` with every run of characters a file name should not hold replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def describe(pairs) -> str:
    """``workload=bursty, 20 ms``: a title naming a group's axis values."""
    from .plots_sweep import point_label

    return ", ".join(point_label(axis, value) if axis.endswith(("_ms", "threshold")) else f"{axis}={value}"
                     for axis, value in pairs)


def split(frame, axes: list[str]):
    """(pairs of (axis, value), rows) per combination of ``axes`` present in ``frame``, each axis in
    a reader's order (``plots_sweep.ordered``); one group of all rows when ``axes`` is empty."""
    import itertools

    from .plots_sweep import ordered

    if not axes:
        yield [], frame
        return
    text = frame[axes].astype(str)
    present = set(map(tuple, text.itertuples(index=False)))
    for key in itertools.product(*(ordered(text[a]) for a in axes)):
        if key in present:
            yield list(zip(axes, key)), frame[(text == list(key)).all(axis=1)]


def with_series(frame, axes: list[str], name: str = "series"):
    """``frame`` with a column ``name`` labelling each row by its values of ``axes`` ("all runs" if none)."""
    from .plots_sweep import point_label

    if not axes:
        return frame.assign(**{name: "all runs"})
    labels = frame[axes].astype(str).apply(lambda row: ", ".join(point_label(a, row[a]) for a in axes), axis=1)
    return frame.assign(**{name: labels})


@dataclass
class Series:
    """What tells a figure's series apart: a column of ``frame``, whether its values are policies
    (their own colours), the legend's title, and the axes left to split files by."""

    frame: object
    column: str
    policies: bool
    title: str | None
    split_by: list[str]


class Sweep:
    """A sweep's results and the roles of its axes (those with two values or more)."""

    def __init__(self, directory: Path, policy_axis: str):
        from .study import sweep_axes
        from .study import read_results

        self.directory = directory
        self.results = read_results(directory / "results.parquet")
        self.axes = [a for a in sweep_axes(self.results) if a in self.results]
        self.varying = [a for a in self.axes if self.results[a].astype(str).nunique() > 1]
        if policy_axis != "policy" and policy_axis not in self.axes:
            raise InputError(f"--policy-axis {policy_axis}", f"is not an axis of {directory / 'results.parquet'} "
                             f"(its axes: {', '.join(self.axes) or 'none'})")
        self.policy = policy_axis if policy_axis in self.varying else None
        self.deadline = "requests.deadline_ms" if "requests.deadline_ms" in self.varying else None
        self.threshold = next((a for a in self.varying if a.endswith("threshold")), None)
        self.workloads = [a for a in self.varying if WORKLOAD_AXES.match(a)]

    def others(self, *used: str | None) -> list[str]:
        """The varying axes other than the policy and ``used``."""
        return [a for a in self.varying if a not in used and a != self.policy]

    def series(self, others: list[str]) -> Series:
        """The policy axis as the series, files split by ``others``; without a policy axis, the
        values of ``others`` are the series instead (the policy's name when there are none)."""
        from .plots_sweep import label

        frame = self.results
        if self.policy is not None:
            return Series(frame, self.policy, True, None, others)
        if not others:
            if "policy.name" not in frame:
                frame = with_series(frame, [], "policy.name")
            return Series(frame, "policy.name", True, None, [])
        return Series(with_series(frame, others), "series", False, ", ".join(map(label, others)), [])


def plan_sweep(sweep: Sweep, protocol: str | None) -> Plan:
    from . import plots_sweep as ps

    plan = Plan([], [])
    _plan_pareto(plan, sweep)
    if sweep.policy is None or sweep.deadline is None:
        plan.skip("baseline", "needs a policy axis (--policy-axis) and a requests.deadline_ms axis, each with "
                  "two values or more")
    else:
        _plan_panels(plan, sweep, "baseline", sweep.deadline, "hit rate and on-time accuracy by deadline",
                     lambda rows, series, title: ps.baseline_figure(rows, sweep.deadline, series.column, title))
    if sweep.threshold is None:
        plan.skip("threshold", "the sweep has no threshold axis (e.g. policy.threshold) with two values or more")
    else:
        _plan_panels(plan, sweep, "threshold", sweep.threshold, "accuracy, coverage and p99 latency by threshold",
                     lambda rows, series, title: ps.threshold_figure(
                         rows, sweep.threshold, series.column, policies=series.policies, title=title,
                         series_title=series.title))
    if not sweep.workloads:
        plan.skip("workload", "the sweep has no workload axis (workload, load or arrivals.*) with two values or more")
    else:
        x = sweep.workloads[0]
        _plan_panels(plan, sweep, "workload", x, f"on-time accuracy and hit rate by {x}",
                     lambda rows, series, title: ps.interval_panels_figure(
                         rows, x, series.column, ("ontime_accuracy", "hit_rate"), policies=series.policies,
                         title=title, series_title=series.title))
    _plan_effects(plan, sweep, protocol)
    _plan_cdfs(plan, sweep)
    plan.skip("time-series", "a sweep's runs keep no timeline.parquet; run this command on one run "
              "(simulate run --out DIR) for its time series")
    return plan


def _plan_panels(plan: Plan, sweep: Sweep, figure: str, x: str, what: str, draw: Callable) -> None:
    """One figure of ``x`` per combination of the axes the series leave (``Sweep.series``)."""
    series = sweep.series(sweep.others(x))
    for pairs, rows in split(series.frame, series.split_by):
        plan.add(_name(figure, pairs), what + _for(pairs),
                 lambda rows=rows, pairs=pairs: draw(rows, series, describe(pairs)))


def _name(figure: str, pairs) -> str:
    return f"{figure}_{slug(pairs)}.png" if pairs else f"{figure}.png"


def _for(pairs) -> str:
    return f" ({describe(pairs)})" if pairs else ""


def _plan_pareto(plan: Plan, sweep: Sweep) -> None:
    from .figures import BOUNDS
    from .plots_sweep import pareto_figure

    grid = [a for a in sweep.varying if a not in sweep.workloads]
    if not grid:
        plan.skip("pareto", "needs an axis other than the workload with two values or more (one point per workload)")
        return
    series = sweep.series([])  # the policy axis, else the policy's name: markers in policy colours
    keys = list(dict.fromkeys([series.column, *grid]))
    annotate = [a for a in grid if a != series.column]
    for pairs, rows in split(series.frame, sweep.workloads):
        points = rows.groupby(keys, sort=False)[["ontime_accuracy", "latency_ms.p99", "cost.total"]].mean()
        points = points.reset_index()
        candidates = points.loc[~points[series.column].astype(str).isin(BOUNDS), "cost.total"]
        costs = ["latency_ms.p99"] + (["cost.total"] if candidates.nunique() > 1 else [])
        what = "on-time accuracy against p99 latency" + (" and cost" if len(costs) > 1 else
                                                           "; cost left out: every configuration costs the same")
        plan.add(_name("pareto", pairs), (describe(pairs) + ": " if pairs else "") + what,
                 lambda points=points, pairs=pairs, costs=costs: pareto_figure(
                     points, series.column, costs=costs, annotate=annotate, title=describe(pairs)))


def _plan_effects(plan: Plan, sweep: Sweep, protocol_path: str | None) -> None:
    if protocol_path is None:
        plan.skip("effects", "no --protocol given (e.g. --protocol analysis/protocol.toml)")
        return
    from .plots_sweep import effects_defined, effects_figure, label
    from .protocol import apply_protocol, load_protocol

    protocol = load_protocol(protocol_path)
    effects = apply_protocol(sweep.results, protocol)
    for metric in protocol.metrics:
        if not effects_defined(effects, metric):
            rows = effects[effects["metric"] == metric]
            why = ("every paired difference is 0" if (rows["mean_diff"] == 0).all()
                   else "no paired difference varies over seeds")
            plan.skip(f"effects_{safe(metric)}.png", f"every test of {metric} is undefined ({why}), so there "
                      f"is no interval or significance to draw; `analyse stats` lists its {len(rows)} rows")
            continue
        plan.add(f"effects_{safe(metric)}.png",
                 f"paired differences in {metric} with 95% intervals ({protocol.source})",
                 lambda metric=metric: effects_figure(effects, metric, f"paired differences: {label(metric)}"))


def _plan_cdfs(plan: Plan, sweep: Sweep) -> None:
    """Latency CDFs, one figure per workload and deadline (the deadline line needs one deadline)."""
    from .figures import latency_cdf_figure
    from .plots_runs import seeds_latencies
    from .runs import read_seed

    if "run_id" not in sweep.results:
        plan.skip("latency-cdf", f"{sweep.directory / 'results.parquet'} has no run_id column naming the runs")
        return
    conditions = [a for a in sweep.varying if a in sweep.workloads or a == sweep.deadline]
    series = sweep.series(sweep.others(*conditions))
    runs_dir = sweep.directory / "runs"

    def draw(rows, pairs):
        latencies, deadlines = {}, set()
        for name in dict.fromkeys(rows[series.column].astype(str)):
            ids = rows.loc[rows[series.column].astype(str) == name, "run_id"]
            latencies[name], deadline = seeds_latencies([read_seed(runs_dir / str(i)) for i in ids])
            deadlines.add(deadline)
        deadline = deadlines.pop() if len(deadlines) == 1 else None
        return latency_cdf_figure(latencies, "latency of completed requests" + _for(pairs), deadline,
                                  policies=series.policies)

    by_what = series.title or series.column
    for pairs, rows in split(series.frame, conditions + series.split_by):
        plan.add(_name("latency-cdf", pairs), f"latency CDFs by {by_what}{_for(pairs)}",
                 lambda rows=rows, pairs=pairs: draw(rows, pairs))


def plan_run(directory: Path) -> Plan:
    import pandas as pd

    from .figures import latency_cdf_figure
    from .plots_runs import TIME_COLUMNS, seeds_latencies, time_series_figure
    from .runs import read_run

    seeds = read_run(directory)
    plan = Plan([], [])
    policy = str((seeds[0].summary.get("policy") or {}).get("name", "run"))
    seed_text = ", ".join(str(s.seed) for s in seeds)

    def cdf():
        latencies, deadline = seeds_latencies(seeds)
        return latency_cdf_figure({policy: latencies}, f"latency of completed requests, seeds {seed_text}", deadline)

    plan.add("latency-cdf.png", f"latency CDF of {policy}, seeds {seed_text} pooled", cdf)
    for seed in seeds:
        timeline = seed.path / "timeline.parquet"

        def series(seed=seed, timeline=timeline):
            return time_series_figure(seed.read_requests(TIME_COLUMNS),
                                      pd.read_parquet(timeline) if timeline.is_file() else None,
                                      window_s=seed.summary.get("window_s"), title=f"{policy}, seed {seed.seed}")

        what = "arrivals, queues, replicas (where they change) and hit rate" if timeline.is_file() else \
            "arrivals and hit rate (no timeline.parquet: no queues or replicas)"
        plan.add(f"time-series_seed-{seed.seed}.png", f"{what} over time, seed {seed.seed}", series)
    plan.skip("pareto, baseline, threshold, workload, effects", "a run has no sweep axes; point the command "
              "at a sweep's directory")
    return plan


def run(args) -> int:
    from traces.outputs import atomic_output, check_target

    from .figures import save_figure

    check_target(args.out, force=args.force, kind="report")  # before any work
    source = Path(args.source)
    if not source.is_dir():
        raise InputError(str(source), "not found or not a directory; expected a `simulate sweep` or `simulate run` "
                         "output directory")
    if (source / "results.parquet").exists():
        plan = plan_sweep(Sweep(source, args.policy_axis), args.protocol)
    else:
        if args.protocol is not None:
            raise InputError(f"--protocol {args.protocol}", f"applies to a sweep; {source} has no results.parquet")
        plan = plan_run(source)
    with atomic_output(args.out, force=args.force, kind="report") as staging:
        for name, _, draw in plan.made:
            save_figure(draw(), staging / name)
    for name, what, _ in plan.made:
        print(f"made {name}: {what}")
    for figure, why in plan.skipped:
        print(f"skipped {figure}: {why}")
    print(f"wrote {len(plan.made)} figures to {args.out}")
    return 0
