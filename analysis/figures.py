"""Figures of runs and sweeps: one style, one colour per policy, the same bytes for the same data.

A figure is read twice: on screen while a study is under way, and in print once it is written up.
Both want the same things: fonts of 10-11 pt at the size the figure is shown (so figures are made
at their final size in inches, never scaled), a light grid to read values off, axes labelled with
their units, and colours a colour-blind reader can tell apart. A policy keeps one colour in every
figure (``policy_color``), so a reader who learnt that the planner is blue in the first figure need
not read the legend again in the fifth.

The figures are ``matplotlib.figure.Figure`` objects made without pyplot's global figure list, and
saved by the Agg renderer, so nothing opens a window and nothing leaks between figures. The style
is set in matplotlib's ``rcParams`` when a figure is made (``STYLE``).
``save_figure`` writes PNGs without a timestamp or a software version in their metadata: the same
data gives the same bytes, so a figure checked into ``docs/`` changes only when its data does.

A few values far from the rest would squash the rest into a line: one policy on time 2% of the
time beside eight at 96-100% leaves the differences that matter (97% against 99%) a pixel apart.
``off_scale`` picks such points by a stated rule (a wide gap beside a narrow rest) and
``focus_axis`` fits the axis to the rest (``focus_limits``) and draws each far point at the edge as
a triangle pointing off it, in its series' colour, with its value written beside it. A log axis
(``log_axis_if_wide``) needs none of this: it is used where the values span decades.

Labels that would overlap are thinned: ``spaced`` keeps tick labels apart along an axis, and
``label_groups`` joins points too close to carry a label each (the Pareto figure numbers them).

This module holds the shared pieces (style, colours, saving, off-scale marks, label spacing, the
latency CDF); the figures of a sweep live in ``analysis/plots_*.py`` and
``analysis/figures_cli.py`` chooses among them.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # matplotlib is imported when a figure is made, so `analyse --help` stays fast
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 150

# Paul Tol's "muted" qualitative scheme: colour-blind safe and readable on white. The policies of
# the registry each have one of its colours (the ones seen most, planner, infaas and static, the
# darkest), the two bounds black and grey, as the references they are. Any other name gets a colour
# of the scheme from its hash (``policy_color``). Ordered darkest first, so series that are not
# policies (thresholds, loads) take the easily read colours first.
_MUTED = ("#332288", "#CC6677", "#117733", "#882255", "#44AA99", "#999933", "#AA4499", "#88CCEE", "#DDCC77")
POLICY_COLORS: dict[str, str] = {
    "planner": "#332288",
    "infaas": "#CC6677",
    "static": "#117733",
    "degrade": "#882255",
    "static-small": "#44AA99",
    "static-large": "#999933",
    "aimd-batching": "#AA4499",
    "throughput-autotuner": "#88CCEE",
    "oracle-static": "#000000",
    "isolation-bound": "#777777",
}
BOUNDS = ("oracle-static", "isolation-bound")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "axes.grid": True,
    "grid.color": "#d0d0d0",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}


def policy_color(name: str) -> str:
    """The colour of policy ``name`` in every figure (a stable pick from the scheme for an unknown one)."""
    if name in POLICY_COLORS:
        return POLICY_COLORS[name]
    return _MUTED[zlib.crc32(name.encode("utf-8")) % len(_MUTED)]


def series_colors(names, policies: bool = True) -> dict[str, str]:
    """A colour per name, distinct within one figure. Policies: a known policy's own; any other
    name its ``policy_color`` unless a name before it took that colour, then the scheme's next free
    one. Not policies (``policies=False``, e.g. thresholds): the scheme in order, darkest first."""
    if not policies:
        return {name: _MUTED[k % len(_MUTED)] for k, name in enumerate(names)}
    colors: dict[str, str] = {}
    taken = {POLICY_COLORS[n] for n in names if n in POLICY_COLORS}
    for name in names:
        if name in POLICY_COLORS:
            colors[name] = POLICY_COLORS[name]
            continue
        start = _MUTED.index(policy_color(name))
        free = [c for k in range(len(_MUTED)) if (c := _MUTED[(start + k) % len(_MUTED)]) not in taken]
        colors[name] = free[0] if free else policy_color(name)
        taken.add(colors[name])
    return colors


def policy_marker(name: str) -> str:
    """A marker per policy, so policies stay apart in grey print too."""
    order = list(POLICY_COLORS)
    index = order.index(name) if name in order else zlib.crc32(name.encode("utf-8"))
    return _MARKERS[index % len(_MARKERS)]


def policy_linestyle(name: str) -> str:
    """Bounds are dashed: they are references, not policies one could deploy."""
    return "--" if name in BOUNDS else "-"


def _apply_style() -> None:
    """Set the style in matplotlib's rcParams (artists read them when they are made)."""
    import matplotlib
    from cycler import cycler

    style = dict(STYLE, **{"axes.prop_cycle": cycler(color=list(_MUTED))})
    matplotlib.rcParams.update(style)


