"""`analyse ablation`: what each choice of a serving configuration does, one factor at a time.

    analyse ablation SWEEP_DIR [--axis variation] [--base base] [--where AXIS=VALUE] [--out DIR --force]

An ablation takes a configuration that works (the *base*) and asks which of its choices matter:
swap the accurate model for a smaller one, quantise it, prune it, train the small model without
distillation, change the batch size, move the cascade threshold, run on another device; and
measure how far each change moves hit rate, accuracy, on-time accuracy, p99 latency and cost.
Changing one factor at a time keeps each effect attributable to its factor; interactions between
factors are another question (a factorial sweep answers it).

The runs are a ``simulate sweep`` (``analysis`` never imports the simulator) with one group axis,
``variation`` by default, whose values are named ``base`` (no change) and ``FACTOR=LEVEL`` (one
change), e.g. ``precision=int8`` or ``max_batch_size=16``; ``examples/ablation/`` holds two such
sweeps. Every variation runs on the seeds of the base, and with the same seed both see the same
arrivals, deadlines and samples, so the effect of a level is the paired difference level - base
per seed (``analysis.stats.paired_difference``): its mean, its 95% Student-t interval, on how many
seeds the level came out higher and lower than the base, and the paired t-test's p-value. The
shared seed-to-seed spread cancels out of the difference, so the paired interval is far tighter
than the two separate ones suggest. A seed only one side has is left out of that pair.

The report has a Markdown table per factor (the base's means over its seeds, then the effects of
each level) and an overview: the largest effect of each factor on each metric, the largest of all
in bold. ``--out DIR`` writes ``ablation.md``, ``ablation.csv`` (one row per factor, level and
metric) and ``ablation-FACTOR.png`` per factor (each level's effect on the five metrics with its
interval, the base at zero), whole or not at all (``traces.outputs.atomic_output``). A level is
called better or worse where its 95% interval excludes zero, one interval at a time: over many
levels x metrics a few such verdicts are chance, which the report says (no correction for multiple
comparisons here; ``analyse stats`` makes corrected claims).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from traces.errors import InputError

from .compare import METRICS as COMPARE_METRICS, Metric
from .runs import markdown_table
from .stats import Interval, PairedDifference, mean_interval, paired_difference
from .study import read_results, runs_by_seed, select_where, sweep_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

EXAMPLES = """examples:
  simulate sweep examples/ablation/digits.toml --out runs/ablation-digits --workers 2
  analyse ablation runs/ablation-digits
  analyse ablation runs/ablation-digits --out runs/ablation-digits-report --force
  analyse ablation runs/my-sweep --axis change --base none --where requests.deadline_ms=50.0
