"""The real executor (`measure.server`) on sleep-based and fake replicas: same workload as the
simulator, the simulator's batching, queueing, drop and cascade rules, and latencies near its own."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

if importlib.util.find_spec("measure") is None:  # measure/ is not an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
from measure.server import parametric_runners, serve, sleep_runner_factory  # noqa: E402
from policies.base import PlanAction, Policy, Reject, Route  # noqa: E402
from sim.runner import prepare, run_once  # noqa: E402
from traces.distributions import Deterministic  # noqa: E402
from sim.core.prepare import check_against_bundle  # noqa: E402
from traces.profiles import PredictionTable  # noqa: E402
from traces.scenario import scenario_from_dict  # noqa: E402
from traces.served import served_batches  # noqa: E402
from traces.summary import summarize  # noqa: E402

DET1 = {"kind": "deterministic", "mean_ms": 1.0}


def raw_scenario(rate_rps, service, *, duration_s=2.0, deadline_ms=1e9, warmup_s=0.0, arrivals=None,
                 policy=None, **deployment):
    dep = {"name": "d", "service": service, "drop_expired": False}
    dep.update(deployment)
    return {"duration_s": duration_s, "warmup_s": warmup_s,
            "arrivals": arrivals or {"kind": "poisson", "rate_rps": rate_rps},
            "requests": {"deadline_ms": deadline_ms}, "policy": policy or {"name": "static"}, "deployments": [dep]}


def real(raw, seed=1, policy=None, runners=None, labels=None, predictions=None, base_dir=Path(".")):
    scenario = scenario_from_dict(raw, base_dir=base_dir)
    # the bundle checks alone: these tests' fake runners give confidences that no simulator could
    prepared = check_against_bundle(scenario)
    policy = policy or policies.create(scenario.policy.name, scenario.policy.params)
    return serve(scenario, policy, runners or parametric_runners(scenario, seed), seed=seed, labels=labels,
                 profiles=prepared.profiles, predictions=predictions)


def simulated(raw, seed=1, base_dir=Path(".")):
    scenario = scenario_from_dict(raw, base_dir=base_dir)
    _, requests, summary = run_once(prepare(scenario), seed)
    return requests.to_pandas(), summary


def accounted(requests: pd.DataFrame) -> None:
    """Every arrival ends completed or dropped with a reason, never lost or 'unfinished'."""
    dropped = requests["dropped"].to_numpy(dtype=bool)
    assert (requests["finish_s"].notna().to_numpy() == ~dropped).all()
    assert (requests.loc[dropped, "drop_reason"] != "").all()
    assert "unfinished" not in set(requests["drop_reason"])


def batches(requests: pd.DataFrame):
    served = requests[requests["hop0_start_s"].notna()]
    return served.groupby(["hop0_replica", "hop0_start_s"])


def test_same_workload_and_columns_as_the_simulator():
    raw = raw_scenario(200.0, DET1, deadline_ms=[50.0, 200.0])
    raw["requests"]["weights"] = [0.5, 0.5]
    ours, stats = real(raw, seed=3)
    sim, summary = simulated(raw, seed=3)
    assert len(ours) == len(sim) > 300
    assert list(ours.columns) == list(sim.columns) + ["dispatch_lag_s"]
    assert list(ours.dtypes[:-1]) == list(sim.dtypes)
    for column in ("id", "arrival_s", "deadline_ms", "route", "hops", "hop0_deployment", "measured"):
        assert ours[column].equals(sim[column]), column
    lag = ours["dispatch_lag_s"]
    assert (lag >= -1e-9).all() and lag.median() < 1e-3
    assert np.allclose(ours["hop0_enqueue_s"], ours["arrival_s"] + lag)
    assert (ours["hop0_start_s"] >= ours["hop0_enqueue_s"]).all()
    assert (ours["hop0_finish_s"] - ours["hop0_start_s"] >= 0.001).all()  # a sleep never ends early
    accounted(ours)
    assert set(stats) == set(summary["deployments"]) and set(stats["d"]) == set(summary["deployments"]["d"])
    assert stats["d"]["replica_seconds"] == pytest.approx(2.0)
    # the same service draws, slept: never shorter than the simulator's, longer when the machine is
    # busy; the busy time is the served batches' own (first to last request of each, in the window)
    assert stats["d"]["utilization"] >= summary["deployments"]["d"]["utilization"] - 0.01
    served = ours[ours["hop0_start_s"].notna()].groupby(["hop0_replica", "hop0_start_s"])["hop0_finish_s"].first()
    starts = served.index.get_level_values("hop0_start_s").to_numpy()
    busy_s = np.clip(np.minimum(served.to_numpy(), 2.0) - np.maximum(starts, 0.0), 0, None).sum()
    assert stats["d"]["busy_seconds"] == pytest.approx(busy_s, rel=1e-6)


def test_batches_never_exceed_their_maximum():
    service = {"kind": "exponential", "mean_ms": 2.0, "per_item_ms": 0.5}
    ours, stats = real(raw_scenario(1500.0, service, max_batch_size=4, replicas=2))
    sizes = [len(group) for _, group in batches(ours)]
    assert max(sizes) == 4 and stats["d"]["mean_batch_size"] > 1.5
    for _, group in batches(ours):
        assert (group["hop0_batch_size"] == len(group)).all()
    assert set(ours["hop0_replica"]) == {0, 1}
    accounted(ours)


def test_sparse_batches_start_at_the_wait_timeout():
    ours, _ = real(raw_scenario(20.0, {"kind": "deterministic", "mean_ms": 0.01}, duration_s=3.0,
                                max_batch_size=8, batch_wait_timeout_ms=5.0))
    late = []
    for _, group in batches(ours):
        assert group["hop0_start_s"].iloc[0] >= group["hop0_enqueue_s"].min() + 0.005  # never before it
        late.append(group["hop0_start_s"].iloc[0] - group["arrival_s"].min() - 0.005)
    late = np.array(late)
    assert len(late) > 30
    # how late the batcher wakes is the host's business (1-2 ms on a loaded 2-core VM); only a wake-up
    # that waits for the next arrival (50 ms apart) instead of the timer would be the batcher's fault
    assert np.median(late) < 0.025, np.percentile(late, [50, 90, 100])


@pytest.mark.parametrize("max_batch", [1, 3])
def test_fifo_on_one_replica_serves_in_arrival_order(max_batch):
    ours, _ = real(raw_scenario(400.0, {"kind": "exponential", "mean_ms": 1.5}, max_batch_size=max_batch,
                                batch_wait_timeout_ms=1.0))
    starts = ours.sort_values("arrival_s")["hop0_start_s"].to_numpy()
    assert (np.diff(starts) >= 0).all()
    accounted(ours)


def test_edf_serves_waiting_requests_by_absolute_deadline(tmp_path):
    """One request holds the replica for 40 ms while ten arrive with mixed deadlines."""
    path = tmp_path / "t.csv"
    pd.DataFrame({"t": [0.0] + [0.005 + 0.001 * k for k in range(10)] + [1.9]}).to_csv(path, index=False)
    raw = raw_scenario(0, {"kind": "deterministic", "mean_ms": 40.0}, queue="edf", deadline_ms=[500.0, 900.0],
                       arrivals={"kind": "replay", "path": str(path), "length_s": 1.5})
    raw["requests"]["weights"] = [0.5, 0.5]
    ours, _ = real(raw, seed=5)
    waiting = ours.iloc[1:].assign(due=lambda f: f["arrival_s"] + f["deadline_ms"] / 1000.0)
    assert waiting["deadline_ms"].nunique() == 2
    assert waiting.sort_values("hop0_start_s")["id"].tolist() == waiting.sort_values(["due", "id"])["id"].tolist()


def test_expired_requests_are_dropped_when_their_batch_forms():
    ours, _ = real(raw_scenario(300.0, {"kind": "deterministic", "mean_ms": 5.0}, deadline_ms=4.0,
                                drop_expired=True, max_batch_size=2))
    dropped = ours["dropped"].to_numpy(dtype=bool)
    assert set(ours.loc[dropped, "drop_reason"]) == {"expired"} and dropped.mean() > 0.2
    assert ours.loc[dropped, "hop0_start_s"].isna().all()
    served = ours[~dropped]
    assert (served["hop0_start_s"] < served["arrival_s"] + served["deadline_ms"] / 1000.0).all()
    accounted(ours)


def test_a_full_queue_rejects():
    ours, _ = real(raw_scenario(300.0, {"kind": "deterministic", "mean_ms": 10.0}, max_queue_size=2))
    sim, _ = simulated(raw_scenario(300.0, {"kind": "deterministic", "mean_ms": 10.0}, max_queue_size=2))
    full = ours["drop_reason"] == "queue_full"
    assert set(ours["drop_reason"]) == {"", "queue_full"}
    assert ours.loc[full, "hop0_start_s"].isna().all()
    assert full.sum() == pytest.approx((sim["drop_reason"] == "queue_full").sum(), rel=0.15)
    accounted(ours)


class RejectOdd(Policy):
    name = "reject-odd"

    def setup(self, view):
        self.serve_it, self.refuse = Route.single(view.deployments[0]), Reject("odd")

    def route(self, request, view):
        return self.refuse if request.id % 2 else self.serve_it


def test_a_policy_reject_is_a_drop_with_its_reason():
    ours, _ = real(raw_scenario(100.0, DET1, duration_s=1.0), policy=RejectOdd())
    odd = ours["id"] % 2 == 1
    assert (ours.loc[odd, "drop_reason"] == "odd").all() and (ours.loc[odd, "hops"] == 0).all()
    assert not ours.loc[~odd, "dropped"].any() and (ours.loc[~odd, "route"] == "d").all()


CONF = [0.95, 0.90, 0.60, 0.55]   # "fast"'s confidence on samples 0..3
LABELS = [0, 1, 0, 1]


class FakeRunner:
    """A model with fixed per-sample outputs; "fast" is wrong on sample 3, "slow" always right."""

    def __init__(self, fast: bool):
        self.fast = fast

    def run(self, sample_indices):
        time.sleep(0.002 if self.fast else 0.005)
        if not self.fast:
            return [LABELS[s] for s in sample_indices], [0.99] * len(sample_indices)
        return [LABELS[s] ^ (s == 3) for s in sample_indices], [CONF[s] for s in sample_indices]


def test_cascade_follows_the_runners_real_confidence(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"t": [*np.arange(0.0, 1.5, 0.02), 1.6]}).to_csv(path, index=False)  # 1.6 ends the window
    raw = {"duration_s": 1.5, "arrivals": {"kind": "replay", "path": str(path), "length_s": 1.5}, "requests": {"deadline_ms": 1e4},
           "deployments": [{"name": "fast", "service": DET1, "max_batch_size": 4},
                           {"name": "slow", "service": DET1, "max_batch_size": 4}],
           "policy": {"name": "static", "cascade": ["fast", "slow"], "threshold": 0.8}}
    table = PredictionTable(np.arange(4), {}, {}, {})
    ours, stats = real(raw, runners={"fast": lambda: FakeRunner(True), "slow": lambda: FakeRunner(False)},
                       labels=LABELS, predictions=table)
    sample = ours["sample_id"].astype(int).to_numpy()
    confident = np.array(CONF)[sample] >= 0.8
    assert len(ours) == 75 and set(sample) == {0, 1, 2, 3}
    assert (ours["hops"].to_numpy() == np.where(confident, 1, 2)).all()
    assert ours["route"].eq("fast@0.8>slow").all()
    assert (ours.loc[~confident, "hop1_deployment"] == "slow").all()
    assert ours.loc[confident, "hop1_deployment"].isna().all()  # a hop never reached is null
    forwarded = ours[~confident]
    assert (forwarded["hop1_enqueue_s"] == forwarded["hop0_finish_s"]).all()
    assert (ours["finish_s"] == np.where(confident, ours["hop0_finish_s"], ours["hop1_finish_s"])).all()
    expected_pred = np.where(confident, np.array(LABELS)[sample] ^ (sample == 3), np.array(LABELS)[sample])
    assert (ours["pred"].to_numpy(dtype=int) == expected_pred).all()
    assert (ours["correct"].to_numpy(dtype=bool) == (expected_pred == np.array(LABELS)[sample])).all()
    assert stats["slow"]["batches"] == (~confident).sum()  # sparse arrivals: one request per batch


def test_round_robin_assigns_replicas_as_the_simulator():
    raw = raw_scenario(300.0, {"kind": "exponential", "mean_ms": 3.0}, replicas=3, balancer="round_robin")
    ours, _ = real(raw)
    sim, _ = simulated(raw)
    assert ours["hop0_replica"].equals(sim["hop0_replica"])


class Grow(Policy):
    """Two replicas and batches of four from the first plan on."""

    name = "grow"

    def setup(self, view):
        self.only = Route.single("d")

    def route(self, request, view):
        return self.only

    def plan(self, view):
        return [PlanAction("d", replicas=2, max_batch_size=4)] if view.replicas("d") == 1 else []


def test_plans_resize_and_retune_like_the_simulator(monkeypatch):
    monkeypatch.setitem(policies.registry._REGISTRY, "grow", Grow)
    raw = raw_scenario(600.0, {"kind": "deterministic", "mean_ms": 2.0, "per_item_ms": 1.0},
                       policy={"name": "grow", "plan_interval_s": 0.5})
    ours, stats = real(raw, policy=Grow())
    _, summary = simulated(raw)
    assert stats["d"]["replica_seconds"] == pytest.approx(summary["deployments"]["d"]["replica_seconds"], abs=0.01)
    late = ours[ours["hop0_start_s"] > 0.6]
    assert set(late["hop0_replica"]) == {0, 1} and late["hop0_batch_size"].max() <= 4
    assert ours.loc[ours["hop0_start_s"] < 0.5, "hop0_batch_size"].max() == 1
    accounted(ours)


class Broken:
    def warmup(self):
        pass

    def run(self, sample_indices):
        raise RuntimeError("model fell over")


def test_a_failing_replica_stops_the_run_with_its_error():
    """Stopped at once, not after the run's 60 s: the bound leaves a busy machine 50 s of margin."""
    scenario = scenario_from_dict(raw_scenario(100.0, DET1, duration_s=60.0, replicas=2))
    made = iter([sleep_runner_factory(Deterministic(1.0), np.random.default_rng(0))(), Broken()])
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="fell over"):
        serve(scenario, policies.create("static", {}), {"d": lambda: next(made)}, seed=1, labels=None,
              profiles=prepare(scenario).profiles, predictions=None)
    assert time.perf_counter() - start < 10.0


