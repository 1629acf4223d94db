"""Figures: each function on small hand-built data draws what it says (checked against independent
computations: brute-force fronts, scipy's t intervals and ECDF, numpy histograms), PNGs are valid
and byte-identical when saved twice, and `analyse figures` on a hand-written sweep and run makes
the files its axes allow, skips the rest, and refuses bad input with one line and status 2.

The readability rules are checked as rules on data, not as pixels: which points go off scale (and
that the axis then holds the rest and marks those), which labels are thinned or joined, when an
axis is logarithmic, and which effects figures are skipped; the one pixel-level check is that the
tick labels kept on a crowded logit axis do not overlap once drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from scipy import stats

from analysis import ablation
from analysis.cli import main
from analysis.figures import (POLICY_COLORS, focus_limits, label_groups, latency_cdf_figure, new_figure, off_scale,
                              policy_color, save_figure, series_colors, short_number, spaced)
from analysis.plots_runs import binned_rates, measured_latencies, time_series_figure
from analysis.plots_sweep import (baseline_figure, coverage, effects_defined, effects_figure, interval_panels_figure,
                                  pareto_figure, short_group, threshold_figure, workload_figure)
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


def test_latency_cdf_legend_is_outside_the_axes_and_names_a_hidden_twin():
    same = np.array([3.0, 1.0, 2.0, 1500.0])
    fig = latency_cdf_figure({"static-small": same, "throughput-autotuner": same[::-1].copy(),
                              "planner": same + 1}, "cdf")
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1  # a figure legend, beside the axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["static-small (n=4)", "throughput-autotuner (n=4; same as static-small)", "planner (n=4)"]
    assert "n=1,234" in [t.get_text() for t in latency_cdf_figure(
        {"x": np.arange(1234.0) + 1}, "cdf").legends[0].get_texts()][0]


# --- readability rules ---------------------------------------------------------------------------

NEAR_ONE = [0.962, 0.97, 0.975, 0.98, 0.99, 0.995, 0.999, 1.0]


@pytest.mark.parametrize("means, halves, expected", [
    (NEAR_ONE + [0.02], None, [0] * 8 + [-1]),                        # one policy on time 2% of the time
    (NEAR_ONE + [0.02, 0.27], None, [0] * 8 + [-1, -1]),              # two, each listed
    ([10, 11, 12, 13, 14, 15, 16, 1000.0], None, [0] * 7 + [1]),      # far above
    ([0.02] + NEAR_ONE + [9.0], None, [-1] + [0] * 8 + [1]),          # both ends at once
    (list(np.linspace(0.1, 0.9, 9)), None, [0] * 9),                  # an even spread: nothing far
    ([0.9964, 0.997, 0.998, 0.999, 1.0, 1.0, 0.978], None, [0] * 7),  # 2% apart near 1: not far (min_share)
    ([1.0, 1.0, 1.0, 1.0, 0.5], None, [0] * 5),                       # the rest all equal: nothing to show
    ([0.02, 0.03, 0.04, 0.99, 0.995, 1.0, 0.999, 0.98], None, [0] * 8),  # a quarter at most: 3 of 8 stay
    ([0.9, 0.95, 1.0, 0.2], [0.3, 0.3, 0.3, 0.0], [0] * 4),          # wide intervals: the rest needs the room
    ([0.9, 0.95, 1.0, 0.2], [0.0, 0.0, 0.0, 0.0], [0, 0, 0, -1]),    # the same means, tight: 0.2 is far
    ([0.5, np.nan, 0.6, 0.55, 0.01], None, [0, 0, 0, 0, -1]),        # NaN stays in place
    ([0.0, 1.0], None, [0, 0]),                                       # two points: nothing to focus on
])
def test_off_scale_sends_only_a_far_minority_to_the_edge(means, halves, expected):
    assert off_scale(means, halves).tolist() == expected


def test_off_scale_qualifies_by_both_squeeze_and_distance():
    near_one = [0.9964, 0.997, 0.998, 0.999, 1.0, 1.0, 0.978]  # the rest squeezed 5x, but only 2% away
    assert off_scale(near_one, min_share=0.0).tolist() == [0] * 6 + [-1]
    # a ratio of 3: off when the rest would fill under a quarter of the axis; a gap of exactly 3 spans is not
    assert off_scale([0.75, 0.875, 1.0, 0.0]).tolist() == [0, 0, 0, 0]
    assert off_scale([0.75, 0.875, 1.0, -0.015625]).tolist() == [0, 0, 0, -1]
    assert off_scale([0.75, 0.875, 1.0, -0.015625], ratio=12).tolist() == [0, 0, 0, 0]


def test_focus_limits_hold_the_rest_with_intervals_and_leave_a_band_for_the_marks():
    means, halves, side = np.array([0.96, 0.99, 0.02]), np.array([0.01, 0.005, 0.1]), np.array([0, 0, -1])
    low, high = focus_limits(means, halves, side, (0.2, 0.0))
    span = high - low
    assert low < 0.95 and high > 0.995 and low > 0.12  # the far one (0.02 +- 0.1) is out of range
    assert (0.95 - low) / span == pytest.approx(0.2) and (high - 0.995) / span == pytest.approx(0.05)


def test_short_numbers_keep_two_digits_and_a_real_minus():
    assert [short_number(v) for v in (0.0826, 0.27, 12.34, 1226.8, -0.1099)] == ["0.083", "0.27", "12", "1,227",
                                                                                  "−0.11"]
    assert short_number(1226.8, sign=True) == "+1,227" and short_number(-74.3, sign=True) == "−74"


def test_spaced_keeps_labels_apart_and_always_the_last():
    assert spaced([0, 10, 20, 100], [15] * 4).tolist() == [True, False, True, True]
    assert spaced([0, 50, 60], [15] * 3).tolist() == [True, False, True]  # the last replaces the one before
    assert spaced([0, 16, 32], [15] * 3, gap=2.0).tolist() == [True, False, True]
    assert spaced([], []).tolist() == []


def test_label_groups_join_points_near_the_first_of_a_group():
    points = [(0, 0), (0.01, 0.01), (0.03, 0), (0.5, 0.5), (0.52, 0.5), (0.9, 0.1)]
    assert label_groups(points, 0.04) == [[0, 1, 2], [3, 4], [5]]
    assert label_groups([(0, 0), (0.03, 0), (0.06, 0)], 0.04) == [[0, 1], [2]]  # no chaining past the first


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
    key = [t.get_text().replace("\n", " ") for t in fig.legends[1].get_texts()]
    numbers = sorted({int(t.get_text()) for ax in fig.axes for t in ax.texts})
    assert numbers == list(range(1, len(key) + 1))  # every number in the key, every key entry used
    for ax, cost in zip(fig.axes, ("latency_ms.p99", "cost.total")):
        front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front").get_xydata()
        for x, y in front:  # each front point is named in a key entry: its policy and its deadline
            row = candidates[(candidates[cost] == x) & (candidates["ontime_accuracy"] == y)].iloc[0]
            deadline = f"{float(row['requests.deadline_ms']):g}"
            assert any(row["policy"] in entry and deadline in entry for entry in key)


def test_pareto_front_points_too_close_share_a_number_and_the_key_says_what_each_is():
    points = pd.DataFrame({
        "policy": ["planner", "planner", "planner", "infaas", "static-large"],
        "requests.deadline_ms": ["10.0", "20.0", "40.0", "10.0", "10.0"],
        "ontime_accuracy": [0.95, 0.9502, 0.99, 0.90, 0.97],
        "latency_ms.p99": [10.0, 10.1, 50.0, 40.0, 60.0],
    })
    fig = pareto_figure(points, "policy", costs=["latency_ms.p99"], annotate=["requests.deadline_ms"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["1", "2"]  # 10 and 20 ms a hair apart: one number
    assert [t.get_text() for t in fig.legends[1].get_texts()] == ["planner: 10/20 ms", "planner: 40 ms"]
    one_series = pareto_figure(points[points["policy"] == "planner"], "policy", costs=["latency_ms.p99"],
                               annotate=["requests.deadline_ms"])
    assert [t.get_text() for t in one_series.legends[1].get_texts()] == ["10/20 ms", "40 ms"]  # no name needed


def test_pareto_far_accuracies_go_to_the_bottom_edge_with_their_values():
    rng = np.random.default_rng(2)
    points = pd.DataFrame({"policy": ["planner"] * 6 + ["infaas"] * 6 + ["static-large"] * 3,
                           "ontime_accuracy": np.r_[rng.uniform(0.96, 1.0, 12), [0.02, 0.19, 0.05]],
                           "latency_ms.p99": np.r_[rng.uniform(5, 30, 12), [50.0, 60.0, 120.0]]})
    fig = pareto_figure(points, "policy", costs=["latency_ms.p99"])
    ax = fig.axes[0]
    markers = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert markers == {"planner": 6, "infaas": 6, "static-large": 0}
    low, high = ax.get_ylim()
    assert low < points["ontime_accuracy"][:12].min() and high > points["ontime_accuracy"][:12].max()
    assert low > 0.19  # the far three are not in the range
    edge = [line for line in ax.get_lines() if line.get_marker() == "v"]
    assert sorted(x for line in edge for x in line.get_xdata()) == [50.0, 60.0, 120.0]
    assert [t.get_text() for t in ax.texts] == ["static-large: 0.02, 0.19, 0.05"]  # in order of latency


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


def test_interval_panels_focus_on_the_rest_and_mark_the_far_policy_at_the_edge():
    rng = np.random.default_rng(4)
    policies = ("planner", "infaas", "degrade", "oracle-static", "static-large")
    sub = pd.DataFrame([{"requests.deadline_ms": deadline, "policy": policy, "seed": seed,
                         **{m: (0.01 * seed if policy == "static-large" else rng.uniform(0.95, 1.0))
                            for m in ("hit_rate", "ontime_accuracy")}}
                        for deadline in ("20.0", "80.0") for policy in policies for seed in (1, 2, 3, 4)])
    fig = baseline_figure(sub, "requests.deadline_ms", "policy")
    for ax, metric in zip(fig.axes, ("hit_rate", "ontime_accuracy")):
        cells = sub.groupby(["policy", "requests.deadline_ms"])[metric]
        means = cells.mean()
        intervals = {key: t_interval(values) for key, values in cells}
        rest = [key for key in means.index if key[0] != "static-large"]
        expected = off_scale(means.to_numpy(), [means[k] - intervals[k][0] for k in means.index])
        assert {key for key, side in zip(means.index, expected) if side} == {
            ("static-large", "20.0"), ("static-large", "80.0")}  # the rule on these data: the far policy
        low, high = ax.get_ylim()
        assert low <= min(intervals[k][0] for k in rest) and high >= max(intervals[k][1] for k in rest)
        assert low > means["static-large"].max()
        shown = ax.containers[-1].lines[0].get_ydata()  # static-large, the last series: not drawn in place
        assert np.isnan(shown).all()
        marks = [line for line in ax.get_lines() if line.get_marker() == "v"]
        assert len(marks) == 2 and all(line.get_color() == POLICY_COLORS["static-large"] for line in marks)
        values = ", ".join(short_number(means[("static-large", d)]) for d in ("20.0", "80.0"))
        assert [t.get_text() for t in ax.texts] == [f"static-large: {values}"]
    plain = baseline_figure(sub[sub["policy"] != "static-large"], "requests.deadline_ms", "policy")
    assert not plain.axes[0].texts and not [line for line in plain.axes[0].get_lines() if line.get_marker() == "v"]


def p99_rows(p99_by_tau: dict[float, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"policy.threshold": str(tau), "load": "1.0", "seed": seed, "accuracy": 0.95,
                          "latency_ms.p99": value, "cascade.s@x>l.hop0.reached": 100.0,
                          "cascade.s@x>l.hop0.passed_on": 10.0}
                         for tau, values in p99_by_tau.items() for seed, value in enumerate(values)])


def test_latency_panel_is_logarithmic_by_its_means_and_clips_intervals_at_the_axis_on_a_log_axis():
    # means 15 to 55 ms (under a decade), one interval reaching below 0: linear, the interval as it is
    narrow = p99_rows({0.5: [1.0, 29.0], 0.9: [30.0, 32.0], 0.99: [54.0, 56.0]})
    ax = threshold_figure(narrow, "policy.threshold", "load", policies=False).axes[2]
    assert ax.get_yscale() == "linear"
    low_end = ax.containers[0].lines[2][0].get_segments()[0][0, 1]
    assert low_end == pytest.approx(t_interval([1.0, 29.0])[0]) and low_end < 0
    # means 5 to 500 ms: log, and the interval that reaches below 0 is cut at the axis' lower edge
    wide = p99_rows({0.5: [1.0, 9.0], 0.9: [40.0, 44.0], 0.99: [480.0, 520.0]})
    ax = threshold_figure(wide, "policy.threshold", "load", policies=False).axes[2]
    assert ax.get_yscale() == "log"
    bottom = ax.get_ylim()[0]
    segments = ax.containers[0].lines[2][0].get_segments()
    assert 0 < bottom < 5 and segments[0][0, 1] == pytest.approx(bottom)
    for segment, values in zip(segments[1:], ([40.0, 44.0], [480.0, 520.0])):
        assert segment[:, 1] == pytest.approx(t_interval(values))  # the others as they are


def test_crowded_logit_tick_labels_are_thinned_so_none_overlap_once_drawn():
    taus = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999]
    rows = p99_rows({tau: [20.0 + 30 * tau, 22.0 + 30 * tau] for tau in taus})
    fig = threshold_figure(rows, "policy.threshold", "load", policies=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in fig.axes:
        assert ax.get_xscale() == "logit"
        np.testing.assert_allclose(ax.get_xticks(), taus)  # every threshold keeps its tick
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert {"0.5", "0.999"} <= {t.get_text() for t in labels} and len(labels) < len(taus)
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda box: box.x0)
        assert all(left.x1 <= right.x0 for left, right in zip(boxes, boxes[1:]))


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


def test_effects_forest_plot_has_a_panel_per_comparison_with_each_difference_and_its_significance():
    table = effects_table()
    fig = effects_figure(table, "ontime_accuracy")
    rows = table[table["metric"] == "ontime_accuracy"]
    pairs = list(dict.fromkeys(zip(rows["a"], rows["b"])))
    assert [ax.get_title() for ax in fig.axes] == [f"{a} − {b}" for a, b in pairs]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["steady", "bursty"]  # short group labels
    for ax, (a, b) in zip(fig.axes, pairs):
        block = rows[(rows["a"] == a) & (rows["b"] == b)].reset_index(drop=True)
        assert len(ax.containers) == len(block) and "on-time accuracy" in ax.get_xlabel()
        for container, (_, row) in zip(ax.containers, block.iterrows()):
            point = container.lines[0]
            assert point.get_xdata()[0] == pytest.approx(row["mean_diff"])
            assert point.get_ydata()[0] == list(block["group"]).index(row["group"])
            assert container.lines[2][0].get_segments()[0][:, 0] == pytest.approx([row["ci_low"], row["ci_high"]])
            filled = to_rgba(point.get_markerfacecolor()) != (1.0, 1.0, 1.0, 1.0)
            assert filled == row["significant"]
    width, height = fig.get_size_inches()
    assert height < width  # 4 groups x 2 comparisons side by side, not stacked into a column


def test_effects_rows_are_short_and_undefined_metrics_are_known():
    assert short_group("deadline_ms=10 workload=poisson") == "10 ms poisson"
    assert short_group("load=2 threshold=0.9") == "load=2 τ=0.9" and short_group("") == "all"
    table = effects_table()
    assert effects_defined(table, "ontime_accuracy") is False  # effects_table leaves p_holm NaN
    table.loc[table.index[0], "p_holm"] = 0.01
    assert effects_defined(table, "ontime_accuracy") and not effects_defined(table, "hit_rate")


def test_ablation_level_that_dwarfs_the_others_goes_to_the_panel_edge_with_its_value():
    rng = np.random.default_rng(9)
    rows = []
    for label, p99 in (("base", 88.0), ("precision=int8", 14.0), ("precision=bf16", 1315.0)):
        for seed in (1, 2, 3, 4):
            rows.append({"variation": label, "seed": seed, "hit_rate": 0.99 - 0.001 * seed, "accuracy": 0.98,
                         "ontime_accuracy": 0.97 + rng.uniform(0, 0.01), "latency_ms.p99": p99 + rng.uniform(-2, 2),
                         "cost.total": 0.06 + 0.001 * seed})
    effects = ablation.ablation_effects(pd.DataFrame(rows))
    fig = ablation.factor_figure(effects, "precision")
    p99 = fig.axes[list(ablation.KEYS).index("latency_ms.p99")]
    bf16 = next(e for e in effects.of("precision", "bf16") if e.metric.key == "latency_ms.p99").difference.difference
    marks = [line for line in p99.get_lines() if line.get_marker() == ">"]
    assert len(marks) == 1 and list(marks[0].get_ydata()) == [2]  # bf16's row, at the right edge
    assert [t.get_text() for t in p99.texts] == [short_number(bf16.mean, sign=True)]
    assert p99.get_xlim()[1] < bf16.mean and len(p99.containers) == 1  # int8 alone in place
    hit = fig.axes[list(ablation.KEYS).index("hit_rate")]
    assert not hit.texts and len(hit.containers) == 2  # equal effects: nothing is far


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


def test_cli_effects_figures_from_a_protocol_skip_a_metric_whose_tests_are_all_undefined(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", {"policy": ["planner", "infaas"]},
                        seeds=(1, 2, 3))
    protocol = tmp_path / "protocol.toml"
    protocol.write_text('primary_metric = "ontime_accuracy"\nsecondary_metrics = ["hit_rate", "cost.total"]\n'
                        'comparisons = [["planner", "infaas"]]\n')
    out = tmp_path / "figs"
    assert main(["figures", str(sweep), "--out", str(out), "--protocol", str(protocol)]) == 0
    assert {"effects_ontime_accuracy.png", "effects_hit_rate.png"} <= pngs(out)
    # every run costs 0.01 (write_sweep): each difference is 0, its t-test undefined, and no figure drawn
    assert "effects_cost.total.png" not in pngs(out)
    printed = capsys.readouterr().out
    assert "skipped effects_cost.total.png: every test of cost.total is undefined (every paired difference is 0)" \
        in printed


def test_seeds_latencies_mark_the_deadline_the_measured_requests_share(tmp_path):
    """The one reader of latency CDFs (figures and compare): the deadline is that of the requests
    the CDF shows, whatever the warm-up's was; none where the measured ones differ."""
    from analysis.plots_runs import seeds_latencies
    from analysis.runs import read_run

    def seed(directory: Path, deadlines: list[float]) -> None:
        directory.mkdir(parents=True)
        pd.DataFrame({"latency_ms": [1.0, 2.0, np.nan, 3.0], "measured": [False, True, True, True],
                      "dropped": [False, False, False, True], "deadline_ms": deadlines}
                     ).to_parquet(directory / "requests.parquet")
        (directory / "config.json").write_text("{}")
        (directory / "summary.json").write_text('{"seed": %d}' % int(directory.name.split("-")[1]))

    seed(tmp_path / "run" / "seed-1", [80.0, 50.0, 50.0, 50.0])          # a warm-up request with another deadline
    seed(tmp_path / "run" / "seed-2", [50.0, 50.0, 50.0, 50.0])
    latencies, deadline = seeds_latencies(read_run(tmp_path / "run"))
    assert sorted(latencies) == [2.0, 2.0] and deadline == 50.0          # the NaN and the dropped one left out
    seed(tmp_path / "mixed" / "seed-1", [50.0, 50.0, 20.0, 50.0])
    assert seeds_latencies(read_run(tmp_path / "mixed"))[1] is None
