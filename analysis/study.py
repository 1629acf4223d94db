"""Tables of a sweep's results: each policy's metrics with 95% intervals over seeds, and paired
comparisons of two policies, as Markdown.

    python -m analysis.study runs/study/results.parquet [--overall] [--pivot ontime_accuracy] [--versus planner:infaas]
                             [--out study.md]

Rows are grouped by every axis of the sweep except the policy axis and the seed (for the study:
workload and deadline); within a group there is one row per policy, in the sweep's order.

This module also holds what every analysis of a results table shares: ``read_results`` (which
refuses a table with two runs of one grid point and seed: every statistic here assumes one run
per seed, and a table of two sweeps appended would otherwise be averaged or paired silently),
``sweep_axes``, ``runs_by_seed`` (one policy's runs indexed by seed, for every paired comparison)
and ``select_where`` (``--where COLUMN=VALUE``).

``--out`` writes the same Markdown under a first line that marks it as ours (``REPORT_MARKER``),
atomically (``traces.outputs.atomic_file``): a report of ours is replaced only with ``--force``,
any other file never.
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from traces.cli import run_command, version_text
from traces.errors import InputError
from traces.outputs import atomic_file, check_file_target

from .runs import markdown_table
from .stats import mean_interval, paired_difference

METRICS = (("hit_rate", "hit rate", 4), ("accuracy", "accuracy", 4), ("ontime_accuracy", "on-time accuracy", 4),
           ("latency_ms.p99", "p99 ms", 1))
NOT_AXES = {"run_id", "seed"}
REPORT_MARKER = "<!-- written by python -m analysis.study; replaced by its --force -->"


def read_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "file not found (a sweep writes results.parquet in its --out directory)")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader error is a bad file
        raise InputError(str(path), f"cannot read as Parquet: {exc}".splitlines()[0]) from None
    for column in ("seed",) + tuple(m for m, _, _ in METRICS):
        if column not in frame:
            raise InputError(f"{path} column {column!r}", "is missing; expected a `simulate sweep` results table")
    check_one_run_per_seed(frame, str(path))
    return frame


def check_one_run_per_seed(frame: pd.DataFrame, source: str) -> None:
    """``InputError`` naming the axis values and the seed of the first grid point that has more
    than one run on one seed (the axes are ``sweep_axes``)."""
    keys = [*sweep_axes(frame), "seed"]
    sizes = frame.groupby(keys, sort=False, dropna=False).size()
    twice = sizes[sizes > 1]
    if not twice.empty:
        key = twice.index[0] if isinstance(twice.index[0], tuple) else (twice.index[0],)
        point = "".join(f"{axis}={value}, " for axis, value in zip(keys, key[:-1]))
        raise InputError(source, f"has {int(twice.iloc[0])} runs of {point}seed {key[-1]}; expected one run per "
                         "grid point and seed (a sweep's results.parquet)")


def runs_by_seed(runs: pd.DataFrame, what: str, where: str) -> pd.DataFrame:
    """``runs`` (one policy's, in one group) indexed by seed, for pairing with another's on the same
    seeds; ``InputError(where, ...)`` naming ``what`` and the seed when a seed occurs twice."""
    twice = runs["seed"][runs["seed"].duplicated()]
    if not twice.empty:
        raise InputError(where, f"{what} has seed {twice.iloc[0]} more than once; expected one run per grid "
                         "point and seed")
    return runs.set_index("seed")


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric (not boolean) columns of a results table other than its axes, seed and run id."""
    skip = {*sweep_axes(frame), *NOT_AXES}
    return [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])]


def column_hint(name: str, candidates: Sequence[str]) -> str:
    """A short phrase for an unknown column ``name``: the nearest of ``candidates`` (difflib, or
    those containing it), else the first few of them."""
    candidates = [str(c) for c in candidates]
    close = list(dict.fromkeys([*difflib.get_close_matches(name, candidates, n=3, cutoff=0.6),
                                *(c for c in candidates if name.lower() in c.lower())]))[:3]
    if close:
        return f"did you mean {' or '.join(close)}?"
    shown = ", ".join(candidates[:6])
    return f"it has {shown}" + (f", ... ({len(candidates)} in all)" if len(candidates) > 6 else "")


