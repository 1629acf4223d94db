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
  with different axes and metrics;
- ``effects_figure``: which differences between policies hold up? A forest plot per comparison of
  the protocol's paired differences, filled where significant after Holm's correction.

A few points far from the rest go to the axis' edge with their values (``figures.off_scale``), so
the rest keep the axis; a point's label that would collide with another's is joined or left off.

Intervals over seeds, not over requests: the requests of one run share its arrivals and its
queues, so they are not independent; the seeds are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from .figures import (BOUNDS, focus_axis, halo, label_groups, log_axis_if_wide, new_figures, off_scale, policy_color,
                      policy_linestyle, policy_marker, series_colors, spaced)
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
    points. Accuracies far below (or above) the rest (``figures.off_scale``) are drawn as marks at
    the axis' edge with their values, so the rest keep the axis.

    ``annotate`` names columns whose values say what each front point is (e.g. the deadline): the
    points are numbered along the front, and a key beside the panels gives each number's series
    and values ("planner: 20 ms"). Numbers rather than the text at the points, because a policy's
    name and its values do not fit between close points; points within ``LABEL_GAP`` (a share of
    the axes) of the first of a run share one number (``figures.label_groups``), and a point on
    both panels' fronts keeps its number.
    """
    from .pareto import pareto_front

    key_in = 2.6 if annotate else 0.0  # the key's room right of the panels
    fig, axes = new_figures(1, len(costs), width_in=max(6.4, 4.2 * len(costs)) + key_in, height_in=4.0)
    names = ordered(points[series].astype(str))
    styles = series_styles(names, policies=True)
    named = len([n for n in names if n not in BOUNDS]) > 1
    key: dict[str, int] = {}
    for ax, cost in zip(axes[0], costs):
        data = points[[series, accuracy, cost, *annotate]].dropna(subset=[accuracy, cost]).reset_index(drop=True)
        side = off_scale(data[accuracy])
        for name in names:
            mine = data[(data[series].astype(str) == name) & (side == 0)]
            style = styles[name]
            hollow = {"facecolors": "none"} if name in BOUNDS else {}
            ax.scatter(mine[cost], mine[accuracy], s=30, color=style["color"], marker=style["marker"],
                       label=name + (" (bound)" if name in BOUNDS else ""), zorder=3, **hollow)
        candidates = data[~data[series].astype(str).isin(BOUNDS)]
        front = candidates.iloc[0:0]
        if len(candidates):
            values = candidates[[accuracy, cost]].to_numpy(dtype=np.float64)
            front = candidates[pareto_front(values, (True, False))].sort_values([cost, accuracy])
            ax.step(front[cost], front[accuracy], where="post", color="#555555", linewidth=1.0, zorder=2,
                    label="Pareto front")
        log_axis_if_wide(ax, data[cost], "x")
        ax.margins(0.08)
        row_names = list(data[series].astype(str))
        focus_axis(ax, "y", data[cost], data[accuracy], np.zeros(len(data)), side,
                   [styles[n]["color"] for n in row_names], row_names)
        if annotate and len(front):
            _number_front(ax, front, (cost, accuracy), series, annotate, key, named)
        ax.set_xlabel(label(cost))
        ax.set_ylabel(label(accuracy))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4))
    if key:
        import textwrap

        from matplotlib.lines import Line2D

        numbers = [Line2D([], [], linestyle="none", marker=f"${n}$", markersize=7 + 2 * (n > 9), color="#333333")
                   for n in key.values()]
        fig.legend(numbers, [textwrap.fill(text, 34, break_on_hyphens=False) for text in key],
                   loc="outside right center", title="on the front", fontsize=8,
                   title_fontsize=9, handletextpad=0.5, labelspacing=0.6)
    fig.suptitle((title + "\n" if title else "") + "one marker per grid point (mean over seeds); better is up and left",
                 fontsize=10)
    return fig


LABEL_GAP = 0.04  # front points closer than this (a share of the axes) share a number


def _number_front(ax: "Axes", front: pd.DataFrame, xy: tuple[str, str], series: str, columns: Sequence[str],
                  key: dict[str, int], named: bool) -> None:
    """Number the front's points in order along it, above and left of each point (where no front
    point lies); ``key`` maps each number's text to it, numbers of texts already in it are reused."""
    x, y = xy
    low, high = ax.get_ylim()
    ax.get_xlim()  # settle the autoscaled limits before reading where a point falls
    at_y = front[y].clip(low, high).to_numpy(dtype=np.float64)
    at = (ax.transScale + ax.transLimits).transform(np.column_stack([front[x].to_numpy(dtype=np.float64), at_y]))
    for group in label_groups(at, LABEL_GAP):
        number = key.setdefault(front_text(front.iloc[group], series, columns, named), len(key) + 1)
        ax.annotate(str(number), (front[x].iloc[group[0]], at_y[group[0]]), textcoords="offset points",
                    xytext=(-3, 4), ha="right", va="bottom", fontsize=8, fontweight="bold", color="#333333",
                    path_effects=halo(), zorder=5)


