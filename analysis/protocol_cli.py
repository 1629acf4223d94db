"""`analyse stats`: a sweep's results under the pre-declared statistical protocol.

    analyse stats RESULTS.parquet [--protocol analysis/protocol.toml] [--out DIR --force]

Reads a ``simulate sweep`` results table, applies the protocol (``analysis.protocol``: paired
tests by seed, Holm correction within each declared family) and prints one Markdown table per
metric, the primary metric first, under a line that states the protocol. ``--out DIR`` also writes
``DIR/stats.csv`` (every column of every test) and ``DIR/stats.md`` (what was printed), atomically:
an earlier report of ours is replaced only with ``--force``, anything else never.
"""

from __future__ import annotations

import math
from pathlib import Path

EXAMPLES = """examples:
  analyse stats runs/study/results.parquet
  analyse stats runs/study/results.parquet --protocol my-protocol.toml
  analyse stats runs/study/results.parquet --out runs/study/stats --force
"""
DEFAULT_PROTOCOL = Path(__file__).with_name("protocol.toml")


def add_arguments(parser) -> None:
    parser.add_argument("results", help="a sweep's results.parquet (simulate sweep writes it in its --out)")
    parser.add_argument("--protocol", default=str(DEFAULT_PROTOCOL),
                        help="the protocol file (default: the packaged analysis/protocol.toml)")
    parser.add_argument("--out", help="also write stats.csv and stats.md into this new directory")
    parser.add_argument("--force", action="store_true", help="replace an earlier stats report of ours at --out")


def _num(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}g}"


def _count(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _interval(row) -> str:
    if math.isnan(row.ci_low):
        return _num(row.mean_diff)
    return f"{_num(row.mean_diff)} [{_num(row.ci_low)}, {_num(row.ci_high)}]"


def metric_table(table, protocol) -> str:
    """One Markdown row per (comparison, group) of one metric's rows of ``apply_protocol``."""
    from .runs import markdown_table

    level = f"{100 * (1 - protocol.alpha):g}%"
    header = ["a − b", "group", "n", "mean a", "mean b", f"a − b [{level} CI]", "p (t)", "p (Wilcoxon)",
              f"p ({protocol.correction.capitalize()})", "d_z", "power", f"seeds for {protocol.power_target:g}",
              "significant"]
    rows = [[f"{r.a} − {r.b}", r.group or "-", r.n, _num(r.mean_a), _num(r.mean_b), _interval(r), _num(r.p_t, 2),
             _num(r.p_wilcoxon, 2), _num(r.p_holm, 2), f"{_num(r.cohens_dz, 3)} ({r.effect})", _num(r.power, 2),
             _count(r.seeds_for_power), "yes" if r.significant else "no"] for r in table.itertuples()]
    return markdown_table(header, rows)


def overview_table(table, protocol) -> str:
    """One Markdown row per (metric, comparison) across the groups: in how many groups a is
    significantly above b, significantly below, or neither (Holm-adjusted), and the range of the
    mean differences and of d_z. It summarises the per-group tables and adds no test of its own."""
    from .runs import markdown_table

    header = ["metric", "a − b", "groups", "a significantly higher", "a significantly lower", "neither",
              "a − b (min … max)", "d_z (min … max)"]
    rows = []
    for (metric, a, b), rows_ab in table.groupby(["metric", "a", "b"], sort=False):
        above = int((rows_ab.significant & (rows_ab.mean_diff > 0)).sum())
        below = int((rows_ab.significant & (rows_ab.mean_diff < 0)).sum())
        span = lambda col: f"{_num(rows_ab[col].min())} … {_num(rows_ab[col].max())}"  # noqa: E731
        rows.append([metric, f"{a} − {b}", len(rows_ab), above, below, len(rows_ab) - above - below,
                     span("mean_diff"), span("cohens_dz")])
    order = {m: k for k, m in enumerate(protocol.metrics)}
    rows.sort(key=lambda r: order.get(r[0], len(order)))
    return markdown_table(header, rows)


def report(table, comparisons, protocol) -> str:
    """The Markdown report: the protocol line, one table per metric (primary first), the notes."""
    sizes = table.groupby("metric", sort=False)["p_holm"].count()
    families = ", ".join(f"{m}{' (primary)' if m == protocol.primary_metric else ''}: {sizes.get(m, 0)} tests"
                         for m in protocol.metrics)
    parts = [f"Protocol {protocol.source}: {protocol.describe()}. Tests per metric: {families}.", "",
             "## Overview", "", overview_table(table, protocol), ""]
    for metric in protocol.metrics:
        kind = "primary" if metric == protocol.primary_metric else "secondary"
        parts += [f"## {metric} ({kind})", "", metric_table(table[table.metric == metric], protocol), ""]
    notes = [f"- {c.metric}, {c.a} − {c.b}{', ' + c.group if c.group else ''}: {'; '.join(c.tests.notes)}"
             for c in comparisons if c.tests.notes]
    if notes:
        parts += ["Notes (a test left undefined shows -):", "", *notes, ""]
    return "\n".join(parts)


def run(args) -> int:
    from traces.outputs import atomic_output, check_target

    from .protocol import load_protocol, protocol_tests, tests_frame
    from .study import read_results

    if args.out is not None:  # refused before any work
        check_target(args.out, force=args.force, kind="report")
    protocol = load_protocol(args.protocol)
    frame = read_results(args.results)
    comparisons = protocol_tests(frame, protocol)
    table = tests_frame(comparisons, protocol)
    text = report(table, comparisons, protocol)
    if args.out is not None:
        with atomic_output(args.out, force=args.force, kind="report") as staging:
            table.to_csv(staging / "stats.csv", index=False)
            (staging / "stats.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0
