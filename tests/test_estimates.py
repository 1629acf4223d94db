"""The planner's closed-form estimates (policies.estimates) and the profile figures they rest on,
against hand calculations and scipy: the batch a rate forms where the batcher's rule gives it in
closed form (no traffic, the timeout regime, one replica with a constant service, overload), a
joining request's predicted latency in each regime of the module docstring, the utilisation, a
profile's throughput and a table's accuracy. ``tests/test_load_model.py`` checks the batch and
the utilisation against the simulator where no closed form exists.

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
from scipy import optimize, stats

from policies.base import Route
from policies.estimates import DeploymentModel, TrafficMeter, formed_batch_size, route_shares, utilization
from policy_fakes import FakeView, two_model_table
from traces.batching import timeout_batch_mean
from traces.profiles import LatencyProfile, PredictionTable


def _unit(max_batch: int = 64) -> LatencyProfile:
    return LatencyProfile({b: [float(b)] * 3 for b in range(1, max_batch + 1)}, measured=True)


def _spread(max_batch: int = 8) -> LatencyProfile:
    return LatencyProfile({b: b * (np.arange(101) + 50) / 10.0 for b in range(1, max_batch + 1)}, measured=True)


# --- formed_batch_size: the fixed point of the batcher's rule (policies.estimates) ---------------

def _constant(ms: float, max_batch: int = 64) -> LatencyProfile:
    """Every batch, of any size, takes exactly ``ms``."""
    return LatencyProfile({b: [ms] * 3 for b in range(1, max_batch + 1)}, measured=True)


def _timeout_batch(rate_rps: float, max_batch: int, timeout_ms: float) -> float:
    """1 + E[min(B - 1, N(T))], N(T) ~ Poisson(lambda T), by scipy."""
    return 1.0 + sum(stats.poisson.sf(k - 1, rate_rps * timeout_ms / 1000.0) for k in range(1, max_batch))


def test_no_traffic_or_no_batching_forms_single_batches():
    assert formed_batch_size(_unit(), 0.0, 1, 8, 50.0) == 1.0
    assert formed_batch_size(_unit(), 500.0, 2, 1, 50.0) == 1.0


def test_timeout_batch_mean_is_one_plus_the_capped_poisson_count():
    for rate, b, t in ((0.5, 8, 4000.0), (100.0, 8, 50.0), (1001.0, 8, 5.0), (300.0, 16, 2.0)):
        assert timeout_batch_mean(rate, b, t) == pytest.approx(_timeout_batch(rate, b, t), rel=1e-12)
    assert timeout_batch_mean(300.0, 16, 0.0) == 1.0 and timeout_batch_mean(300.0, 6, math.inf) == 6.0


def test_a_timeout_longer_than_every_service_gives_the_timeout_batch():
    # one replica serving in 1 ms with a 4 s timeout: every batch closes by the timeout rule
    for rate in (0.5, 2.0):
        want = _timeout_batch(rate, 8, 4000.0)
        assert formed_batch_size(_constant(1.0), rate, 1, 8, 4000.0) == pytest.approx(want, abs=2e-3)


def test_one_replica_with_a_constant_service_and_no_timeout():
    # D = c for every batch: b = exp(-lambda c) + lambda c (idle starts of one; what piled up)
    for rate, c in ((100.0, 2.0), (400.0, 5.0), (900.0, 1.0)):
        lam_c = rate * c / 1000.0
        assert formed_batch_size(_constant(c), rate, 1, 64, 0.0) == pytest.approx(math.exp(-lam_c) + lam_c, abs=2e-3)


def test_one_replica_with_a_constant_service_longer_than_the_timeout():
    # the first request after a batch starts comes before c - T: all that came; after: the timeout batch
    rate, c, t = 300.0, 10.0, 2.0
    lam = rate / 1000.0
    e = math.exp(-lam * (c - t))
    want = e * _timeout_batch(rate, 16, t) + lam * t * (1 - e) + lam * (c - t)
    assert formed_batch_size(_constant(c), rate, 1, 16, t) == pytest.approx(want, abs=2e-3)


def test_the_batch_is_a_fixed_point_when_the_service_grows_with_it():
    # unit profile, S(k) = k ms, no timeout: after a batch of k, exp(-lambda k) + lambda k; a
    # fractional mean b mixes the sizes around it, so b solves b = interpolated(b), by scipy
    for rate in (200.0, 500.0, 800.0):
        lam = rate / 1000.0

        def after(k: int) -> float:
            return math.exp(-lam * k) + lam * k

        def gap(b: float) -> float:
            lo, w = int(b), b - int(b)
            return (1 - w) * after(lo) + w * after(lo + 1) - b

        want = optimize.brentq(gap, 1.0, 63.0)
        assert formed_batch_size(_unit(), rate, 1, 64, 0.0) == pytest.approx(want, abs=2e-3)


def test_overload_fills_every_batch():
    # 1001 rps piles 1.001 b during a service of b ms: past capacity at any size
    assert formed_batch_size(_unit(), 1001.0, 1, 4, 0.0) == 4.0
    assert formed_batch_size(_unit(), 1001.0, 0, 4, 0.0) == 4.0  # no live replica plans as one
    # the profile's largest size caps it like the deployment's maximum
    assert formed_batch_size(_unit(16), 1500.0, 1, 64, 0.0) == 16.0


def test_the_batch_grows_with_the_rate_and_the_service_spread():
    rates = np.linspace(10.0, 1300.0, 25)
    for replicas in (1, 2, 4):
        sizes = [formed_batch_size(_spread(), r * replicas, replicas, 8, 1.0) for r in rates]
        assert all(b2 >= b1 - 2e-3 for b1, b2 in zip(sizes, sizes[1:])), replicas
        assert sizes[0] < 1.1 and sizes[-1] == 8.0  # 1300 rps per replica is past the 800 of full batches
    # a spread service (mean 10 ms) leaves more idle starts than a constant 10 ms one (Jensen)
    assert formed_batch_size(_spread(), 150.0, 1, 8, 0.0) > formed_batch_size(_constant(10.0), 150.0, 1, 8, 0.0)


# --- utilization: lambda m(b) / (R b) ---------------------------------------------------------

def test_utilization_is_the_busy_share_of_the_replicas_at_the_formed_batch():
    # the unit profile serves one request per ms at any batch: lambda x 1 ms / R whatever b is
    assert utilization(_unit(), 800.0, 2, 8, 0.0) == pytest.approx(0.4, rel=1e-12)
    assert utilization(_unit(), 100.0, 3, 8, 50.0) == pytest.approx(100 / 1000 / 3, rel=1e-12)
    # the spread profile's mean is 10 ms per request at any batch, too
    assert utilization(_spread(), 30.0, 2, 8, 0.0) == pytest.approx(30 * 10 / 1000 / 2, rel=1e-12)
    # a constant 2 ms batch: lambda m / (R b) with b = exp(-0.2) + 0.2 (100 rps, one replica)
    b = math.exp(-0.2) + 0.2
    assert utilization(_constant(2.0), 100.0, 1, 4, 0.0) == pytest.approx(0.1 * 2.0 / b, abs=1e-3)


def test_the_busy_share_nears_one_below_capacity_and_passes_it_beyond():
    # a flat service (10 ms at any size, 8 x 100 = 800 rps at full batches)
    profile = _constant(10.0, 8)
    assert utilization(profile, 320.0, 1, 8, 0.0) > 0.95   # 40% of its capacity, busy nearly all the time
    assert utilization(profile, 1000.0, 1, 8, 0.0) == pytest.approx(1000 * 10 / 1000 / 8, rel=1e-12)


# --- DeploymentModel.latency_at -------------------------------------------------------------

def test_a_fresh_model_predicts_the_unloaded_p95_of_a_single_request():
    model = DeploymentModel("m", _spread())
    assert model.batch == 1
    assert model.latency_at(0, 0, 1) == pytest.approx(5 + 9.5, rel=1e-12)  # p95 of size 1
    # three waiting ahead at one busy replica: three more services at the planned batch of 1,
    # then half a service; its own batch holds the three and itself: the service of a batch of 4
    own = model.profile.percentile_ms(4, 95)
    assert own > 14.5 + 1
    assert model.latency_at(3, 1, 1) == pytest.approx(own + 14.5 * 3.5, rel=1e-12)


FAKE = {"m": {"ms": 10.0, "per_item_ms": 2.0, "replicas": 2, "max_batch_size": 4, "timeout_ms": 20.0}}


def _model(batch: float, *, rate_rps: float = 100.0, timeout_ms: float = 20.0) -> DeploymentModel:
    """A deployment serving a batch of b in 10 + 2 (b - 1) ms, set to plan with ``batch``."""
    model = DeploymentModel("m", FakeView(FAKE).latency_profile("m"))
    model.batch, model.service_ms = batch, 10.0 + 2.0 * (batch - 1)
    model.timeout_ms, model.rate_rps, model.limit = timeout_ms, rate_rps, 4
    return model


def test_update_plans_the_batch_the_rate_forms_and_its_service():
    view = FakeView(FAKE)
    model = DeploymentModel("m", view.latency_profile("m"))
    model.update(view, 100.0)
    b = formed_batch_size(view.latency_profile("m"), 100.0, 2, 4, 20.0)
    assert model.batch == b and (model.timeout_ms, model.rate_rps) == (20.0, 100.0)
    assert model.service_ms == pytest.approx(10.0 + 2.0 * (b - 1), rel=1e-12)  # linear between sizes
    # the services (5 to 7 ms per replica freeing) are shorter than the 20 ms timeout: close to
    # the timeout batch (the rest is the chance that two replicas free far apart)
    assert b == pytest.approx(_timeout_batch(100.0, 4, 20.0), rel=0.02)


def test_a_request_with_every_replica_busy_waits_its_rounds_and_half_a_service():
    model = _model(3.0)  # b = 3, s = 14 ms, 2 replicas, batches of at most 4
    # 7 waiting: 7 // 3 = 2 full batches ahead over 2 replicas = 1 round, plus the residual 7 ms;
    # its own batch is a full one (of 4, 16 ms): more wait ahead of it than the planned batch holds
    assert model.latency_at(7, 2, 2) == pytest.approx(16 + 14 + 7, rel=1e-12)
    assert model.latency_at(7, 3, 2) == pytest.approx(37.0, rel=1e-12)


def test_a_request_at_an_idle_replica_waits_for_its_batch_to_fill_or_time_out():
    model = _model(3.0)  # b = 3, s = 14 ms, timeout 20 ms, 100 rps
    # one waiting: one more request to come, 10 ms at 100 rps (< the 20 ms timeout)
    assert model.latency_at(1, 1, 2) == pytest.approx(14 + 10, rel=1e-12)
    # none waiting: two more to come, 20 ms, which the timeout also gives
    assert model.latency_at(0, 0, 2) == pytest.approx(14 + 20, rel=1e-12)
    # a full planned batch with it (2 waiting): no filling wait, the batch of 3's 14 ms
    assert model.latency_at(2, 0, 2) == pytest.approx(14.0, rel=1e-12)
    # more waiting (3 or 4): 3 // 3 = 1 batch ahead over 2 replicas, and its own batch is of 4
    # (16 ms), not the planned 3
    assert model.latency_at(3, 0, 2) == pytest.approx(16 + 7, rel=1e-12)
    assert model.latency_at(4, 0, 2) == pytest.approx(16 + 7, rel=1e-12)


def test_a_request_joining_two_waiting_at_a_free_replica_is_predicted_a_batch_of_three():
    # at a light rate the planned batch is near 1; two waiting and a free replica: the request
    # is served with them, so its service is the batch of 3's (14 ms), not the batch of 1's (10 ms)
    model = _model(1.2, rate_rps=10.0, timeout_ms=0.0)
    assert model.latency_at(0, 0, 2) == pytest.approx(10.4, rel=1e-12)
    assert model.latency_at(2, 0, 2) == pytest.approx(14 + (2 // 1.2) / 2 * 10.4, rel=1e-12)
    # both replicas busy: the same batch, after the round ahead and half a service
    assert model.latency_at(2, 2, 2) == pytest.approx(14 + 5.2 + 5.2, rel=1e-12)
    # a fractional batch: 2.5 requests, so 1.5 more to come after the one in hand, 15 ms
    assert _model(2.5).latency_at(0, 0, 2) == pytest.approx(13 + 15, rel=1e-12)


def test_the_filling_wait_is_capped_by_the_timeout():
    model = _model(2.0, timeout_ms=0.5)  # filling would take 10 ms, the timeout 0.5
    assert model.latency_at(0, 0, 2) == pytest.approx(12.5, rel=1e-12)
    slow = _model(4.0, rate_rps=0.5, timeout_ms=5000.0)  # one waiting, two more to come take 4 s
    assert slow.latency_at(1, 0, 2) == pytest.approx(16 + 4000, rel=1e-12)
    assert slow.latency_at(0, 0, 2) == pytest.approx(16 + 5000, rel=1e-12)  # 6 s to fill: times out


def test_a_single_request_batch_never_waits_to_fill():
    view = FakeView(FAKE)
    model = DeploymentModel("m", view.latency_profile("m"))
    model.update(view, 0.0)  # no traffic: batches of 1, though the deployment has a timeout
    assert (model.batch, model.timeout_ms) == (1.0, 20.0)
    assert model.latency_at(0, 0, 2) == pytest.approx(10.0, rel=1e-12)


# --- what a policy sends each deployment: route shares and the traffic meter ---------------------

def test_a_cascade_sends_its_second_stage_the_share_its_first_is_unsure_about():
    view = FakeView({"fast": {"ms": 2.0}, "slow": {"ms": 10.0}}, two_model_table())
    index = {"fast": 0, "slow": 1}
    # 'fast' is confident (>= 0.8) on exactly half the samples: half go on
    assert route_shares(Route.cascade(["fast", "slow"], [0.8]), view, index) == ((0, 1.0), (1, 0.5))
    assert route_shares(Route.single("slow"), view, index) == ((1, 1.0),)
    # a hop without a threshold ends a stage: the next starts with every request
    assert route_shares(Route.pipeline([Route.single("fast"), Route.single("slow")]), view, index) == ((0, 1.0), (1, 1.0))


def test_the_meter_reads_rates_since_its_last_reading():
    meter = TrafficMeter(2, now_s=10.0)
    assert meter.take_rates(10.0) is None                       # no time has passed
    meter.counts[0] += 3.0
    meter.counts[1] += 0.5
    assert meter.take_rates(10.5) == [6.0, 1.0] and meter.since_s == 10.5
    assert meter.take_rates(11.0) is None and meter.counts == [0.0, 0.0]  # nothing sent since


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
