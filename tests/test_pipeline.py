"""Pipelines: every request visits every stage in order, end-to-end correctness from each stage's
own predictions, a per-stage breakdown that adds up to the latency, and a tandem of exponential
servers against Jackson's product form."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import policies
from conftest import simulate
from policies.base import Hop, Policy, Route
from traces.errors import InputError

EXP = {"kind": "exponential"}
REPO = Path(__file__).resolve().parents[1]


def tandem(rate_rps, mean_ms=(2.0, 3.0), duration_s=60.0, warmup_s=5.0):
    return {"duration_s": duration_s, "warmup_s": warmup_s, "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
            "requests": {"deadline_ms": 1e9},
            "deployments": [{"name": f"s{k}", "service": {**EXP, "mean_ms": m}, "drop_expired": False}
                            for k, m in enumerate(mean_ms)],
            "stages": [{"name": f"stage{k}", "deployments": [f"s{k}"]} for k in range(len(mean_ms))],
            "policy": {"name": "static", "pipeline": [f"s{k}" for k in range(len(mean_ms))]}}


def test_a_tandem_of_exponential_servers_has_jacksons_mean_sojourn():
    """Two M/M/1 stations in series (Jackson): the mean time in the system is the sum of the two
    stations' M/M/1 sojourns 1 / (mu_k - lambda). Sojourns of successive requests are correlated,
    so the interval comes from batch means over 20 batches of the measured requests."""
    rate = 200.0
    requests, summary = simulate(tandem(rate, duration_s=300.0), seed=11)
    expected_ms = sum(1000.0 / (1000.0 / m - rate) for m in (2.0, 3.0))  # 1/(500-200) + 1/(333.3-200) s
    measured = requests[requests["measured"]]
    latency = measured["latency_ms"].to_numpy()
    batches = np.array([b.mean() for b in np.array_split(latency, 20)])
    half = 2.093 * batches.std(ddof=1) / math.sqrt(len(batches))  # t(0.975, 19)
    assert abs(latency.mean() - expected_ms) < max(half, 0.02 * expected_ms), (latency.mean(), expected_ms, half)
    # each station on its own is M/M/1 too (Burke: the first one's output is Poisson)
    for k, m in enumerate((2.0, 3.0)):
        station = measured[f"stage{k}_latency_ms"].to_numpy()
        assert station.mean() == pytest.approx(1000.0 / (1000.0 / m - rate), rel=0.1)


def test_every_request_visits_every_stage_in_order_and_the_stages_add_up():
    requests, summary = simulate(tandem(250.0, duration_s=20.0), seed=3)
    done = requests[~requests["dropped"]]
    assert len(done) > 3000
    assert (done["hop0_deployment"] == "s0").all() and (done["hop1_deployment"] == "s1").all()
    assert (done["hop0_stage"] == "stage0").all() and (done["hop1_stage"] == "stage1").all()
    assert (done["hop1_enqueue_s"] == done["hop0_finish_s"]).all()  # the next stage at the instant it left
    assert (done["hop1_start_s"] >= done["hop1_enqueue_s"]).all()
    total = done["stage0_latency_ms"] + done["stage1_latency_ms"]
    assert np.allclose(total, done["latency_ms"], rtol=0, atol=1e-9)
    stages = summary["stages"]
    assert list(stages) == ["stage0", "stage1"]
    mean = summary["latency_ms"]["mean"]
    assert stages["stage0"]["mean_ms"] + stages["stage1"]["mean_ms"] == pytest.approx(mean)
    assert stages["stage0"]["share_of_latency"] + stages["stage1"]["share_of_latency"] == pytest.approx(1.0)


def _two_task_pipeline(tmp_path):
    """Stage 0 reads a digit (digits bundle), stage 1 judges a sentence (SST-2 bundle)."""
    import traces

    from pathlib import Path

    data = Path(traces.__file__).resolve().parent / "data"
    return {"duration_s": 20.0, "warmup_s": 1.0, "arrivals": {"kind": "poisson", "rate_rps": 60.0},
            "requests": {"deadline_ms": 100.0},
            "deployments": [
                {"name": "digit", "variant": "cnn-small-kd/int8/cpu", "bundle": str(data / "digits-cpu"),
                 "max_batch_size": 4, "batch_wait_timeout_ms": 1.0},
                {"name": "digit-big", "variant": "resnet18/int8/cpu", "bundle": str(data / "digits-cpu"),
                 "max_batch_size": 4, "batch_wait_timeout_ms": 1.0},
                {"name": "sentiment", "variant": "bert-2-kd/fp32/cpu", "bundle": str(data / "sst2-cpu"),
                 "max_batch_size": 4, "batch_wait_timeout_ms": 1.0}],
            "stages": [{"name": "read", "deployments": ["digit", "digit-big"]},
                       {"name": "judge", "deployments": ["sentiment"]}],
            "policy": {"name": "static", "pipeline": ["digit", "sentiment"]}}


def test_end_to_end_correctness_is_every_stage_right_on_its_own_sample(tmp_path):
    from traces.bundle import TraceBundle

    raw = _two_task_pipeline(tmp_path)
    requests, summary = simulate(raw, seed=5)
    done = requests[~requests["dropped"]]
    digits = TraceBundle.load(raw["deployments"][0]["bundle"]).predictions
    sst2 = TraceBundle.load(raw["deployments"][2]["bundle"]).predictions
    right0 = digits[digits["variant"] == "cnn-small-kd/int8/cpu"].set_index("sample_id")["correct"]
    right1 = sst2[sst2["variant"] == "bert-2-kd/fp32/cpu"].set_index("sample_id")["correct"]
    want0 = right0.loc[done["stage0_sample_id"]].to_numpy(dtype=bool)
    want1 = right1.loc[done["stage1_sample_id"]].to_numpy(dtype=bool)
    assert (done["stage0_correct"].to_numpy(dtype=bool) == want0).all()
    assert (done["stage1_correct"].to_numpy(dtype=bool) == want1).all()
    assert (done["correct"].to_numpy(dtype=bool) == (want0 & want1)).all()
    assert 0 < (want0 & ~want1).sum()  # some requests are right at one stage and wrong at the other
    # each stage draws its own sample, from its own bundle
    assert set(done["stage1_sample_id"]) <= set(sst2["sample_id"])
    assert (done["sample_id"] == done["stage0_sample_id"]).all()
    measured = done[done["measured"]]
    assert summary["accuracy"] == pytest.approx(measured["correct"].astype(bool).mean())


def test_a_parametric_first_stage_leaves_the_later_stages_answers_known():
    """A parametric stage (no predictions) before a measured one: each completed request's
    ``pred`` and ``stage1_correct`` are the measured stage's, from its own bundle; the parametric
    stage's correctness is unknown, and so is ``correct`` (every stage right), and the accuracy."""
    from traces.bundle import TraceBundle

    bundle = REPO / "traces" / "data" / "digits-cpu"
    variant = "cnn-small-kd/int8/cpu"
    raw = {"seed": 5, "duration_s": 3.0, "warmup_s": 0.5, "arrivals": {"kind": "poisson", "rate_rps": 50.0},
           "requests": {"deadline_ms": 100.0},
           "deployments": [{"name": "pre", "service": {**EXP, "mean_ms": 1.0}},
                           {"name": "digit", "variant": variant, "bundle": str(bundle)}],
           "stages": [{"name": "pre", "deployments": ["pre"]}, {"name": "read", "deployments": ["digit"]}],
           "policy": {"name": "static", "pipeline": ["pre", "digit"]}}
    requests, summary = simulate(raw, seed=5)
    done = requests[~requests["dropped"]]
    assert len(done) > 100
    table = TraceBundle.load(bundle).predictions
    rows = table[table["variant"] == variant].set_index("sample_id").loc[done["stage1_sample_id"]]
    assert done["pred"].tolist() == rows["pred"].tolist()
    assert done["stage1_correct"].astype(bool).tolist() == rows["correct"].astype(bool).tolist()
    assert done["stage0_correct"].isna().all() and done["correct"].isna().all()
    assert summary["accuracy"] is None or math.isnan(summary["accuracy"])


