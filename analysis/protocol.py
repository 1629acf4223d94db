"""A pre-declared statistical protocol, applied to a sweep's results.

A study that compares nine policies on five metrics in twelve groups runs hundreds of tests; at a
5% error rate some "differences" are luck. The defence is to say before looking at the results
what will be tested and how (``analysis/protocol.toml``): one primary metric that carries the
claim, the comparisons asked, the error rate, and a correction for multiple tests (Holm's) within
declared *families*. By default the primary metric's family is every (comparison, group) pair, and
each secondary metric is a family of its own, so that reporting more secondary metrics never
weakens the primary claim.

Applying it (``apply_protocol``): within each group of the sweep's other axes (e.g. workload x
deadline), the runs of the two policies of a comparison are paired by ``seed`` (a seed only one
side has is left out, and ``n`` shows it), every test of ``analysis.stats.paired_tests`` is run on
each metric, the chosen test's p-values are Holm-adjusted per family, and a difference is
``significant`` when its adjusted p-value is below alpha. The result is one row per (metric,
comparison, group) with the columns ``COLUMNS``, which the CLI (``analyse stats``) prints and
other modules plot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from traces.checks import reject_unknown, text
from traces.errors import InputError
from traces.scenario import read_toml

from .runs import unpaired_note
from .study import runs_by_seed, sweep_axes
from .stats import PairedTests, holm, paired_tests

__all__ = ["COLUMNS", "Protocol", "Comparison", "load_protocol", "paired_tests", "holm", "apply_protocol",
           "protocol_tests", "tests_frame", "group_label", "PairedTests"]

COLUMNS = ("metric", "a", "b", "group", "n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "t_stat",
           "p_t", "w_stat", "p_wilcoxon", "p_holm", "cohens_dz", "effect", "shapiro_p", "levene_p", "power",
           "seeds_for_power", "significant")
TESTS = {"paired-t": "p_t", "wilcoxon": "p_wilcoxon"}   # the protocol's test -> the p-value it corrects
FAMILIES = {"metric": ("metric",), "metric-group": ("metric", "group")}
CORRECTIONS = ("holm",)  # the column is p_holm: another correction would need another name
KEYS = ("policy_axis", "primary_metric", "secondary_metrics", "alpha", "power_target", "test", "correction",
        "families", "comparisons")


@dataclass(frozen=True)
class Protocol:
    """What a study tests and how, as declared in a protocol file (``source``)."""

    source: str
    comparisons: tuple[tuple[str, str], ...]
    primary_metric: str = "ontime_accuracy"
    secondary_metrics: tuple[str, ...] = ()
    policy_axis: str = "policy"
    alpha: float = 0.05
    power_target: float = 0.8
    test: str = "paired-t"
    correction: str = "holm"
    families: str = "metric"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The primary metric first, then the secondary ones in the declared order."""
        return (self.primary_metric, *self.secondary_metrics)

    def describe(self) -> str:
        """One sentence: the test, alpha, the correction and how the families are formed."""
        test = "paired t-test" if self.test == "paired-t" else "Wilcoxon signed-rank test"
        family = ("one family per metric over every (comparison, group) pair" if self.families == "metric"
                  else "one family per metric and group, over its comparisons")
        return (f"two-sided {test} on runs paired by seed, alpha = {self.alpha:g}; {self.correction.capitalize()} "
                f"correction, {family}; primary metric {self.primary_metric}; significant = "
                f"{self.correction.capitalize()}-adjusted p < {self.alpha:g}")


def load_protocol(path: str | Path) -> Protocol:
    """Read and check a protocol file; any problem is an ``InputError`` naming the file and the key."""
    path = Path(path)
    raw = read_toml(path)
    try:
        return _parse(raw, str(path))
    except InputError as exc:
        raise InputError(f"{path}: {exc.where}", exc.problem) from None


def _parse(raw: dict, source: str) -> Protocol:
    reject_unknown(raw, KEYS, "")
    primary = text(raw, "primary_metric", "")
    secondary = _names(raw.get("secondary_metrics", []), "secondary_metrics")
    if primary in secondary:
        raise InputError("secondary_metrics", f"repeats the primary metric {primary!r}")
    comparisons = _comparisons(raw.get("comparisons"))
    return Protocol(source=source, comparisons=comparisons, primary_metric=primary, secondary_metrics=secondary,
                    policy_axis=text(raw, "policy_axis", "", default="policy"),
                    alpha=_probability(raw, "alpha", 0.05), power_target=_probability(raw, "power_target", 0.8),
                    test=text(raw, "test", "", default="paired-t", choices=TESTS),
                    correction=text(raw, "correction", "", default="holm", choices=CORRECTIONS),
                    families=text(raw, "families", "", default="metric", choices=FAMILIES))


