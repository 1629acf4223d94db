"""Figures of a sweep's results table: Pareto fronts, metrics with intervals over seeds, thresholds.

A sweep's ``results.parquet`` has one row per run: the axis values (policy, deadline, workload,
threshold, ...), the seed, and every summary metric. Each figure here takes that tidy table (or
its grid points, averaged over seeds) and draws one question:

- ``pareto_figure``: which configurations are worth considering? Each grid point is a marker; those
  that no other beats in both accuracy and p99 latency (or cost) form the Pareto front, drawn as a
  staircase (``analysis.pareto.pareto_front`` decides; the bounds are references, left off the front);
- ``interval_panels_figure``: how does a metric move with one axis? One panel per metric, one
  series per policy, each point a mean with its 95% Student-t interval over seeds
  (``analysis.stats.mean_interval``). The baseline, workload and threshold figures are this one
  with different axes and metrics.

Intervals over seeds, not over requests: the requests of one run share its arrivals and its
queues, so they are not independent; the seeds are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from .figures import (BOUNDS, log_axis_if_wide, new_figure, new_figures, policy_color, policy_linestyle, policy_marker,
                      series_colors)
from .stats import mean_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# metric column -> axis label (with units)
LABELS = {
    "hit_rate": "hit rate (share on time)",
    "accuracy": "accuracy (share correct)",
    "ontime_accuracy": "on-time accuracy",
    "coverage": "coverage (share answered by hop 1)",
    "latency_ms.p99": "p99 latency (ms)",
    "latency_ms.p50": "median latency (ms)",
    "cost.total": "cost (price units)",
    "cost.per_1k_requests": "cost per 1,000 requests (price units)",
    "requests.deadline_ms": "deadline (ms)",
    "policy.threshold": "cascade threshold τ",
    "load": "load (x the base arrival rate)",
}


def label(column: str) -> str:
    """The axis label of a metric or axis column."""
    return LABELS.get(column, column)


def ordered(values: Sequence) -> list:
    """Distinct values in a reader's order: numerically when every one reads as a number (a sweep
    stores axis values as labels, ``"20.0"``), else in order of first appearance."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct, key=float)
    except (TypeError, ValueError):
        return distinct


def series_styles(names: Sequence[str], policies: bool) -> dict[str, dict]:
    """Colour, marker and line style per series, distinct within the figure (``series_colors``):
    a policy keeps its colour and marker in every figure, and a bound is dashed."""
    colors = series_colors(list(names), policies)
    return {name: {"color": colors[name], "marker": policy_marker(name) if policies else "os^Dv<>P"[k % 8],
                   "linestyle": policy_linestyle(name) if policies else "-"} for k, name in enumerate(names)}


def _tick(value: str) -> str:
    """An axis value as a tick label: ``20`` for the stored ``"20.0"``, text as it is."""
    try:
        return f"{float(value):g}"
    except ValueError:
        return value


def point_label(column: str, value) -> str:
    """A grid point's value as a reader says it: ``20 ms``, ``τ=0.9``, ``load=2``."""
    try:
        text = f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)
    if column.endswith("_ms"):
        return f"{text} ms"
    return f"{'τ' if column.endswith('threshold') else column.rsplit('.', 1)[-1]}={text}"