"""

KEYS = ("hit_rate", "accuracy", "ontime_accuracy", "latency_ms.p99", "cost.total")
METRICS: tuple[Metric, ...] = tuple(m for key in KEYS for m in COMPARE_METRICS if m.key == key)
_LABEL = re.compile(r"(?P<factor>[A-Za-z_][\w.-]*)=(?P<level>[^=\s](?:[^=]*[^=\s])?)")
_COLORS = {"better": "#117733", "worse": "#CC6677", "unclear": "#777777"}  # Paul Tol, colour-blind safe


def parse_variation(label: str) -> tuple[str, str]:
    """``"precision=int8"`` -> ``("precision", "int8")``; ``InputError`` for anything else."""
    match = _LABEL.fullmatch(label)
    if match is None:
        raise InputError(f"variation {label!r}", "expected FACTOR=LEVEL (e.g. precision=int8 or "
                         "max_batch_size=16; a factor is a name without spaces), or the base label")
    return match["factor"], match["level"]


@dataclass(frozen=True)
class Effect:
    """What one level of one factor does to one metric, against the base on the same seeds."""

    factor: str
    level: str
    metric: Metric
    seeds: tuple[int, ...]          # the seeds both the level and the base have
    base: Interval                  # the base's mean over those seeds
    value: Interval                 # the level's mean over those seeds
    difference: PairedDifference    # level - base

    @property
    def verdict(self) -> str:
        """better / worse where the 95% interval of the difference excludes zero, else unclear (one
        interval at a time: not adjusted for the many levels x metrics of an ablation)."""
        interval = self.difference.difference
        if not math.isfinite(interval.half_width) or abs(interval.mean) <= interval.half_width:
            return "unclear"
        return "better" if (interval.mean > 0) == self.metric.higher_is_better else "worse"

    def cell(self) -> str:
        diff, digits = self.difference, self.metric.digits
        if diff.difference.n == 0:
            return "-"
        p = "-" if math.isnan(diff.p_value) else f"{diff.p_value:.2g}"
        sign = "+" if diff.difference.mean >= 0 else ""
        return f"{sign}{diff.difference.format(digits)} ({diff.wins}/{diff.losses}, p={p})"


@dataclass(frozen=True)
class Ablation:
    """Every effect of a sweep's variations, in the sweep's order of factors and levels."""

    axis: str
    base_label: str
    base: dict[str, Interval]       # metric key -> the base's mean over all its seeds
    base_seeds: tuple[int, ...]
    effects: tuple[Effect, ...]

    def factors(self) -> list[str]:
        return list(dict.fromkeys(e.factor for e in self.effects))

    def levels(self, factor: str) -> list[str]:
        return list(dict.fromkeys(e.level for e in self.effects if e.factor == factor))

    def of(self, factor: str, level: str | None = None) -> list[Effect]:
        return [e for e in self.effects if e.factor == factor and level in (None, e.level)]


def select_runs(frame: pd.DataFrame, axis: str, where: list[str], source: str) -> pd.DataFrame:
    """The runs of one ablation: ``--where AXIS=VALUE`` picks a value of each other axis of the sweep."""
    axes = sweep_axes(frame)
    if axis not in frame:
        raise InputError(f"--axis {axis}", f"is not a column of {source}; its axes are {axes}")
    frame = select_where(frame, where, source, columns=[a for a in axes if a != axis])
    for other in axes:
        values = list(dict.fromkeys(frame[other].astype(str)))
        if other != axis and len(values) > 1:
            raise InputError(source, f"the sweep also varies {other} ({values}); an ablation compares "
                             f"variations at one point of the others: add --where {other}=VALUE")
    for metric in METRICS:
        if metric.key not in frame:
            raise InputError(f"{source} column {metric.key!r}", "is missing; expected a `simulate sweep` results table")
        try:
            frame = frame.assign(**{metric.key: pd.to_numeric(frame[metric.key], errors="raise").astype(float)})
        except (TypeError, ValueError):
            raise InputError(f"{source} column {metric.key!r}", "must hold numbers") from None
    return frame


def ablation_effects(frame: pd.DataFrame, axis: str = "variation", base: str = "base",
                     source: str = "results") -> Ablation:
    """The paired effect of every ``FACTOR=LEVEL`` value of ``axis`` on every metric against ``base``."""
    labels = list(dict.fromkeys(frame[axis].astype(str)))
    if base not in labels:
        raise InputError(f"--base {base}", f"no runs labelled {base!r} on the {axis} axis of {source}; "
                         f"it has {labels}")
    parsed = {label: parse_variation(label) for label in labels if label != base}
    if not parsed:
        raise InputError(source, f"the {axis} axis has only the base {base!r}; expected FACTOR=LEVEL variations too")
    base_runs = runs_by_seed(frame[frame[axis].astype(str) == base], f"variation {base!r}", source)
    effects = []
    for label, (factor, level) in parsed.items():
        runs = runs_by_seed(frame[frame[axis].astype(str) == label], f"variation {label!r}", source)
        seeds = sorted(set(runs.index) & set(base_runs.index))
        for metric in METRICS:
            a, b = runs.loc[seeds, metric.key].to_numpy(), base_runs.loc[seeds, metric.key].to_numpy()
            effects.append(Effect(factor, level, metric, tuple(int(s) for s in seeds), mean_interval(b),
                                  mean_interval(a), paired_difference(a, b)))
    return Ablation(axis, base, {m.key: mean_interval(base_runs[m.key]) for m in METRICS},
                    tuple(int(s) for s in sorted(base_runs.index)), tuple(effects))


def factor_table(ablation: Ablation, factor: str) -> str:
    """The base's means, then per level its effect on each metric (Markdown)."""
    header = ["level", "seeds", *(m.label for m in METRICS)]
    rows = [[f"{ablation.base_label} (mean)", len(ablation.base_seeds),
             *(ablation.base[m.key].format(m.digits) for m in METRICS)]]
    for level in ablation.levels(factor):
        effects = ablation.of(factor, level)
        rows.append([level, len(effects[0].seeds), *(e.cell() for e in effects)])
    return markdown_table(header, rows)


