"""Figures: each function on small hand-built data draws what it says (checked against independent
computations: brute-force fronts, scipy's t intervals and ECDF, numpy histograms), PNGs are valid
and byte-identical when saved twice, and `analyse figures` on a hand-written sweep and run makes
the files its axes allow, skips the rest, and refuses bad input with one line and status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from scipy import stats

from analysis.cli import main
from analysis.figures import (POLICY_COLORS, latency_cdf_figure, new_figure, policy_color, save_figure,
                              series_colors)
from analysis.plots_runs import binned_rates, measured_latencies, time_series_figure
from analysis.plots_sweep import (baseline_figure, coverage, effects_figure, pareto_figure, threshold_figure,
                                  workload_figure)
from analysis.protocol import COLUMNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def saved_bytes(fig, path: Path) -> bytes:
    save_figure(fig, path)
    return path.read_bytes()


def brute_front(acc: np.ndarray, cost: np.ndarray) -> set[int]:
    """Rows no other row beats: accuracy at least as high and cost at most as high, one strictly."""
    rows = set()
    for i in range(len(acc)):
        if not any(acc[j] >= acc[i] and cost[j] <= cost[i] and (acc[j] > acc[i] or cost[j] < cost[i])
                   for j in range(len(acc))):
            rows.add(i)
    return rows


def t_interval(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))


# --- shared pieces ------------------------------------------------------------------------------

def test_new_figure_is_styled_and_a_saved_png_is_valid_and_deterministic(tmp_path):
    fig, ax = new_figure(5.0, 3.0)
    assert tuple(fig.get_size_inches()) == (5.0, 3.0)
    assert ax.xaxis.label.get_fontsize() == 10 and ax.xaxis._major_tick_kw.get("gridOn", True)
    ax.plot([1, 2, 3], [3, 1, 2])
    first = saved_bytes(fig, tmp_path / "a.png")
    fig, ax = new_figure(5.0, 3.0)
    ax.plot([1, 2, 3], [3, 1, 2])
    second = saved_bytes(fig, tmp_path / "b.png")
    assert first[:8] == PNG_SIGNATURE and first == second
    assert b"Software" not in first and b"Creation" not in first  # no version, no timestamp
    from PIL import Image

    with Image.open(tmp_path / "a.png") as image:
        image.verify()


def test_policy_colours_are_fixed_and_distinct_within_a_figure():
    assert policy_color("planner") == POLICY_COLORS["planner"]
    assert policy_color("my-policy") == policy_color("my-policy")  # stable across calls
    names = ["planner", "infaas", "a", "b", "c", "d", "e"]
    colors = series_colors(names)
    assert colors["planner"] == POLICY_COLORS["planner"] and len(set(colors.values())) == len(names)
    assert len(set(series_colors(["x", "y", "z"], policies=False).values())) == 3


def test_latency_cdf_steps_are_the_empirical_cdf_with_the_deadline_and_a_log_axis(tmp_path):
    rng = np.random.default_rng(3)
    wide = {"planner": rng.lognormal(2.0, 1.0, 200), "infaas": rng.lognormal(2.5, 0.8, 150)}
    fig = latency_cdf_figure(wide, "cdf", deadline_ms=40.0)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "latency (ms)"
    curves = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    assert len(curves) == 2
    for line, values in zip(curves, wide.values()):
        ecdf = stats.ecdf(values).cdf
        np.testing.assert_allclose(line.get_xdata(), ecdf.quantiles)
        np.testing.assert_allclose(line.get_ydata(), ecdf.probabilities)
    verticals = [line for line in ax.get_lines() if line not in curves]
    assert len(verticals) == 1 and list(verticals[0].get_xdata()) == [40.0, 40.0]
    narrow = latency_cdf_figure({"planner": np.array([10.0, 12.0, 30.0])}, "cdf")
    assert narrow.axes[0].get_xscale() == "linear"
    assert saved_bytes(fig, tmp_path / "c.png")[:8] == PNG_SIGNATURE


def test_measured_latencies_keep_measured_completed_requests_only():
    requests = pd.DataFrame({"latency_ms": [1.0, 2.0, np.nan, 4.0], "measured": [True, False, True, True],
                             "dropped": [False, False, True, False]})
    assert measured_latencies(requests).tolist() == [1.0, 4.0]


# --- sweep figures ------------------------------------------------------------------------------

def grid_points() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for policy in ("planner", "infaas", "oracle-static"):
        for deadline in ("10.0", "20.0", "40.0", "80.0"):
            rows.append({"policy": policy, "requests.deadline_ms": deadline,
                         "ontime_accuracy": rng.uniform(0.8, 1.0), "latency_ms.p99": rng.uniform(5, 200),
                         "cost.total": rng.uniform(0.01, 0.05)})
    return pd.DataFrame(rows)


def test_pareto_step_line_vertices_are_exactly_the_front_of_the_non_bound_points():
    points = grid_points()
    fig = pareto_figure(points, "policy", annotate=["requests.deadline_ms"])
    assert len(fig.axes) == 2
    candidates = points[points["policy"] != "oracle-static"].reset_index(drop=True)
    for ax, cost in zip(fig.axes, ("latency_ms.p99", "cost.total")):
        assert ax.get_ylabel() == "on-time accuracy" and ax.get_xlabel().startswith(("p99 latency (ms)", "cost"))
        fronts = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
        assert len(fronts) == 1 and fronts[0].get_drawstyle() == "steps-post"
        expected = candidates.loc[sorted(brute_front(candidates["ontime_accuracy"].to_numpy(),
                                                     candidates[cost].to_numpy()))]
        vertices = {tuple(v) for v in fronts[0].get_xydata()}
        assert vertices == set(zip(expected[cost], expected["ontime_accuracy"]))
        assert len(fronts[0].get_xydata()) == len(expected)
        assert np.all(np.diff(fronts[0].get_xdata()) >= 0)  # a staircase, left to right
        markers = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
        assert markers == {"planner": 4, "infaas": 4, "oracle-static (bound)": 4}
        assert len(ax.texts) == len({(x, y) for x, y in vertices})  # one label per front position


def runs_frame(seeds=(1, 2, 3, 4)) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    rows = []
    for workload in ("steady", "bursty"):
        for deadline in ("20.0", "80.0"):
            for policy in ("planner", "infaas"):
                for seed in seeds:
                    rows.append({"requests.deadline_ms": deadline, "workload": workload, "policy": policy,
                                 "seed": seed, "hit_rate": rng.uniform(0.7, 1.0),
                                 "ontime_accuracy": rng.uniform(0.6, 0.99)})
    return pd.DataFrame(rows)


LABELS = {"hit_rate": "hit rate (share on time)", "ontime_accuracy": "on-time accuracy"}


@pytest.mark.parametrize("figure", ["baseline", "workload"])
def test_interval_panels_show_the_mean_and_students_t_interval_over_seeds(figure):
    frame = runs_frame()
    if figure == "baseline":
        sub = frame[frame["workload"] == "bursty"]
        fig = baseline_figure(sub, "requests.deadline_ms", "policy")
        x, metrics, xs = "requests.deadline_ms", ("hit_rate", "ontime_accuracy"), ["20.0", "80.0"]
        ticks = ["20", "80"]
    else:
        sub = frame[frame["requests.deadline_ms"] == "20.0"]
        fig = workload_figure(sub, "workload", "policy")
        x, metrics, xs = "workload", ("ontime_accuracy", "hit_rate"), ["steady", "bursty"]  # not numbers: as they come
        ticks = xs
    assert [ax.get_ylabel() for ax in fig.axes] == [LABELS[m] for m in metrics]
    for ax, metric in zip(fig.axes, metrics):
        assert [t.get_text() for t in ax.get_xticklabels()] == ticks
        assert len(ax.containers) == 2  # one error bar series per policy
        for container, policy in zip(ax.containers, ("planner", "infaas")):
            means, bars = container.lines[0], container.lines[2][0]
            for k, value in enumerate(xs):
                values = sub.loc[(sub["policy"] == policy) & (sub[x] == value), metric]
                assert means.get_ydata()[k] == pytest.approx(values.mean())
                assert bars.get_segments()[k][:, 1] == pytest.approx(t_interval(values))


def test_coverage_is_the_share_of_first_hop_reached_requests_not_passed_on():
    results = pd.DataFrame({
        "cascade.s@0.9>l.hop0.reached": [100.0, np.nan, np.nan],
        "cascade.s@0.9>l.hop0.passed_on": [20.0, np.nan, np.nan],
        "cascade.s@0.8>m.hop0.reached": [50.0, 40.0, np.nan],
        "cascade.s@0.8>m.hop0.passed_on": [10.0, 4.0, np.nan],
        "cascade.s@0.8>m.hop0.passed_on_share": [0.2, 0.1, np.nan],
    })
    got = coverage(results)
    assert got[0] == pytest.approx(1 - 30 / 150) and got[1] == pytest.approx(0.9) and np.isnan(got[2])


def test_threshold_figure_has_accuracy_coverage_and_latency_panels_on_a_logit_threshold_axis():
    rows = []
    for tau, passed in ((0.5, 5.0), (0.9, 20.0), (0.99, 60.0)):
        for seed in (1, 2):
            rows.append({"policy.threshold": str(tau), "load": "1.0", "seed": seed, "accuracy": 0.9 + tau / 20,
                         "latency_ms.p99": 10 + 20 * tau + seed, "cascade.s@x>l.hop0.reached": 100.0,
                         "cascade.s@x>l.hop0.passed_on": passed + seed})
    fig = threshold_figure(pd.DataFrame(rows), "policy.threshold", "load", policies=False)
    assert [ax.get_ylabel() for ax in fig.axes] == ["accuracy (share correct)", "coverage (share answered by hop 1)",
                                                    "p99 latency (ms)"]
    assert all(ax.get_xscale() == "logit" and ax.get_xlabel() == "cascade threshold τ" for ax in fig.axes)
    line = fig.axes[1].containers[0].lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0.5, 0.9, 0.99])
    np.testing.assert_allclose(line.get_ydata(), [1 - 6.5 / 100, 1 - 21.5 / 100, 1 - 61.5 / 100])


def effects_table() -> pd.DataFrame:
    rows = []
    for metric in ("ontime_accuracy", "hit_rate"):
        for (a, b), shift in ((("planner", "infaas"), 0.05), (("planner", "oracle-static"), -0.01)):
            for k, group in enumerate(("workload=steady", "workload=bursty")):
                diff = shift + 0.01 * k
                row = dict.fromkeys(COLUMNS, np.nan)
                row.update(metric=metric, a=a, b=b, group=group, n=5, mean_diff=diff, ci_low=diff - 0.02 - 0.01 * k,
                           ci_high=diff + 0.02, significant=bool(shift > 0), effect="large")
                rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_effects_forest_plot_draws_each_difference_with_its_interval_and_marks_significance():
    table = effects_table()
    fig = effects_figure(table, "ontime_accuracy")
    ax = fig.axes[0]
    rows = table[table["metric"] == "ontime_accuracy"].reset_index(drop=True)
    assert len(ax.containers) == len(rows)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows["group"])
    for container, (_, row) in zip(ax.containers, rows.iterrows()):
        point = container.lines[0]
        assert point.get_xdata()[0] == pytest.approx(row["mean_diff"])
        assert container.lines[2][0].get_segments()[0][:, 0] == pytest.approx([row["ci_low"], row["ci_high"]])
        filled = to_rgba(point.get_markerfacecolor()) != (1.0, 1.0, 1.0, 1.0)
        assert filled == row["significant"]
    assert "on-time accuracy" in ax.get_xlabel()
    assert [t.get_text() for t in ax.texts] == ["planner − infaas", "planner − oracle-static"]


# --- run figures --------------------------------------------------------------------------------

def run_tables(replicas_change: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    arrival = np.sort(rng.uniform(0, 10, 400))
    requests = pd.DataFrame({"arrival_s": arrival, "hit": arrival < 6})
    ticks = np.arange(1.0, 11.0)
    timeline = pd.concat([pd.DataFrame({"time_s": ticks, "deployment": name, "queue_length": rng.integers(0, 9, 10),
                                        "replicas": np.where((ticks > 5) & replicas_change & (name == "big"), 2, 1),
                                        "ready_replicas": 1})
                          for name in ("small", "big")]).sort_values("time_s", kind="stable")
    return requests, timeline


@pytest.mark.parametrize("replicas_change", [True, False])
def test_time_series_panels_bin_arrivals_and_hits_by_second(replicas_change):
    requests, timeline = run_tables(replicas_change)
    fig = time_series_figure(requests, timeline, window_s=(2.0, 10.0))
    labels = [ax.get_ylabel() for ax in fig.axes]
    expected = ["arrivals (req/s)", "queue length\n(requests)"] + (["replicas"] if replicas_change else []) + \
        ["hit rate\n(by arrival)"]
    assert labels == expected
    counts = requests["arrival_s"].floordiv(1.0).value_counts().sort_index()
    binned = binned_rates(requests, 1.0, 10.0)
    np.testing.assert_array_equal(binned["arrival_rate_rps"], counts.to_numpy())
    hits = requests.groupby(requests["arrival_s"].floordiv(1.0))["hit"].mean()
    np.testing.assert_allclose(binned["hit_rate"], hits.to_numpy())
    stairs = fig.axes[0].patches[0]
    np.testing.assert_array_equal(stairs.get_data().values, counts.to_numpy())
    assert len(fig.axes[1].get_lines()) == 2  # a queue line per deployment
    if replicas_change:
        assert {line.get_label() for line in fig.axes[2].get_lines()} == {"big: provisioned", "big: ready"}
    assert fig.axes[-1].get_xlabel().startswith("time (s)")


def test_time_series_without_a_timeline_has_the_two_request_panels():
    requests, _ = run_tables(False)
    fig = time_series_figure(requests, None)
    assert [ax.get_ylabel() for ax in fig.axes] == ["arrivals (req/s)", "hit rate\n(by arrival)"]


# --- the command --------------------------------------------------------------------------------

def write_run_dir(path: Path, policy: str, seed: int, deadline_ms: float, scale: float, timeline: bool = False) -> None:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    n = 60
    arrival = np.sort(rng.uniform(0, 6, n))
    latency = rng.lognormal(np.log(5 * scale), 0.8, n)
    requests = pd.DataFrame({"id": np.arange(n), "arrival_s": arrival, "deadline_ms": deadline_ms,
                             "latency_ms": latency, "dropped": False, "measured": arrival >= 1.0,
                             "hit": latency <= deadline_ms})
    requests.to_parquet(path / "requests.parquet", index=False)
    (path / "config.json").write_text(json.dumps({"policy": {"name": policy}}))
    (path / "summary.json").write_text(json.dumps({"seed": seed, "window_s": [1.0, 6.0], "policy": {"name": policy}}))
    if timeline:
        ticks = np.arange(1.0, 7.0)
        pd.DataFrame({"time_s": ticks, "deployment": "m", "replicas": [1, 1, 2, 2, 2, 1], "ready_replicas": 1,
                      "queue_length": [0, 3, 5, 1, 0, 0], "in_flight": 1, "arrival_rate_rps": 10.0}).to_parquet(
            path / "timeline.parquet", index=False)


def write_sweep(path: Path, axes: dict[str, list[str]], seeds=(1, 2)) -> Path:
    """A `simulate sweep` output by hand: results.parquet (axes, seed, metrics) and runs/<id>/."""
    import itertools

    rows = []
    for k, values in enumerate(itertools.product(*axes.values(), seeds)):
        point = dict(zip([*axes, "seed"], values))
        policy = point.get("policy", "static")
        deadline = float(point.get("requests.deadline_ms", 50.0))
        scale = 1.0 + 0.5 * (policy == "infaas") + float(point.get("policy.threshold", 0.0))
        run_id = f"{k:016x}"
        write_run_dir(path / "runs" / run_id, policy, point["seed"], deadline, scale)
        rng = np.random.default_rng(k)
        rows.append({"run_id": run_id, **point, "accuracy": rng.uniform(0.9, 1), "cost.total": 0.01,
                     "hit_rate": rng.uniform(0.8, 1), "ontime_accuracy": rng.uniform(0.7, 0.95),
                     "latency_ms.p99": 10 * scale + rng.uniform(0, 3), "requests": 60, "policy.name": policy,
                     "cascade.s@x>l.hop0.reached": 50.0, "cascade.s@x>l.hop0.passed_on": 10.0 * scale})
    frame = pd.DataFrame(rows)
    frame.attrs["axes"] = [*axes, "seed"]
    frame.to_parquet(path / "results.parquet", index=False)
    (path / "sweep.json").write_text(json.dumps({"identity": "0" * 16, "runs": len(rows), "sweep": "x.toml"}))
    return path


def pngs(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.suffix == ".png"}


def test_cli_makes_the_figures_a_policy_deadline_sweep_allows(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", {"requests.deadline_ms": ["20.0", "80.0"], "workload": ["steady"],
                                             "policy": ["planner", "infaas"]})
    out = tmp_path / "figs"
    assert main(["figures", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # one workload value: no workload figure and nothing split by it; the CDFs need one deadline each
    assert pngs(out) == {"pareto.png", "baseline.png",
                         "latency-cdf_deadline_ms-20.png", "latency-cdf_deadline_ms-80.png"}
    for figure in ("threshold", "workload", "effects", "time-series"):
        assert f"skipped {figure}:" in printed
    assert f"wrote 4 figures to {out}" in printed
    assert all((out / name).read_bytes()[:8] == PNG_SIGNATURE for name in pngs(out))
    before = {name: (out / name).read_bytes() for name in pngs(out)}
    assert main(["figures", str(sweep), "--out", str(out)]) == 2  # ours, but no --force
    assert main(["figures", str(sweep), "--out", str(out), "--force"]) == 0
    assert {name: (out / name).read_bytes() for name in pngs(out)} == before  # same data, same bytes


def test_cli_threshold_sweep_without_a_policy_axis_draws_thresholds_as_series(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", {"policy.threshold": ["0.5", "0.9"], "load": ["1.0", "2.0"]})
    out = tmp_path / "figs"
    assert main(["figures", str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert pngs(out) == {"pareto_load-1.png", "pareto_load-2.png", "threshold.png", "workload.png",
                         "latency-cdf_load-1.png", "latency-cdf_load-2.png"}
    assert "skipped baseline:" in printed


def test_cli_on_a_run_directory_makes_its_latency_cdf_and_time_series(tmp_path, capsys):
    run = tmp_path / "run"
    for seed in (1, 2):
        write_run_dir(run / f"seed-{seed}", "planner", seed, 20.0, 1.0, timeline=True)
    out = tmp_path / "figs"
    assert main(["figures", str(run), "--out", str(out)]) == 0
    assert pngs(out) == {"latency-cdf.png", "time-series_seed-1.png", "time-series_seed-2.png"}
    assert "skipped pareto, baseline" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "bad-results", "foreign-out", "protocol-on-run", "missing-run-dir"])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    out = tmp_path / "figs"
    source = tmp_path / "sweep"
    if case == "missing":
        source = tmp_path / "nowhere"
    elif case == "bad-results":
        source.mkdir()
        (source / "results.parquet").write_text("not parquet")
    elif case == "foreign-out":
        write_sweep(source, {"policy": ["planner", "infaas"]})
        out.mkdir()
        (out / "mine.txt").write_text("a user's file")
    elif case == "protocol-on-run":
        write_run_dir(source / "seed-1", "planner", 1, 20.0, 1.0)
    else:
        write_sweep(source, {"policy": ["planner", "infaas"]})
        import shutil

        shutil.rmtree(next((source / "runs").iterdir()))
    extra = ["--protocol", "analysis/protocol.toml"] if case == "protocol-on-run" else []
    assert main(["figures", str(source), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    if case == "foreign-out":
        assert [p.name for p in out.iterdir()] == ["mine.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".figs")]  # no staging left behind


def test_cli_effects_figures_from_a_protocol(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", {"policy": ["planner", "infaas"]},
                        seeds=(1, 2, 3))
    protocol = tmp_path / "protocol.toml"
    protocol.write_text('primary_metric = "ontime_accuracy"\nsecondary_metrics = ["hit_rate"]\n'
                        'comparisons = [["planner", "infaas"]]\n')
    out = tmp_path / "figs"
    assert main(["figures", str(sweep), "--out", str(out), "--protocol", str(protocol)]) == 0
    assert {"effects_ontime_accuracy.png", "effects_hit_rate.png"} <= pngs(out)