def test_a_route_that_skips_a_stage_is_refused(tmp_path):
    raw = _two_task_pipeline(tmp_path)
    raw["policy"] = {"name": "static", "deployment": "digit"}
    with pytest.raises(InputError, match="pipeline"):
        simulate(raw)
    raw["policy"] = {"name": "static", "pipeline": ["sentiment", "digit"]}
    with pytest.raises(InputError, match="does not serve stage"):
        simulate(raw)


class _GivenRoute(Policy):
    """Test policy: every request takes the route through ``hops``, one deployment a stage."""

    name = "test-given-route"

    def __init__(self, hops: list, thresholds: list | None = None):
        self.hops, self.thresholds = hops, thresholds or [None] * len(hops)

    def setup(self, view):
        self._route = Route(tuple(Hop(h, t) for h, t in zip(self.hops, self.thresholds)))

    def route(self, request, view):
        return self._route


@pytest.mark.parametrize("hops, visits", [
    (["s0", "s2"], "stage0 > stage2"),          # skips the middle stage
    (["s1", "s2"], "stage1 > stage2"),          # starts past the first
    (["s0", "s2", "s1"], "stage0 > stage2 > stage1"),   # every stage, out of order
    (["s0", "s1"], "stage0 > stage1"),          # stops before the last
])
def test_a_route_given_by_a_policy_must_pass_every_stage_in_order(monkeypatch, hops, visits):
    monkeypatch.setitem(policies.registry._REGISTRY, _GivenRoute.name, _GivenRoute)
    raw = tandem(50.0, mean_ms=(1.0, 1.0, 1.0), duration_s=1.0, warmup_s=0.0)
    raw["policy"] = {"name": _GivenRoute.name, "hops": hops}
    with pytest.raises(InputError) as info:
        simulate(raw)
    assert info.value.where == "policy 'test-given-route'"
    assert info.value.problem == (f"route {'>'.join(hops)} visits stages {visits}; a route must pass through "
                                  "every stage in order: stage0 > stage1 > stage2")
    raw["policy"]["hops"] = ["s0", "s1", "nope"]
    with pytest.raises(InputError) as info:
        simulate(raw)
    assert (info.value.where, info.value.problem) == ("policy 'test-given-route'", "used unknown deployment 'nope'")