def overview_table(ablation: Ablation) -> str:
    """Per factor and metric the level with the largest mean effect; the largest per metric in bold."""
    largest: dict[tuple[str, str], Effect] = {}
    for effect in ablation.effects:
        key = (effect.factor, effect.metric.key)
        if _size(effect) > _size(largest.get(key)):
            largest[key] = effect
    top = {m.key: max((largest.get((f, m.key)) for f in ablation.factors()), key=_size) for m in METRICS}
    rows = []
    for factor in ablation.factors():
        cells = []
        for metric in METRICS:
            effect = largest.get((factor, metric.key))
            text = "-" if effect is None else f"{effect.difference.difference.mean:+.{metric.digits}f} ({effect.level})"
            cells.append(f"**{text}**" if effect is not None and effect is top[metric.key] else text)
        rows.append([factor, *cells])
    return markdown_table(["factor", *(m.label for m in METRICS)], rows)


def _size(effect: Effect | None) -> float:
    if effect is None or not math.isfinite(effect.difference.difference.mean):
        return -1.0
    return abs(effect.difference.difference.mean)


def report(ablation: Ablation) -> str:
    """The whole Markdown report: the overview, then a table per factor."""
    seeds = ", ".join(map(str, ablation.base_seeds))
    parts = [f"## Ablation against `{ablation.base_label}` ({ablation.axis} axis)", "",
             f"Base seeds: {seeds}. A level's cell is its mean difference from the base, paired by seed "
             "(level − base), ± the 95% Student-t half-width, then on how many seeds it came out higher/lower "
             "and the paired t-test's p. Higher is better for hit rate and both accuracies, lower for p99 "
             "latency and cost.", "",
             "Better/worse (the figures' colours, ablation.csv's verdict) means that level's 95% interval "
             "excludes 0, unadjusted for multiple comparisons: over this many levels x metrics, a few such "
             "verdicts are expected by chance alone.", "",
             "Largest mean effect of each factor (the level in brackets; the largest per metric in bold):", "",
             overview_table(ablation), ""]
    for factor in ablation.factors():
        parts += [f"### {factor}", "", factor_table(ablation, factor), ""]
    return "\n".join(parts)


def effects_frame(ablation: Ablation) -> pd.DataFrame:
    """One row per factor, level and metric: both means over the paired seeds, the difference, its
    95% interval, the seeds higher and lower, the p-value."""
    rows = []
    for e in ablation.effects:
        d = e.difference.difference
        rows.append({"factor": e.factor, "level": e.level, "metric": e.metric.key, "pairs": len(e.seeds),
                     "seeds": " ".join(map(str, e.seeds)), "base_mean": e.base.mean, "level_mean": e.value.mean,
                     "difference": d.mean, "half_width": d.half_width, "low": d.mean - d.half_width,
                     "high": d.mean + d.half_width, "higher": e.difference.wins, "lower": e.difference.losses,
                     "p_value": e.difference.p_value, "verdict": e.verdict})
    return pd.DataFrame(rows)


ABLATION_RATIO = 12.0  # off scale only where a level would leave the others under 1/13 of the panel


