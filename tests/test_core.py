"""The one serving core: both executors drive it, it needs neither SimPy nor torch, and a real and a
simulated run of one scenario report the same things."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("measure") is None:  # measure/ is not an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traces.summary import flatten  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = """
seed = 4
duration_s = 1.5
warmup_s = 0.25
[arrivals]
kind = "poisson"
rate_rps = 300.0
[requests]
deadline_ms = 40.0
[[deployments]]
name = "m"
service = { kind = "exponential", mean_ms = 2.0, per_item_ms = 0.5 }
replicas = 2
max_batch_size = 4
batch_wait_timeout_ms = 1.0
[[faults]]
deployment = "m"
replica = 1
at_s = 0.5
down_s = 0.3
[policy]
name = "static"
"""


def test_the_core_imports_neither_simpy_nor_torch():
    code = ("import sys, sim.core.serving, sim.core.driver, sim.core.faults, sim.core.autoscalers; "
            "print(sorted(m for m in ('simpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _run(tmp_path: Path, *argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads((Path(argv[-1]) / "seed-4" / "summary.json").read_text())


def test_a_real_and_a_simulated_run_have_summaries_with_the_same_keys(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    sim = _run(tmp_path, "sim", "run", str(scenario), "--out", str(tmp_path / "sim"))
    real = _run(tmp_path, "measure", "serve", str(scenario), "--out", str(tmp_path / "real"))
    # the same keys in the same order, but for the drop reasons: a summary lists only the reasons that
    # occurred, and a real run on a busy machine may see a request expire that the simulation served
    def keys(summary):
        return [k for k in flatten(summary) if not k.startswith("dropped_by_reason.")]

    assert keys(real) == keys(sim)
    assert set(real) >= {"seed", "deployments", "faults", "policy", "dropped_by_reason"}
    assert real["policy"] == sim["policy"] == {"name": "static"}
    # the scheduled crash happens in both, at its time, on its replica
    for summary in (sim, real):
        (fault,) = summary["faults"]
        assert (fault["deployment"], fault["replica"]) == ("m", 1)
        assert fault["crash_s"] == pytest.approx(0.5, abs=0.01)
        assert fault["recover_s"] - fault["crash_s"] == pytest.approx(0.3)


# ---------------------------------------------------------------- autoscaling and cold starts, simulated

STEP = {  # a load step: 200 rps for 20 s, then 1200 rps for 20 s, then 200 rps again
    "duration_s": 60.0, "warmup_s": 0.0,
    "arrivals": {"kind": "piecewise", "interval_s": 20.0, "rates_rps": [200.0, 1200.0, 200.0], "repeat": False},
    "requests": {"deadline_ms": 50.0}, "policy": {"name": "static"},
    "deployments": [{"name": "m", "service": {"kind": "exponential", "mean_ms": 2.0}, "replicas": 1,
                     "max_batch_size": 1, "startup_s": 2.5,
                     "autoscaling": {"policy": "hpa", "min_replicas": 1, "max_replicas": 6,
                                     "target_average_value": 2, "sync_period_s": 1.0,
                                     "scale_down_stabilization_window_s": 5.0}}],
}


def _simulate_step(raw=STEP, seed=1):
    from sim.runner import prepare, run_seed
    from traces.scenario import scenario_from_dict

    config, requests, summary, timeline = run_seed(prepare(scenario_from_dict(raw)), seed)
    return requests.to_pandas(), summary, timeline


def test_an_autoscaler_scales_up_under_a_load_step_and_back_down():
    requests, summary, timeline = _simulate_step()
    replicas = timeline.set_index("time_s")["replicas"]
    assert replicas.loc[:19.0].max() == 1          # 200 rps on one 2 ms server: rho 0.4, nothing to do
    assert replicas.loc[25.0:40.0].max() >= 3       # 1200 rps needs rho < 1: at least 3
    assert replicas.loc[55.0:].max() == 1          # back down after the stabilisation window
    # a timeline row per tick (1 s), with its columns
    assert list(timeline.columns) == ["time_s", "deployment", "replicas", "ready_replicas", "queue_length",
                                      "in_flight", "arrival_rate_rps"]
    assert timeline["time_s"].tolist() == [float(t) for t in range(1, 60)]
    assert timeline.loc[timeline["time_s"] == 30.0, "arrival_rate_rps"].item() == pytest.approx(1200, rel=0.15)
    # replicas added pay 2.5 s before they serve: ready lags provisioned
    assert (timeline["ready_replicas"] <= timeline["replicas"]).all()
    assert (timeline["ready_replicas"] < timeline["replicas"]).any()
    stats = summary["deployments"]["m"]
    assert stats["cold_starts"] >= 2 and stats["cold_start_seconds"] == pytest.approx(2.5 * stats["cold_starts"])
    assert 0 < stats["misses_during_cold_start"] <= summary["requests"] - summary["hit_rate"] * summary["requests"]
    assert stats["idle_replica_seconds"] == pytest.approx(stats["replica_seconds"] - stats["busy_seconds"])


def test_no_batch_starts_on_a_replica_before_it_is_ready():
    requests, summary, timeline = _simulate_step()
    served = requests[requests["hop0_start_s"].notna()]
    first_start = served.groupby("hop0_replica")["hop0_start_s"].min()
    # replica 0 was there from the start; every later one was added at a tick (a whole second) and
    # needs 2.5 s: its first batch starts no earlier than 2.5 s after some tick
    for replica, start_s in first_start.items():
        if replica == 0:
            continue
        assert start_s - math.floor(start_s - 2.5) >= 2.5 - 1e-9


def test_a_deployment_without_autoscaling_reports_no_cold_starts_and_a_flat_timeline(tmp_path):
    raw = {**STEP, "deployments": [{k: v for k, v in STEP["deployments"][0].items()
                                    if k not in ("autoscaling", "startup_s")}]}
    raw["deployments"][0]["replicas"] = 4
    _, summary, timeline = _simulate_step(raw)
    assert "cold_starts" not in summary["deployments"]["m"]
    assert set(timeline["replicas"]) == {4} and len(timeline) == 59


def test_the_real_server_autoscales_with_the_same_controller():
    """A short load step served for real (sleeping replicas): the same HPA scales it up after the
    step and back down, new replicas serve only after their start-up, and the timeline's shape
    follows the simulator's."""
    import dataclasses

    import policies
    from measure.server import Server, parametric_runners
    from sim.core.driver import seed_timeline
    from sim.runner import prepare
    from traces.scenario import scenario_from_dict

    raw = {**STEP, "duration_s": 9.0, "arrivals": {"kind": "piecewise", "interval_s": 3.0,
                                                   "rates_rps": [150.0, 900.0, 150.0], "repeat": False}}
    raw["deployments"] = [{**STEP["deployments"][0], "startup_s": 0.4,
                           "autoscaling": {**STEP["deployments"][0]["autoscaling"], "sync_period_s": 0.5,
                                           "scale_down_stabilization_window_s": 1.0}}]
    scenario = scenario_from_dict(raw)
    prepared = prepare(scenario)
    server = Server(dataclasses.replace(scenario, seed=2), policies.create("static", {}),
                    parametric_runners(scenario, 2), seed=2, labels=None, profiles=prepared.profiles,
                    predictions=None)
    requests = server.run().to_pandas()
    real = seed_timeline(server.core).set_index("time_s")["replicas"]
    _, _, sim_timeline = _simulate_step(raw, seed=2)
    sim = sim_timeline.set_index("time_s")["replicas"]
    assert sim.loc[:2.5].max() == 1 and sim.loc[3.5:6.0].max() >= 3 and sim.loc[8.0:].max() == 1
    # for real, only what a late timer or a slow machine cannot change: up in the step, and on the way
    # down by the end (how far down depends on how fast this machine drains the step's backlog: a
    # busy one ended a run at 2 replicas)
    peak = real.loc[3.5:6.5].max()
    assert real.loc[:2.5].max() == 1 and peak >= 3 and real.iloc[-1] < peak
    assert len(real) == len(sim) == 17  # every 0.5 s, on the grid however late a tick fires
    served = requests[requests["hop0_start_s"].notna()]
    starts = server.core.deployments[0].cold_starts
    assert starts and all(ready - start >= 0.4 for start, ready in starts)
    first = served.groupby("hop0_replica")["hop0_start_s"].min()
    assert (first.drop(0) > 3.0).all()  # replicas added in the step serve only after it began


