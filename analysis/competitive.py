"""Competitive ratios of a sweep: each policy's on-time accuracy over that of a bound, paired by seed.

A bound is a policy no real router can beat on its own terms: ``isolation-bound`` serves each request
alone with the most accurate option that meets its deadline, as if no other request existed (no
queueing at all); ``oracle-static`` is the best fixed configuration in hindsight, every single
deployment and cascade threshold simulated on the same arrivals and the best kept. A policy's ratio
to a bound says how much of the reachable on-time accuracy it achieves: 1 is as good as the bound.

Runs of a sweep on the same seed see the same arrivals, deadlines and samples, so the ratio is taken
per seed (paired), then averaged over seeds with a 95% Student-t interval (``analysis.stats``). A seed
the bound lacks, or on which it scored 0, is left out. A sweep without a bound gets one line saying
so instead of that column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traces.errors import InputError

from .runs import markdown_table
from .stats import Interval, mean_interval
from .study import group_axes

BOUNDS = ("isolation-bound", "oracle-static")


def _bound_label(frame: pd.DataFrame, policy_axis: str, bound: str) -> str | None:
    """The policy-axis label of a bound's runs (by ``policy.name`` when the sweep records it)."""
    names = frame["policy.name"] if "policy.name" in frame else frame[policy_axis]
    labels = frame.loc[names == bound, policy_axis].drop_duplicates()
    return None if labels.empty else str(labels.iloc[0])


@dataclass(frozen=True)
class Ratios:
    """A sweep's competitive ratios: the bounds found (name -> policy label), those missing, the
    group axes, and per (group key, policy) its seeds and each bound's ratio interval."""

    bounds: dict[str, str]
    missing: list[str]
    axes: list[str]
    rows: list[tuple[tuple, str, int, dict[str, Interval]]]


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
    rows = []
    for key, group in (frame.groupby(axes, sort=False) if axes and bounds else [((), frame)] if bounds else []):
        per_seed = group.groupby([policy_axis, "seed"], sort=False)[metric].mean()
        labels = set(per_seed.index.get_level_values(0))
        for policy in group[policy_axis].drop_duplicates():
            mine = per_seed.loc[policy]
            cells = {}
            for bound, label in bounds.items():
                theirs = (per_seed.loc[label].reindex(mine.index) if label in labels else mine * np.nan).to_numpy()
                with np.errstate(divide="ignore", invalid="ignore"):
                    cells[bound] = mean_interval(np.where(theirs > 0, mine.to_numpy() / theirs, np.nan))
            rows.append((key if isinstance(key, tuple) else (key,), str(policy), len(mine), cells))
    return Ratios(bounds, [b for b, label in found.items() if label is None], axes, rows)


def ratios_report(ratios: Ratios, policy_axis: str = "policy", metric: str = "ontime_accuracy") -> str:
    """Markdown: one line per missing bound, then a row per (group, policy) when a bound was found."""
    lines = [f"No `{b}` runs in this sweep: its ratio is left out." for b in ratios.missing]
    if ratios.bounds:
        header = [*ratios.axes, policy_axis, "seeds", *(f"{metric} / {b}" for b in ratios.bounds)]
        table = [[*map(str, key), policy, n, *(cells[b].format(4) for b in ratios.bounds)]
                 for key, policy, n, cells in ratios.rows]
        lines += [""] * bool(lines) + [f"{metric} over the bounds, per seed (paired), mean ± 95% interval over "
                                       f"seeds:\n\n" + markdown_table(header, table)]
    return "\n".join(lines) + "\n"