def pareto_figure(points: pd.DataFrame, series: str, *, accuracy: str = "ontime_accuracy",
                  costs: Sequence[str] = ("latency_ms.p99", "cost.total"), annotate: Sequence[str] = (),
                  title: str = "") -> "Figure":
    """Accuracy (maximised) against each of ``costs`` (minimised), one panel each.

    ``points``: one row per grid point (already averaged over seeds) with the ``series`` column
    (e.g. the policy), ``accuracy`` and ``costs``. The points of the bounds (``oracle-static``,
    ``isolation-bound``) are drawn hollow and left off the front: they are references, not
    configurations. The front of the others is a step line whose vertices are exactly the front's
    points; ``annotate`` names columns whose values label each front point (e.g. the threshold).
    """
    from .pareto import pareto_front

    fig, axes = new_figures(1, len(costs), width_in=max(6.4, 4.2 * len(costs)), height_in=4.0)
    names = ordered(points[series].astype(str))
    styles = series_styles(names, policies=True)
    for ax, cost in zip(axes[0], costs):
        data = points[[series, accuracy, cost, *annotate]].dropna(subset=[accuracy, cost])
        for name in names:
            mine = data[data[series].astype(str) == name]
            style = styles[name]
            hollow = {"facecolors": "none"} if name in BOUNDS else {}
            ax.scatter(mine[cost], mine[accuracy], s=30, color=style["color"], marker=style["marker"],
                       label=name + (" (bound)" if name in BOUNDS else ""), zorder=3, **hollow)
        candidates = data[~data[series].astype(str).isin(BOUNDS)]
        if len(candidates):
            values = candidates[[accuracy, cost]].to_numpy(dtype=np.float64)
            front = candidates[pareto_front(values, (True, False))].sort_values([cost, accuracy])
            ax.step(front[cost], front[accuracy], where="post", color="#555555", linewidth=1.0, zorder=2,
                    label="Pareto front")
            if annotate:
                _label_front(ax, front, cost, accuracy, annotate)
        log_axis_if_wide(ax, data[cost], "x")
        ax.margins(0.08)
        ax.set_xlabel(label(cost))
        ax.set_ylabel(label(accuracy))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))
    fig.suptitle((title + "\n" if title else "") + "one marker per grid point (mean over seeds); better is up and left",
                 fontsize=10)
    return fig


def _label_front(ax: "Axes", front: pd.DataFrame, x: str, y: str, columns: Sequence[str]) -> None:
    """Label each front point with its grid values; points at the same place share one label, and
    successive labels alternate below-right and above-left of their points, so close ones stay apart."""
    for k, ((at_x, at_y), here) in enumerate(front.groupby([x, y], sort=True)):
        text = " / ".join(dict.fromkeys(", ".join(point_label(c, row[c]) for c in columns)
                                        for _, row in here.iterrows()))
        below = k % 2 == 0
        ax.annotate(text, (at_x, at_y), textcoords="offset points", xytext=(5, -11) if below else (-5, 6),
                    ha="left" if below else "right", fontsize=8, color="#333333")


def interval_panels_figure(results: pd.DataFrame, x: str, series: str, metrics: Sequence[str], *,
                           policies: bool = True, numeric_x: bool = False, title: str = "",
                           series_title: str | None = None) -> "Figure":
    """One panel per metric: each ``series`` value's mean and 95% interval over the runs (seeds)
    at each value of ``x`` (``series_title`` heads the legend; default: none for policies, else
    the series column's label). Categorical ``x`` (a deadline, a workload) sits at evenly spaced
    positions with the series side by side; ``numeric_x`` (a threshold) at its values, joined."""
    xs = ordered(results[x].astype(str))
    names = ordered(results[series].astype(str))
    width = min(3.6 * len(metrics), 11.0)
    fig, axes = new_figures(1, len(metrics), width_in=width, height_in=3.6)
    dodge = 0.0 if numeric_x else 0.6 / max(len(names), 1)
    styles = series_styles(names, policies)
    for ax, metric in zip(axes[0], metrics):
        for k, name in enumerate(names):
            mine = results[results[series].astype(str) == name]
            intervals = [mean_interval(mine.loc[mine[x].astype(str) == value, metric]) for value in xs]
            position = (np.array([float(v) for v in xs]) if numeric_x
                        else np.arange(len(xs)) + (k - (len(names) - 1) / 2) * dodge)
            means = np.array([i.mean for i in intervals])
            halves = np.nan_to_num(np.array([i.half_width for i in intervals]))
            style = styles[name]
            ax.errorbar(position, means, yerr=halves, label=name, capsize=3, markersize=5, color=style["color"],
                        marker=style["marker"], linestyle=style["linestyle"] if numeric_x else "none",
                        linewidth=1.2)
        if numeric_x:
            ticks = [float(v) for v in xs]
            if x.endswith("threshold") and 0 < min(ticks) and max(ticks) < 1:
                ax.set_xscale("logit")  # thresholds crowd near 1: the logit spreads 0.9, 0.99, 0.999 apart
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks], minor=False)
            ax.set_xticks([], minor=True)
        else:
            ax.set_xticks(range(len(xs)), [_tick(v) for v in xs])
            ax.grid(False, axis="x")
        if metric.startswith("latency_ms"):
            log_axis_if_wide(ax, results[metric], "y")
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(metric))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5),
               title=series_title if series_title is not None or policies else label(series))
    fig.suptitle((title + "\n" if title else "") + "mean and 95% interval over seeds", fontsize=10)
    return fig