def test_hpa_in_a_run_takes_the_decisions_computed_by_hand(tmp_path):
    """A scripted load the core's observations can be worked out for: a request every 0.125 s
    from 0.0625 s, one replica busy for the whole run with the first of them (a 100 s service),
    and replicas added by HPA that never get ready (a 1000 s start-up). At the tick at t s, 8t
    requests have arrived: 1 in service, 8t - 1 waiting. HPA (target 2 waiting per replica,
    tolerance 0.1, no scale-up window) proposes ceil((8t - 1) / 2); its one scale-up policy adds at
    most 1 pod per 1 s period (the change one period ago no longer counts), so from 1 replica the
    count goes 2, 3, 4, ... up to max_replicas = 6, then stays."""
    from conftest import replay_arrivals
    from sim.runner import prepare, run_seed
    from traces.scenario import scenario_from_dict

    duration_s = 9.0
    arrivals = [0.0625 + 0.125 * k for k in range(int(duration_s * 8))]
    raw = {"duration_s": duration_s, "arrivals": replay_arrivals(tmp_path / "t.csv", arrivals, duration_s),
           "requests": {"deadline_ms": 1e9}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 100_000.0},
                            "drop_expired": False, "startup_s": 1000.0,
                            "autoscaling": {"policy": "hpa", "max_replicas": 6, "target_average_value": 2,
                                            "sync_period_s": 1.0,
                                            "scale_up_policies": [{"type": "Pods", "value": 1, "period_s": 1.0}]}}]}
    _, _, _, timeline = run_seed(prepare(scenario_from_dict(raw)), 1)
    by_hand = []
    replicas = 1
    for t in range(1, 9):
        waiting = 8 * t - 1
        proposal = math.ceil(waiting / 2)
        if abs(waiting / (2 * replicas) - 1) > 0.1:
            replicas = min(proposal, replicas + 1, 6)
        by_hand.append((float(t), replicas, 1, waiting, 1))
    got = list(timeline[["time_s", "replicas", "ready_replicas", "queue_length", "in_flight"]]
               .itertuples(index=False, name=None))
    assert got == by_hand
    assert timeline["arrival_rate_rps"].tolist() == [8.0] * 8