def _probability(raw: dict, key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise InputError(key, f"must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _names(value, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(key, f"must be a list of non-empty strings, got {value!r}")
    if len(set(value)) != len(value):
        raise InputError(key, f"names a value twice: {value!r}")
    return tuple(value)


def _comparisons(value) -> tuple[tuple[str, str], ...]:
    if value is None:
        raise InputError("comparisons", "is required: a list of [a, b] pairs of policy labels")
    if not isinstance(value, list) or not value:
        raise InputError("comparisons", f"must be a non-empty list of [a, b] pairs, got {value!r}")
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(value):
        where = f"comparisons[{i}]"
        if not isinstance(item, list) or len(item) != 2 or not all(isinstance(v, str) and v for v in item):
            raise InputError(where, f"must be a pair [a, b] of policy labels, got {item!r}")
        if item[0] == item[1]:
            raise InputError(where, f"compares {item[0]!r} with itself")
        if tuple(item) in pairs:
            raise InputError(where, f"repeats the comparison {item!r}")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


# --- applying it ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """One test of the protocol: a metric, a comparison a - b, a group, and its paired tests."""

    metric: str
    a: str
    b: str
    group: str
    tests: PairedTests


def _value_text(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:g}" if math.isfinite(number) else str(value)


def group_label(axes: list[str], key: tuple) -> str:
    """``"deadline_ms=20 workload=bursty"``: each axis by its last dotted part (the whole name where
    two axes share it) and its value; ``""`` with no axes."""
    short = [a.rsplit(".", 1)[-1] for a in axes]
    names = [s if short.count(s) == 1 else a for s, a in zip(short, axes)]
    return " ".join(f"{name}={_value_text(value)}" for name, value in zip(names, key))


def _check(frame: pd.DataFrame, protocol: Protocol) -> None:
    where = protocol.source
    if protocol.policy_axis not in frame:
        raise InputError(f"{where}: policy_axis", f"{protocol.policy_axis!r} is not a column of the results")
    for key, metric in [("primary_metric", protocol.primary_metric)] + [
            ("secondary_metrics", m) for m in protocol.secondary_metrics]:
        if metric not in frame:
            raise InputError(f"{where}: {key}", f"{metric!r} is not a column of the results")
        column = frame[metric]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise InputError(f"{where}: {key}", f"column {metric!r} of the results is not numeric")
    known = list(dict.fromkeys(frame[protocol.policy_axis]))
    for i, (a, b) in enumerate(protocol.comparisons):
        for name in (a, b):
            if name not in known:
                raise InputError(f"{where}: comparisons[{i}] {a} vs {b}",
                                 f"no runs of {name!r}; the {protocol.policy_axis} axis has {known}")


def protocol_tests(frame: pd.DataFrame, protocol: Protocol) -> list[Comparison]:
    """Every (metric, comparison, group) of the protocol, primary metric first, with its paired tests."""
    _check(frame, protocol)
    axes = [a for a in sweep_axes(frame) if a != protocol.policy_axis]
    groups = [((), frame)] if not axes else [
        (key if isinstance(key, tuple) else (key,), group)
        for key, group in frame.groupby(axes, sort=False, dropna=False)]
    out: list[Comparison] = []
    for metric in protocol.metrics:
        for a, b in protocol.comparisons:
            for key, group in groups:
                label = group_label(axes, key)
                where = f"results {label or 'table'}"
                left = runs_by_seed(group[group[protocol.policy_axis] == a], repr(a), where)
                right = runs_by_seed(group[group[protocol.policy_axis] == b], repr(b), where)
                seeds = left.index.intersection(right.index).sort_values()
                tests = paired_tests(left.loc[seeds, metric], right.loc[seeds, metric], protocol.alpha,
                                     protocol.power_target)
                unpaired = unpaired_note(left.index, right.index, (a, b))
                if unpaired:
                    tests = PairedTests(**{**asdict(tests), "notes": (unpaired, *tests.notes)})
                out.append(Comparison(metric, a, b, label, tests))
    return out


def tests_frame(comparisons: list[Comparison], protocol: Protocol) -> pd.DataFrame:
    """The tests as a table with ``COLUMNS``: p-values of the protocol's test Holm-adjusted per family."""
    rows = []
    for c in comparisons:
        values = asdict(c.tests)
        values.pop("notes")
        rows.append({"metric": c.metric, "a": c.a, "b": c.b, "group": c.group, **values})
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("p_holm", "significant")])
    table["p_holm"] = np.nan
    for _, family in table.groupby(list(FAMILIES[protocol.families]), sort=False):
        table.loc[family.index, "p_holm"] = holm(family[TESTS[protocol.test]].to_numpy())
    table["significant"] = (table["p_holm"] < protocol.alpha).astype(bool)
    table["n"] = table["n"].astype(int)
    return table[list(COLUMNS)]


def apply_protocol(frame: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """One row per (metric, comparison, group), columns ``COLUMNS``; see the module docstring."""
    return tests_frame(protocol_tests(frame, protocol), protocol)
