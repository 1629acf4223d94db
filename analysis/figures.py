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

This module holds the shared pieces (style, colours, saving, the latency CDF); the figures of a
sweep live in ``analysis/plots_*.py`` and ``analysis/figures_cli.py`` chooses among them.
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
    # over a decade or two the powers of ten alone are too few: also label the 2s and 5s
    scale.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if decades <= 2 and f"{v:.0e}"[0] in "25" else ""))
    return True


def latency_cdf_figure(latencies_ms: dict[str, np.ndarray], title: str,
                       deadline_ms: float | None = None, *, policies: bool = True) -> "Figure":
    """Empirical latency CDFs overlaid, one per key, the deadline as a vertical line; the x axis is
    logarithmic when the latencies span more than a decade. Keys are policy names (each in its own
    colour, bounds dashed) unless ``policies`` is False (e.g. thresholds: the scheme in order)."""
    fig, ax = new_figure()
    low, high = np.inf, -np.inf
    colors = series_colors(list(latencies_ms), policies)
    for name, values in latencies_ms.items():
        x, share = empirical_cdf(values)
        if x.size == 0:
            continue
        low, high = min(low, x[0]), max(high, x[-1])
        ax.step(x, share, where="post", label=f"{name} (n={x.size})", color=colors[name],
                linestyle=policy_linestyle(name) if policies else "-")
    if deadline_ms is not None:
        ax.axvline(deadline_ms, color="#444444", linestyle=":", linewidth=1.2, label=f"deadline {deadline_ms:g} ms")
    if np.isfinite(low):
        log_axis_if_wide(ax, [low, high], "x")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of completed requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return fig