def test_a_threshold_on_a_stages_last_hop_changes_nothing(monkeypatch):
    """Every request leaves a stage at its last hop: a threshold there has nothing to cascade to,
    asks for no predictions (these stages are parametric) and gives the run it gives without."""
    monkeypatch.setitem(policies.registry._REGISTRY, _GivenRoute.name, _GivenRoute)
    raw = tandem(200.0, duration_s=2.0, warmup_s=0.0)
    raw["policy"] = {"name": _GivenRoute.name, "hops": ["s0", "s1"]}
    plain, _ = simulate(raw, seed=2)
    raw["policy"]["thresholds"] = [0.5, 0.9]
    thresholded, _ = simulate(raw, seed=2)
    assert len(plain) > 200 and (thresholded["route"] == "s0@0.5>s1@0.9").all()   # the label keeps them
    pd.testing.assert_frame_equal(thresholded.drop(columns="route"), plain.drop(columns="route"))


class _Returns(Policy):
    """Test policy: ``route()`` returns None, which is neither a Route nor a Reject."""

    name = "test-returns-none"

    def route(self, request, view):
        return None


@pytest.mark.parametrize("policy, got", [({"name": _GivenRoute.name, "hops": []}, "Route(hops=())"),
                                         ({"name": _Returns.name}, "None")])
def test_a_route_that_is_empty_or_not_a_route_is_refused(monkeypatch, policy, got):
    for cls in (_GivenRoute, _Returns):
        monkeypatch.setitem(policies.registry._REGISTRY, cls.name, cls)
    raw = tandem(50.0, duration_s=1.0, warmup_s=0.0)
    raw["policy"] = policy
    with pytest.raises(InputError) as info:
        simulate(raw)
    assert (info.value.where, info.value.problem) == (
        f"policy {policy['name']!r}", f"route() must return a non-empty Route or a Reject, got {got}")


