"""Statistics over seeds and the study tables built from a sweep's results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import mean_interval, paired_difference
from analysis.study import main as study_main
from analysis.study import group_axes, overall_table, pivot_table, policy_table, sweep_axes, versus_table


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
    assert paired_difference(base, base).p_value == 1.0
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


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
