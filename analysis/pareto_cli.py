"""`analyse pareto`: the Pareto front of a sweep's grid points, and how each method's points compare.

    analyse pareto runs/study/results.parquet --objectives ontime_accuracy:max,cost.total:min
                   [--by policy] [--where workload=bursty ...] [--reference 0.9,0.01] [--out pareto.md --force]

A sweep's results table (``simulate sweep``) has one row per run. Here a *point* is one grid point
(every axis value except the seed) with each objective averaged over its seeds. ``--by`` names the
column that sorts points into groups (methods; default the ``policy`` axis), so the points of one
policy are its settings across the other axes (deadlines, workloads, loads). ``--where`` keeps only
the rows where a column has a value, e.g. one workload, before anything is averaged
(``analysis.study.select_where``: ``requests.deadline_ms=10`` matches the label ``"10.0"``).

The report (Markdown): every point, with its group and whether it is on the front of all points;
each group's hypervolume against one reference point shared by all groups (``--reference``, or by
default each objective's worst value over all points, stated in the report), with the union of all
points as the last row; and the dominance-ratio matrix between groups. The concepts: ``analysis.pareto``.

``--out`` writes the same Markdown under a marker first line, atomically: a report of ours is
replaced only with ``--force``, any other file never.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from traces.errors import InputError

from .runs import markdown_table

if TYPE_CHECKING:  # numpy and pandas are imported where used, so that `analyse --help` stays fast
    import numpy as np
    import pandas as pd

EXAMPLES = """examples:
  analyse pareto runs/study/results.parquet --objectives ontime_accuracy:max,cost.total:min
  analyse pareto runs/study/results.parquet --objectives ontime_accuracy:max,latency_ms.p99:min \\
      --where workload=bursty --reference 0.9,100
  analyse pareto runs/study/results.parquet --objectives hit_rate:max,cost.total:min --out pareto.md
"""
REPORT_MARKER = "<!-- written by analyse pareto; replaced by its --force -->"


@dataclass(frozen=True)
class Objective:
    column: str
    maximize: bool

    def label(self) -> str:
        return f"{self.column} ({'max' if self.maximize else 'min'})"


def add_arguments(parser) -> None:
    parser.add_argument("results", help="a sweep's results.parquet")
    parser.add_argument("--objectives", required=True, metavar="COLUMN:max|min,...",
                        help="the metrics compared, each to maximise or minimise, "
                             "e.g. ontime_accuracy:max,cost.total:min")
    parser.add_argument("--by", default="policy", metavar="COLUMN",
                        help="the column whose values group points into methods (default: policy)")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="keep only the runs where COLUMN equals VALUE (repeatable; all must hold)")
    parser.add_argument("--reference", metavar="V1,V2,...",
                        help="the hypervolume reference point, one value per objective in their order "
                             "(default: each objective's worst value over all points)")
    parser.add_argument("--out", help="also write the Markdown to this file (atomically; never over a file not "
                                      "written by this command)")
    parser.add_argument("--force", action="store_true", help="replace an earlier report of this command at --out")


def parse_objectives(text: str) -> list[Objective]:
    """``"a:max,b.c:min"`` -> objectives in that order; a bad item raises ``InputError``."""
    objectives: list[Objective] = []
    for item in text.split(","):
        column, _, direction = item.strip().rpartition(":")
        if not column or direction not in ("max", "min"):
            raise InputError(f"--objectives {text}", f"item {item.strip()!r} is not COLUMN:max or COLUMN:min "
                             "(comma-separated, e.g. ontime_accuracy:max,cost.total:min)")
        if column in {o.column for o in objectives}:
            raise InputError(f"--objectives {text}", f"names {column!r} twice")
        objectives.append(Objective(column, direction == "max"))
    return objectives


def parse_reference(text: str, objectives: list[Objective]) -> np.ndarray:
    """``"0.9,0.01"`` -> one finite number per objective, or ``InputError``."""
    import numpy as np

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"--reference {text}", "expected comma-separated numbers, one per objective") from None
    if len(values) != len(objectives):
        raise InputError(f"--reference {text}", f"has {len(values)} value(s); --objectives names {len(objectives)} "
                         f"({', '.join(o.column for o in objectives)})")
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"--reference {text}", "values must be finite numbers")
    return np.array(values)


def _column(frame: pd.DataFrame, column: str, option: str, results: str, numeric: bool = False) -> None:
    """``InputError`` unless ``column`` is one of ``frame``'s, in one short line: the nearest columns
    (difflib), else a few of the numeric metric columns (``numeric``) or of all columns."""
    if column in frame:
        return
    from .study import column_hint, metric_columns

    hint = column_hint(column, metric_columns(frame) if numeric else list(frame.columns))
    raise InputError(option, f"{column!r} is not a column of {results}; {hint}")


def grid_points(frame: pd.DataFrame, objectives: list[Objective], by: str, results: str) -> pd.DataFrame:
    """One row per grid point: its axis values, ``seeds`` (runs averaged) and each objective's mean."""
    import pandas as pd

    if by == "seed":
        raise InputError("--by seed", "points are averaged over seeds; group by another column (e.g. policy)")
    _column(frame, by, f"--by {by}", results)
    columns = [o.column for o in objectives]
    for column in columns:
        _column(frame, column, f"--objectives {column}", results, numeric=True)
        if not pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]):
            raise InputError(f"--objectives {column}", f"column {column!r} of {results} is not numeric")
    missing = frame[columns].isna().any(axis=1)
    if missing.any():
        row = frame[missing].iloc[0]
        name = row["run_id"] if "run_id" in frame else f"row {frame.index[missing][0]}"
        empty = ", ".join(c for c in columns if pd.isna(row[c]))
        raise InputError(f"{results} run {name}", f"has no value (NaN) for {empty}; leave such runs out with --where")
    from .study import check_one_run_per_seed, sweep_axes

    check_one_run_per_seed(frame, results)
    keys = [by] + [a for a in sweep_axes(frame) if a != by]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    points = grouped[columns].mean()
    points.insert(0, "seeds", grouped.size())
    return points.reset_index()


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.6g}"