def front_text(rows: pd.DataFrame, series: str, columns: Sequence[str], named: bool) -> str:
    """What some front points are, in a key: each series' values of ``columns`` (``20/40/80 ms``
    for milliseconds), series with the same values together (``static-small, throughput-autotuner:
    20/40/80 ms``); without the series when ``named`` is False (one series in the figure)."""
    values: dict[str, list[str]] = {}
    for _, row in rows.iterrows():
        text = ", ".join(point_label(c, row[c]) for c in columns)
        values.setdefault(str(row[series]), [])
        if text not in values[str(row[series])]:
            values[str(row[series])].append(text)
    together: dict[str, list[str]] = {}
    for name, texts in values.items():
        joined = ("/".join(t[:-3] for t in texts) + " ms" if len(texts) > 1 and all(t.endswith(" ms") for t in texts)
                  else " / ".join(texts))
        together.setdefault(joined, []).append(name)
    parts = [f"{', '.join(names)}: {joined}" if named else joined for joined, names in together.items()]
    return "; ".join(parts)


def interval_panels_figure(results: pd.DataFrame, x: str, series: str, metrics: Sequence[str], *,
                           policies: bool = True, numeric_x: bool = False, title: str = "",
                           series_title: str | None = None) -> "Figure":
    """One panel per metric: each ``series`` value's mean and 95% interval over the runs (seeds)
    at each value of ``x`` (``series_title`` heads the legend; default: none for policies, else
    the series column's label). Categorical ``x`` (a deadline, a workload) sits at evenly spaced
    positions with the series side by side; ``numeric_x`` (a threshold) at its values, joined,
    with tick labels that would overlap left off (``figures.spaced``).

    A latency panel is logarithmic when its means span more than a decade; there an interval
    whose lower end is at or below 0 is clipped: drawn down to the axis' lower edge, which is set
    from the means and the positive interval ends. A linear panel whose few far-off means would
    squash the rest (``figures.off_scale``) is fitted to the rest, and those are drawn as marks at
    its edge with their values."""
    xs = ordered(results[x].astype(str))
    names = ordered(results[series].astype(str))
    width = min(3.6 * len(metrics), 11.0)
    fig, axes = new_figures(1, len(metrics), width_in=width, height_in=3.6)
    dodge = 0.0 if numeric_x else 0.6 / max(len(names), 1)
    styles = series_styles(names, policies)
    positions = np.array([(np.array([float(v) for v in xs]) if numeric_x
                           else np.arange(len(xs)) + (k - (len(names) - 1) / 2) * dodge) for k in range(len(names))])
    for ax, metric in zip(axes[0], metrics):
        means, halves = _intervals(results, x, xs, series, names, metric)
        log = metric.startswith("latency_ms") and log_axis_if_wide(ax, means, "y")
        side = (np.zeros(means.shape, dtype=int) if log
                else off_scale(means.ravel(), halves.ravel()).reshape(means.shape))
        lower, bottom = _clipped_lower(means, halves) if log else (halves, None)
        for k, name in enumerate(names):
            style = styles[name]
            shown = np.where(side[k] == 0, means[k], np.nan)
            ax.errorbar(positions[k], shown, yerr=[lower[k], halves[k]], label=name, capsize=3, markersize=5,
                        color=style["color"], marker=style["marker"],
                        linestyle=style["linestyle"] if numeric_x else "none", linewidth=1.2)
        if bottom is not None:
            ax.set_ylim(bottom=bottom)
        if numeric_x:
            _numeric_ticks(ax, x, [float(v) for v in xs], width / len(metrics))
        else:
            ax.set_xticks(range(len(xs)), [_tick(v) for v in xs])
            ax.grid(False, axis="x")
        colors = [styles[name]["color"] for name in names for _ in xs]
        focus_axis(ax, "y", positions.ravel(), means.ravel(), halves.ravel(), side.ravel(), colors,
                   [name for name in names for _ in xs])
        ax.set_xlabel(label(x))
        ax.set_ylabel(label(metric))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5),
               title=series_title if series_title is not None or policies else label(series))
    fig.suptitle((title + "\n" if title else "") + "mean and 95% interval over seeds", fontsize=10)
    return fig


