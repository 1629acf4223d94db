"""Figures of single runs: what happened over time, and how long requests took.

A sweep's averages hide the story of a run: a burst arrives, a queue builds, the autoscaler adds a
replica a few seconds late, and the hit rate dips meanwhile. ``time_series_figure`` tells that
story on one time axis, in 1 s bins: the arrival rate, each deployment's queue length, its
replicas (only when they change: a flat line says nothing), and the hit rate of the requests
arriving in each bin. The warm-up, whose requests the summary leaves out, is shaded.

``measured_latencies`` picks what a latency CDF should show: the requests that count (arrived in
the measurement window) and were completed; a dropped request has no latency, and its miss is in
the hit rate, not in the CDF. ``seeds_latencies`` pools them over seeds, with the deadline to mark
when the measured requests share one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from traces.errors import InputError

from .figures import new_figures
from .plots_sweep import series_styles

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .runs import SeedRun

LATENCY_COLUMNS = ("latency_ms", "measured", "dropped", "deadline_ms")
TIME_COLUMNS = ("arrival_s", "hit")


def measured_latencies(requests: pd.DataFrame) -> np.ndarray:
    """``latency_ms`` of the measured, completed requests (README "Run output")."""
    keep = requests["measured"].to_numpy(dtype=bool) & ~requests["dropped"].to_numpy(dtype=bool)
    latency = requests["latency_ms"].to_numpy(dtype=np.float64)[keep]
    return latency[np.isfinite(latency)]


def seeds_latencies(runs: Sequence["SeedRun"]) -> tuple[np.ndarray, float | None]:
    """The measured, completed latencies of several seeds pooled, and the deadline (ms) when every
    measured request of them had the same one (else None): the one reader of latency CDFs, for
    ``analyse figures`` and ``analyse compare`` alike."""
    parts, deadlines = [], set()
    for run in runs:
        requests = run.read_requests(LATENCY_COLUMNS)
        parts.append(measured_latencies(requests))
        measured = requests.loc[requests["measured"].to_numpy(dtype=bool), "deadline_ms"]
        deadlines.update(np.unique(measured.dropna().to_numpy(dtype=np.float64)).tolist())
    pooled = np.concatenate(parts) if parts else np.zeros(0)
    return pooled, (deadlines.pop() if len(deadlines) == 1 else None)


def _bins(arrival_s: np.ndarray, end_s: float, bin_s: float) -> np.ndarray:
    if not np.isfinite(end_s) or end_s <= 0:
        end_s = float(arrival_s.max()) if arrival_s.size else bin_s
    return np.arange(0.0, np.ceil(end_s / bin_s) * bin_s + bin_s / 2, bin_s)


def binned_rates(requests: pd.DataFrame, bin_s: float = 1.0, end_s: float = np.nan) -> pd.DataFrame:
    """Per bin of arrival time: ``start_s``, ``arrival_rate_rps`` (arrivals / bin length) and
    ``hit_rate`` (share of the bin's arrivals that were hits; NaN for an empty bin)."""
    arrival = requests["arrival_s"].to_numpy(dtype=np.float64)
    hit = requests["hit"].to_numpy(dtype=bool)
    edges = _bins(arrival, end_s, bin_s)
    counts, _ = np.histogram(arrival, edges)
    hits, _ = np.histogram(arrival[hit], edges)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return pd.DataFrame({"start_s": edges[:-1], "arrival_rate_rps": counts / bin_s, "hit_rate": share})


def _shade_warmup(axes: Sequence["Axes"], window_s: Sequence[float] | None) -> None:
    if window_s is None or not window_s[0] > 0:
        return
    for ax in axes:
        ax.axvspan(0, window_s[0], color="#eeeeee", zorder=0, linewidth=0)


def time_series_figure(requests: pd.DataFrame, timeline: pd.DataFrame | None, *, bin_s: float = 1.0,
                       window_s: Sequence[float] | None = None, title: str = "") -> "Figure":
    """Arrival rate, queue length per deployment, replicas where they change, and hit rate over time.

    ``requests`` needs ``arrival_s`` and ``hit``; ``timeline`` (``timeline.parquet``: ``time_s``,
    ``deployment``, ``queue_length``, ``replicas``, ``ready_replicas``) may be None (a sweep's runs
    have none), and then only the two panels the requests give are drawn.
    """
    missing = [c for c in TIME_COLUMNS if c not in requests]
    if missing:
        raise InputError("requests", f"has no column {', '.join(missing)}; expected a run's requests.parquet")
    deployments = [] if timeline is None else list(dict.fromkeys(timeline["deployment"]))
    changing = [d for d in deployments
                if timeline.loc[timeline["deployment"] == d, "replicas"].nunique() > 1]
    panels = ["arrivals"] + (["queues"] if deployments else []) + (["replicas"] if changing else []) + ["hits"]
    end_s = window_s[1] if window_s is not None else np.nan
    binned = binned_rates(requests, bin_s, end_s)
    edges = np.append(binned["start_s"].to_numpy(), binned["start_s"].iloc[-1] + bin_s)
    fig, grid = new_figures(len(panels), 1, width_in=6.4, height_in=1.7 * len(panels) + 0.6, sharex=True)
    axes = dict(zip(panels, grid[:, 0]))
    axes["arrivals"].stairs(binned["arrival_rate_rps"], edges, baseline=None, color="#332288", linewidth=1.2)
    axes["arrivals"].set_ylim(bottom=0)
    axes["arrivals"].set_ylabel("arrivals (req/s)")
    styles = series_styles(deployments, policies=False)
    for name in deployments:
        mine = timeline[timeline["deployment"] == name]
        axes["queues"].step(mine["time_s"], mine["queue_length"], where="post", label=name,
                            color=styles[name]["color"])
    if deployments:
        axes["queues"].set_ylabel("queue length\n(requests)")
        axes["queues"].yaxis.get_major_locator().set_params(integer=True)
        axes["queues"].legend(loc="upper left", ncols=len(deployments), title="deployment", title_fontsize=8)
    for name in changing:
        mine = timeline[timeline["deployment"] == name]
        axes["replicas"].step(mine["time_s"], mine["replicas"], where="post", color=styles[name]["color"],
                              label=f"{name}: provisioned")
        axes["replicas"].step(mine["time_s"], mine["ready_replicas"], where="post", color=styles[name]["color"],
                              linestyle=":", label=f"{name}: ready")
    if changing:
        axes["replicas"].set_ylabel("replicas")
        axes["replicas"].yaxis.get_major_locator().set_params(integer=True)
        axes["replicas"].legend(loc="upper left", ncols=2)
    axes["hits"].stairs(binned["hit_rate"], edges, baseline=None, color="#117733", linewidth=1.2)
    axes["hits"].set_ylabel("hit rate\n(by arrival)")
    axes["hits"].set_ylim(-0.02, 1.02)
    axes["hits"].set_xlabel(f"time (s); {bin_s:g} s bins" + ("; grey: warm-up, not measured"
                                                             if window_s is not None and window_s[0] > 0 else ""))
    _shade_warmup(grid[:, 0], window_s)
    axes["hits"].set_xlim(0, edges[-1])
    if title:
        fig.suptitle(title)
    return fig
