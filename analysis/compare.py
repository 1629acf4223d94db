"""`analyse compare`: two runs side by side, paired by seed.

    analyse compare RUN_A RUN_B [--out DIR --force]

Two runs of the same scenario under a change (another policy, threshold, replica count) are best
compared seed by seed: with the same seed both see the same arrivals, deadlines and samples, so
the seed-to-seed spread that both share cancels out of their difference. For every metric the
report gives the mean of A, of B and of B - A over the seeds both runs have, the 95% Student-t
interval of the mean paired difference (``analysis.stats.paired_difference``), the paired t-test's
p-value, and on how many seeds B came out better and worse (higher is better for hit rate,
accuracy, on-time accuracy and throughput; lower for latency and cost). Seeds only one run has
are left out and named.

``--out DIR`` also writes ``compare.md`` (the same Markdown) and ``latency_cdf.png``: the empirical
CDFs of the latency of the completed measured requests of A and of B, each pooled over the paired
seeds (``plots_runs.seeds_latencies``, as ``analyse figures`` reads them), with the deadline
marked when every measured request of both runs has the same one. The directory
appears whole or not at all, before the report is printed; an earlier report of ours is replaced
only with ``--force``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traces.errors import InputError

from .runs import SeedRun, add_out_arguments, check_out, markdown_table, pair_by_seed, read_run, unpaired_note

EXAMPLES = """examples:
  analyse compare runs/demo runs/demo-099
  analyse compare runs/planner runs/degrade --out runs/planner-vs-degrade
"""


@dataclass(frozen=True)
class Metric:
    key: str            # the flattened summary.json key
    label: str
    digits: int
    higher_is_better: bool


METRICS = (
    Metric("hit_rate", "hit rate", 4, True),
    Metric("accuracy", "accuracy", 4, True),
    Metric("ontime_accuracy", "on-time accuracy", 4, True),
    Metric("latency_ms.p50", "p50 latency ms", 2, False),
    Metric("latency_ms.p95", "p95 latency ms", 2, False),
    Metric("latency_ms.p99", "p99 latency ms", 2, False),
    Metric("throughput_rps", "throughput rps", 1, True),
    Metric("cost.total", "cost", 4, False),
)


def metric_value(run: SeedRun, key: str) -> float:
    """``key`` (dotted, e.g. ``latency_ms.p99``) of the run's summary as a float; NaN where the
    summary has null (no completions); ``InputError`` where it lacks the key."""
    value: object = run.summary
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise InputError(str(run.path / "summary.json"), f"has no {key!r}; expected a `simulate run` summary")
        value = value[part]
    if value is None:
        return math.nan
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InputError(str(run.path / "summary.json"), f"{key!r} is {value!r}, not a number")
    return float(value)


@dataclass(frozen=True)
class Row:
    """One metric over the paired seeds."""

    metric: Metric
    a: np.ndarray
    b: np.ndarray

    def cells(self) -> list[str]:
        from .stats import mean_interval, paired_difference

        d = self.metric.digits
        diff = paired_difference(self.b, self.a)
        better, worse = (diff.wins, diff.losses) if self.metric.higher_is_better else (diff.losses, diff.wins)
        p = "-" if math.isnan(diff.p_value) else f"{diff.p_value:.2g}"
        return [self.metric.label, mean_interval(self.a).format(d), mean_interval(self.b).format(d),
                diff.difference.format(d), p, f"{better}/{worse}"]


def compare_rows(pairs: list[tuple[SeedRun, SeedRun]]) -> list[Row]:
    """Every metric of ``METRICS`` over the (A, B) seed pairs."""
    return [Row(m, np.array([metric_value(a, m.key) for a, _ in pairs]),
                np.array([metric_value(b, m.key) for _, b in pairs])) for m in METRICS]


def report(pairs: list[tuple[SeedRun, SeedRun]], names: tuple[str, str], note: str = "") -> str:
    """The Markdown comparison of B against A."""
    seeds = [a.seed for a, _ in pairs]
    header = ["metric", "A (95%)", "B (95%)", "B − A (95% paired t)", "p", "seeds B better/worse"]
    lines = [f"## {names[1]} (B) against {names[0]} (A), paired by seed", "",
             f"Seeds {seeds}; each cell is the mean over them ± the 95% Student-t half-width. {note}".rstrip(), "",
             markdown_table(header, [row.cells() for row in compare_rows(pairs)]), ""]
    return "\n".join(lines)


def latency_figure(pairs: list[tuple[SeedRun, SeedRun]], names: tuple[str, str]):
    """CDFs of A's and B's measured, completed latencies (``plots_runs.seeds_latencies``), pooled
    over the paired seeds, with the deadline marked when every measured request of both has the same one."""
    from .figures import latency_cdf_figure
    from .plots_runs import seeds_latencies

    lat_a, deadline_a = seeds_latencies([a for a, _ in pairs])
    lat_b, deadline_b = seeds_latencies([b for _, b in pairs])
    deadline = deadline_a if deadline_a == deadline_b else None
    labels = _labels(names)
    seeds = ", ".join(str(a.seed) for a, _ in pairs)
    title = f"latency of completed requests (seed{'s' if len(pairs) > 1 else ''} {seeds})"
    return latency_cdf_figure({labels[0]: lat_a, labels[1]: lat_b}, title, deadline_ms=deadline)


def _labels(names: tuple[str, str]) -> tuple[str, str]:
    """Legend labels: the directories' names, with A/B in front (and the whole path if names clash)."""
    short = [Path(n).name or n for n in names]
    if short[0] == short[1]:
        short = list(names)
    return f"A: {short[0]}", f"B: {short[1]}"


def add_arguments(parser) -> None:
    parser.add_argument("run_a", metavar="RUN_A", help="the reference run (a run output directory or one seed-<n>/)")
    parser.add_argument("run_b", metavar="RUN_B", help="the run compared with it")
    add_out_arguments(parser, "compare.md and latency_cdf.png")


def run(args) -> int:
    from traces.outputs import atomic_output

    check_out(args)
    names = (args.run_a, args.run_b)
    runs_a, runs_b = read_run(args.run_a), read_run(args.run_b)
    pairs = pair_by_seed(runs_a, runs_b, f"{args.run_a} and {args.run_b}")
    text = report(pairs, names, unpaired_note([r.seed for r in runs_a], [r.seed for r in runs_b], names))
    if args.out:  # everything is built before anything is written, and written before it is printed
        from .figures import save_figure

        figure = latency_figure(pairs, names)
        with atomic_output(args.out, force=args.force, kind="report") as staging:
            (staging / "compare.md").write_text(text)
            save_figure(figure, staging / "latency_cdf.png")
    print(text, end="")
    if args.out:
        print(f"wrote {args.out}/ (compare.md, latency_cdf.png)")
    return 0
