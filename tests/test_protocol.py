"""The pre-declared statistical protocol: each statistic against scipy/statsmodels or a hand
derivation on known data, the protocol file's checks, pairing by seed, Holm families, `analyse stats`."""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from analysis.cli import main as analyse
from analysis.protocol import (COLUMNS, Protocol, apply_protocol, group_label, holm, load_protocol, paired_tests,
                               protocol_tests)
from analysis.stats import effect_label
from traces.errors import InputError
from traces.scenario import read_toml

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "analysis" / "protocol.toml"

# Student's sleep data (Cushny & Peebles 1905, R's `sleep`): extra hours of sleep of ten patients
# under two drugs. R's t.test(extra ~ group, paired = TRUE) prints t = -4.0621, df = 9,
# p-value = 0.002833, 95% CI -2.4598858 -0.7001142, mean difference -1.58.
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def _nct_power(d: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample t-test by the noncentral t distribution, written out."""
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = d * math.sqrt(n)
    far = stats.nct.cdf(-critical, n - 1, nc)      # NaN in scipy once it is below ~1e-15
    return stats.nct.sf(critical, n - 1, nc) + (0.0 if math.isnan(far) else far)


def test_paired_t_on_the_sleep_data_matches_the_hand_derivation_and_r():
    got = paired_tests(DRUG1, DRUG2, alpha=0.05)
    d = np.subtract(DRUG1, DRUG2)
    n, mean, sd = d.size, d.mean(), d.std(ddof=1)
    t = mean / (sd / math.sqrt(n))
    assert got.n == 10
    assert got.mean_a == pytest.approx(np.mean(DRUG1)) and got.mean_b == pytest.approx(np.mean(DRUG2))
    assert got.mean_diff == pytest.approx(-1.58)
    assert got.t_stat == pytest.approx(t) and got.t_stat == pytest.approx(-4.0621, abs=1e-4)
    assert got.p_t == pytest.approx(2 * stats.t.sf(abs(t), n - 1)) and got.p_t == pytest.approx(0.002833, abs=1e-6)
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert (got.ci_low, got.ci_high) == pytest.approx((mean - half, mean + half))
    assert (got.ci_low, got.ci_high) == pytest.approx((-2.4598858, -0.7001142), abs=1e-6)
    assert got.cohens_dz == pytest.approx(mean / sd) and got.cohens_dz == pytest.approx(t / math.sqrt(n))
    assert got.effect == "large"
    assert got.shapiro_p == pytest.approx(stats.shapiro(d).pvalue)
    # Levene with the median (Brown-Forsythe) is a one-way ANOVA of the absolute deviations from each median
    deviations = [np.abs(np.subtract(x, np.median(x))) for x in (DRUG1, DRUG2)]
    assert got.levene_p == pytest.approx(stats.f_oneway(*deviations).pvalue)
    # one zero difference (dropped), nine negative: only "all negative" and "all positive" are as
    # extreme, 2 of the 2^9 equally likely sign patterns
    assert got.w_stat == 0 and got.p_wilcoxon == pytest.approx(2 / 2**9)
    assert got.notes == ()


def test_wilcoxon_exact_p_counts_sign_patterns():
    d = [1.0, 2.0, -3.0, 4.0, 5.0]          # ranks = |d|; W+ = 12, W- = 3
    b = [10.0, 20.0, 30.0, 40.0, 50.0]
    got = paired_tests(np.add(b, d), b)
    observed = 3
    as_extreme = sum(1 for signs in itertools.product((1, -1), repeat=5)
                     if min(sum(r for r, s in zip(range(1, 6), signs) if s > 0),
                            sum(r for r, s in zip(range(1, 6), signs) if s < 0)) <= observed)
    assert got.w_stat == observed
    assert got.p_wilcoxon == pytest.approx(as_extreme / 2**5) and as_extreme == 10


def test_holm_adjusted_p_values_derived_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # a NaN is left out of the family (still 4 tests) and stays NaN
    got = holm([0.01, math.nan, 0.04, 0.03, 0.005])
    assert math.isnan(got[1]) and np.delete(got, 1) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])          # capped at 1
    assert np.isnan(holm([math.nan, math.nan])).all() and holm([]).size == 0


@pytest.mark.parametrize("shift", [0.4, 3.0])
def test_power_and_seeds_needed_agree_with_statsmodels_and_the_noncentral_t(shift):
    b = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    noise = np.array([0.5, -0.3, 0.8, -0.6, 0.1, -0.4])
    got = paired_tests(b + shift + noise, b, alpha=0.05, power_target=0.8)
    d = shift + noise
    dz = d.mean() / d.std(ddof=1)
    assert got.cohens_dz == pytest.approx(dz)
    assert got.power == pytest.approx(_nct_power(dz, 6, 0.05), rel=1e-6)
    if shift < 1:  # a huge effect's far tail is NaN in scipy's noncentral t, and so statsmodels' power
        assert got.power == pytest.approx(TTestPower().power(effect_size=dz, nobs=6, alpha=0.05))
    needed = int(got.seeds_for_power)
    assert _nct_power(dz, needed, 0.05) >= 0.8 > _nct_power(dz, needed - 1, 0.05)   # the fewest that reach it
    if needed > 10:
        assert needed == math.ceil(TTestPower().solve_power(effect_size=dz, alpha=0.05, power=0.8))


@pytest.mark.parametrize("d, label", [(0.0, "negligible"), (0.1999, "negligible"), (0.2, "small"), (-0.49, "small"),
                                      (0.5, "medium"), (0.7999, "medium"), (0.8, "large"), (-2.5, "large"),
                                      (math.nan, "n/a")])
def test_cohens_d_labels_at_the_conventional_boundaries(d, label):
    assert effect_label(d) == label


def _quiet(a, b, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # a warning would fail the test
        return paired_tests(a, b, **kwargs)


def test_degenerate_samples_give_nan_and_a_reason_without_warnings():
    equal = _quiet([0.9, 0.8, 0.95, 0.7], [0.9, 0.8, 0.95, 0.7])
    assert equal.mean_diff == 0 and equal.notes == ("a and b are equal on every seed: no test applies",)
    assert all(math.isnan(v) for v in (equal.t_stat, equal.p_t, equal.p_wilcoxon, equal.cohens_dz, equal.power,
                                       equal.seeds_for_power, equal.shapiro_p))
    rounding = _quiet([0.3, 0.7], [0.1 + 0.2, 0.7])                # 0.3 - (0.1 + 0.2) is not 0 in floats
    assert rounding.mean_diff == 0 and math.isnan(rounding.p_wilcoxon)
    gap = _quiet([1.5, 2.5, 3.5, 4.5, 5.5], [1.0, 2.0, 3.0, 4.0, 5.0])     # the same gap on every seed
    assert gap.mean_diff == pytest.approx(0.5) and (gap.ci_low, gap.ci_high) == (0.5, 0.5)
    # the t-test's limits, as scipy gives them and as the zero-width interval excluding 0 requires
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                            # scipy warns of the zero variance
        assert (gap.t_stat, gap.p_t) == (math.inf, 0.0) == tuple(stats.ttest_1samp([0.5] * 5, 0.0))
    assert gap.cohens_dz == math.inf and gap.effect == "large" and (gap.power, gap.seeds_for_power) == (1.0, 2.0)
    assert math.isnan(gap.shapiro_p)
    assert gap.p_wilcoxon == pytest.approx(2 / 2**5)                 # all five positive
    assert any("no variance" in note for note in gap.notes)
    below = _quiet([1.0, 2.0, 3.0], [1.25, 2.25, 3.25])
    assert (below.t_stat, below.p_t, below.cohens_dz) == (-math.inf, 0.0, -math.inf)
    flat = _quiet([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert math.isnan(flat.levene_p) and any("Levene" in note for note in flat.notes)
    two = _quiet([1.0, 2.0], [0.5, 1.8])
    assert math.isfinite(two.p_t) and math.isnan(two.shapiro_p) and any("Shapiro-Wilk needs 3" in n for n in two.notes)
    one = _quiet([1.0], [0.5])
    assert one.n == 1 and math.isnan(one.p_t) and math.isnan(one.ci_low) and one.mean_diff == 0.5
    none = _quiet([], [])
    assert none.n == 0 and math.isnan(none.mean_a) and math.isnan(none.mean_diff)
    balanced = _quiet([1.0, 2.0, 3.0], [2.0, 1.0, 3.0])                # mean difference 0: d_z = 0
    assert balanced.cohens_dz == 0 and balanced.power == pytest.approx(0.05) and math.isnan(balanced.seeds_for_power)
    holes = _quiet([1.0, math.nan, 3.0, 4.2], [0.9, 2.0, 2.7, 4.0])
    assert holes.n == 3 and any("1 pair(s) with a missing value" in note for note in holes.notes)
    with pytest.raises(ValueError):
        paired_tests([1.0, 2.0], [1.0])


# --- the protocol file ---

def test_the_packaged_protocol_names_policies_of_the_study():
    protocol = load_protocol(PACKAGED)
    assert protocol.primary_metric == "ontime_accuracy" and protocol.metrics[0] == "ontime_accuracy"
    assert (protocol.alpha, protocol.power_target, protocol.correction) == (0.05, 0.8, "holm")
    study = read_toml(ROOT / "examples" / "study" / "study.toml")
    policies = set(study["groups"][protocol.policy_axis])
    assert protocol.comparisons and all(a in policies and b in policies for a, b in protocol.comparisons)


def _protocol_file(tmp_path: Path, extra: str = "", **keys) -> Path:
    values = {"primary_metric": '"ontime_accuracy"', "comparisons": '[["planner", "infaas"]]', **keys}
    path = tmp_path / "protocol.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items() if v is not None) + extra)
    return path


@pytest.mark.parametrize("keys, named", [
    ({"color": '"red"'}, "color"),
    ({"alpha": '"0.05"'}, "alpha"), ({"alpha": "0"}, "alpha"), ({"alpha": "1.0"}, "alpha"), ({"alpha": "true"}, "alpha"),
    ({"power_target": "1"}, "power_target"), ({"power_target": "-0.2"}, "power_target"),
    ({"primary_metric": "3"}, "primary_metric"), ({"primary_metric": None}, "primary_metric"),
    ({"secondary_metrics": '"hit_rate"'}, "secondary_metrics"),
    ({"secondary_metrics": '["hit_rate", "ontime_accuracy"]'}, "secondary_metrics"),
    ({"secondary_metrics": '["hit_rate", "hit_rate"]'}, "secondary_metrics"),
    ({"comparisons": None}, "comparisons"), ({"comparisons": "[]"}, "comparisons"),
    ({"comparisons": '[["a", "b", "c"]]'}, "comparisons[0]"), ({"comparisons": '[["a", "a"]]'}, "comparisons[0]"),
    ({"comparisons": '[["a", "b"], ["a", "b"]]'}, "comparisons[1]"),
    ({"test": '"z"'}, "test"), ({"correction": '"bonferroni"'}, "correction"), ({"families": '"all"'}, "families"),
    ({"policy_axis": "1"}, "policy_axis"),
])
def test_a_bad_protocol_is_refused_naming_the_key(tmp_path, keys, named):
    path = _protocol_file(tmp_path, **keys)
    with pytest.raises(InputError) as caught:
        load_protocol(path)
    assert caught.value.where == f"{path}: {named}"


def test_a_missing_or_malformed_protocol_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_protocol(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("alpha = \n")
    with pytest.raises(InputError, match="invalid TOML"):
        load_protocol(tmp_path / "bad.toml")


# --- applying it to a results table ---

LEVEL = {"planner": 0.95, "infaas": 0.93, "oracle-static": 0.955, "degrade": 0.951, "aimd-batching": 0.94}


def _results(policies=("planner", "infaas", "oracle-static"), seeds=(1, 2, 3, 4), shuffle=True) -> pd.DataFrame:
    """A sweep-like table: run_id, the axes (deadline, workload, policy), seed, then the metrics."""
    rng = np.random.default_rng(7)
    rows = []
    for deadline in ("20.0", "50.0"):
        for workload in ("poisson", "bursty"):
            for policy in policies:
                for seed in seeds:
                    ontime = LEVEL[policy] - (0.01 if deadline == "20.0" else 0) + rng.normal(0, 0.004)
                    rows.append({"run_id": f"{deadline}-{workload}-{policy}-{seed}", "requests.deadline_ms": deadline,
                                 "workload": workload, "policy": policy, "seed": seed,
                                 "accuracy": 0.97 + rng.normal(0, 0.002), "cost.total": 0.05,
                                 "hit_rate": ontime + 0.02 + rng.normal(0, 0.002),
                                 "latency_ms.p99": 15 + rng.normal(0, 1), "ontime_accuracy": ontime})
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True) if shuffle else frame


def _protocol(**changes) -> Protocol:
    fields = {"source": "test-protocol", "comparisons": (("planner", "infaas"), ("planner", "oracle-static")),
              "secondary_metrics": ("hit_rate", "latency_ms.p99"), **changes}
    return Protocol(**fields)


def _pair(frame, metric, a, b, deadline, workload):
    group = frame[(frame["requests.deadline_ms"] == deadline) & (frame["workload"] == workload)]
    left = group[group.policy == a].set_index("seed")[metric]
    right = group[group.policy == b].set_index("seed")[metric]
    seeds = sorted(set(left.index) & set(right.index))
    return left[seeds].to_numpy(), right[seeds].to_numpy()


def test_apply_protocol_pairs_by_seed_in_each_group_with_exact_columns():
    frame = _results()
    table = apply_protocol(frame, _protocol())
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 3 * 2 * 4                          # metrics x comparisons x groups
    assert list(table.metric.drop_duplicates()) == ["ontime_accuracy", "hit_rate", "latency_ms.p99"]
    assert set(table.group) == {f"deadline_ms={d} workload={w}" for d in (20, 50) for w in ("poisson", "bursty")}
    row = table[(table.metric == "hit_rate") & (table.b == "oracle-static")
                & (table.group == "deadline_ms=50 workload=bursty")].iloc[0]
    a, b = _pair(frame, "hit_rate", "planner", "oracle-static", "50.0", "bursty")
    expected = paired_tests(a, b)
    assert row.n == 4 and row.mean_diff == pytest.approx(np.mean(a - b))
    assert row.p_t == pytest.approx(stats.ttest_rel(a, b).pvalue) and row.p_t == pytest.approx(expected.p_t)
    assert row.cohens_dz == pytest.approx(expected.cohens_dz) and row.w_stat == pytest.approx(expected.w_stat)


def test_a_seed_missing_on_one_side_is_left_out_and_n_says_so():
    frame = _results()
    gone = (frame.policy == "infaas") & (frame.seed == 2) & (frame.workload == "bursty") \
        & (frame["requests.deadline_ms"] == "20.0")
    table = apply_protocol(frame[~gone], _protocol())
    short = (table.a == "planner") & (table.b == "infaas") & (table.group == "deadline_ms=20 workload=bursty")
    assert set(table.loc[short, "n"]) == {3} and set(table.loc[~short, "n"]) == {4}
    a, b = _pair(frame[~gone], "ontime_accuracy", "planner", "infaas", "20.0", "bursty")
    assert table.loc[short & (table.metric == "ontime_accuracy"), "mean_diff"].item() == pytest.approx(np.mean(a - b))
    notes = {c.tests.notes for c in protocol_tests(frame[~gone], _protocol()) if c.tests.notes}
    assert notes == {("Seeds left out of the pairing: only in planner: [2].",)}


def test_holm_runs_within_each_family_only():
    table = apply_protocol(_results(), _protocol())
    for metric, rows in table.groupby("metric"):
        assert rows.p_holm.to_numpy() == pytest.approx(holm(rows.p_t.to_numpy()), nan_ok=True)
    primary = table[table.metric == "ontime_accuracy"]
    assert not np.allclose(primary.p_holm, holm(table.p_t)[primary.index])    # not one family of everything
    assert (table.significant == (table.p_holm < 0.05)).all() and primary.significant.any()
    by_group = apply_protocol(_results(), _protocol(families="metric-group", test="wilcoxon"))
    for _, rows in by_group.groupby(["metric", "group"]):
        assert len(rows) == 2 and rows.p_holm.to_numpy() == pytest.approx(holm(rows.p_wilcoxon.to_numpy()))


def test_no_other_axes_gives_one_unlabelled_group():
    frame = _results()
    frame = frame[(frame.workload == "poisson") & (frame["requests.deadline_ms"] == "50.0")]
    frame = frame.drop(columns=["workload", "requests.deadline_ms"])
    table = apply_protocol(frame, _protocol())
    assert set(table.group) == {""} and len(table) == 3 * 2
    assert group_label(["a.x", "b.x", "w"], ("1.0", "2.5", "bursty")) == "a.x=1 b.x=2.5 w=bursty"


@pytest.mark.parametrize("change, named", [
    ({"comparisons": (("planner", "infaas"), ("planner", "degrade"))}, "comparisons[1] planner vs degrade"),
    ({"secondary_metrics": ("hit_rate", "energy_j")}, "secondary_metrics"),
    ({"policy_axis": "router"}, "policy_axis"),
])
def test_the_protocol_must_fit_the_results(change, named):
    with pytest.raises(InputError) as caught:
        apply_protocol(_results(), _protocol(**change))
    assert caught.value.where == f"test-protocol: {named}"


def test_a_seed_twice_for_one_policy_is_refused():
    frame = _results()
    with pytest.raises(InputError, match="more than once"):
        apply_protocol(pd.concat([frame, frame.iloc[:1]]), _protocol())


def test_the_overview_counts_each_comparisons_significant_groups_by_sign():
    from analysis.protocol_cli import overview_table

    frame = _results()
    table = apply_protocol(frame, _protocol())
    table.loc[table.index[0], ["significant", "mean_diff"]] = [True, -0.5]   # one group turned against a
    lines = overview_table(table, _protocol()).splitlines()
    assert [line.split(" | ")[0].lstrip("| ") for line in lines[2:]] == ["ontime_accuracy"] * 2 + ["hit_rate"] * 2 \
        + ["latency_ms.p99"] * 2                                            # primary metric first
    for line, ((metric, a, b), rows) in zip(lines[2:], table.groupby(["metric", "a", "b"], sort=False)):
        cells = [c.strip() for c in line.strip("|").split("|")]
        higher = int((rows.significant & (rows.mean_diff > 0)).sum())
        lower = int((rows.significant & (rows.mean_diff < 0)).sum())
        assert cells[1] == f"{a} − {b}" and cells[2:6] == [str(len(rows)), str(higher), str(lower),
                                                            str(len(rows) - higher - lower)]
    assert "| ontime_accuracy | planner − infaas | 4 | 3 | 1 | 0 |" in lines[2]


# --- analyse stats ---

def _write_results(tmp_path: Path, **kwargs) -> Path:
    path = tmp_path / "results.parquet"
    _results(**kwargs).to_parquet(path, index=False)
    return path


def test_analyse_stats_prints_the_primary_metric_first_under_the_protocol_line(tmp_path, capsys):
    results = _write_results(tmp_path, policies=tuple(LEVEL))
    assert analyse(["stats", str(results)]) == 0                  # the packaged protocol
    out = capsys.readouterr().out
    protocol = load_protocol(PACKAGED)
    assert out.startswith(f"Protocol {PACKAGED}: two-sided paired t-test") and "alpha = 0.05" in out
    assert "Holm" in out.splitlines()[0]
    headings = [line for line in out.splitlines() if line.startswith("## ")]
    assert headings == ["## Overview"] + [f"## {m} ({'primary' if i == 0 else 'secondary'})"
                                          for i, m in enumerate(protocol.metrics)]
    assert "a and b are equal on every seed" in out                 # cost.total is the same for every policy


def test_analyse_stats_out_writes_both_files_and_refuses_a_second_run_without_force(tmp_path, capsys):
    results = _write_results(tmp_path)
    protocol = _protocol_file(tmp_path, secondary_metrics='["hit_rate"]',
                              comparisons='[["planner", "infaas"], ["oracle-static", "planner"]]')
    out = tmp_path / "stats"
    argv = ["stats", str(results), "--protocol", str(protocol), "--out", str(out)]
    assert analyse(argv) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "stats.csv", keep_default_na=False, na_values=[""])
    assert tuple(table.columns) == COLUMNS and len(table) == 2 * 2 * 4
    assert (out / "stats.md").read_text() == printed
    before = (out / "stats.csv").read_bytes()
    assert analyse(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert analyse(argv + ["--force"]) == 0 and (out / "stats.csv").read_bytes() == before


@pytest.mark.parametrize("problem", ["missing", "protocol", "policy"])
def test_analyse_stats_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, problem):
    results = _write_results(tmp_path)
    change = {"protocol": {"alpha": "2"}, "policy": {"comparisons": '[["planner", "degrade"]]'}}.get(problem, {})
    protocol = _protocol_file(tmp_path, **change)
    target = tmp_path / "missing.parquet" if problem == "missing" else results
    argv = ["stats", str(target), "--out", str(tmp_path / "stats")]
    if problem != "missing":
        argv[2:2] = ["--protocol", str(protocol)]
    assert analyse(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert {"missing": "not found", "protocol": "alpha", "policy": "comparisons[0]"}[problem] in captured.err
    assert not (tmp_path / "stats").exists()

