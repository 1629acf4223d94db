"""`analyse compare`: two runs paired by seed, checked against a hand computation on tiny runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_misses import write_seed

from analysis.cli import main as analyse
from analysis.compare import METRICS, compare_rows, latency_figure, report
from analysis.plots_runs import seeds_latencies
from analysis.runs import pair_by_seed, read_run
from traces.errors import InputError


def summary(level: float) -> dict:
    """A summary.json whose every compared metric is a simple function of ``level``."""
    return {"requests": 4, "hit_rate": level, "accuracy": level / 2, "ontime_accuracy": level / 3,
            "latency_ms": {"p50": 10 * level, "p95": 20 * level, "p99": 30 * level},
            "throughput_rps": 100 * level, "cost": {"total": level / 10}}


def requests(latencies_ms: list[float], deadline_ms: float = 50.0) -> pd.DataFrame:
    """Measured completed requests with these latencies, plus one dropped and one in the warm-up."""
    n = len(latencies_ms)
    return pd.DataFrame({"measured": [True] * n + [True, False], "dropped": [False] * n + [True, False],
                         "latency_ms": [*latencies_ms, math.nan, 999.0], "deadline_ms": [deadline_ms] * (n + 2)})


LEVELS_A = {1: 0.10, 2: 0.50, 3: 0.60}      # seed 1 only in A: an outlier that must not count
LEVELS_B = {2: 0.70, 3: 0.65, 4: 0.99}      # seed 4 only in B


def write_runs(tmp_path, deadline_b: float = 50.0):
    for name, levels, deadline in (("a", LEVELS_A, 50.0), ("b", LEVELS_B, deadline_b)):
        for seed, level in levels.items():
            write_seed(tmp_path / name / f"seed-{seed}", seed, requests([seed, 2 * seed], deadline), summary(level))
    return tmp_path / "a", tmp_path / "b"


def test_paired_deltas_match_a_hand_computation(tmp_path):
    a, b = write_runs(tmp_path)
    pairs = pair_by_seed(read_run(a), read_run(b), "test")
    assert [(x.seed, y.seed) for x, y in pairs] == [(2, 2), (3, 3)]
    scale = {"hit_rate": 1, "accuracy": 0.5, "ontime_accuracy": 1 / 3, "latency_ms.p50": 10, "latency_ms.p95": 20,
             "latency_ms.p99": 30, "throughput_rps": 100, "cost.total": 0.1}
    rows = {row.metric.key: row for row in compare_rows(pairs)}
    assert set(rows) == {m.key for m in METRICS}
    for key, factor in scale.items():
        a_values = np.array([LEVELS_A[2], LEVELS_A[3]]) * factor
        b_values = np.array([LEVELS_B[2], LEVELS_B[3]]) * factor
        d = b_values - a_values                                   # 0.20 and 0.05 times the factor
        assert rows[key].a == pytest.approx(a_values) and rows[key].b == pytest.approx(b_values)
        cells = rows[key].cells()
        digits = rows[key].metric.digits
        half = stats.t.ppf(0.975, 1) * d.std(ddof=1) / math.sqrt(2)
        assert cells[3] == f"{d.mean():.{digits}f} ± {half:.{digits}f}"
        assert cells[4] == f"{stats.ttest_1samp(d, 0).pvalue:.2g}"
        higher_is_better = key in ("hit_rate", "accuracy", "ontime_accuracy", "throughput_rps")
        assert cells[5] == ("2/0" if higher_is_better else "0/2")   # B is higher on both seeds


def test_report_names_the_seeds_left_out(tmp_path, capsys):
    a, b = write_runs(tmp_path)
    assert analyse(["compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "Seeds [2, 3]" in text and f"only in {a}: [1]" in text and f"only in {b}: [4]" in text
    hit = next(line for line in text.splitlines() if line.startswith("| hit rate"))
    half = stats.t.ppf(0.975, 1) * np.std([0.5, 0.6], ddof=1) / math.sqrt(2)
    assert hit.split(" | ")[1] == f"{np.mean([0.5, 0.6]):.4f} ± {half:.4f}"


def test_latency_cdf_pools_completed_measured_requests_and_marks_a_shared_deadline(tmp_path):
    a, b = write_runs(tmp_path)
    runs = read_run(a)
    latencies, deadline = seeds_latencies(runs)                   # the one reader compare and figures share
    assert sorted(latencies) == [1, 2, 2, 3, 4, 6]                # the dropped one and the warm-up left out
    assert deadline == 50.0
    pairs = pair_by_seed(runs, read_run(b), "test")
    labels = [line.get_label() for line in latency_figure(pairs, ("a", "b")).axes[0].get_lines()]
    assert any(label.startswith("deadline 50") for label in labels)
    other = tmp_path / "other"
    a2, b2 = write_runs(other, deadline_b=80.0)
    pairs = pair_by_seed(read_run(a2), read_run(b2), "test")
    labels = [line.get_label() for line in latency_figure(pairs, ("a", "b")).axes[0].get_lines()]
    assert not any(label.startswith("deadline") for label in labels)


def test_out_writes_the_report_and_the_figure(tmp_path, capsys):
    a, b = write_runs(tmp_path)
    out = tmp_path / "cmp"
    assert analyse(["compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "compare.md").read_text() == printed.rsplit("wrote ", 1)[0]
    assert (out / "latency_cdf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert analyse(["compare", str(a), str(b), "--out", str(out)]) == 2
    assert analyse(["compare", str(a), str(b), "--out", str(out), "--force"]) == 0


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    a, b = write_runs(tmp_path)
    lonely = tmp_path / "lonely"
    write_seed(lonely / "seed-9", 9, requests([1.0]), summary(0.5))
    broken = tmp_path / "broken"
    write_seed(broken / "seed-2", 2, requests([1.0]), {"requests": 4, "hit_rate": 0.5})
    for argv, words in ((["compare", str(a), str(lonely)], "no seed in common"),
                        (["compare", str(a), str(tmp_path / "nothing")], "not found"),
                        (["compare", str(a), str(broken)], "has no 'accuracy'")):
        capsys.readouterr()
        assert analyse(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1
    with pytest.raises(InputError):
        pair_by_seed(read_run(a), read_run(lonely), "x")
    assert report(pair_by_seed(read_run(a), read_run(a), "x"), ("a", "a")).count("0/0") == len(METRICS)


def test_the_cdf_is_the_figures_reader_a_request_without_latency_left_out(tmp_path):
    """compare draws what `analyse figures` draws (``plots_runs.seeds_latencies``): a completed
    measured request whose latency is missing is left out, not drawn as NaN."""
    a, b = write_runs(tmp_path)
    holey = requests([5.0, math.nan])                    # completed, measured, no latency recorded
    write_seed(a / "seed-2", 2, holey, summary(LEVELS_A[2]))
    pairs = pair_by_seed(read_run(a), read_run(b), "test")
    lines = {line.get_label(): line for line in latency_figure(pairs, ("a", "b")).axes[0].get_lines()}
    drawn = lines[next(label for label in lines if label.startswith("A:"))].get_xdata()
    expected, _ = seeds_latencies([x for x, _ in pairs])
    assert np.isfinite(drawn).all() and set(drawn) == set(expected) and 5.0 in set(drawn)


def test_out_is_written_before_anything_is_printed(tmp_path, capsys):
    a, b = write_runs(tmp_path)
    for seed in (2, 3):          # B's request tables lack the latencies the figure needs
        path = b / f"seed-{seed}" / "requests.parquet"
        pd.read_parquet(path).drop(columns="latency_ms").to_parquet(path)
    assert analyse(["compare", str(a), str(b)]) == 0     # the report alone needs only the summaries
    capsys.readouterr()
    assert analyse(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "latency_ms" in captured.err and not (tmp_path / "cmp").exists()