def _points_table(points: pd.DataFrame, columns: list[str], by: str, varying: list[str], on_front) -> str:
    rows = [[*(str(points.at[i, c]) for c in [by, *varying]), str(points.at[i, "seeds"]),
             *(_number(points.at[i, c]) for c in columns), "yes" if on_front[k] else ""]
            for k, i in enumerate(points.index)]
    return markdown_table([by, *varying, "seeds", *columns, "on front"], rows)


def _hypervolume_table(values: np.ndarray, masks: dict, on_front, reference, maximize, by: str) -> str:
    """Each group's hypervolume, then that of all points (the ``all`` row) and each one's share of it."""
    import numpy as np

    from .pareto import hypervolume

    total = hypervolume(values, reference, maximize)
    rows = []
    for name, mask in [*masks.items(), ("all", np.ones(len(values), dtype=bool))]:
        volume = hypervolume(values[mask], reference, maximize)
        share = volume / total if total > 0 else math.nan
        rows.append([str(name), str(int(mask.sum())), str(int(on_front[mask].sum())), _number(volume), _number(share)])
    return markdown_table([by, "points", "on front", "hypervolume", "share of all"], rows)


def _ratio_table(values: np.ndarray, masks: dict, maximize, by: str) -> str:
    from .pareto import dominance_ratio

    rows = [[str(a), *("-" if a == b else _number(dominance_ratio(values[masks[a]], values[masks[b]], maximize))
                       for b in masks)] for a in masks]
    return markdown_table([f"{by} (row dominates column)", *map(str, masks)], rows)


def _reference_text(columns: list[str], values: np.ndarray, reference, source: str, maximize) -> str:
    """The sentence that states the reference point (and why every hypervolume is 0, when it is)."""
    import numpy as np

    from .pareto import hypervolume

    text = (f"up to the reference point {', '.join(f'{c}={_number(v)}' for c, v in zip(columns, reference))} "
            f"({source}; a point not strictly better than it in every objective adds nothing).")
    if hypervolume(values, reference, maximize) == 0:
        flat = [c for c, v in zip(columns, values.T) if np.ptp(v) == 0]
        why = f" ({', '.join(flat)} has one value over all points)" if flat else ""
        text += (f" Every hypervolume is 0: no point beats the reference in every objective{why}; "
                 "give a worse --reference.")
    return text


def report(points: pd.DataFrame, objectives: list[Objective], by: str, reference: np.ndarray | None,
           header: str) -> str:
    """The Markdown report of ``grid_points``: points, hypervolumes, dominance ratios."""
    import numpy as np

    from .pareto import nadir_reference, pareto_front

    maximize = tuple(o.maximize for o in objectives)
    columns = [o.column for o in objectives]
    values = points[columns].to_numpy(dtype=np.float64)
    on_front = pareto_front(values, maximize)
    if reference is None:
        reference, source = nadir_reference(values, maximize), "each objective's worst value over all points"
    else:
        source = "given by --reference"
    axes = [c for c in points.columns[: points.columns.get_loc("seeds")] if c != by]
    varying = [a for a in axes if points[a].nunique(dropna=False) > 1]
    fixed = [f"{a}={points[a].iloc[0]}" for a in axes if a not in varying]
    masks = {g: (points[by] == g).to_numpy() for g in points[by].drop_duplicates()}
    parts = [
        header,
        f"Objectives: {', '.join(o.label() for o in objectives)}. {len(points)} points (grid points, each the mean "
        f"over its seeds), grouped by {by}." + (f" Fixed: {', '.join(fixed)}." if fixed else ""),
        "Points; on front: no other point, of any group, is at least as good in every objective and better in one.",
        _points_table(points, columns, by, varying, on_front),
        f"Hypervolume per {by}: the volume of objective space its points dominate, "
        + _reference_text(columns, values, reference, source, maximize)
        + " Share of all: its hypervolume over that of all points together.",
        _hypervolume_table(values, masks, on_front, reference, maximize, by),
        f"Dominance ratio: the share of the column {by}'s points that at least one point of the row {by} dominates.",
        _ratio_table(values, masks, maximize, by),
    ]
    return "\n\n".join(parts) + "\n"


def run(args) -> int:
    from traces.outputs import atomic_file, check_file_target

    from .study import read_results, select_where

    if args.out:  # checked before the results are read
        check_file_target(args.out, force=args.force, marker_line=REPORT_MARKER)
    objectives = parse_objectives(args.objectives)
    reference = None if args.reference is None else parse_reference(args.reference, objectives)
    frame = select_where(read_results(args.results), args.where, args.results)
    points = grid_points(frame, objectives, args.by, args.results)
    header = f"Pareto analysis of {args.results}" + (f", where {', '.join(args.where)}" if args.where else "") + "."
    text = report(points, objectives, args.by, reference, header)
    if args.out:
        with atomic_file(args.out, force=args.force, marker_line=REPORT_MARKER) as tmp:
            tmp.write_text(REPORT_MARKER + "\n" + text)
    print(text, end="")
    return 0
