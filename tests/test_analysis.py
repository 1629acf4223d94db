"""Statistics over seeds and the study tables built from a sweep's results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import mean_interval, paired_difference, paired_tests
from analysis.study import main as study_main
from analysis.study import (group_axes, overall_table, pivot_table, policy_table, read_results, runs_by_seed,
                            select_where, sweep_axes, versus_table)
from traces.errors import InputError


def test_mean_interval_is_the_student_t_interval():
    values = [0.91, 0.93, 0.95, 0.92, 0.94]
    got = mean_interval(values)
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert got.mean == pytest.approx(np.mean(values))
    assert got.half_width == pytest.approx((hi - lo) / 2)
    assert mean_interval([0.5]).format() == "0.500"           # one seed: no interval
    assert mean_interval([math.nan, 1.0, 3.0]).n == 2          # nan runs are left out
    assert mean_interval([]).format() == "-"


def test_paired_difference_uses_the_pairing():
    rng = np.random.default_rng(0)
    base = rng.normal(0.9, 0.05, 5)          # seeds differ a lot ...
    a, b = base + 0.01, base                 # ... but a beats b by the same margin on every seed
    paired = paired_difference(a, b)
    assert paired.difference.mean == pytest.approx(0.01)
    assert paired.difference.half_width == pytest.approx(0.0, abs=1e-12)
    assert paired.p_value == 0.0 and (paired.wins, paired.losses) == (5, 0)
    d = np.array([0.01, -0.02, 0.03, 0.0, 0.01])
    got = paired_difference(base + d, base)
    assert got.p_value == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert (got.wins, got.losses) == (3, 1)
    assert math.isnan(paired_difference(base, base).p_value)      # no gap on any seed: no test applies
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize("a, b, p", [
    ([1.5, 2.5, 3.5, 4.5], [1.0, 2.0, 3.0, 4.0], 0.0),          # the same gap on every seed: t = inf, p = 0
    ([0.3, 0.2, 0.4], [0.1, 0.0, 0.2], 0.0),                    # the same gap but for float noise (0.3 - 0.1)
    ([0.9, 0.8, 0.7], [0.9, 0.8, 0.7], math.nan),               # no gap on any seed: no test applies
    ([0.3, 0.7, 0.5], [0.1 + 0.2, 0.7, 0.5], math.nan),         # no gap but for float noise
    ([1.0, 2.5, 2.0, 4.2], [0.9, 2.0, 2.7, 4.0], None),         # an ordinary sample: scipy's t-test
    ([1.0], [0.5], math.nan),                                   # one pair
])
def test_paired_difference_and_paired_tests_follow_one_policy(a, b, p):
    """The tables (``paired_difference``) and the protocol (``paired_tests``) give one answer: the
    same rounded differences, the same interval, the same t-test p-value."""
    diff, tests = paired_difference(a, b), paired_tests(a, b)
    expected = stats.ttest_rel(a, b).pvalue if p is None else p
    for got in (diff.p_value, tests.p_t):
        assert got == pytest.approx(expected, nan_ok=True)
    assert diff.difference.mean == tests.mean_diff and diff.difference.n == tests.n
    assert diff.difference.mean - diff.difference.half_width == pytest.approx(tests.ci_low, nan_ok=True)
    if p == 0.0:   # rounded: exactly no spread, a zero-width interval, as the p-value says
        assert diff.difference.half_width == 0.0 and tests.ci_low == tests.ci_high


def _results() -> pd.DataFrame:
    rows = []
    for workload in ("poisson", "bursty"):
        for policy, level in (("planner", 0.95), ("infaas", 0.90)):
            for seed in (1, 2, 3):
                rows.append({"run_id": f"{workload}{policy}{seed}", "workload": workload, "policy": policy,
                             "seed": seed, "requests": 100, "hit_rate": level + seed / 1000,
                             "accuracy": 0.97, "ontime_accuracy": level - 0.02 + seed / 1000,
                             "latency_ms.p99": 10.0 * seed})
    return pd.DataFrame(rows)


def test_groups_are_the_sweep_axes_not_the_metrics_before_requests(tmp_path):
    """A sweep writes run_id, the axes, seed, then the metrics sorted by name (``accuracy`` and
    ``completed`` come before ``requests``): only the axes group, read back from the file too."""
    frame = _results()[["run_id", "workload", "policy", "seed", "accuracy", "hit_rate", "latency_ms.p99",
                        "ontime_accuracy", "requests"]]
    frame.loc[frame["seed"] == 2, "accuracy"] = 0.5   # a metric that differs by seed must not split groups
    assert group_axes(frame, "policy") == ["workload"]
    frame.attrs["axes"] = ["policy", "workload", "seed"]
    frame.to_parquet(tmp_path / "results.parquet")
    back = pd.read_parquet(tmp_path / "results.parquet")
    assert sweep_axes(back) == ["policy", "workload"] and group_axes(back, "policy") == ["workload"]
    assert len(policy_table(back).splitlines()) == 2 + 4


def test_policy_table_groups_by_the_other_axes():
    text = policy_table(_results())
    lines = text.splitlines()
    assert lines[0].startswith("| workload | policy | seeds | hit rate")
    assert len(lines) == 2 + 4
    row = next(line for line in lines if line.startswith("| bursty | infaas"))
    assert "| 3 |" in row and "0.9020 ± 0.0025" in row and "20.0 ± 24.8" in row


def test_overall_table_averages_groups_within_each_seed_then_intervals_over_seeds():
    frame = _results()
    frame.loc[(frame.workload == "bursty") & (frame.policy == "infaas"), "hit_rate"] -= 0.1   # groups differ
    lines = overall_table(frame).splitlines()
    assert lines[0] == "| policy | groups | seeds | hit rate | accuracy | on-time accuracy | p99 ms |"
    infaas = next(line for line in lines if line.startswith("| infaas"))
    per_seed = [np.mean([0.90 + s / 1000, 0.80 + s / 1000]) for s in (1, 2, 3)]
    assert f"| 2 | 3 | {mean_interval(per_seed).format(4)} |" in infaas
    # the interval is about seeds: the 0.1 gap between the groups does not widen it
    assert mean_interval(per_seed).half_width < mean_interval(frame.loc[frame.policy == "infaas", "hit_rate"]).half_width


def test_pivot_table_has_a_row_per_policy_and_a_column_per_group():
    lines = pivot_table(_results(), "ontime_accuracy").splitlines()
    assert lines[0] == "| policy | poisson | bursty |"
    assert lines[2].startswith("| planner | 0.9320 ± 0.0025 |") and lines[3].startswith("| infaas |")


def test_versus_table_pairs_by_seed():
    text = versus_table(_results(), "planner", "infaas")
    row = next(line for line in text.splitlines() if line.startswith("| poisson"))
    assert "0.0500 ± 0.0000 (3/0, p=0)" in row


def test_study_cli(tmp_path, capsys):
    path = tmp_path / "results.parquet"
    _results().to_parquet(path)
    out = tmp_path / "study.md"
    assert study_main([str(path), "--versus", "planner:infaas", "--pivot", "hit_rate", "--out", str(out)]) == 0
    assert "planner against infaas" in out.read_text() and "hit_rate by policy" in out.read_text()
    assert study_main([str(path), "--out", str(out)]) == 2          # never overwritten silently
    assert study_main([str(path), "--versus", "planner:oracle"]) == 2
    assert study_main([str(tmp_path / "missing.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "oracle" in err[1] and "missing.parquet" in err[2]


# --- one run per grid point and seed ---------------------------------------------------------

def _duplicated(tmp_path):
    """The study's table with one run appended twice (as two sweeps' tables appended would have it)."""
    frame = _results()
    twice = pd.concat([frame, frame[(frame.workload == "bursty") & (frame.policy == "planner") & (frame.seed == 3)]],
                      ignore_index=True)
    twice.attrs["axes"] = ["workload", "policy", "seed"]
    path = tmp_path / "dup" / "results.parquet"
    path.parent.mkdir()
    twice.to_parquet(path)
    return path, twice


def test_read_results_refuses_two_runs_of_one_grid_point_and_seed(tmp_path):
    path, _ = _duplicated(tmp_path)
    with pytest.raises(InputError) as caught:
        read_results(path)
    assert caught.value.where == str(path)
    assert "2 runs of workload=bursty, policy=planner, seed 3" in caught.value.problem
    _results().to_parquet(tmp_path / "ok.parquet")             # the same table without the copy is read
    assert len(read_results(tmp_path / "ok.parquet")) == len(_results())


@pytest.mark.parametrize("argv", [
    ["--versus", "planner:infaas"],                                  # was a ValueError traceback, exit 1
    [],                                                              # the tables averaged the copy in
])
def test_study_refuses_a_duplicate_run_in_one_line(tmp_path, capsys, argv):
    path, _ = _duplicated(tmp_path)
    assert study_main([str(path), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: ") and "policy=planner, seed 3" in captured.err


@pytest.mark.parametrize("argv", [
    ["pareto", "{path}", "--objectives", "ontime_accuracy:max"],     # averaged 4 runs as "seeds 4"
    ["theory", "{dir}"],                                             # competitive ratios averaged them
    ["stats", "{path}"],
    ["ablation", "{path}", "--axis", "policy", "--base", "infaas"],
])
def test_every_command_reading_a_results_table_refuses_a_duplicate_run(tmp_path, capsys, argv):
    from analysis.cli import main as analyse

    path, _ = _duplicated(tmp_path)
    assert analyse([a.format(path=path, dir=path.parent) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "seed 3" in captured.err


def test_pairing_a_frame_with_a_seed_twice_is_refused_not_a_traceback(tmp_path):
    """Frames built in code skip ``read_results``: the shared ``runs_by_seed`` refuses them too."""
    from analysis.competitive import competitive_ratios

    _, twice = _duplicated(tmp_path)
    with pytest.raises(InputError, match="'planner' has seed 3 more than once"):
        versus_table(twice, "planner", "infaas")
    bound = twice.assign(**{"policy.name": twice.policy.replace({"infaas": "oracle-static"})})
    with pytest.raises(InputError, match="'planner' has seed 3 more than once"):
        competitive_ratios(bound)
    frame = _results()
    assert runs_by_seed(frame[frame.policy == "planner"].iloc[:3], "x", "here").index.tolist() == [1, 2, 3]


# --- --where, and groups with a missing axis value -------------------------------------------

def test_select_where_matches_numbers_whatever_their_spelling():
    frame = _results().assign(**{"requests.deadline_ms": ["10.0", "20.0", "10.0"] * 4})  # labels, as a sweep stores
    for value in ("10", "10.0", "1e1", "10.000"):
        chosen = select_where(frame, [f"requests.deadline_ms={value}"], "results")
        assert set(chosen["requests.deadline_ms"]) == {"10.0"} and len(chosen) == 8
    assert len(select_where(frame, ["workload=bursty", "seed=2"], "results")) == 2
    with pytest.raises(InputError) as caught:
        select_where(frame, ["requests.deadline_ms=15"], "results")
    assert caught.value.where == "--where requests.deadline_ms=15" and "10.0, 20.0" in caught.value.problem
    with pytest.raises(InputError, match="did you mean workload"):
        select_where(frame, ["workloads=bursty"], "results")
    with pytest.raises(InputError, match="expected COLUMN=VALUE"):
        select_where(frame, ["workload"], "results")
    with pytest.raises(InputError, match="not a column to select on"):
        select_where(frame, ["seed=1"], "results", columns=["workload"])


def test_a_missing_axis_value_is_a_group_of_its_own_not_dropped():
    frame = _results()
    frame["workload"] = frame["workload"].replace({"bursty": None})
    lines = policy_table(frame).splitlines()
    assert len(lines) == 2 + 4 and sum(line.startswith("| nan | ") or line.startswith("| None | ")
                                       for line in lines) == 2
    assert len(versus_table(frame, "planner", "infaas").splitlines()) == 2 + 2
    assert len(pivot_table(frame, "hit_rate").splitlines()[0].split("|")) == 2 + 3