def _intervals(results: pd.DataFrame, x: str, xs: list, series: str, names: list, metric: str):
    """Means and 95% half-widths over the runs, one row per series and one column per ``x`` value."""
    cells = [[mean_interval(results.loc[(results[series].astype(str) == name) & (results[x].astype(str) == value),
                                        metric]) for value in xs] for name in names]
    return (np.array([[c.mean for c in row] for row in cells], dtype=np.float64).reshape(len(names), len(xs)),
            np.nan_to_num(np.array([[c.half_width for c in row] for row in cells],
                                   dtype=np.float64).reshape(len(names), len(xs))))


def _clipped_lower(means: np.ndarray, halves: np.ndarray) -> tuple[np.ndarray, float | None]:
    """On a log axis: the lower error lengths with every interval that reaches 0 or below cut at
    the axis' lower edge, and that edge (a little under the least mean or positive lower end)."""
    lows = means - halves
    positive = np.concatenate([means[np.isfinite(means) & (means > 0)], lows[np.isfinite(lows) & (lows > 0)]])
    if not positive.size:
        return halves, None
    bottom = float(positive.min()) / 1.25
    return np.where(lows > 0, halves, means - bottom), bottom


def _numeric_ticks(ax: "Axes", x: str, ticks: list[float], panel_in: float) -> None:
    """A tick at every value of a numeric axis, labelled where the label does not overlap the one
    before (``spaced``); thresholds between 0 and 1 on a logit scale, which spreads 0.9, 0.99 and
    0.999 apart. Positions are estimated from the panel's width, so the choice needs no drawing."""
    values = np.asarray(ticks, dtype=np.float64)
    if x.endswith("threshold") and 0 < values.min() and values.max() < 1:
        ax.set_xscale("logit")
        values = np.log(values / (1 - values))
    texts = [f"{t:g}" for t in ticks]
    span = float(np.ptp(values)) * 1.1 or 1.0  # matplotlib's 5% margin each side
    length_pt = max(panel_in - 0.8, 1.0) * 72  # the panel less its y labels
    widths = [9 * (0.64 * len(text) - 0.32 * text.count(".")) for text in texts]  # 9 pt digits, narrow dots
    keep = spaced(values / span * length_pt, widths, gap=2.0)
    ax.set_xticks(ticks, [text if shown else "" for text, shown in zip(texts, keep)], minor=False)
    ax.set_xticks([], minor=True)


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