def test_stages_are_checked_when_the_scenario_loads(tmp_path):
    from traces.scenario import scenario_from_dict

    raw = tandem(100.0)
    raw["stages"][1]["deployments"] = ["s0"]
    with pytest.raises(InputError, match="already in stage"):
        scenario_from_dict(raw)
    raw = tandem(100.0)
    raw["stages"] = raw["stages"][:1]
    with pytest.raises(InputError, match="in no stage"):
        scenario_from_dict(raw)
    raw = _two_task_pipeline(tmp_path)
    raw["stages"] = [{"name": "read", "deployments": ["digit", "sentiment"]},
                     {"name": "judge", "deployments": ["digit-big"]}]
    raw["policy"] = {"name": "static", "pipeline": ["digit", "digit-big"]}
    with pytest.raises(InputError, match="share its bundle"):
        simulate(raw)


def test_a_scenario_without_stages_shows_a_policy_one_unnamed_stage_of_every_deployment():
    """``view.stages`` of a scenario without [[stages]]: one stage, named "" (as documented; a
    policy that names stages, IPA's, falls back to the stage's index), holding every deployment in
    the scenario's order."""
    from policies.base import Policy, Route
    from sim.core.driver import dry_core
    from sim.runner import prepare
    from traces.scenario import scenario_from_dict

    seen = []

    class Looking(Policy):
        name = "looking"

        def setup(self, view):
            seen.append(view.stages)

        def route(self, request, view):
            return Route.single("b")

    service = {"kind": "deterministic", "mean_ms": 1.0}
    raw = {"duration_s": 1.0, "arrivals": {"kind": "poisson", "rate_rps": 1.0}, "requests": {"deadline_ms": 100.0},
           "deployments": [{"name": "b", "service": service}, {"name": "a", "service": service}],
           "policy": {"name": "static", "deployment": "b"}}
    dry_core(prepare(scenario_from_dict(raw)), Looking())
    assert seen == [(("", ("b", "a")),)]


def test_a_cascade_inside_a_stage_then_the_next_stage(tmp_path):
    """A confident request leaves stage 0 at its first hop, the others after the second; both go
    on to stage 1, and stage 0's answer is the one of the hop it left from."""
    from policies.base import Policy, Route
    from sim.engine import Simulation
    from sim.runner import prepare
    from traces.scenario import scenario_from_dict

    class Cascading(Policy):
        name = "cascading"

        def setup(self, view):
            assert [name for name, _ in view.stages] == ["read", "judge"]
            self.route_ = Route.pipeline([Route.cascade(["digit", "digit-big"], [0.9]), Route.single("sentiment")])

        def route(self, request, view):
            return self.route_

    prepared = prepare(scenario_from_dict(_two_task_pipeline(tmp_path)))
    sim = Simulation(prepared.scenario, Cascading(), profiles=prepared.profiles, predictions=prepared.predictions,
                     seed=4, stage_predictions=prepared.stage_predictions)
    requests = sim.run().requests.to_pandas()
    assert requests["route"].iloc[0] == "digit@0.9>digit-big>sentiment"
    done = requests[~requests["dropped"]]
    confident = done["hop0_confidence"] >= 0.9
    assert 0 < confident.sum() < len(done)
    # the confident skip hop 1 and go straight to the sentiment stage (hop 2)
    assert done.loc[confident, "hop1_deployment"].isna().all()
    assert (done.loc[confident, "hop2_enqueue_s"] == done.loc[confident, "hop0_finish_s"]).all()
    assert (done.loc[~confident, "hop2_enqueue_s"] == done.loc[~confident, "hop1_finish_s"]).all()
    assert (done["hop2_deployment"] == "sentiment").all()
    assert (done.loc[confident, "stage0_deployment"] == "digit").all()
    assert (done.loc[~confident, "stage0_deployment"] == "digit-big").all()
    total = done["stage0_latency_ms"] + done["stage1_latency_ms"]
    assert np.allclose(total, done["latency_ms"], rtol=0, atol=1e-9)


def test_config_names_every_bundle_by_an_absolute_path(tmp_path, monkeypatch):
    """config.json is the resolved scenario: a deployment's own bundle, given relative to the
    scenario file, is written as an absolute path, like the scenario's, whatever the working directory."""
    from traces.scenario import load_scenario

    monkeypatch.chdir(REPO)
    config = load_scenario("examples/pipeline.toml").resolved()
    bundles = [d["bundle"] for d in config["deployments"] if "bundle" in d]
    assert bundles and all(Path(b).is_absolute() and (Path(b) / "bundle.json").is_file() for b in bundles)
