"""The planner's closed-form estimates (policies.estimates) and the profile figures they rest on,
against hand calculations: the batch a rate forms, a joining request's predicted latency in each
regime of the module docstring, the utilisation, a profile's throughput and a table's accuracy.

Profiles here are hand-made so every quantity is known exactly: ``_unit`` serves a batch of b in
exactly b ms (a constant grid, so every percentile is b); ``_spread`` has 101 evenly spaced
samples per size, b * 5.0 .. b * 15.0 ms in 0.1 * b steps, so its q-th percentile is
b * (5 + q / 10) ms and its mean b * 10 ms.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from policies.estimates import DeploymentModel, formed_batch_size, utilization
from policy_fakes import FakeView
from traces.profiles import LatencyProfile, PredictionTable


def _unit(max_batch: int = 64) -> LatencyProfile:
    return LatencyProfile({b: [float(b)] * 3 for b in range(1, max_batch + 1)}, measured=True)


def _spread(max_batch: int = 8) -> LatencyProfile:
    return LatencyProfile({b: b * (np.arange(101) + 50) / 10.0 for b in range(1, max_batch + 1)}, measured=True)


# --- formed_batch_size: b = min(B, max(1 + lambda T, lambda / R * s(b))), iterated from b = 1 ----

def test_no_traffic_forms_single_batches():
    assert formed_batch_size(_unit(), 0.0, 1, 8, 50.0) == 1


def test_a_trickle_forms_what_arrives_in_one_timeout():
    # 0.5 rps x 4 s = 2 more requests: 3, though the rate is below 1 rps
    assert formed_batch_size(_unit(), 0.5, 1, 8, 4000.0) == 3
    # 100 rps x 50 ms = 5 more; piling up (0.1 b) is smaller
    assert formed_batch_size(_unit(), 100.0, 1, 8, 50.0) == 6


def test_the_timeout_count_rounds_up():
    # 1 + 1001 rps x 5 ms = 6.005 -> 7 (piled: 1001 / 100 replicas x b ms = 0.01 b, negligible)
    assert formed_batch_size(_unit(), 1001.0, 100, 8, 5.0) == 7


def test_the_batch_grows_with_what_piles_up_during_one_service_per_replica():
    # 800 rps over 1 replica piles 0.8 b during a service of b ms: b = 1 is the fixed point from 1
    assert formed_batch_size(_unit(), 800.0, 1, 8, 0.0) == 1
    # 800 rps over 2 replicas: 0.4 b each; 1500 over 2: 0.75 b; still 1
    assert formed_batch_size(_unit(), 800.0, 2, 8, 0.0) == 1
    assert formed_batch_size(_unit(), 1500.0, 2, 8, 0.0) == 1
    # 1001 rps piles 1.001 b: 1 -> 2 -> 3 -> 4 -> 5, capped at B = 4
    assert formed_batch_size(_unit(), 1001.0, 1, 4, 0.0) == 4
    # no live replica plans as one
    assert formed_batch_size(_unit(), 1001.0, 0, 4, 0.0) == 4


def test_the_fixed_point_iteration_stops_after_eight_rounds():
    # piling 1.5 b never settles: 1 -> 2 -> 3 -> 5 -> 8 -> 12 -> 18 -> 27 -> 41 (eight rounds)
    assert formed_batch_size(_unit(), 1500.0, 1, 64, 0.0) == 41
    # the profile's largest size caps it like the deployment's maximum
    assert formed_batch_size(_unit(16), 1500.0, 1, 64, 0.0) == 16


def test_the_batch_is_planned_at_the_median_service_time_by_default():
    # 99.5 rps x p50(1) = 10 ms piles 0.995: 1; at p51 (10.1 ms) it would pile 1.005 and grow
    assert formed_batch_size(_spread(), 99.5, 1, 8, 0.0) == 1
    assert formed_batch_size(_spread(), 99.5, 1, 8, 0.0, q=51.0) > 1


# --- utilization: lambda s(b) / (R b) ---------------------------------------------------------

def test_utilization_is_the_busy_share_of_the_replicas_at_the_formed_batch():
    # b = 1 (0.4 b piles per replica): 800 rps x 1 ms / (2 replicas x 1)
    assert utilization(_unit(), 800.0, 2, 8, 0.0) == pytest.approx(0.4, rel=1e-12)
    # b = 6 (100 rps x 50 ms timeout): 100 x 6 ms / (3 replicas x 6)
    assert utilization(_unit(), 100.0, 3, 8, 50.0) == pytest.approx(100 * 6 / 1000 / 18, rel=1e-12)
    # the mean, not a percentile: spread profile, b = 1, mean 10 ms
    assert utilization(_spread(), 30.0, 2, 8, 0.0) == pytest.approx(30 * 10 / 1000 / 2, rel=1e-12)


# --- DeploymentModel.latency_at -------------------------------------------------------------

def test_a_fresh_model_predicts_the_unloaded_p95_of_a_single_request():
    model = DeploymentModel("m", _spread())
    assert model.batch == 1
    assert model.latency_at(0, 0, 1) == pytest.approx(5 + 9.5, rel=1e-12)  # p95 of size 1
    # three waiting ahead at one busy replica: three more services, then half a service
    assert model.latency_at(3, 1, 1) == pytest.approx(14.5 * 4.5, rel=1e-12)


def _model(rate_rps: float, *, replicas: int = 2, max_batch_size: int = 4, timeout_ms: float = 20.0,
           q: float = 95.0) -> DeploymentModel:
    """A deployment serving a batch of b in 10 + 2 (b - 1) ms, updated for ``rate_rps``."""
    view = FakeView({"m": {"ms": 10.0, "per_item_ms": 2.0, "replicas": replicas, "max_batch_size": max_batch_size,
                           "timeout_ms": timeout_ms}})
    model = DeploymentModel("m", view.latency_profile("m"), q)
    model.update(view, rate_rps)
    return model


def test_update_plans_the_batch_the_rate_forms():
    model = _model(100.0)  # 1 + 100 rps x 20 ms = 3; piled 100 / 2 x 14 ms = 0.7
    assert (model.batch, model.service_ms, model.timeout_ms, model.rate_rps) == (3, 14.0, 20.0, 100.0)


def test_a_request_with_every_replica_busy_waits_its_rounds_and_half_a_service():
    model = _model(100.0)  # b = 3, s = 14 ms, 2 replicas
    # 7 waiting: 7 // 3 = 2 full batches ahead over 2 replicas = 1 round, plus the residual 7 ms
    assert model.latency_at(7, 2, 2) == pytest.approx(14 + 14 + 7, rel=1e-12)
    assert model.latency_at(7, 3, 2) == pytest.approx(35.0, rel=1e-12)


def test_a_request_at_an_idle_replica_waits_for_its_batch_to_fill_or_time_out():
    model = _model(100.0)  # b = 3, s = 14 ms, timeout 20 ms, 100 rps
    # one waiting: one more request to come, 10 ms at 100 rps (< the 20 ms timeout)
    assert model.latency_at(1, 1, 2) == pytest.approx(14 + 10, rel=1e-12)
    # none waiting: two more to come, 20 ms, which the timeout also gives
    assert model.latency_at(0, 0, 2) == pytest.approx(14 + 20, rel=1e-12)
    # a full batch waiting (3) or more (4): no filling wait, 3 // 3 = 1 batch ahead over 2 replicas
    assert model.latency_at(2, 0, 2) == pytest.approx(14.0, rel=1e-12)
    assert model.latency_at(3, 0, 2) == pytest.approx(14 + 7, rel=1e-12)
    assert model.latency_at(4, 0, 2) == pytest.approx(14 + 7, rel=1e-12)


def test_the_filling_wait_is_capped_by_the_timeout():
    # 0.5 ms timeout: 1 + 100 x 0.0005 -> b = 2 (s = 12 ms); filling would take 10 ms, the timeout 0.5
    model = _model(100.0, timeout_ms=0.5)
    assert model.batch == 2
    assert model.latency_at(0, 0, 2) == pytest.approx(12.5, rel=1e-12)
    # 0.5 rps with a 5 s timeout: b = 4 (s = 16 ms); one waiting, two more to come take 4 s
    slow = _model(0.5, timeout_ms=5000.0)
    assert slow.batch == 4
    assert slow.latency_at(1, 0, 2) == pytest.approx(16 + 4000, rel=1e-12)
    assert slow.latency_at(0, 0, 2) == pytest.approx(16 + 5000, rel=1e-12)  # 6 s to fill: times out


def test_a_single_request_batch_never_waits_to_fill():
    model = _model(0.0)  # no traffic: batches of 1, though the deployment has a timeout
    assert (model.batch, model.timeout_ms) == (1, 20.0)
    assert model.latency_at(0, 0, 2) == pytest.approx(10.0, rel=1e-12)


# --- the profile's throughput and the table's accuracy ------------------------------------------

def test_throughput_is_back_to_back_batches_per_second():
    profile = _spread()
    assert profile.throughput_rps(4) == pytest.approx(4 * 1000 / 40, rel=1e-12)  # mean of size 4: 40 ms
    assert profile.throughput_rps(4, 3) == pytest.approx(3 * 100.0, rel=1e-12)


def test_accuracy_is_the_share_correct_and_nan_without_samples_or_warnings():
    table = PredictionTable(np.arange(4), {"a": np.zeros(4)}, {"a": np.ones(4)},
                            {"a": np.array([True, False, True, True])})
    assert table.accuracy("a") == 0.75
    empty = PredictionTable(np.arange(0), {"a": np.zeros(0)}, {"a": np.zeros(0)}, {"a": np.zeros(0, dtype=bool)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" on the way
        assert math.isnan(empty.accuracy("a"))