def new_figures(nrows: int = 1, ncols: int = 1, width_in: float = 6.4, height_in: float = 4.0,
                **subplots) -> tuple["Figure", np.ndarray]:
    """A styled figure with a grid of axes (always a 2-D array of them)."""
    _apply_style()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplots)
    return fig, axes


def new_figure(width_in: float = 6.4, height_in: float = 4.0) -> tuple["Figure", "Axes"]:
    """A styled figure with one axes: 10-11 pt fonts, grid, the colour-blind-safe palette."""
    fig, axes = new_figures(1, 1, width_in, height_in)
    return fig, axes[0, 0]


def save_figure(fig: "Figure", path: str | Path) -> None:
    """Write ``fig`` as a PNG (150 dpi, tight box, no timestamp or version in it), then close it."""
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05,
                metadata={"Software": None})
    _close(fig)


def _close(fig: "Figure") -> None:
    """Drop ``fig`` from pyplot's figure list, if a caller made it through pyplot (ours are not in it)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def empirical_cdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted finite values and the share of values <= each (the empirical CDF's steps)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    x = x[np.isfinite(x)]
    return x, np.arange(1, x.size + 1) / x.size


def log_axis_if_wide(ax: "Axes", values, axis: str = "x") -> bool:
    """Put ``axis`` ("x" or "y") on a log scale, labelled with plain numbers (20, not 2x10^1), when
    the positive ``values`` span more than a decade; True when it did."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size or values.min() <= 0 or values.max() / values.min() <= 10:
        return False
    from matplotlib.ticker import FuncFormatter

    decades = np.log10(values.max() / values.min())
    getattr(ax, f"set_{axis}scale")("log")
    scale = getattr(ax, f"{axis}axis")
    scale.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # over up to three decades the powers of ten alone are too few: also label the 2s and 5s
    scale.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if decades <= 3 and f"{v:.0e}"[0] in "25" else ""))
    return True


EDGE = 0.03        # where an off-scale mark sits, as a share of the axis from its edge
TEXT_ROW = 0.065   # the height of one line of off-scale text, as a share of a ~3.5 in axis
X_BAND = 0.3       # the share of a horizontal axis kept free at an edge for its marks and values