def _value_matches(column: pd.Series, value: str) -> pd.Series:
    """Where ``column`` equals ``value``: as numbers where both read as one (``"10"`` matches
    ``"10.0"`` and ``10.0``), else as text."""
    matches = column.astype(str) == value
    try:
        number = float(value)
    except ValueError:
        return matches
    if pd.api.types.is_bool_dtype(column):
        return matches
    cells = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    return matches | pd.Series(np.isclose(cells, number, rtol=1e-12, atol=0.0), index=column.index)


def select_where(frame: pd.DataFrame, items: Sequence[str], source: str,
                 columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of ``frame`` where every ``COLUMN=VALUE`` of ``items`` holds (``_value_matches``),
    ``COLUMN`` one of ``columns`` (default: any column). ``InputError`` for a malformed item, an
    unknown column, or a value no row has (naming the values the column has)."""
    allowed = list(frame.columns) if columns is None else list(columns)
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise InputError(f"--where {item}", "expected COLUMN=VALUE")
        if column not in allowed:
            raise InputError(f"--where {item}", f"{column!r} is not a column to select on in {source}; "
                             + column_hint(column, allowed))
        keep = _value_matches(frame[column], value)
        if not keep.any():
            values = list(dict.fromkeys(frame[column].astype(str)))
            shown = ", ".join(values[:12]) + (", ..." if len(values) > 12 else "")
            raise InputError(f"--where {item}", f"no runs of {source} have {column} = {value}; it has {shown}")
        frame = frame[keep]
    return frame


def sweep_axes(frame: pd.DataFrame) -> list[str]:
    """The grid's axes except the seed: as the sweep recorded them (``frame.attrs["axes"]``), else
    the columns between ``run_id`` and ``seed`` (a sweep writes the axes there, in order, and the
    summary's metrics after the seed, sorted by name)."""
    recorded = frame.attrs.get("axes")
    if recorded:
        return [a for a in recorded if a not in NOT_AXES and a in frame]
    columns = list(frame.columns)
    return [c for c in columns[: columns.index("seed")] if c not in NOT_AXES] if "seed" in columns else []


def group_axes(frame: pd.DataFrame, policy_axis: str) -> list[str]:
    """The axes other than the policy and the seed: the groups a policy is compared within."""
    return [a for a in sweep_axes(frame) if a != policy_axis]


def _groups(frame: pd.DataFrame, by: list[str]):
    if not by:
        yield (), frame
        return
    yield from frame.groupby(by, sort=False, dropna=False)


def policy_table(frame: pd.DataFrame, policy_axis: str = "policy", by: list[str] | None = None) -> str:
    """One Markdown row per (group, policy): each metric's mean ± 95% half-width over seeds."""
    by = group_axes(frame, policy_axis) if by is None else by
    header = [*by, policy_axis, "seeds", *(label for _, label, _ in METRICS)]
    rows = []
    for key, group in _groups(frame, by):
        key = key if isinstance(key, tuple) else (key,)
        for policy, runs in group.groupby(policy_axis, sort=False):
            cells = [mean_interval(runs[m]).format(d) for m, _, d in METRICS]
            rows.append([*map(str, key), str(policy), str(len(runs)), *cells])
    return markdown_table(header, rows)


def pivot_table(frame: pd.DataFrame, metric: str, policy_axis: str = "policy", by: list[str] | None = None,
                digits: int = 4) -> str:
    """One row per policy, one column per group: ``metric``'s mean ± 95% half-width over seeds."""
    by = group_axes(frame, policy_axis) if by is None else by
    groups = [(key if isinstance(key, tuple) else (key,), group) for key, group in _groups(frame, by)]
    header = [policy_axis] + [" ".join(map(str, key)) for key, _ in groups]
    rows = []
    for policy in frame[policy_axis].drop_duplicates():
        cells = [mean_interval(g.loc[g[policy_axis] == policy, metric]).format(digits) for _, g in groups]
        rows.append([str(policy), *cells])
    return markdown_table(header, rows)


def versus_table(frame: pd.DataFrame, a: str, b: str, policy_axis: str = "policy", by: list[str] | None = None) -> str:
    """``a`` minus ``b`` per group, paired by seed: mean ± 95% half-width, wins/losses, p-value."""
    by = group_axes(frame, policy_axis) if by is None else by
    known = set(frame[policy_axis])
    for name in (a, b):
        if name not in known:
            raise InputError(f"--versus {a}:{b}", f"no runs of {name!r}; the {policy_axis} axis has {sorted(known)}")
    header = [*by] + [f"{label}: {a} − {b} (wins/losses, p)" for m, label, _ in METRICS if m != "accuracy"]
    rows = []
    for key, group in _groups(frame, by):
        key = key if isinstance(key, tuple) else (key,)
        where = " ".join(f"{axis}={value}" for axis, value in zip(by, key)) or "results"
        left = runs_by_seed(group[group[policy_axis] == a], repr(a), where)
        right = runs_by_seed(group[group[policy_axis] == b], repr(b), where)
        seeds = left.index.intersection(right.index).sort_values()
        cells = []
        for metric, _, digits in METRICS:
            if metric == "accuracy":
                continue
            diff = paired_difference(left.loc[seeds, metric], right.loc[seeds, metric])
            p = "-" if math.isnan(diff.p_value) else f"{diff.p_value:.2g}"
            cells.append(f"{diff.difference.format(digits)} ({diff.wins}/{diff.losses}, p={p})")
        rows.append([*map(str, key), *cells])
    return markdown_table(header, rows)


def overall_table(frame: pd.DataFrame, policy_axis: str = "policy", by: list[str] | None = None) -> str:
    """One row per policy over every group at once: each metric averaged over the groups within a
    seed (every policy sees the same groups and seeds), then mean ± 95% half-width over the seeds.
    Averaging within the seed first keeps the interval about seeds, not about how the groups differ."""
    by = group_axes(frame, policy_axis) if by is None else by
    groups = frame[by].drop_duplicates().shape[0] if by else 1
    header = [policy_axis, "groups", "seeds", *(label for _, label, _ in METRICS)]
    rows = []
    for policy, runs in frame.groupby(policy_axis, sort=False):
        per_seed = runs.groupby("seed")[[m for m, _, _ in METRICS]].mean()
        cells = [mean_interval(per_seed[m]).format(d) for m, _, d in METRICS]
        rows.append([str(policy), str(groups), str(len(per_seed)), *cells])
    return markdown_table(header, rows)


def report(frame: pd.DataFrame, versus: list[tuple[str, str]], policy_axis: str = "policy",
           pivots: list[str] = (), overall: bool = False) -> str:
    parts = ["Every group at once (each seed's mean over the groups):\n\n" + overall_table(frame, policy_axis) + "\n"
             ] if overall else []
    parts += [f"{metric} by policy:\n\n" + pivot_table(frame, metric, policy_axis) + "\n" for metric in pivots]
    parts.append(policy_table(frame, policy_axis))
    for a, b in versus:
        parts.append(f"\n{a} against {b}, paired by seed:\n\n" + versus_table(frame, a, b, policy_axis))
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a sweep's results.parquet")
    parser.add_argument("--version", action="version", version=version_text("python -m analysis.study"))
    parser.add_argument("--policy-axis", default="policy")
    parser.add_argument("--versus", action="append", default=[], metavar="A:B",
                        help="add a paired comparison of policy A against policy B (repeatable)")
    parser.add_argument("--overall", action="store_true",
                        help="first a table of each policy over every group at once (seeds' means over the groups)")
    parser.add_argument("--pivot", action="append", default=[], metavar="METRIC",
                        help="add a policy x group table of one metric (e.g. ontime_accuracy; repeatable)")
    parser.add_argument("--out", help="also write the Markdown to this file (atomically; never over a file not "
                                      "written by this command)")
    parser.add_argument("--force", action="store_true", help="replace an earlier report of this command at --out")
    args = parser.parse_args(argv)
    return run_command(lambda: _report_command(args))


def _report_command(args) -> int:
    if args.out:  # checked before the results are read
        check_file_target(args.out, force=args.force, marker_line=REPORT_MARKER)
    frame = read_results(args.results)
    if args.policy_axis not in frame:
        raise InputError(f"--policy-axis {args.policy_axis}", f"is not a column of {args.results}")
    pairs = []
    for item in args.versus:
        a, sep, b = item.partition(":")
        if not sep or not a or not b:
            raise InputError(f"--versus {item}", "expected A:B, two policy labels")
        pairs.append((a, b))
    for metric in args.pivot:
        if metric not in frame:
            raise InputError(f"--pivot {metric}", f"is not a column of {args.results}")
    text = report(frame, pairs, args.policy_axis, args.pivot, args.overall)
    if args.out:
        with atomic_file(args.out, force=args.force, marker_line=REPORT_MARKER) as tmp:
            tmp.write_text(REPORT_MARKER + "\n" + text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
