"""Idle classes: a batch after an idle spell is served from the runs timed after one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import simulate
from sim.service import MeasuredSampler
from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.profiles import LatencyProfile

HOT_MS, IDLE_MS, GAP_MS = 1.0, 3.0, 10.0


def _bundle(tmp_path, predictions) -> TraceBundle:
    rows = [("m/fp32/cpu", "m", "fp32", "cpu", b, HOT_MS * b, 0.0) for b in (1, 2) for _ in range(20)]
    rows += [("m/fp32/cpu", "m", "fp32", "cpu", b, IDLE_MS * b, GAP_MS) for b in (1, 2) for _ in range(20)]
    service = pd.DataFrame(rows, columns=["variant", "model", "precision", "device", "batch_size", "latency_ms", "idle_ms"])
    TraceBundle(meta={"name": "idle"}, service=service, predictions=predictions.iloc[:0]).save(tmp_path / "b")
    return TraceBundle.load(tmp_path / "b")


def test_the_bundle_keeps_back_to_back_runs_apart_from_runs_after_idleness(tmp_path, tiny_bundle):
    bundle = _bundle(tmp_path, TraceBundle.load(tiny_bundle).predictions)
    assert bundle.idle_classes_ms("m/fp32/cpu") == (0.0, GAP_MS)
    profile = LatencyProfile.from_bundle(bundle, "m/fp32/cpu")
    assert profile.mean_ms(2) == pytest.approx(2 * HOT_MS)  # what policies plan with: back to back
    [(gap_s, idle)] = profile.after_idle
    assert gap_s == pytest.approx(GAP_MS / 1000) and idle.mean_ms(2) == pytest.approx(2 * IDLE_MS)
    # a bundle without the column is all back to back
    assert TraceBundle.load(tiny_bundle).idle_classes_ms("fast/int8/cpu") == (0.0,)


def test_the_sampler_interpolates_between_idle_classes():
    profile = LatencyProfile({1: np.full(10, HOT_MS)}, measured=True,
                             after_idle=((GAP_MS / 1000, LatencyProfile({1: np.full(10, IDLE_MS)}, measured=True)),))
    sampler = MeasuredSampler(profile, 1, np.random.default_rng(0))
    assert sampler.draw_s(1, 0.0, 0.0) * 1000 == pytest.approx(HOT_MS)
    assert sampler.draw_s(1, 0.0, GAP_MS / 2000) * 1000 == pytest.approx((HOT_MS + IDLE_MS) / 2)
    assert sampler.draw_s(1, 0.0, GAP_MS / 1000) * 1000 == pytest.approx(IDLE_MS)
    assert sampler.draw_s(1, 0.0, 1.0) * 1000 == pytest.approx(IDLE_MS)  # beyond the longest gap measured


@pytest.mark.parametrize("idle_classes", [True, False])
def test_each_batch_is_served_at_the_speed_of_its_replicas_idle_time(tmp_path, tiny_bundle, idle_classes):
    """At 5 requests/s most batches follow long idleness; back to back they would take HOT_MS."""
    _bundle(tmp_path, TraceBundle.load(tiny_bundle).predictions)
    raw = {"duration_s": 20.0, "bundle": str(tmp_path / "b"), "arrivals": {"kind": "poisson", "rate_rps": 5.0},
           "requests": {"deadline_ms": 100.0}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "variant": "m/fp32/cpu", "max_batch_size": 1, "idle_classes": idle_classes}]}
    requests, _ = simulate(raw, seed=3)
    batches = requests.sort_values("hop0_start_s")
    idle_ms = (batches["hop0_start_s"] - batches["hop0_finish_s"].shift(1).fillna(0.0)).to_numpy() * 1000
    served_ms = (batches["hop0_finish_s"] - batches["hop0_start_s"]).to_numpy() * 1000
    want = HOT_MS + (IDLE_MS - HOT_MS) * np.clip(idle_ms / GAP_MS, 0, 1) if idle_classes else np.full(len(idle_ms), HOT_MS)
    np.testing.assert_allclose(served_ms, want, rtol=1e-6)
    assert (idle_ms < GAP_MS).any() and (idle_ms > GAP_MS).mean() > 0.8  # both regimes were exercised


def test_a_negative_idle_time_is_refused_naming_the_row(tmp_path, tiny_bundle):
    service = pd.DataFrame({"variant": ["m/fp32/cpu"] * 2, "model": "m", "precision": "fp32", "device": "cpu",
                            "batch_size": 1, "latency_ms": 1.0, "idle_ms": [0.0, -1.0]})
    service.to_csv(tmp_path / "service.csv", index=False)
    TraceBundle.load(tiny_bundle).predictions.to_csv(tmp_path / "predictions.csv", index=False)
    (tmp_path / "bundle.json").write_text('{"name": "bad"}')
    with pytest.raises(InputError, match="row 2.*idle_ms"):
        TraceBundle.load(tmp_path)


def test_a_size_an_idle_class_lacks_is_served_back_to_back():
    hot = LatencyProfile({1: np.full(10, HOT_MS), 4: np.full(10, 4 * HOT_MS)}, measured=True)
    profile = LatencyProfile(hot._measured, measured=True,
                             after_idle=((GAP_MS / 1000, LatencyProfile({1: np.full(10, IDLE_MS)}, measured=True)),))
    sampler = MeasuredSampler(profile, 4, np.random.default_rng(0))
    assert sampler.draw_s(1, 0.0, 1.0) * 1000 == pytest.approx(IDLE_MS)
    assert sampler.draw_s(3, 0.0, 1.0) * 1000 == pytest.approx(3 * HOT_MS)  # interpolated from sizes 1 and 4


def test_between_two_longer_idle_classes_the_weight_counts_from_the_lower_one():
    """Three classes (back to back, 10 ms, 50 ms idle): 20 ms idle is a quarter of the way from the
    10 ms class to the 50 ms one."""
    from traces.profiles import idle_bracket

    gaps_s = (0.0, 0.01, 0.05)
    assert idle_bracket(gaps_s, 0.0) == (0, 0.0)
    assert idle_bracket(gaps_s, 0.005) == (0, pytest.approx(0.5, rel=1e-12))
    assert idle_bracket(gaps_s, 0.01) == (1, 0.0)
    assert idle_bracket(gaps_s, 0.02) == (1, pytest.approx(0.25, rel=1e-12))
    assert idle_bracket(gaps_s, 0.05) == (2, 0.0) and idle_bracket(gaps_s, 1.0) == (2, 0.0)
    mid_ms, long_ms = 3.0, 7.0
    profile = LatencyProfile({1: np.full(10, HOT_MS)}, measured=True,
                             after_idle=((0.01, LatencyProfile({1: np.full(10, mid_ms)}, measured=True)),
                                         (0.05, LatencyProfile({1: np.full(10, long_ms)}, measured=True))))
    want_ms = mid_ms + 0.25 * (long_ms - mid_ms)
    assert profile.mean_ms_after_idle(1, 0.02) == pytest.approx(want_ms, rel=1e-12)
    sampler = MeasuredSampler(profile, 1, np.random.default_rng(0))
    assert sampler.draw_s(1, 0.0, 0.02) * 1000 == pytest.approx(want_ms, rel=1e-12)
