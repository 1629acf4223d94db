"""Pareto fronts, hypervolume and dominance ratios (``analysis.pareto``) against independent
computations written here: brute-force pairwise dominance, a 2-D sweep line, and inclusion-exclusion
over the union of boxes; then ``analyse pareto`` on a tiny results table built in the test."""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from analysis.cli import main
from analysis.pareto import dominance_ratio, hypervolume, nadir_reference, pareto_front

if not os.getenv("HYPOTHESIS_STORAGE_DIRECTORY"):  # keep Hypothesis's caches out of the working tree
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "servesim-hypothesis")

# --- independent references ----------------------------------------------------------------------


def to_min(points, maximize) -> np.ndarray:
    """The test's own sign flip: every column smaller-is-better."""
    signs = np.array([-1.0 if m else 1.0 for m in maximize])
    return np.asarray(points, dtype=float).reshape(-1, len(maximize)) * signs


def dominates(p, q) -> bool:
    """Minimisation: p no worse everywhere and strictly better somewhere."""
    return all(x <= y for x, y in zip(p, q)) and any(x < y for x, y in zip(p, q))


def brute_front(points, maximize) -> np.ndarray:
    pts = to_min(points, maximize)
    return np.array([not any(dominates(o, p) for o in pts) for p in pts], dtype=bool)


def brute_ratio(a, b, maximize) -> float:
    left, right = to_min(a, maximize), to_min(b, maximize)
    if len(right) == 0:
        return math.nan
    return sum(any(dominates(p, q) for p in left) for q in right) / len(right)


def sweep_line_2d(points, reference, maximize) -> float:
    """Area dominated in 2-D: sort by the first objective, add a slab per improvement of the second."""
    pts, ref = to_min(points, maximize), to_min([reference], maximize)[0]
    pts = [p for p in pts if p[0] < ref[0] and p[1] < ref[1]]
    area, best_y = 0.0, ref[1]
    for x, y in sorted(pts, key=lambda p: (p[0], p[1])):
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def inclusion_exclusion(points, reference, maximize) -> float:
    """Volume of the union of the boxes [p, ref]: the alternating sum over every subset's intersection."""
    pts, ref = to_min(points, maximize), to_min([reference], maximize)[0]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0.0, None)))
    return total


# --- the front -------------------------------------------------------------------------------------


@st.composite
def point_sets(draw, max_rows: int = 25):
    """Small-integer points (so ties, duplicates and dominated points are common), d = 2..4, mixed senses."""
    d = draw(st.integers(2, 4))
    n = draw(st.integers(0, max_rows))
    rows = draw(st.lists(st.lists(st.integers(0, 4), min_size=d, max_size=d), min_size=n, max_size=n))
    maximize = tuple(draw(st.lists(st.booleans(), min_size=d, max_size=d)))
    return np.array(rows, dtype=float).reshape(n, d), maximize


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(point_sets())
def test_front_matches_brute_force(case):
    points, maximize = case
    np.testing.assert_array_equal(pareto_front(points, maximize), brute_front(points, maximize))


def test_front_on_larger_continuous_sets_with_duplicated_rows():
    rng = np.random.default_rng(7)
    for d in (2, 3, 4):
        points = rng.normal(size=(150, d))
        points = np.vstack([points, points[:20]])  # exact duplicates
        maximize = tuple(bool(i % 2) for i in range(d))
        np.testing.assert_array_equal(pareto_front(points, maximize), brute_front(points, maximize))


def test_duplicates_of_a_front_point_are_all_kept_and_direction_matters():
    points = np.array([[1.0, 5.0], [1.0, 5.0], [2.0, 2.0], [3.0, 3.0], [0.5, 9.0]])
    assert pareto_front(points, (False, False)).tolist() == [True, True, True, False, True]
    # maximise the first: [2, 2] beats [1, 5] and [0.5, 9]; [3, 3] has the most x
    assert pareto_front(points, (True, False)).tolist() == [False, False, True, True, False]
    # maximise both: [3, 3] beats [2, 2]; [1, 5] and its twin and [0.5, 9] reach further in y
    assert pareto_front(points, (True, True)).tolist() == [True, True, False, True, True]
    assert pareto_front(np.empty((0, 3)), (True, True, False)).shape == (0,)


def test_infinite_values_are_points_like_any_other():
    points = np.array([[1.0, np.inf], [2.0, 1.0], [0.0, -np.inf], [3.0, 3.0]])
    np.testing.assert_array_equal(pareto_front(points, (False, True)), brute_front(points, (False, True)))


# --- hypervolume -----------------------------------------------------------------------------------