def baseline_figure(results: pd.DataFrame, deadline: str, policy: str, title: str = "") -> "Figure":
    """Hit rate and on-time accuracy per policy at each deadline, with 95% intervals over seeds."""
    return interval_panels_figure(results, deadline, policy, ("hit_rate", "ontime_accuracy"), title=title)


def workload_figure(results: pd.DataFrame, workload: str, policy: str, title: str = "") -> "Figure":
    """On-time accuracy and hit rate per policy across workloads, with 95% intervals over seeds."""
    return interval_panels_figure(results, workload, policy, ("ontime_accuracy", "hit_rate"), title=title)


def coverage(results: pd.DataFrame) -> pd.Series:
    """Per run, the share of requests that reached a cascade's first hop and ended there:
    1 - (passed on) / (reached), summed over the routes in ``summary.json``'s ``cascade`` (the
    results' ``cascade.<route>.hop0.*`` columns); NaN for a run with no cascade."""
    passed = results.filter(regex=r"^cascade\..*\.hop0\.passed_on$")
    reached = results.filter(regex=r"^cascade\..*\.hop0\.reached$")
    total = reached.sum(axis=1, min_count=1)
    return 1.0 - passed.sum(axis=1, min_count=1) / total.where(total > 0)


def threshold_figure(results: pd.DataFrame, threshold: str, series: str, *, policies: bool = True,
                     title: str = "", series_title: str | None = None) -> "Figure":
    """Accuracy, first-hop coverage and p99 latency against the cascade threshold tau."""
    frame = results.assign(coverage=coverage(results))
    return interval_panels_figure(frame, threshold, series, ("accuracy", "coverage", "latency_ms.p99"),
                                  policies=policies, numeric_x=True, title=title, series_title=series_title)


EFFECT_COLUMNS = ("metric", "a", "b", "group", "mean_diff", "ci_low", "ci_high", "p_holm", "significant")


def effects_figure(effects: pd.DataFrame, metric: str, title: str = "") -> "Figure":
    """A forest plot of one metric's paired differences a - b: per comparison and group, the mean
    difference over seeds and its 95% interval; filled when significant (Holm-adjusted), hollow not.

    ``effects`` is ``analysis.protocol.apply_protocol``'s table (the columns of ``EFFECT_COLUMNS``
    are the ones read). Comparisons are stacked top to bottom in the table's order, each headed by
    its name and coloured as policy ``a``.
    """
    rows = effects[effects["metric"] == metric]
    pairs = list(dict.fromkeys(zip(rows["a"], rows["b"])))
    count = len(rows) + len(pairs)
    fig, ax = new_figure(width_in=6.4, height_in=1.3 + 0.24 * count)
    y, ticks, names = 0, [], []
    for a, b in pairs:
        block = rows[(rows["a"] == a) & (rows["b"] == b)]
        ax.text(0.0, y, f"{a} − {b}", transform=ax.get_yaxis_transform(), ha="left", va="center",
                fontsize=9, fontweight="bold")
        y += 1
        color = policy_color(a)
        for _, row in block.iterrows():
            low, high = row["mean_diff"] - row["ci_low"], row["ci_high"] - row["mean_diff"]
            significant = bool(row["significant"])
            ax.errorbar([row["mean_diff"]], [y], xerr=[[np.nan_to_num(low)], [np.nan_to_num(high)]], fmt="o",
                        color=color, markerfacecolor=color if significant else "white", capsize=2.5)
            ticks.append(y)
            names.append(row["group"] or "all")
            y += 1
    ax.axvline(0.0, color="#444444", linewidth=0.9)
    ax.set_yticks(ticks, names)
    ax.set_ylim(y - 0.5, -0.7)
    ax.grid(False, axis="y")
    ax.set_xlabel(f"difference a − b in {label(metric)}, mean and 95% interval over seeds")
    from matplotlib.lines import Line2D

    marks = [Line2D([], [], marker="o", linestyle="none", color="#444444", label="significant (Holm)"),
             Line2D([], [], marker="o", linestyle="none", color="#444444", markerfacecolor="white",
                    label="not significant")]
    fig.legend(handles=marks, loc="outside lower center", ncols=2)
    if title:
        ax.set_title(title)
    return fig