@pytest.mark.parametrize("controller", [
    {"policy": "hpa", "target_average_value": 2, "sync_period_s": 1.0},
    {"policy": "ray-serve", "target_ongoing_requests": 2, "metrics_interval_s": 1.0, "upscale_delay_s": 2.0},
    {"policy": "kpa", "container_concurrency_target": 2},
    {"policy": "infaas", "hardware": "cpu"},
], ids=lambda c: c["policy"])
def test_every_autoscaler_answers_an_overload_in_a_run(tmp_path, controller):
    """The overload of the test above, for each controller: each ends at max_replicas, decides only
    on its own ticks, and the added replicas (never ready) are paid for from when they were added."""
    from conftest import replay_arrivals
    from sim.runner import prepare, run_seed
    from traces.scenario import scenario_from_dict

    duration_s = 20.0
    arrivals = [0.0625 + 0.125 * k for k in range(int(duration_s * 8))]
    raw = {"duration_s": duration_s, "arrivals": replay_arrivals(tmp_path / "t.csv", arrivals, duration_s),
           "requests": {"deadline_ms": 1e9}, "policy": {"name": "static"},
           "deployments": [{"name": "m", "service": {"kind": "deterministic", "mean_ms": 100_000.0},
                            "drop_expired": False, "startup_s": 1000.0,
                            "autoscaling": {"max_replicas": 4, **controller}}]}
    scenario = scenario_from_dict(raw)
    _, _, summary, timeline = run_seed(prepare(scenario), 1)
    tick_s = scenario.deployments[0].autoscaling.tick_s
    assert np.allclose(np.diff(timeline["time_s"]), tick_s)
    assert timeline["replicas"].iloc[-1] == 4 and (timeline["ready_replicas"] == 1).all()
    assert timeline["replicas"].is_monotonic_increasing
    stats = summary["deployments"]["m"]
    assert stats["cold_starts"] == 3 and stats["misses_during_cold_start"] == 0  # nothing is late: no deadline
    assert stats["replica_seconds"] > duration_s  # the starting replicas are paid for