def test_served_latencies_are_bounded_below_by_the_simulators_on_the_same_workload():
    """M/D/1 at rho 0.6 (10 ms service, 60 rps), one replica, FIFO, batches of one, on the workload
    the simulator draws for the same seed. Timing noise only ever delays the real server: a sleep
    never ends early and a batch never starts before its request is enqueued or its replica is
    free. So each served time is at least 10 ms, each start at least the later of the request's
    enqueue and the previous finish (what the simulator's rule gives on the served times), and by
    induction over the queue each request's latency at least the simulator's. How close above it
    the server stays depends on the host's load: bench/fidelity.py measures that, no test does."""
    raw = raw_scenario(60.0, {"kind": "deterministic", "mean_ms": 10.0}, duration_s=10.0, warmup_s=1.0)
    ours, stats = real(raw, seed=7)
    sim, sim_summary = simulated(raw, seed=7)
    summary = summarize(ours, warmup_s=1.0, duration_s=10.0, deployments=stats, price_per_replica_hour=1.0)
    assert summary["completed"] + summary["dropped"] == summary["requests"] == sim_summary["requests"]
    assert summary["dropped"] == 0 and len(ours) == len(sim) > 400
    accounted(ours)
    assert ours["arrival_s"].equals(sim["arrival_s"])
    served = served_batches(ours).sort_values("start_s", kind="stable")
    assert (served["batch_size"] == 1).all() and len(served) == len(ours)
    assert (served["service_ms"] >= 10.0 - 1e-6).all()
    ours = ours.sort_values("hop0_start_s", kind="stable")
    assert ours["id"].is_monotonic_increasing  # FIFO
    start, enqueue = ours["hop0_start_s"].to_numpy(), ours["hop0_enqueue_s"].to_numpy()
    previous_finish = np.concatenate([[0.0], ours["hop0_finish_s"].to_numpy()[:-1]])
    assert (start >= np.maximum(enqueue, previous_finish) - 1e-9).all()
    ours = ours.sort_values("id")
    assert (ours["latency_ms"].to_numpy() >= sim["latency_ms"].to_numpy() - 1e-6).all()
    for q in ("mean", "p50", "p95", "p99"):
        print(f"{q}: sim {sim_summary['latency_ms'][q]:.3f} ms, real {summary['latency_ms'][q]:.3f} ms")
        assert summary["latency_ms"][q] >= sim_summary["latency_ms"][q] - 1e-6, q
    # utilisation is the served batches' busy time inside the window, whatever the host's speed
    busy_s = (np.minimum(served["finish_s"], 10.0) - np.maximum(served["start_s"], 1.0)).clip(lower=0).sum()
    assert 0.0 < summary["utilization"]["d"] <= 1.0
    assert summary["utilization"]["d"] == pytest.approx(busy_s / 9.0, abs=1e-9)