def test_hypervolume_2d_against_a_sweep_line():
    rng = np.random.default_rng(11)
    for trial in range(60):
        n = int(rng.integers(0, 30))
        maximize = (bool(trial % 2), bool(trial % 3 == 0))
        points = np.round(rng.uniform(0, 10, size=(n, 2)), 1)  # rounded: ties and duplicates
        reference = rng.uniform(3, 9, size=2)  # some points lie beyond it, in either sense
        assert hypervolume(points, reference, maximize) == pytest.approx(sweep_line_2d(points, reference, maximize),
                                                                         rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("d", [3, 4])
def test_hypervolume_against_inclusion_exclusion(d):
    rng = np.random.default_rng(d)
    for trial in range(25):
        n = int(rng.integers(1, 9))
        maximize = tuple(bool(x) for x in rng.integers(0, 2, size=d))
        points = rng.integers(0, 6, size=(n, d)).astype(float)
        reference = rng.integers(1, 6, size=d).astype(float)
        expected = inclusion_exclusion(points, reference, maximize)
        assert hypervolume(points, reference, maximize) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_points_not_strictly_better_than_the_reference_add_nothing():
    maximize = (True, False, False)
    reference = np.array([0.5, 10.0, 100.0])
    inside = np.array([[0.9, 4.0, 50.0], [0.7, 2.0, 80.0]])
    outside = np.array([[0.4, 1.0, 1.0],    # worse than the reference in the maximised one
                        [0.99, 10.0, 1.0],  # equal to it in one objective: a flat box
                        [0.99, 1.0, 101.0]])
    base = hypervolume(inside, reference, maximize)
    assert base == pytest.approx(inclusion_exclusion(inside, reference, maximize))
    assert hypervolume(np.vstack([inside, outside]), reference, maximize) == base
    assert hypervolume(outside, reference, maximize) == 0.0
    assert hypervolume(np.empty((0, 3)), reference, maximize) == 0.0


def test_nadir_reference_is_each_objectives_worst_value():
    points = np.array([[0.9, 3.0, 7.0], [0.8, 5.0, 1.0], [0.95, 4.0, 2.0]])
    np.testing.assert_array_equal(nadir_reference(points, (True, False, True)), [0.8, 5.0, 1.0])
    # against it, a single point's box is the product of its distances to the worst values
    two = np.array([[0.9, 3.0], [0.8, 5.0]])
    assert hypervolume(two, nadir_reference(two, (True, False)), (True, False)) == pytest.approx(0.1 * 2.0)


# --- dominance ratio -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(point_sets(max_rows=12), st.data())
def test_dominance_ratio_matches_brute_force(case, data):
    b, maximize = case
    rows = data.draw(st.lists(st.lists(st.integers(0, 4), min_size=len(maximize), max_size=len(maximize)),
                              max_size=12))
    a = np.array(rows, dtype=float).reshape(len(rows), len(maximize))
    got, expected = dominance_ratio(a, b, maximize), brute_ratio(a, b, maximize)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_dominance_ratio_edges():
    a = np.array([[1.0, 1.0]])
    b = np.array([[1.0, 1.0], [2.0, 2.0], [0.0, 3.0], [1.0, 2.0]])
    assert dominance_ratio(a, b, (False, False)) == 0.5  # equal is not dominated; [0, 3] is not beaten
    assert dominance_ratio(np.empty((0, 2)), b, (False, False)) == 0.0
    assert math.isnan(dominance_ratio(a, np.empty((0, 2)), (False, False)))


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, message", [
    (lambda: pareto_front([[1.0, np.nan], [0.0, 0.0]], (True, True)), "row 0 holds NaN"),
    (lambda: pareto_front([[1.0, 2.0, 3.0]], (True, True)), "3 objective column"),
    (lambda: pareto_front([1.0, 2.0], (True, True)), "2-D array"),
    (lambda: pareto_front([[1.0, 2.0]], ()), "at least one objective"),
    (lambda: pareto_front([[1.0, 2.0]], (1, 0)), "booleans"),
    (lambda: hypervolume([[1.0, 2.0]], [3.0], (False, False)), "needs 2 value"),
    (lambda: hypervolume([[1.0, 2.0]], [3.0, np.inf], (False, False)), "finite"),
    (lambda: hypervolume([[1.0, 2.0]], [3.0, np.nan], (False, False)), "finite"),
    (lambda: dominance_ratio([[1.0, 2.0]], [[np.nan, 1.0]], (False, False)), "b row 0 holds NaN"),
    (lambda: nadir_reference(np.empty((0, 2)), (False, False)), "give a reference"),
    (lambda: nadir_reference([[1.0, np.inf]], (False, False)), "infinite"),
])
def test_bad_input_is_a_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- analyse pareto ------------------------------------------------------------------------------

