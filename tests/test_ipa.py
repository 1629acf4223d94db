"""The `ipa` policy and its baselines in runs, `simulate recommend`, and the pieces they rest on:
the stage latency model, the wait quantile, windows joined in a replay, zero-replica deployments."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import policies
from policies.ipa_model import Candidate, fill_timeout_ms, stage_latency_ms, stage_options
from traces import queueing
from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.profiles import LatencyProfile

ROOT = Path(__file__).resolve().parents[1]
DIGITS, SST2 = ROOT / "traces/data/digits-cpu", ROOT / "traces/data/sst2-cpu"
READ = {"read-small": "cnn-small-kd/fp32/cpu", "read-large": "resnet18/int8/cpu"}
JUDGE = {"judge-small": "bert-2-kd/fp32/cpu", "judge-large": "bert-6/int8/cpu"}


def pipeline(tmp_path: Path, policy: dict, *, arrivals: dict, deadline_ms: float = 50.0, duration_s: float = 40.0,
             started: tuple[str, ...] = ("read-small", "judge-small")) -> Path:
    """A two-stage pipeline of measured variants (two per stage), the small ones started."""
    lines = [f"seed = 1\nduration_s = {duration_s}\nwarmup_s = 2.0\n",
             "[arrivals]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in arrivals.items()),
             f"[requests]\ndeadline_ms = {deadline_ms}\n"]
    for bundle, variants in ((DIGITS, READ), (SST2, JUDGE)):
        for name, variant in variants.items():
            lines.append(f'[[deployments]]\nname = "{name}"\nvariant = "{variant}"\nbundle = "{bundle}"\n'
                         f"replicas = {1 if name in started else 0}\nmax_batch_size = 8\n")
    lines.append('[[stages]]\nname = "read"\ndeployments = ["read-small", "read-large"]\n')
    lines.append('[[stages]]\nname = "judge"\ndeployments = ["judge-small", "judge-large"]\n')
    lines.append("[policy]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in policy.items()))
    path = tmp_path / "pipeline.toml"
    path.write_text("\n".join(lines))
    return path


def simulate(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *argv], capture_output=True, text=True, cwd=ROOT)


def run(tmp_path: Path, scenario: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    out = tmp_path / "out"
    done = simulate("run", str(scenario), "--out", str(out), "--force")
    assert done.returncode == 0, done.stderr
    seed = out / "seed-1"
    return (json.loads((seed / "summary.json").read_text()), pd.read_parquet(seed / "requests.parquet"),
            pd.read_parquet(seed / "timeline.parquet"))


# The step's high rate is 5.7x BERT-6 INT8's capacity at batches of 8 (439/s on the bundle measured
# on 2026-12-05): IPA's replica cost there outweighs BERT-6's accuracy (it keeps BERT-6 up to about
# 1,500/s and gives it up from 2,000/s).
STEP = {"kind": "piecewise", "rates_rps": [60.0, 2500.0], "interval_s": 20.0}


def test_ipa_sizes_a_load_step_and_switches_variants_before_breaking(tmp_path):
    summary, requests, timeline = run(tmp_path, pipeline(tmp_path, {"name": "ipa", "plan_interval_s": 1.0},
                                                          arrivals=STEP))
    report = summary["policy"]
    assert report["plans"] == 4 and report["infeasible_plans"] == 0  # at 1, 11, 21 and 31 s
    # at 60/s IPA prefers the accurate pair (its accuracy is worth more than its replicas) ...
    early = requests[(requests["arrival_s"] > 10) & (requests["arrival_s"] < 20)]
    assert set(early["stage0_deployment"].dropna()) == {"read-large"} and set(early["stage1_deployment"].dropna()) == {"judge-large"}
    # ... and at the high rate it adds replicas to the first stage and gives up BERT-6, whose replicas cost more
    late = requests[requests["arrival_s"] > 32]
    assert set(late["stage1_deployment"].dropna()) == {"judge-small"}
    replicas = timeline.pivot(index="time_s", columns="deployment", values="replicas")
    assert replicas.loc[30:, "read-large"].min() > replicas.loc[10:20, "read-large"].max()
    assert (replicas.loc[35:, "judge-large"] == 0).all() and report["switches"] >= 3
    # a replica it adds is not ready at once: the bundles' start-up tables are paid
    assert (timeline["ready_replicas"] < timeline["replicas"]).any()
    # make before break: nothing is ever routed to a deployment without a replica, so every request
    # that arrived in time to be served was served or expired, none left waiting in a dead queue
    settled = requests["arrival_s"] < 39.0
    unfinished = requests[settled & ~requests["dropped"] & requests["finish_s"].isna()]
    assert unfinished.empty
    assert set(requests.loc[requests["dropped"], "drop_reason"]) <= {"expired"}


def test_fa2_pins_its_variants_and_rim_its_replicas(tmp_path):
    strongest = pipeline(tmp_path, {"name": "fa2", "variants": "strongest", "plan_interval_s": 1.0}, arrivals=STEP)
    summary, requests, timeline = run(tmp_path, strongest)
    served = requests[requests["arrival_s"] > 12]  # after the cold starts of the switch
    assert set(served["stage0_deployment"].dropna()) == {"read-large"} and set(served["stage1_deployment"].dropna()) == {"judge-large"}
    late = timeline[(timeline["time_s"] > 30) & (timeline["deployment"] == "judge-large")]["replicas"]
    assert late.min() > 1 and summary["policy"]["switches"] == 2  # one per stage, off the started small ones

    rim = pipeline(tmp_path, {"name": "rim", "replicas": 3, "plan_interval_s": 1.0}, arrivals=STEP)
    summary, requests, timeline = run(tmp_path, rim)
    chosen = timeline[timeline["time_s"] >= 5].groupby("time_s")["replicas"].sum()
    assert (chosen >= 6).all()                       # three per stage, more only while a switch drains
    assert (chosen.value_counts().idxmax()) == 6


def test_fa2_takes_ipa_parameters_and_refuses_unknown_ones():
    params = policies.registry.parameters("fa2")
    assert {"variants", "alpha", "sla_ms", "forecaster", "max_replicas"} <= set(params)
    assert "replicas" in policies.registry.parameters("rim") and "variants" not in policies.registry.parameters("rim")
    with pytest.raises(InputError) as info:
        policies.create("fa2", {"replica": 3})
    assert info.value.where == "policy.replica" and "variants" in info.value.problem and "alpha" in info.value.problem
    with pytest.raises(InputError) as info:
        policies.create("rim", {"alpha": "high"})
    assert info.value.where == "policy.alpha"
    with pytest.raises(InputError) as info:
        policies.create("ipa", {"forecaster": "lstm"})
    assert info.value.where == "policy.forecaster"


def test_ipa_needs_a_plan_interval(tmp_path):
    done = simulate("validate", str(pipeline(tmp_path, {"name": "ipa"}, arrivals=STEP)))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "policy.plan_interval_s" in done.stderr and "ipa" in done.stderr


def test_a_static_route_to_a_deployment_without_replicas_is_refused(tmp_path):
    scenario = pipeline(tmp_path, {"name": "static", "pipeline": ["read-large", "judge-small"]}, arrivals=STEP)
    done = simulate("validate", str(scenario))
    assert done.returncode == 2 and "deployments.read-large.replicas" in done.stderr


# --- simulate recommend ----------------------------------------------------------------------------

def test_recommend_plans_and_its_simulated_check_agrees(tmp_path):
    scenario = pipeline(tmp_path, {"name": "ipa", "plan_interval_s": 1.0},
                        arrivals={"kind": "poisson", "rate_rps": 300.0}, duration_s=30.0)
    done = simulate("recommend", str(scenario), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [s["name"] for s in answer["stages"]] == ["read", "judge"]
    for stage in answer["stages"]:
        assert {"name", "deployment", "variant", "max_batch_size", "replicas"} <= set(stage)
    assert {"accuracy", "latency_ms", "cost_per_hour"} <= set(answer["predicted"])
    assert {"hit_rate", "p99_ms", "cost_per_hour"} <= set(answer["simulated"])
    assert answer["rate_rps"] == 300.0 and answer["sla_ms"] == 50.0
    assert answer["predicted"]["latency_ms"] <= 50.0
    # a static configuration holds its replicas: the simulated cost is the predicted one exactly
    replicas = sum(s["replicas"] for s in answer["stages"])
    assert answer["predicted"]["cost_per_hour"] == pytest.approx(replicas)
    assert answer["simulated"]["cost_per_hour"] == pytest.approx(replicas, rel=1e-9)
    # the latency model is a conservative p99 per stage: the simulation keeps the SLA
    assert answer["simulated"]["hit_rate"] >= 0.97
    assert answer["simulated"]["p99_ms"] <= 50.0
    accuracies = [s["accuracy"] for s in answer["stages"]]
    assert answer["predicted"]["accuracy"] == pytest.approx(math.prod(accuracies))


def test_recommend_names_the_stage_an_sla_cannot_hold(tmp_path):
    scenario = pipeline(tmp_path, {"name": "ipa", "plan_interval_s": 1.0}, arrivals=STEP, deadline_ms=2.0)
    done = simulate("recommend", str(scenario))
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert "SLA 2 ms" in done.stderr and "judge" in done.stderr and "over" in done.stderr


@pytest.mark.parametrize("argv, where", [(["--window", "5"], "--window"), (["--window", "30:20"], "--window"),
                                         (["--rate", "-3"], "--rate")])
def test_recommend_refuses_a_bad_load(tmp_path, argv, where):
    scenario = pipeline(tmp_path, {"name": "ipa", "plan_interval_s": 1.0}, arrivals=STEP)
    done = simulate("recommend", str(scenario), *argv)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {where}") and done.stderr.count("\n") == 1


def test_recommend_sizes_a_window_for_its_peak(tmp_path):
    scenario = pipeline(tmp_path, {"name": "ipa", "plan_interval_s": 1.0}, arrivals=STEP)
    done = simulate("recommend", str(scenario), "--window", "20:20", "--json")
    answer = json.loads(done.stdout)
    high = STEP["rates_rps"][1]
    assert high < answer["rate_rps"] < 1.1 * high  # the peak second of Poisson at the high rate over 20 s
    assert answer["simulated"]["hit_rate"] >= 0.97


# --- the model underneath ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert6() -> LatencyProfile:
    return LatencyProfile.from_bundle(TraceBundle.load(SST2), JUDGE["judge-large"])


def test_stage_latency_is_fill_plus_p99_plus_wait_and_falls_with_replicas(bert6):
    assert stage_latency_ms(bert6, 1e-9, 4, 1) == pytest.approx(bert6.percentile_ms(4, 99) + fill_timeout_ms(4, 1e-9))
    assert fill_timeout_ms(4, 100.0) == pytest.approx(30.0) and fill_timeout_ms(1, 100.0) == 0.0
    capacity = bert6.throughput_rps(4)
    assert stage_latency_ms(bert6, 1.01 * capacity, 4, 1) == math.inf
    latencies = [stage_latency_ms(bert6, 0.9 * capacity, 4, n) for n in range(1, 8)]
    assert all(a >= b for a, b in zip(latencies, latencies[1:])) and latencies[0] > latencies[-1]
    floor = fill_timeout_ms(4, 0.9 * capacity) + bert6.percentile_ms(4, 99)
    assert latencies[-1] == pytest.approx(floor, rel=0.05) and latencies[-1] >= floor


def test_stage_options_start_at_the_fewest_replicas_that_keep_up(bert6):
    cand = Candidate("judge-large", JUDGE["judge-large"], bert6, 0.79)
    options = stage_options([cand], 400.0, max_batch_size=8, max_replicas=16, price_per_replica_hour=2.0)
    for b in {o.batch for o in options}:
        counts = sorted(o.replicas for o in options if o.batch == b)
        assert counts[0] >= math.ceil(400.0 / bert6.throughput_rps(b))
        assert counts == list(range(counts[0], counts[0] + len(counts)))
    assert all(o.cost_per_hour == 2.0 * o.replicas for o in options)
    pinned = stage_options([cand], 400.0, max_batch_size=8, max_replicas=16, price_per_replica_hour=1.0, replicas=6)
    assert {o.replicas for o in pinned} == {6}


def test_wait_quantile_matches_an_mm1_queue():
    """Lindley's recursion for M/M/1 at rho = 0.8: the simulated p99 wait against the formula."""
    rng = np.random.default_rng(3)
    lam, mu, n = 0.8, 1.0, 400_000
    gaps, services = rng.exponential(1 / lam, n), rng.exponential(1 / mu, n)
    waits = np.empty(n)
    waits[0] = 0.0
    for i in range(1, n):
        waits[i] = max(0.0, waits[i - 1] + services[i - 1] - gaps[i])
    mean_ms = 1000.0 * queueing.mmc_wait_ms(lam * 1000.0, 1.0, 1) / 1000.0
    for q in (0.9, 0.99):
        predicted = queueing.wait_quantile_ms(mean_ms, queueing.erlang_c(1, lam / mu), q)
        assert predicted == pytest.approx(np.quantile(waits, q), rel=0.05)
    assert queueing.wait_quantile_ms(5.0, 0.005, 0.99) == 0.0  # most do not wait: the p99 is 0


# --- a replay of joined windows -------------------------------------------------------------------

def test_a_replay_joins_windows_in_order(tmp_path):
    from traces.arrivals import from_config

    counts = np.arange(1, 101)
    trace = tmp_path / "counts.txt"
    trace.write_text(" ".join(map(str, counts)))
    joined = from_config({"kind": "replay", "path": str(trace), "start_s": [50, 10, 50], "length_s": 5}, tmp_path)
    times = joined.times_s(15.0, np.random.default_rng(0))
    per_second = np.bincount(times.astype(int), minlength=15)
    assert per_second.tolist() == [51, 52, 53, 54, 55, 11, 12, 13, 14, 15, 51, 52, 53, 54, 55]
    assert joined.mean_rate_rps(15.0) == pytest.approx(per_second.sum() / 15.0)
    for cfg, where in (({"start_s": [1, 2]}, "arrivals.length_s"), ({"start_s": [1, 98], "length_s": 5}, "arrivals.start_s[1]"),
                       ({"start_s": [1.5], "length_s": 5}, "arrivals.start_s[0]")):
        with pytest.raises(InputError) as info:
            from_config({"kind": "replay", "path": str(trace), **cfg}, tmp_path)
        assert info.value.where == where
