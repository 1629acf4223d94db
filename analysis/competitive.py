"""Competitive ratios of a sweep: each policy's on-time accuracy over that of a bound, paired by seed.

A bound is a reference for what a class of policies can reach. ``isolation-bound`` serves each
request alone with the most accurate option that meets its deadline, as if no other request existed
(no queueing at all): no router on the same replicas can beat it. ``oracle-static`` is the best
*fixed* configuration in hindsight, every single deployment and cascade threshold simulated on the
same arrivals and the best kept: it bounds fixed configurations only, so an adaptive policy, which
changes its choice as the load moves, can exceed it (a ratio above 1; the study's planner does, in
some cells). A policy's ratio to a bound says how much of that bound's on-time accuracy it achieves.

Runs of a sweep on the same seed see the same arrivals, deadlines and samples, so the ratio is taken
per seed (paired: ``analysis.study.runs_by_seed``), then averaged over seeds with a 95% Student-t
interval (``analysis.stats``). A seed the bound lacks, or on which it scored 0, is left out, and the
``seeds`` column counts the seeds each ratio is over. A sweep without a bound gets one line saying
so instead of that column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traces.errors import InputError

from .runs import markdown_table
from .stats import Interval, mean_interval
from .study import group_axes, runs_by_seed

BOUNDS = ("isolation-bound", "oracle-static")


def _bound_label(frame: pd.DataFrame, policy_axis: str, bound: str) -> str | None:
    """The policy-axis label of a bound's runs (by ``policy.name`` when the sweep records it)."""
    names = frame["policy.name"] if "policy.name" in frame else frame[policy_axis]
    labels = frame.loc[names == bound, policy_axis].drop_duplicates()
    return None if labels.empty else str(labels.iloc[0])


@dataclass(frozen=True)
class Ratios:
    """A sweep's competitive ratios: the bounds found (name -> policy label), those missing, the
    group axes, and per (group key, policy) each bound's ratio interval (its ``n``: the seeds used)."""

    bounds: dict[str, str]
    missing: list[str]
    axes: list[str]
    rows: list[tuple[tuple, str, dict[str, Interval]]]


def _ratio(mine: pd.Series, theirs: pd.Series | None) -> Interval:
    """``mine / theirs`` per seed (both indexed by seed), mean ± 95% over the seeds where ``theirs`` > 0."""
    if theirs is None:
        return mean_interval([])
    bound = theirs.reindex(mine.index).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return mean_interval(np.where(bound > 0, mine.to_numpy(dtype=float) / bound, np.nan))


def competitive_ratios(frame: pd.DataFrame, policy_axis: str = "policy", metric: str = "ontime_accuracy") -> Ratios:
    """Per group and policy, ``metric`` over each bound's on the same seed, mean ± 95% over seeds (a
    seed whose bound scored 0, or that the bound lacks, is left out)."""
    for column in (policy_axis, "seed", metric):
        if column not in frame:
            raise InputError(f"--policy-axis {column}" if column == policy_axis else f"column {column!r}",
                             "is not a column of the sweep's results")
    found = {bound: _bound_label(frame, policy_axis, bound) for bound in BOUNDS}
    bounds = {b: label for b, label in found.items() if label is not None}
    axes = group_axes(frame, policy_axis)
    groups = (frame.groupby(axes, sort=False, dropna=False) if axes else [((), frame)]) if bounds else []
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        where = " ".join(f"{axis}={value}" for axis, value in zip(axes, key)) or "results"
        by_policy = {str(policy): runs_by_seed(runs, repr(policy), where)[metric]
                     for policy, runs in group.groupby(policy_axis, sort=False, dropna=False)}
        for policy, mine in by_policy.items():
            rows.append((key, policy, {bound: _ratio(mine, by_policy.get(label)) for bound, label in bounds.items()}))
    return Ratios(bounds, [b for b, label in found.items() if label is None], axes, rows)


def _seeds(cells: dict[str, Interval]) -> str:
    """The seeds each ratio is over: one number, or one per bound where they differ."""
    counts = list(dict.fromkeys(cell.n for cell in cells.values()))
    return str(counts[0]) if len(counts) == 1 else " / ".join(str(cell.n) for cell in cells.values())


def ratios_report(ratios: Ratios, policy_axis: str = "policy", metric: str = "ontime_accuracy") -> str:
    """Markdown: one line per missing bound, then a row per (group, policy) when a bound was found."""
    lines = [f"No `{b}` runs in this sweep: its ratio is left out." for b in ratios.missing]
    if ratios.bounds:
        header = [*ratios.axes, policy_axis, "seeds", *(f"{metric} / {b}" for b in ratios.bounds)]
        table = [[*map(str, key), policy, _seeds(cells), *(cells[b].format(4) for b in ratios.bounds)]
                 for key, policy, cells in ratios.rows]
        lines += [""] * bool(lines) + [f"{metric} over the bounds, per seed (paired), mean ± 95% interval over "
                                       "seeds (seeds: how many each ratio is over):\n\n"
                                       + markdown_table(header, table)]
    return "\n".join(lines) + "\n"