# policy -> deadline label -> (ontime_accuracy, cost.total) per seed 1 and 2
RUNS = {
    "fast": {"10.0": ((0.90, 1.0), (0.92, 1.2)), "40.0": ((0.95, 2.0), (0.93, 2.0))},
    "slow": {"10.0": ((0.80, 3.0), (0.84, 3.0)), "40.0": ((0.99, 4.0), (0.97, 3.6))},
    "mid": {"10.0": ((0.91, 1.1), (0.91, 1.1)), "40.0": ((0.60, 5.0), (0.62, 5.0))},
}


def write_results(tmp_path, runs=RUNS, with_attrs: bool = True):
    rows = []
    for policy, points in runs.items():
        for deadline, seeds in points.items():
            for seed, (ontime, cost) in enumerate(seeds, start=1):
                rows.append({"run_id": f"{policy}-{deadline}-{seed}", "requests.deadline_ms": deadline,
                             "policy": policy, "seed": seed, "accuracy": ontime, "completed": 100,
                             "cost.total": cost, "hit_rate": 1.0, "latency_ms.p99": 5.0,
                             "ontime_accuracy": ontime, "requests": 100})
    frame = pd.DataFrame(rows)
    if with_attrs:
        frame.attrs["axes"] = ["requests.deadline_ms", "policy", "seed"]
    path = tmp_path / "results.parquet"
    frame.to_parquet(path, index=False)
    return path


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of ``text``: its rows (header first, separator left out) as cells."""
    found = []
    for block in text.split("\n\n"):
        lines = [ln for ln in block.strip().splitlines() if ln.startswith("|") and not ln.startswith("|---")]
        if lines:
            found.append([[c.strip() for c in ln.strip("|").split("|")] for ln in lines])
    return found


def expected_points(runs=RUNS):
    """(policy, deadline) -> mean (ontime, cost), computed here from the runs."""
    return {(p, d): tuple(np.mean(seeds, axis=0)) for p, points in runs.items() for d, seeds in points.items()}


@pytest.mark.parametrize("with_attrs", [True, False])
def test_cli_reports_front_hypervolume_and_ratios(tmp_path, capsys, with_attrs):
    path = write_results(tmp_path, with_attrs=with_attrs)
    assert main(["pareto", str(path), "--objectives", "ontime_accuracy:max,cost.total:min"]) == 0
    points_table, hv_table, ratio_table = tables(capsys.readouterr().out)
    means = expected_points()
    keys = list(means)
    values = np.array([means[k] for k in keys])
    front = brute_front(values, (True, False))
    assert points_table[0] == ["policy", "requests.deadline_ms", "seeds", "ontime_accuracy", "cost.total", "on front"]
    shown = {(r[0], r[1]): r for r in points_table[1:]}
    assert set(shown) == set(keys)
    for k, on in zip(keys, front):
        assert shown[k][2] == "2"
        assert float(shown[k][3]) == pytest.approx(means[k][0], rel=1e-5)
        assert (shown[k][5] == "yes") == on
    reference = (values[:, 0].min(), values[:, 1].max())  # the nadir, computed here
    for row in hv_table[1:]:
        chosen = values if row[0] == "all" else np.array([means[k] for k in keys if k[0] == row[0]])
        assert float(row[3]) == pytest.approx(sweep_line_2d(chosen, reference, (True, False)), rel=1e-5)
    groups = ratio_table[0][1:]
    for row in ratio_table[1:]:
        for b, cell in zip(groups, row[1:]):
            if b == row[0]:
                assert cell == "-"
                continue
            a_pts = [means[k] for k in keys if k[0] == row[0]]
            b_pts = [means[k] for k in keys if k[0] == b]
            assert float(cell) == pytest.approx(brute_ratio(a_pts, b_pts, (True, False)))


def test_cli_where_reference_and_out(tmp_path, capsys):
    path = write_results(tmp_path)
    out = tmp_path / "pareto.md"
    args = ["pareto", str(path), "--objectives", "ontime_accuracy:max,cost.total:min", "--where",
            "requests.deadline_ms=40.0", "--reference", "0.5,6", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ontime_accuracy=0.5, cost.total=6 (given by --reference" in printed
    points_table, hv_table, _ = tables(printed)
    assert {r[0] for r in points_table[1:]} == {"fast", "slow", "mid"} and len(points_table) == 4
    means = expected_points()
    fast = [means[("fast", "40.0")]]
    assert float(hv_table[1][3]) == pytest.approx(sweep_line_2d(fast, (0.5, 6.0), (True, False)), rel=1e-5)
    written = out.read_text()
    assert written.splitlines()[0].startswith("<!-- written by analyse pareto") and written.endswith(printed)
    assert main(args) == 2  # ours, but no --force
    assert main(args + ["--force"]) == 0
    capsys.readouterr()
    foreign = tmp_path / "notes.md"
    foreign.write_text("my notes\n")
    assert main(args[:-1] + [str(foreign), "--force"]) == 2
    assert foreign.read_text() == "my notes\n"


@pytest.mark.parametrize("extra, names", [
    (["--objectives", "ontime_accuracy:max,nope:min"], "--objectives nope"),
    (["--objectives", "ontime_accuracy:up,cost.total:min"], "--objectives"),
    (["--objectives", "ontime_accuracy,cost.total:min"], "--objectives"),
    (["--objectives", "ontime_accuracy:max,ontime_accuracy:min"], "twice"),
    (["--objectives", "ontime_accuracy:max,policy:min"], "not numeric"),
    (["--objectives", "ontime_accuracy:max,cost.total:min", "--reference", "0.5"], "--reference"),
    (["--objectives", "ontime_accuracy:max,cost.total:min", "--reference", "0.5,x"], "--reference"),
    (["--objectives", "ontime_accuracy:max,cost.total:min", "--where", "policy=none"], "--where"),
    (["--objectives", "ontime_accuracy:max,cost.total:min", "--where", "nope=1"], "--where"),
    (["--objectives", "ontime_accuracy:max,cost.total:min", "--where", "seed=x"], "--where"),
    (["--objectives", "ontime_accuracy:max,cost.total:min", "--by", "nope"], "--by"),
    (["--objectives", "ontime_accuracy:max,cost.total:min", "--by", "seed"], "--by"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, names):
    path = write_results(tmp_path)
    assert main(["pareto", str(path), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and names in lines[0]


def test_cli_says_why_every_hypervolume_is_zero(tmp_path, capsys):
    path = write_results(tmp_path)  # hit_rate is 1.0 in every run: the nadir's hit_rate is every point's
    assert main(["pareto", str(path), "--objectives", "hit_rate:max,cost.total:min"]) == 0
    out = capsys.readouterr().out
    assert "Every hypervolume is 0" in out and "(hit_rate has one value over all points)" in out
    _, hv_table, _ = tables(out)
    assert all(float(row[3]) == 0.0 and row[4] == "-" for row in hv_table[1:])


def test_cli_refuses_a_missing_objective_value_and_a_missing_file(tmp_path, capsys):
    runs = {**RUNS, "mid": {"10.0": ((0.91, float("nan")), (0.91, 1.1))}}
    path = write_results(tmp_path, runs=runs)
    assert main(["pareto", str(path), "--objectives", "ontime_accuracy:max,cost.total:min"]) == 2
    err = capsys.readouterr().err
    assert "mid-10.0-1" in err and "cost.total" in err and len(err.strip().splitlines()) == 1
    assert main(["pareto", str(tmp_path / "none.parquet"), "--objectives", "hit_rate:max"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_where_matches_a_numeric_axis_by_value(tmp_path, capsys):
    """A sweep stores axis values as labels ("40.0"): ``=40`` selects what ``=40.0`` does."""
    path = write_results(tmp_path)
    base = ["pareto", str(path), "--objectives", "ontime_accuracy:max,cost.total:min", "--where"]
    assert main([*base, "requests.deadline_ms=40.0"]) == 0
    spelled_out = capsys.readouterr().out
    assert main([*base, "requests.deadline_ms=40"]) == 0
    short = capsys.readouterr().out
    assert tables(short)[0] == tables(spelled_out)[0] and len(tables(short)[0]) == 1 + 3
    assert main([*base, "requests.deadline_ms=15"]) == 2
    err = capsys.readouterr().err
    assert "10.0, 40.0" in err and err.count("\n") == 1      # names the values the column has


@pytest.mark.parametrize("objective, shown, hidden", [
    ("nope", "cost.total", "run_id"),                        # the numeric metric columns only
    ("ontime_acuracy", "did you mean ontime_accuracy", "cost.total"),   # the nearest matches only
])
def test_an_unknown_objective_gets_one_short_line(tmp_path, capsys, objective, shown, hidden):
    rows = pd.read_parquet(write_results(tmp_path))
    wide = rows.assign(**{f"cascade.stage{k}.hop0.passed_on_share": 0.5 for k in range(40)})  # many columns
    wide.attrs["axes"] = ["requests.deadline_ms", "policy", "seed"]
    path = tmp_path / "wide.parquet"
    wide.to_parquet(path)
    assert main(["pareto", str(path), "--objectives", f"{objective}:max"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 250, err
    assert shown in err and hidden not in err


def test_grid_points_refuse_two_runs_of_one_point_and_seed(tmp_path):
    from analysis.pareto_cli import Objective, grid_points
    from traces.errors import InputError

    frame = pd.read_parquet(write_results(tmp_path))
    twice = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    with pytest.raises(InputError, match="2 runs of requests.deadline_ms=10.0, policy=fast, seed 1"):
        grid_points(twice, [Objective("ontime_accuracy", True)], "policy", "results")