def effects_defined(effects: pd.DataFrame, metric: str) -> bool:
    """Whether any test of ``metric`` in ``effects`` is defined (has a Holm-adjusted p-value): a
    metric whose paired differences never vary over seeds (e.g. every one is 0) has none."""
    rows = effects[effects["metric"] == metric]
    return bool(np.isfinite(pd.to_numeric(rows["p_holm"], errors="coerce").to_numpy(dtype=np.float64)).any())


def short_group(group: str) -> str:
    """A group of ``analysis.protocol.group_label`` as a row label, each value as ``point_label``
    says it: ``"10 ms poisson"`` for ``"deadline_ms=10 workload=poisson"``; ``"all"`` for the one
    group of a sweep without other axes."""
    parts = [point_label(*item.split("=", 1)) if "=" in item else item for item in str(group or "").split()]
    return " ".join(parts) or "all"


def _group_axes(group: str) -> str:
    """``"deadline (ms), workload"``: the axes a group label names, for the rows' axis label."""
    names = [item.partition("=")[0] for item in str(group or "").split() if "=" in item]
    return ", ".join(f"{n[:-3]} (ms)" if n.endswith("_ms") else n for n in names)


def effects_figure(effects: pd.DataFrame, metric: str, title: str = "") -> "Figure":
    """Forest plots of one metric's paired differences a - b: one panel per comparison, side by
    side (four to a row), one row per group (``short_group``), each the mean difference over seeds
    and its 95% interval; filled when significant (Holm-adjusted), hollow not.

    ``effects`` is ``analysis.protocol.apply_protocol``'s table (the columns of ``EFFECT_COLUMNS``
    are the ones read). Each panel is coloured as policy ``a`` and has its own x scale around the
    zero line, so a comparison whose differences are small is not flattened by a larger one: read
    the magnitudes off each panel's ticks.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    rows = effects[effects["metric"] == metric]
    pairs = list(dict.fromkeys(zip(rows["a"], rows["b"])))
    groups = list(dict.fromkeys(rows["group"]))
    ncols = max(min(len(pairs), 4), 1)
    nrows = -(-max(len(pairs), 1) // ncols)
    fig, axes = new_figures(nrows, ncols, width_in=1.4 + 2.4 * ncols,
                            height_in=nrows * (0.9 + 0.22 * len(groups)) + 0.8, sharey=True)
    for ax, (a, b) in zip(axes.flat, pairs):
        color = policy_color(a)
        for _, row in rows[(rows["a"] == a) & (rows["b"] == b)].iterrows():
            low, high = row["mean_diff"] - row["ci_low"], row["ci_high"] - row["mean_diff"]
            significant = bool(row["significant"])
            ax.errorbar([row["mean_diff"]], [groups.index(row["group"])],
                        xerr=[[np.nan_to_num(low)], [np.nan_to_num(high)]], fmt="o", color=color,
                        markerfacecolor=color if significant else "white", capsize=2.5)
        ax.axvline(0.0, color="#444444", linewidth=0.9)
        ax.grid(False, axis="y")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))  # 0.005, not 0.0025: short labels
        ax.set_title(f"{a} − {b}", fontsize=10)
        ax.set_xlabel(f"Δ {label(metric)}")
    for ax in axes.flat[len(pairs):]:
        ax.set_visible(False)
    axes[0, 0].set_yticks(range(len(groups)), [short_group(g) for g in groups])
    axes[0, 0].set_ylim(len(groups) - 0.5, -0.5)
    for ax in axes[:, 0]:
        ax.set_ylabel(_group_axes(groups[0]) if groups else "")

    marks = [Line2D([], [], marker="o", linestyle="none", color="#444444", label="significant (Holm)"),
             Line2D([], [], marker="o", linestyle="none", color="#444444", markerfacecolor="white",
                    label="not significant")]
    fig.legend(handles=marks, loc="outside lower center", ncols=2)
    fig.suptitle((title + "\n" if title else "")
                 + "difference a − b (Δ) per group: mean and 95% interval over seeds", fontsize=10)
    return fig
