"""The real server's cascades and pipelines on the confidences its runners report (the core's live
path, ``ServingCore._finished_live``), with and without a tenant's quota in front.

Fake runners answer instantly with fixed per-sample confidences, so each request's route is known
from its sample: a hop exits at ``confidence >= threshold`` (0.90 is one of the confidences and the
threshold), a request that leaves its stage goes on to the next stage, and every hop's queue is
joined at the instant the hop before it finished. Hop columns follow the route's positions, so a
request that exits a cascade early leaves the skipped positions empty.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import policies
from policies.base import Policy, Route
from sim.core.prepare import check_against_bundle
from traces.profiles import PredictionTable
from traces.scenario import scenario_from_dict

pytest.importorskip("measure.server")
from measure.server import Server  # noqa: E402

CONF = [0.95, 0.90, 0.60, 0.55]   # "fast"'s confidence on samples 0..3
LABELS = [0, 1, 0, 1]
THRESHOLD = 0.9
FAST = {"kind": "deterministic", "mean_ms": 1.0}


class Answers:
    """A runner with fixed outputs: ``confidences`` per sample (None: 0.99 everywhere)."""

    def __init__(self, confidences=None):
        self.confidences = confidences

    def run(self, samples):
        confidence = [0.99] * len(samples) if self.confidences is None else [self.confidences[s] for s in samples]
        return [LABELS[s] for s in samples], confidence


class CascadeThenOne(Policy):
    """Stage a: fast, then slow below the threshold; stage b: c."""

    name = "test-cascade-then-one"

    def setup(self, view):
        self._route = Route.pipeline([Route.cascade(["fast", "slow"], [THRESHOLD]), Route.single("c")])

    def route(self, request, view):
        return self._route


policies.register(CascadeThenOne)

RUNNERS = {"fast": lambda: Answers(CONF), "slow": Answers, "c": Answers}


def serve_for_real(raw: dict, policy: Policy, stages: int) -> pd.DataFrame:
    scenario = scenario_from_dict(raw)
    prepared = check_against_bundle(scenario)
    table = PredictionTable(np.arange(4), {}, {}, {})
    server = Server(dataclasses.replace(scenario, seed=5), policy, {k: v for k, v in RUNNERS.items()
                                                                    if k in {d.name for d in scenario.deployments}},
                    seed=5, labels=LABELS, profiles=prepared.profiles, predictions=table,
                    stage_predictions=(table,) * stages, stage_labels=(LABELS,) * stages)
    return server.run().to_pandas()


def deployment(name: str) -> dict:
    return {"name": name, "service": FAST, "max_batch_size": 4}


def test_a_pipeline_stage_that_cascades_on_live_confidence():
    raw = {"duration_s": 1.0, "arrivals": {"kind": "poisson", "rate_rps": 60.0}, "requests": {"deadline_ms": 1e4},
           "deployments": [deployment("fast"), deployment("slow"), deployment("c")],
           "stages": [{"name": "a", "deployments": ["fast", "slow"]}, {"name": "b", "deployments": ["c"]}],
           "policy": {"name": "test-cascade-then-one"}}
    requests = serve_for_real(raw, CascadeThenOne(), stages=2)
    done = requests[requests["finish_s"].notna()]
    assert len(done) > 30 and len(done) == len(requests)
    sample = done["sample_id"].astype(int).to_numpy()
    confident = np.array(CONF)[sample] >= THRESHOLD
    assert confident.any() and (np.array(CONF)[sample] == THRESHOLD).any() and (~confident).any()
    assert (done["hop0_deployment"] == "fast").all()
    np.testing.assert_allclose(done["hop0_confidence"], np.array(CONF)[sample])
    # hop columns follow the route's positions: fast 0, slow 1, c 2; a confident request skips 1
    assert (done["hop2_deployment"] == "c").all()
    assert done.loc[confident, "hop1_deployment"].isna().all()
    assert (done.loc[~confident, "hop1_deployment"] == "slow").all()
    left_a = np.where(confident, done["hop0_finish_s"], done["hop1_finish_s"])   # when it left stage a
    assert (done["hop2_enqueue_s"].to_numpy() == left_a).all()                   # joined c at that instant
    unsure = done[~confident]
    assert (unsure["hop1_enqueue_s"] == unsure["hop0_finish_s"]).all()
    assert (done["finish_s"] == done["hop2_finish_s"]).all()


def test_a_live_run_records_and_judges_each_stage_by_its_runners_labels():
    """The real server's log takes its true labels from its runners' data, not from the bundle's
    table (whose labels may be another split's, or none at all, as here), and judges each stage's
    answers against that stage's own labels: stage b's labels are the opposite of stage a's, so
    every answer is right at a and wrong at b, and no request is right everywhere."""
    opposite = [1 - label for label in LABELS]
    raw = {"duration_s": 1.0, "arrivals": {"kind": "poisson", "rate_rps": 40.0}, "requests": {"deadline_ms": 1e4},
           "deployments": [deployment("fast"), deployment("c")],
           "stages": [{"name": "a", "deployments": ["fast"]}, {"name": "b", "deployments": ["c"]}],
           "policy": {"name": "static", "pipeline": ["fast", "c"]}}
    scenario = scenario_from_dict(raw)
    prepared = check_against_bundle(scenario)
    table = PredictionTable(np.arange(4), {}, {}, {})
    server = Server(dataclasses.replace(scenario, seed=5), policies.create("static", {"pipeline": ["fast", "c"]}),
                    {"fast": Answers, "c": Answers}, seed=5, labels=LABELS, profiles=prepared.profiles,
                    predictions=table, stage_predictions=(table, table), stage_labels=(LABELS, opposite))
    done = server.run().to_pandas().dropna(subset=["finish_s"])
    assert len(done) > 20
    first = done["sample_id"].astype(int)
    assert done["label"].tolist() == [LABELS[s] for s in first]
    assert done[["stage0_correct", "stage1_correct", "correct"]].notna().all().all()   # known, every one
    assert done["stage0_correct"].tolist() == [True] * len(done)
    assert done["stage1_correct"].tolist() == [False] * len(done)
    assert done["correct"].tolist() == [False] * len(done)


def test_a_tenants_quota_leaves_the_cascade_on_live_confidence():
    """With a quota in front (the core's counted finish path), a cascade still reads the runners'
    confidences: unsure samples reach the second hop, sure ones end at the first."""
    raw = {"seed": 5, "duration_s": 1.0, "warmup_s": 0.0,
           "tenants": [{"name": "t", "arrivals": {"kind": "poisson", "rate_rps": 60.0}, "deadline_ms": 1e4,
                        "quota": {"max_in_flight": 100, "action": "wait"}}],
           "deployments": [deployment("fast"), deployment("slow")],
           "policy": {"name": "static", "cascade": ["fast", "slow"], "threshold": THRESHOLD}}
    policy = policies.create("static", {"cascade": ["fast", "slow"], "threshold": THRESHOLD})
    requests = serve_for_real(raw, policy, stages=1)
    done = requests[requests["finish_s"].notna()]
    assert len(done) > 30
    confident = np.array(CONF)[done["sample_id"].astype(int).to_numpy()] >= THRESHOLD
    assert confident.any() and (~confident).any()
    assert (done["hops"].to_numpy() == np.where(confident, 1, 2)).all()
    # the answers are the runners' (each sample's label here), kept with the labels' type
    assert done["pred"].tolist() == [LABELS[s] for s in done["sample_id"].astype(int)]
    assert done["correct"].all()


def test_the_real_server_waits_for_the_last_arrival_and_no_longer(tmp_path):
    """Two arrivals (0 and 0.25 s) on a 300 ms service: when the arrivals are all dispatched the
    last one is still in service, and the server waits for it (it completes, not "unfinished"),
    then stops at once rather than after its 30 s stall limit."""
    import time

    path = tmp_path / "t.csv"
    pd.DataFrame({"t": [0.0, 0.25, 0.6]}).to_csv(path, index=False)   # 0.6 only ends the window
    raw = {"duration_s": 0.5, "arrivals": {"kind": "replay", "path": str(path), "length_s": 0.5},
           "requests": {"deadline_ms": 1e4}, "policy": {"name": "static"},
           "deployments": [{"name": "slow", "service": {"kind": "deterministic", "mean_ms": 300.0}}]}
    from measure.server import parametric_runners

    scenario = scenario_from_dict(raw)
    server = Server(dataclasses.replace(scenario, seed=1), policies.create("static", {}),
                    parametric_runners(scenario, 1), seed=1, labels=None,
                    profiles=check_against_bundle(scenario).profiles, predictions=None)
    started = time.perf_counter()
    requests = server.run().to_pandas()   # sleeping runners: each batch takes its 300 ms
    elapsed_s = time.perf_counter() - started
    assert len(requests) == 2 and requests["finish_s"].notna().all()
    assert (requests["drop_reason"].fillna("") == "").all()
    assert elapsed_s < 15.0   # the run takes about 0.6 s; a phantom open request would hold it 30 s