def off_scale(means, half_widths=None, *, ratio: float = 3.0, min_share: float = 0.1) -> np.ndarray:
    """Which points to draw at the edge of their axis instead of in place: -1 at the low edge, +1
    at the high edge, 0 in place (the axis is then fitted to these, ``focus_limits``).

    At each end of the sorted finite ``means``, the ``k`` most extreme go off scale when the gap
    from them to the rest (to the rest's nearest interval end, ``half_widths`` included) is both
    more than ``ratio`` times the rest's span (intervals included: showing them would leave the
    rest under 1 / (1 + ratio) of the axis) and more than ``min_share`` of the largest |mean|
    (so values a few per cent apart near 1 are never "far"). ``k`` is at most a quarter of the
    points, and one from three points on; of the ``k`` that qualify, the largest. The rest leaves
    out what the other end sends off (repeated until neither end changes). A rest of zero span has
    no differences to show, so it never sends anything off scale; NaN means stay 0.
    """
    means = np.asarray(means, dtype=np.float64)
    halves = np.zeros_like(means) if half_widths is None else np.nan_to_num(
        np.asarray(half_widths, dtype=np.float64), nan=0.0)
    side = np.zeros(means.size, dtype=int)
    finite = np.flatnonzero(np.isfinite(means))
    n = finite.size
    if n < 3:
        return side
    order = finite[np.argsort(means[finite], kind="stable")]
    mean, low, high = means[order], means[order] - halves[order], means[order] + halves[order]
    scale = float(np.abs(mean).max())

    def cut(at_low: bool, other: int) -> int:
        """How many to send off at one end, the other end's ``other`` off already."""
        for k in range(max(1, n // 4), 0, -1):
            rest = slice(k, n - other) if at_low else slice(other, n - k)
            gap = float(low[rest].min() - mean[k - 1] if at_low else mean[n - k] - high[rest].max())
            span = float(high[rest].max() - low[rest].min())
            if span > 0 and gap > ratio * span and gap > min_share * scale:
                return k
        return 0

    below = above = 0
    while (cuts := (cut(True, above), cut(False, below))) != (below, above):
        below, above = cuts  # a cut at one end narrows the rest the other end is measured against
    side[order[:below]] = -1
    side[order[n - above:]] = 1
    return side


def text_lines(side, names=None) -> tuple[int, int]:
    """How many lines of off-scale text ``focus_axis`` writes at the low and the high edge:
    one per name with a point there (one per point when ``names`` is None)."""
    side = np.asarray(side)
    names = np.arange(side.size) if names is None else np.asarray(names, dtype=object)
    return len(set(names[side < 0])), len(set(names[side > 0]))


def focus_limits(means, half_widths, side, bands: tuple[float, float], margin: float = 0.05) -> tuple[float, float]:
    """Axis limits that hold the in-place points (``side == 0``) with their intervals, leaving
    ``bands`` (shares of the axis) free at the low and high edge for off-scale marks (``margin``
    where a band is 0)."""
    means = np.asarray(means, dtype=np.float64)
    halves = np.nan_to_num(np.asarray(half_widths, dtype=np.float64), nan=0.0)
    kept = (np.asarray(side) == 0) & np.isfinite(means)
    low, high = float((means - halves)[kept].min()), float((means + halves)[kept].max())
    below, above = (band if band > 0 else margin for band in bands)
    total = max(high - low, abs(high) * 1e-9, 1e-12) / (1.0 - below - above)
    return low - below * total, high + above * total


def short_number(value: float, sign: bool = False) -> str:
    """``0.083``, ``0.27``, ``12``, ``1,227``: two significant digits below 100, whole numbers
    above, negatives with a minus sign (−, as on the axes); ``sign`` writes + before positive
    values (for differences)."""
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2g}"
    return ("+" if sign and value > 0 else "") + text.replace("-", "−")


def focus_axis(ax: "Axes", axis: str, at, means, half_widths, side, colors, names=None,
               fmt=short_number) -> None:
    """Fit ``axis`` ("x" or "y") of ``ax`` to the in-place points and draw the off-scale ones
    (``side`` from ``off_scale``) at its edges: a triangle pointing off the axis in the point's
    colour, at ``at`` along the other axis. Their values are written by the marks: on a vertical
    axis one line per name and edge listing the values in the order of ``at``
    (``"static-large: 0.083, 0.19"``), stacked away from the edge; on a horizontal axis, or when
    ``names`` is None, each beside its own mark. Does nothing when no point is off scale."""
    side = np.asarray(side)
    if not side.any():
        return
    lines = text_lines(side, names)
    if axis == "y":
        bands = tuple(EDGE + TEXT_ROW * (count + 0.9) if count else 0.0 for count in lines)
    else:
        bands = tuple(X_BAND if count else 0.0 for count in lines)
    getattr(ax, f"set_{axis}lim")(*focus_limits(means, half_widths, side, bands))
    at, means, colors = np.asarray(at, dtype=np.float64), np.asarray(means, dtype=np.float64), list(colors)
    for edge in (-1, 1):
        points = sorted(np.flatnonzero(side == edge), key=lambda i: at[i])
        if not points:
            continue
        place = EDGE if edge < 0 else 1.0 - EDGE
        if axis == "y":
            _marks_on_y(ax, points, at, means, colors, names, fmt, place, edge)
        else:
            _marks_on_x(ax, points, at, means, colors, fmt, place, edge)


def halo() -> list:
    """A white outline for text drawn over data or grid lines (as ``path_effects``)."""
    from matplotlib.patheffects import withStroke

    return [withStroke(linewidth=2.5, foreground="white")]


def _marks_on_y(ax, points, at, means, colors, names, fmt, place, edge) -> None:
    transform = ax.get_xaxis_transform()  # x in data, y as a share of the axes
    for i in points:
        ax.plot([at[i]], [place], marker="v" if edge < 0 else "^", color=colors[i], markersize=6,
                linestyle="none", transform=transform, clip_on=False, zorder=4)
    keys = [i if names is None else names[i] for i in points]
    groups = [[j for j, key in zip(points, keys) if key == group] for group in dict.fromkeys(keys)]
    ax.get_xlim()  # settle the autoscaled limits before reading where a mark falls
    to_axes = ax.transScale + ax.transLimits
    for line, group in enumerate(groups):
        values = ", ".join(fmt(means[j]) for j in group)
        text = values if names is None else f"{names[group[0]]}: {values}"
        left = to_axes.transform((at[group[0]], 1.0))[0] <= 0.5
        anchor = at[group[0]] if left else at[group[-1]]
        y = place - edge * TEXT_ROW * (line + 0.6)
        ax.text(anchor, y, text, transform=transform, ha="left" if left else "right", va="center",
                fontsize=8, color=colors[group[0]], zorder=4, path_effects=halo())


def _marks_on_x(ax, points, at, means, colors, fmt, place, edge) -> None:
    transform = ax.get_yaxis_transform()  # x as a share of the axes, y in data
    for i in points:
        ax.plot([place], [at[i]], marker="<" if edge < 0 else ">", color=colors[i], markersize=6,
                linestyle="none", transform=transform, clip_on=False, zorder=4)
        ax.annotate(fmt(means[i]), (place, at[i]), xycoords=transform, textcoords="offset points",
                    xytext=(6 if edge < 0 else -6, 0), ha="left" if edge < 0 else "right", va="center",
                    fontsize=8, color=colors[i], path_effects=halo())


def spaced(positions, widths, gap: float = 0.0) -> np.ndarray:
    """Which labels to keep so that none overlaps another: labels centred at ``positions``
    (ascending), ``widths`` wide, ``gap`` apart at least, all in one unit (e.g. points). Greedy
    from the first; the last is always kept, dropping the kept one before it if the two overlap."""
    positions, widths = np.asarray(positions, dtype=np.float64), np.asarray(widths, dtype=np.float64)
    keep = np.zeros(positions.size, dtype=bool)

    def apart(i: int, j: int) -> bool:
        return abs(positions[j] - positions[i]) >= (widths[i] + widths[j]) / 2 + gap

    last = None
    for i in range(positions.size):
        if last is None or apart(last, i):
            keep[i], last = True, i
    if positions.size and not keep[-1]:  # the last kept one is the one in its way
        keep[last], keep[-1] = False, True
    return keep


def label_groups(points, min_gap: float) -> list[list[int]]:
    """Points (rows of x, y in one unit, e.g. shares of the axes) taken in order, grouped so that
    each group shares one label: a point joins the current group when it lies within ``min_gap``
    of the group's first point, else it starts a new one."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    groups: list[list[int]] = []
    for i, point in enumerate(points):
        if groups and np.hypot(*(point - points[groups[-1][0]])) < min_gap:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def latency_cdf_figure(latencies_ms: dict[str, np.ndarray], title: str,
                       deadline_ms: float | None = None, *, policies: bool = True) -> "Figure":
    """Empirical latency CDFs overlaid, one per key, the deadline as a vertical line; the x axis is
    logarithmic when the latencies span more than a decade. Keys are policy names (each in its own
    colour, bounds dashed) unless ``policies`` is False (e.g. thresholds: the scheme in order). The
    legend sits right of the axes, where it covers no curve, and names a series whose latencies
    are those of one before it (its curve lies hidden under that one's)."""
    fig, ax = new_figure(width_in=8.4)
    low, high = np.inf, -np.inf
    colors = series_colors(list(latencies_ms), policies)
    drawn: dict[str, np.ndarray] = {}
    for name, values in latencies_ms.items():
        x, share = empirical_cdf(values)
        if x.size == 0:
            continue
        low, high = min(low, x[0]), max(high, x[-1])
        same = next((other for other, seen in drawn.items() if np.array_equal(seen, x)), None)
        drawn[name] = x
        ax.step(x, share, where="post", label=f"{name} (n={x.size:,}" + (f"; same as {same})" if same else ")"),
                color=colors[name], linestyle=policy_linestyle(name) if policies else "-")
    if deadline_ms is not None:
        ax.axvline(deadline_ms, color="#444444", linestyle=":", linewidth=1.2, label=f"deadline {deadline_ms:g} ms")
    if np.isfinite(low):
        log_axis_if_wide(ax, [low, high], "x")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of completed requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right upper")
    return fig