def factor_figure(ablation: Ablation, factor: str) -> "Figure":
    """One panel per metric: each level's mean effect with its 95% interval, the base at zero.

    The axes are linear, so the lengths of the effects compare at a glance; only a level whose
    effect would squeeze the others into under a thirteenth of its panel (``figures.off_scale``
    with ``ABLATION_RATIO``; e.g. a precision the device runs slowly, +1,227 ms of p99 beside
    -74 ms) is drawn as a mark at the panel's edge with its value written beside it."""
    from .figures import new_figures

    levels = ablation.levels(factor)
    fig, axes = new_figures(1, len(METRICS), width_in=2.6 * len(METRICS),
                            height_in=1.5 + 0.32 * (len(levels) + 1), sharey=True)
    for ax, metric in zip(axes[0], METRICS):
        _effect_panel(ax, ablation, factor, metric)
    axes[0, 0].set_yticks(range(len(levels) + 1), [f"{ablation.base_label} (= 0)", *levels])
    axes[0, 0].set_ylim(len(levels) + 0.5, -0.5)
    fig.suptitle(f"{factor}: effect of each level against {ablation.base_label}, paired by seed "
                 f"(mean, 95% interval; green better, red worse, grey unclear)", fontsize=10)
    return fig


def _effect_panel(ax: "Axes", ablation: Ablation, factor: str, metric: Metric) -> None:
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from .figures import focus_axis, off_scale, short_number
    from .plots_sweep import label

    effects = [e for e in ablation.of(factor) if e.metric == metric]
    means = np.array([0.0] + [e.difference.difference.mean for e in effects])
    halves = np.nan_to_num(np.array([0.0] + [e.difference.difference.half_width for e in effects]), posinf=0.0)
    colors = ["black"] + [_COLORS[e.verdict] for e in effects]
    side = off_scale(means, halves, ratio=ABLATION_RATIO)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1.0)
    ax.plot([0.0], [0], marker="D", color="black", linestyle="none")
    for y in range(1, len(means)):
        if np.isfinite(means[y]) and side[y] == 0:
            ax.errorbar([means[y]], [y], xerr=[halves[y]], fmt="o", color=colors[y], capsize=3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))
    focus_axis(ax, "x", np.arange(len(means)), means, halves, side, colors,
               fmt=lambda value: short_number(value, sign=True))
    base = ablation.base[metric.key]
    ax.set_title(f"{label(metric.key)}\nbase {base.mean:.{metric.digits}f}", fontsize=10)
    ax.set_xlabel("level − base")


def add_arguments(parser) -> None:
    parser.add_argument("sweep", metavar="SWEEP_DIR", help="a `simulate sweep` output directory (or its results.parquet)")
    parser.add_argument("--axis", default="variation", help="the group axis of the variations (default: variation)")
    parser.add_argument("--base", default="base", help="the label of the base on that axis (default: base)")
    parser.add_argument("--where", action="append", default=[], metavar="AXIS=VALUE",
                        help="pick one value of another axis of the sweep (repeatable)")
    parser.add_argument("--out", metavar="DIR", help="also write ablation.md, ablation.csv and one "
                        "ablation-FACTOR.png per factor into this directory (atomically; never over a "
                        "directory not written by us)")
    parser.add_argument("--force", action="store_true", help="replace an earlier report of ours at --out")


def run(args) -> int:
    from traces.outputs import atomic_output, check_target

    if args.out:  # checked before any work
        check_target(args.out, force=args.force, kind="report")
    path = Path(args.sweep)
    results = path if path.is_file() else path / "results.parquet"
    frame = select_runs(read_results(results), args.axis, args.where, str(results))
    ablation = ablation_effects(frame, args.axis, args.base, str(results))
    text = report(ablation)
    if args.out:  # everything is built and written before anything is printed
        from .figures import save_figure

        figures = {f"ablation-{factor}.png": factor_figure(ablation, factor) for factor in ablation.factors()}
        with atomic_output(args.out, force=args.force, kind="report") as staging:
            (staging / "ablation.md").write_text(text)
            effects_frame(ablation).to_csv(staging / "ablation.csv", index=False)
            for name, figure in figures.items():
                save_figure(figure, staging / name)
    print(text, end="")
    if args.out:
        print(f"wrote {args.out}/ (ablation.md, ablation.csv, {', '.join(figures)})")
    return 0
