"""The four autoscalers against decisions computed by hand on scripted loads, and the config's checks.

Each script feeds a controller one Observation per tick; unless a tick says otherwise, the core is
assumed to apply every decision at once (the next tick's ``replicas`` and ``ready_replicas`` are the
decision). The comments carry the arithmetic from each source's rule (see the module docstrings).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from sim.core.autoscalers import AUTOSCALERS, HPA, KPA, Infaas, Observation, RayServe, make_autoscaler
from traces.autoscaling import (POLICIES, HPAConfig, HPAScalingPolicy, InfaasConfig, KPAConfig, RayServeConfig,
                                parse_autoscaling)
from traces.errors import InputError


def drive(scaler, replicas: int, ticks: list[tuple[float, dict]]) -> list[int]:
    """Decisions for ``ticks`` of (time_s, observation fields), each fed back as the next count."""
    out = []
    for time_s, fields in ticks:
        fields = dict(fields)
        ready = fields.pop("ready_replicas", replicas)
        obs = Observation(time_s=time_s, replicas=replicas, ready_replicas=ready,
                          queue_length=fields.pop("queue_length", 0), in_flight=fields.pop("in_flight", 0),
                          arrival_rate_rps=fields.pop("arrival_rate_rps", 0.0),
                          throughput_rps_per_replica=fields.pop("throughput_rps_per_replica", 0.0))
        assert not fields, fields
        replicas = scaler.desired(obs)
        out.append(replicas)
    return out


def every(tick_s: float, loads: list[dict]) -> list[tuple[float, dict]]:
    return [(i * tick_s, load) for i, load in enumerate(loads)]


# --- Kubernetes HPA -------------------------------------------------------------------------------


def hpa(**kw) -> HPA:
    kw = {"min_replicas": 1, "max_replicas": 20, "target_average_value": 2.0, **kw}
    return HPA(HPAConfig(**kw))


def test_hpa_tolerance_keeps_the_count_within_ten_percent():
    # 10 replicas, target 2 per replica: 20 queued is ratio 1.
    # q=21: ratio 21/20 = 1.05, |1 - 1.05| <= 0.1 -> keep 10 (without the tolerance ceil(21/2) = 11)
    # q=23: ratio 1.15 > 1.1 -> ceil(23/2) = 12; the limit is max(10+4, ceil(10*2)) = 20 -> 12
    # q=19 at 12: ratio 19/24 = 0.79 -> ceil(9.5) = 10 < 12, but the scale-down window holds the
    #   highest recommendation of the last 300 s (the initial 10, the 10 at t=0, the 12 at t=15) -> 12
    assert drive(hpa(), 10, every(15, [{"queue_length": 21}, {"queue_length": 23}, {"queue_length": 19}])) \
        == [10, 12, 12]


def test_hpa_metric_in_flight_reads_requests_in_service():
    # metric in_flight: 12 in service over 2 replicas, target 2 -> ceil(12/2) = 6; the queue is ignored
    scaler = hpa(metric="in_flight")
    assert drive(scaler, 2, [(0, {"in_flight": 12, "queue_length": 100})]) == [6]


def test_hpa_scale_up_policy_doubles_or_adds_four_per_15_s():
    # q=40, target 2: the metric wants ceil(40/2) = 20 every tick.
    # t=0:  from 2: Pods 2+4 = 6, Percent ceil(2*2) = 4, select Max -> 6
    # t=15: the +4 at t=0 is not younger than 15 s, start = 6: max(10, 12) -> 12
    # t=30: start 12: max(16, 24) = 24, then max_replicas 20 -> 20
    assert drive(hpa(), 2, every(15, [{"queue_length": 40}] * 3)) == [6, 12, 20]


def test_hpa_scale_up_budget_is_per_period_not_per_sync():
    # sync every 5 s, policy periods 15 s: the +4 at t=0 counts at t=5 and t=10, so the period
    # started at 6 - 4 = 2 and allows max(2+4, 2*2) = 6 -> stay at 6 until t=15 (start 6 -> 12)
    assert drive(hpa(sync_period_s=5.0), 2, every(5, [{"queue_length": 40}] * 4)) == [6, 6, 6, 12]


def test_hpa_select_policy_min_and_disabled():
    # Min: from 2, min(2+4, ceil(2*2)) = 4; Disabled: no scale-up at all
    assert drive(hpa(scale_up_select_policy="Min"), 2, [(0, {"queue_length": 40})]) == [4]
    assert drive(hpa(scale_up_select_policy="Disabled"), 2, [(0, {"queue_length": 40})]) == [2]


def test_hpa_scale_down_uses_the_highest_recommendation_in_the_window():
    # target 2, 4 replicas. t=0: q=8, ratio 1 -> 4 (recorded with the initial 4).
    # Then q=2 (ceil(2/2) = 1) except q=6 at t=60 (ceil(6/2) = 3).
    # t=15..285: the 4s of t=0 are within 300 s -> 4.
    # t=300: window (0, 300]: the highest is the 3 of t=60 -> 3 (100%/15 s allows it)
    # t=315..345: the t=60 recommendation is still in the window -> 3
    # t=360: window (60, 360] holds only 1s -> 1
    loads = [{"queue_length": 8}] + [{"queue_length": 6 if i * 15 == 60 else 2} for i in range(1, 25)]
    assert drive(hpa(), 4, every(15, loads)) == [4] * 20 + [3] * 4 + [1]


def test_hpa_first_window_keeps_the_count_it_first_saw():
    # 4 replicas, q=2 from the start: the metric wants 1, but the controller recorded the 4 it first
    # saw at t=0 (recordInitialRecommendation); it leaves the window only at t=300 -> 1
    assert drive(hpa(), 4, every(15, [{"queue_length": 2}] * 21)) == [4] * 20 + [1]


def test_hpa_scale_down_policy_limits_the_rate():
    # window 0, at most 1 pod per 60 s: q=0 wants ceil(0) = 0.
    # t=0: start 5, 5 - 1 = 4 -> 4. t=15..45: the -1 of t=0 is within 60 s, start 5 -> floor 4 -> 4.
    # t=60: the t=0 event is 60 s old (not younger), start 4 -> 3.
    scaler = hpa(scale_down_stabilization_window_s=0.0,
                 scale_down_policies=(HPAScalingPolicy("Pods", 1, 60.0),))
    assert drive(scaler, 5, every(15, [{"queue_length": 0}] * 5)) == [4, 4, 4, 4, 3]


def test_hpa_percent_scale_down_truncates_and_min_replicas_clamps():
    # 50%/15 s, window 0: from 5, int(5 * 0.5) = 2 (truncated) -> 2; then from 2, int(1.0) = 1 -> 1 (min 1)
    scaler = hpa(scale_down_stabilization_window_s=0.0,
                 scale_down_policies=(HPAScalingPolicy("Percent", 50, 15.0),))
    assert drive(scaler, 5, every(15, [{"queue_length": 0}] * 3)) == [2, 1, 1]


def test_hpa_clamps_a_count_outside_the_range_first():
    # 25 > max 20 -> 20 whatever the metric; 0 < min 1 -> 1
    assert drive(hpa(), 25, [(0, {"queue_length": 1000})]) == [20]
    assert drive(hpa(), 0, [(0, {"queue_length": 0})]) == [1]


# --- Ray Serve ------------------------------------------------------------------------------------


def ray(**kw) -> RayServe:
    kw = {"min_replicas": 1, "max_replicas": 10, **kw}
    return RayServe(RayServeConfig(**kw))


def test_ray_upscale_decision_must_persist_upscale_delay_s():
    # target 2 ongoing per replica, 2 replicas, 8 ongoing: ratio 8/(2*2) = 2 -> desired 4.
    # upscale_delay_s 30 over 10 s ticks: the counter must pass int(30/10) = 3.
    # t=0,10,20: counter 1, 2, 3 -> stay 2; t=30: 4 > 3 -> 4 (30 s after the first decision).
    # t=40: 4 replicas, look-back mean over (10, 40] = 8 -> ratio 1 -> 4, counter reset.
    assert drive(ray(), 2, every(10, [{"queue_length": 5, "in_flight": 3}] * 5)) == [2, 2, 2, 4, 4]


def test_ray_an_interrupted_decision_starts_counting_again():
    # look_back_period_s 5: each tick sees only itself. 8 ongoing wants 4; 4 ongoing (ratio 1) resets.
    # t=0,10: counter 1, 2; t=20: equal -> 0; t=30..50: 1, 2, 3; t=60: 4 > 3 -> 4
    loads = [{"in_flight": 8}] * 2 + [{"in_flight": 4}] + [{"in_flight": 8}] * 4
    assert drive(ray(look_back_period_s=5.0), 2, every(10, loads)) == [2] * 6 + [4]


def test_ray_averages_ongoing_requests_over_look_back_period():
    # upscale_delay_s 0 (int(0/10) = 0: one decision suffices). Ongoing 0, 0, 12, 12.
    # t=0: mean 0 -> desired 0, ceil(2 - 2) = 0 -> min 1 -> below target: counter -1 (600 s delay) -> 2
    # t=10: mean 0 -> counter -2 -> 2
    # t=20: mean (0+0+12)/3 = 4 -> ratio 4/4 = 1 -> 2, counter reset (the last sample alone would want 6)
    # t=30: window (0, 30]: (0+12+12)/3 = 8 -> ratio 2 -> 4, at once
    loads = [{"queue_length": 0}] * 2 + [{"queue_length": 12}] * 2
    assert drive(ray(upscale_delay_s=0.0), 2, every(10, loads)) == [2, 2, 2, 4]


def test_ray_upscaling_factor_scales_the_change():
    # upscaling_factor 0.5, look-back 5, no delay, 12 ongoing:
    # from 2: desired 2 * 12/(2*2) = 6, ceil(2 + 0.5 * 4) = 4
    # from 4: desired 4 * 12/8 = 6, ceil(4 + 0.5 * 2) = 5
    # from 5: desired 5 * 12/10 = 6, ceil(5 + 0.5 * 1) = 6
    # from 6: desired 6, no change
    scaler = ray(upscaling_factor=0.5, look_back_period_s=5.0, upscale_delay_s=0.0)
    assert drive(scaler, 2, every(10, [{"in_flight": 12}] * 4)) == [4, 5, 6, 6]


def test_ray_downscaling_factor_and_the_stuck_rule():
    # downscale_delay_s 0, look-back 5.
    # factor 0.5, 3 replicas, 5 ongoing: desired 3 * 5/6 = 2.5, ceil(3 - 0.25) = 3 and ceil(2.5) = 3 -> 3
    # factor 0.5, 2 ongoing: desired 1, ceil(3 - 0.5 * 2) = 2 -> 2
    # factor 0.1, 4 ongoing: desired 2, ceil(3 - 0.1) = 3 == current while ceil(2) < 3 -> one fewer, 2
    half = dict(downscaling_factor=0.5, downscale_delay_s=0.0, look_back_period_s=5.0)
    assert drive(ray(**half), 3, [(0, {"in_flight": 5})]) == [3]
    assert drive(ray(**half), 3, [(0, {"in_flight": 2})]) == [2]
    tenth = dict(half, downscaling_factor=0.1)
    assert drive(ray(**tenth), 3, [(0, {"in_flight": 4})]) == [2]


def test_ray_smoothing_factor_is_the_default_of_both():
    # smoothing_factor 0.5 alone acts as the upscaling factor: from 2, desired 6 -> ceil(2 + 2) = 4
    scaler = ray(smoothing_factor=0.5, look_back_period_s=5.0, upscale_delay_s=0.0)
    assert drive(scaler, 2, [(0, {"in_flight": 12})]) == [4]


def test_ray_downscale_delay_and_the_step_to_zero():
    # min 0, nothing ongoing, downscale_delay_s 20 -> the counter must go below -int(20/10) = -2.
    # t=0,10: -1, -2 -> 4; t=20: -3 -> target 4 is not 1, so max(1, 0) = 1.
    # Then 1 -> 0 uses downscale_to_zero_delay_s 0: below -0 at once -> 0 (cold: target kept at 0).
    scaler = ray(min_replicas=0, downscale_delay_s=20.0, downscale_to_zero_delay_s=0.0, look_back_period_s=5.0)
    assert drive(scaler, 4, every(10, [{}] * 5)) == [4, 4, 1, 0, 0]


def test_ray_cold_start_and_max_replicas():
    # no running replica and 3 ongoing: max(ceil(1 * 1.0), 0) = 1 at once; upscaling_factor 2.5 -> 3
    assert drive(ray(min_replicas=0), 0, [(0, {"queue_length": 3})]) == [1]
    assert drive(ray(min_replicas=0, upscaling_factor=2.5), 0, [(0, {"queue_length": 3})]) == [3]
    # replicas starting (provisioned 3, none ready), no request: keep the target 3
    assert drive(ray(min_replicas=0), 3, [(0, {"ready_replicas": 0})]) == [3]
    # 100 ongoing on 2: desired 2 * 100/4 = 50 -> max_replicas 10
    assert drive(ray(upscale_delay_s=0.0), 2, [(0, {"in_flight": 100})]) == [10]


# --- Knative KPA ----------------------------------------------------------------------------------


def kpa(**kw) -> KPA:
    # target value 10 concurrent per pod (10 x 100%) keeps the arithmetic short
    kw = {"min_replicas": 1, "max_replicas": 20, "container_concurrency_target": 10.0,
          "target_utilization_percentage": 100.0, **kw}
    return KPA(KPAConfig(**kw))


def test_kpa_default_target_is_seventy_percent_of_100():
    # defaults: 100 x 70% = 70 per pod; 140 concurrent -> ceil(140/70) = 2
    scaler = KPA(KPAConfig(max_replicas=10))
    assert scaler.config.target_value == 70.0 and scaler.config.tick_s == 2.0
    assert drive(scaler, 1, [(0, {"in_flight": 140})]) == [2]


def test_kpa_panic_enter_stay_and_leave():
    # 1 ready pod, target 10; panic window 6 s (10% of 60 s), threshold 200%.
    # t=0: 10 -> stable 10, panic 10 -> 1; 1/1 < 2: stable mode -> 1
    # t=2: 50 -> stable mean (10+50)/2 = 30 -> 3; panic (t > -4) 30 -> 3; 3/1 >= 2: PANIC -> 3
    # t=4: 50, 3 ready -> both means 110/3 = 36.7 -> 4; 4/3 < 2 but in panic -> 4
    # t=6: stable 160/4 = 40 -> 4; panic (t > 0) 150/3 = 50 -> 5; panic takes the larger -> 5
    # t=8: stable 210/5 = 42 -> 5; panic 50 -> 5 -> 5
    # t=10..62: concurrency 0; the counts wanted fall but panic never scales down -> 5
    #   (the last tick over the threshold was t=2; panic lasts while now <= 2 + 60)
    # t=64: leave panic; stable mean over (4, 64]: (50 + 50) / 30 samples = 3.33 -> ceil(0.33) = 1,
    #   but a tick removes at most half: floor(5 / max_scale_down_rate 2) = 2 -> 2
    loads = [{"in_flight": 10}] + [{"in_flight": 50}] * 4 + [{"in_flight": 0}] * 28
    scaler = kpa()
    decisions = drive(scaler, 1, every(2, loads))
    assert decisions == [1, 3, 4, 5, 5] + [5] * 27 + [2]
    assert not scaler.panicking


def test_kpa_starts_in_panic_over_one_pod_and_scales_down_at_most_by_half():
    # first seen with 8 ready: panic at t=0 with 8 (no history: keep the scale).
    # Nothing in flight: stay 8 while t <= 60; t=62: leave panic, want 0, floor(8/2) = 4 -> 4;
    # then floor(4/2) = 2, floor(2/2) = 1, floor(1/2) = 0 -> min_replicas 0 -> 0
    decisions = drive(kpa(min_replicas=0), 8, every(2, [{}] * 35))
    assert decisions == [8] * 31 + [4, 2, 1, 0]


def test_kpa_max_scale_up_rate():
    # max_scale_up_rate 2, 100 concurrent, target 10 -> 10 wanted; the cap is ceil(2 x ready):
    # 1 -> 2, 2 -> 4, 4 -> 8, 8 -> 10 (panic from t=0: 10/1 >= 2, which only stops scale-downs)
    assert drive(kpa(max_scale_up_rate=2.0), 1, every(2, [{"in_flight": 100}] * 4)) == [2, 4, 8, 10]


def test_kpa_scale_down_delay_holds_the_highest_recent_count():
    # panic off in practice (threshold 1000%), stable window 6 s (samples t > now - 6), delay 6 s.
    # wanted: t=0: 30 -> 3; t=2: (30+30)/2 -> 3; t=4: (30+30+0)/3 = 20 -> 2; t=6: (30+0+0)/3 = 10 -> 1
    #   (floor(3/2) = 1 allows it); t=8: 0 -> 0, floor(3/2) = 1 -> 1; t=10: 0, floor(2/2) -> 1
    # delayed (max over the last 6 s): 3, 3, max(3,3,2) = 3, max(3,2,1) = 3, max(2,1,1) = 2, 1
    cfg = dict(panic_threshold_percentage=1000.0, stable_window_s=6.0)
    loads = [{"in_flight": 30}] * 2 + [{"in_flight": 0}] * 4
    assert drive(kpa(**cfg), 1, every(2, loads)) == [3, 3, 2, 1, 1, 1]
    assert drive(kpa(scale_down_delay_s=6.0, **cfg), 1, every(2, loads)) == [3, 3, 3, 3, 2, 1]


def test_kpa_max_replicas_clamps():
    # 1000 concurrent, target 10: 100 wanted -> max_replicas 20
    assert drive(kpa(), 1, [(0, {"in_flight": 1000})]) == [20]


# --- INFaaS ---------------------------------------------------------------------------------------


def infaas(**kw) -> Infaas:
    kw = {"min_replicas": 1, "max_replicas": 8, **kw}
    return Infaas(InfaasConfig(**kw))


def load(rate: float, **kw) -> dict:
    return {"arrival_rate_rps": rate, "throughput_rps_per_replica": 100.0, **kw}


def test_infaas_scales_up_by_the_deficit_over_one_replica_throughput():
    # 1 replica of 100 rps, 350 rps: delta 350 - 100 = 250 -> ceil(2.5) = 3 more -> 4
    # t=1: 4 provisioned, 1 ready: the variant is being scaled, no request -> 4
    # t=2: 4 ready: delta 350 - 400 = -50 -> ceil(-0.5) = 0; 350 > (4-1) x 100 -> no signal -> 4
    ticks = [(0, load(350)), (1, load(350, ready_replicas=1)), (2, load(350))]
    assert drive(infaas(), 1, ticks) == [4, 4, 4]


def test_infaas_scales_down_one_after_more_than_scale_down_delay_signals():
    # 4 x 100 rps, 250 rps: delta -150 -> no scale-up; 250 <= 3 x 100 -> a scale-down signal.
    # gpu: scale_down_delay 20 -> the 21st signal removes one replica and empties the backlog.
    scaler = infaas()
    assert scaler.config.scale_down_delay == 20
    assert drive(scaler, 4, every(1, [load(250)] * 22)) == [4] * 20 + [3, 3]


def test_infaas_backlog_survives_a_calm_tick_and_empties_on_a_scale_up():
    # cpu: scale_down_delay 10; 4 replicas, cpu delta = qps - 400 x 0.95.
    # 5 signals (250 rps), 1 calm tick (350 <= 300? no; 350 - 380 < 0: no scale-up), 6 signals:
    #   the 11th signal (tick 12) scales down -> 3
    calm = [load(250)] * 5 + [load(350)] + [load(250)] * 6
    assert drive(infaas(hardware="cpu"), 4, every(1, calm)) == [4] * 11 + [3]
    # 5 signals, then 500 rps: 500 - 380 = 120 -> ceil(1.2) = 2 -> 6, backlog emptied;
    # at 6 replicas 250 rps signals again (250 <= 500): 10 more signals are not enough, the 11th is
    bursts = [load(250)] * 5 + [load(500)] + [load(250)] * 11
    assert drive(infaas(hardware="cpu"), 4, every(1, bursts)) == [4] * 5 + [6] * 11 + [5]


def test_infaas_cpu_headroom_and_gpu_load_latency_term():
    # 2 x 100 rps at 195 rps. cpu: 195 - 200 x 0.95 = 5 -> ceil(0.05) = 1 -> 3.
    # gpu: 195 - 200 = -5 -> 0; 195 > 100 -> no signal -> 2.
    assert drive(infaas(hardware="cpu"), 2, [(0, load(195))]) == [3]
    assert drive(infaas(), 2, [(0, load(195))]) == [2]
    # gpu with a 2500 ms load: 150 - 200 + 0.0002 x 200 x 2500 = 50 -> ceil(0.5) = 1 -> 3
    assert drive(infaas(load_latency_ms=2500.0), 2, [(0, load(150))]) == [3]


def test_infaas_clamps_and_starts_from_zero():
    # 7 replicas, 1000 rps: +3 -> 10 -> max_replicas 8
    assert drive(infaas(), 7, [(0, load(1000))]) == [8]
    # 1 replica, no traffic: 0 <= max(0, 0) signals; the 21st would leave 0 -> min_replicas 1
    assert drive(infaas(), 1, every(1, [load(0)] * 21)) == [1] * 21
    assert drive(infaas(min_replicas=0), 1, every(1, [load(0)] * 21)) == [1] * 20 + [0]
    # 0 replicas, 150 rps: ceil(150 / 100) = 2
    assert drive(infaas(min_replicas=0), 0, [(0, load(150))]) == [2]


# --- registry and purity --------------------------------------------------------------------------


def test_registry_builds_each_policy_fresh():
    configs = [HPAConfig(max_replicas=4, target_average_value=1.0), RayServeConfig(max_replicas=4),
               KPAConfig(max_replicas=4), InfaasConfig(max_replicas=4)]
    assert tuple(AUTOSCALERS) == POLICIES
    for config, cls in zip(configs, (HPA, RayServe, KPA, Infaas)):
        a, b = make_autoscaler(config), make_autoscaler(config)
        assert type(a) is cls and a is not b and a.config is config


def test_same_observations_same_decisions():
    loads = [{"queue_length": q, "in_flight": q // 2, "arrival_rate_rps": 30.0 * q,
              "throughput_rps_per_replica": 50.0} for q in (0, 5, 40, 40, 3, 0, 0, 90, 1)]
    for config in (HPAConfig(max_replicas=16, target_average_value=2.0, sync_period_s=1.0),
                   RayServeConfig(max_replicas=16, upscale_delay_s=1.0, downscale_delay_s=2.0),
                   KPAConfig(max_replicas=16, container_concurrency_target=5.0), InfaasConfig(max_replicas=16)):
        first = drive(make_autoscaler(config), 2, every(config.tick_s, loads))
        assert first == drive(make_autoscaler(config), 2, every(config.tick_s, loads))
        assert all(config.min_replicas <= n <= config.max_replicas for n in first)


def test_core_autoscalers_import_neither_simpy_nor_torch():
    code = "import sys, sim.core.autoscalers; print(sorted({'simpy', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- parse_autoscaling ----------------------------------------------------------------------------

WHERE = "scenario.toml: deployments.small.autoscaling"


@pytest.mark.parametrize("raw", [
    {"policy": "hpa", "min_replicas": 2, "max_replicas": 8, "target_average_value": 4, "metric": "in_flight",
     "scale_up_policies": [{"type": "Pods", "value": 2, "period_s": 30}], "scale_down_select_policy": "Min"},
    {"policy": "ray-serve", "max_replicas": 8, "upscaling_factor": 0.5, "downscale_to_zero_delay_s": 60},
    {"policy": "kpa", "min_replicas": 0, "max_replicas": 3, "stable_window_s": 30, "scale_down_delay_s": 10},
    {"policy": "infaas", "max_replicas": 8, "hardware": "cpu", "load_latency_ms": 800},
])
def test_parse_accepts_each_policy_and_resolves_round_trip(raw):
    config = parse_autoscaling(raw, WHERE)
    assert config.policy == raw["policy"]
    assert config.max_replicas == raw["max_replicas"] and config.tick_s > 0
    assert parse_autoscaling(config.resolved(), WHERE) == config


def test_parse_defaults_are_the_sources():
    hpa_cfg = parse_autoscaling({"policy": "hpa", "max_replicas": 8, "target_average_value": 4}, WHERE)
    assert (hpa_cfg.min_replicas, hpa_cfg.tolerance, hpa_cfg.sync_period_s, hpa_cfg.tick_s) == (1, 0.1, 15.0, 15.0)
    assert hpa_cfg.scale_down_stabilization_window_s == 300.0 and hpa_cfg.scale_up_stabilization_window_s == 0.0
    assert hpa_cfg.scale_up_policies == (HPAScalingPolicy("Pods", 4, 15.0), HPAScalingPolicy("Percent", 100, 15.0))
    ray_cfg = parse_autoscaling({"policy": "ray-serve", "max_replicas": 8}, WHERE)
    assert (ray_cfg.target_ongoing_requests, ray_cfg.upscale_delay_s, ray_cfg.downscale_delay_s,
            ray_cfg.look_back_period_s, ray_cfg.tick_s) == (2.0, 30.0, 600.0, 30.0, 10.0)
    kpa_cfg = parse_autoscaling({"policy": "kpa", "max_replicas": 8}, WHERE)
    assert (kpa_cfg.panic_window_s, kpa_cfg.panic_threshold, kpa_cfg.max_scale_down_rate) == (6.0, 2.0, 2.0)
    assert parse_autoscaling({"policy": "infaas", "max_replicas": 8}, WHERE).scale_down_delay == 20


@pytest.mark.parametrize("raw, key, says", [
    ({"policy": "vpa", "max_replicas": 4}, "policy", "must be one of hpa, infaas, kpa, ray-serve"),
    ({"max_replicas": 4}, "policy", "is required"),
    ({"policy": "kpa", "max_replicas": 4, "target_ongoing_requests": 2}, "target_ongoing_requests",
     "unknown key; allowed:"),
    ({"policy": "ray-serve", "max_replicas": "8"}, "max_replicas", "must be an integer >= 1"),
    ({"policy": "ray-serve"}, "max_replicas", "is required"),
    ({"policy": "ray-serve", "max_replicas": 10**7}, "max_replicas", "raise limits.max_replicas"),
    ({"policy": "ray-serve", "min_replicas": 5, "max_replicas": 4}, "min_replicas", "must be <= max_replicas (4)"),
    ({"policy": "ray-serve", "min_replicas": -1, "max_replicas": 4}, "min_replicas", "must be an integer >= 0"),
    ({"policy": "ray-serve", "max_replicas": 4, "upscale_delay_s": -1}, "upscale_delay_s",
     "must be a finite number >= 0"),
    ({"policy": "ray-serve", "max_replicas": 4, "downscale_delay_s": 1e12}, "downscale_delay_s", "<= 86400"),
    ({"policy": "ray-serve", "max_replicas": 4, "smoothing_factor": 0}, "smoothing_factor", "> 0"),
    ({"policy": "hpa", "max_replicas": 4}, "target_average_value", "is required"),
    ({"policy": "hpa", "max_replicas": 4, "target_average_value": 1, "tolerance": True}, "tolerance",
     "must be a finite number"),
    ({"policy": "hpa", "max_replicas": 4, "target_average_value": 1, "metric": "cpu"}, "metric",
     "must be one of in_flight, queue_length"),
    ({"policy": "hpa", "max_replicas": 4, "target_average_value": 1, "scale_up_policies": []},
     "scale_up_policies", "non-empty list"),
    ({"policy": "hpa", "max_replicas": 4, "target_average_value": 1,
      "scale_up_policies": [{"type": "Pod", "value": 4, "period_s": 15}]}, "scale_up_policies[0].type",
     "must be one of Percent, Pods"),
    ({"policy": "hpa", "max_replicas": 4, "target_average_value": 1,
      "scale_down_policies": [{"type": "Pods", "value": 1, "period_s": 15, "every": 1}]},
     "scale_down_policies[0].every", "unknown key"),
    ({"policy": "kpa", "max_replicas": 4, "panic_threshold_percentage": 50}, "panic_threshold_percentage", ">= 110"),
    ({"policy": "kpa", "max_replicas": 4, "stable_window_s": 2}, "stable_window_s", ">= 6"),
    ({"policy": "kpa", "max_replicas": 4, "max_scale_down_rate": 1}, "max_scale_down_rate", "> 1"),
    ({"policy": "kpa", "max_replicas": 4, "container_concurrency_target": 0.01, "target_utilization_percentage": 50},
     "target_utilization_percentage", "must be >= 0.01"),
    ({"policy": "infaas", "max_replicas": 4, "hardware": "tpu"}, "hardware", "must be one of cpu, gpu"),
    ({"policy": "infaas", "max_replicas": 4, "scale_down_delay": 2.5}, "scale_down_delay", "must be an integer"),
])
def test_parse_errors_name_the_key_in_one_line(raw, key, says):
    with pytest.raises(InputError) as err:
        parse_autoscaling(raw, WHERE)
    assert err.value.where == f"{WHERE}.{key}"
    assert says in err.value.problem
    assert "\n" not in str(err.value)


def test_parse_refuses_a_table_that_is_not_one():
    with pytest.raises(InputError) as err:
        parse_autoscaling("hpa", WHERE)
    assert err.value.where == WHERE and "must be a table" in err.value.problem


def test_parse_max_replicas_follows_the_runs_limit():
    raw = {"policy": "kpa", "max_replicas": 2000}
    assert parse_autoscaling(raw, WHERE, max_replicas_limit=4096).max_replicas == 2000


def test_the_timeline_arrival_rate_is_what_joined_the_queue_each_tick(tmp_path):
    """The rate an autoscaler observes (and the timeline records) is the requests that joined the
    deployment's queue since the last tick, over the tick: 8, then 4, then 16 a second here."""
    import numpy as np

    from conftest import replay_arrivals
    from sim.runner import prepare, run_seed
    from traces.scenario import scenario_from_dict

    times = np.concatenate([np.arange(8) / 8.0, 1.0 + np.arange(4) / 4.0, 2.0 + np.arange(16) / 16.0])
    raw = {"duration_s": 3.5, "arrivals": replay_arrivals(tmp_path / "a.csv", times, 3.5),
           "requests": {"deadline_ms": 1e4}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 1.0}}]}
    _, _, _, timeline = run_seed(prepare(scenario_from_dict(raw)), 1)
    assert timeline["time_s"].tolist() == [1.0, 2.0, 3.0]
    assert timeline["arrival_rate_rps"].tolist() == [8.0, 4.0, 16.0]
