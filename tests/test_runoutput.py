"""The run output: provenance in config.json, the new request columns and nulls, the summary's
cost per 1k and cascade shares, and the streamed request log (ring, row groups, parts) giving
exactly the table and summary a whole in-memory log gives."""

from __future__ import annotations

import gc
import json
import re
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import policies
import sim.core.records as records
from conftest import FAST_CONF, simulate
from policies.base import Policy, Route
from sim.cli import main
from sim.engine import Simulation
from sim.runner import prepare
from traces.runoutput import RequestSpool, read_run, write_into
from traces.scenario import scenario_from_dict
from traces.summary import summarize

BURSTY = {"seed": 3, "duration_s": 4.0, "warmup_s": 0.5,
          "arrivals": {"kind": "bursty", "rates_rps": [300.0, 2500.0], "mean_dwell_s": [0.4, 0.2]},
          "requests": {"deadline_ms": [4.0, 40.0], "weights": [0.3, 0.7]},
          "deployments": [{"name": "m", "service": {"kind": "lognormal", "mean_ms": 1.0, "per_item_ms": 0.3, "cv": 0.5},
                           "replicas": 2, "max_batch_size": 4, "batch_wait_timeout_ms": 1.0, "max_queue_size": 40}],
          "policy": {"name": "static"}}


def cascade(bundle, duration_s=6.0, rate_rps=150.0, threshold=0.8):
    return {"seed": 5, "duration_s": duration_s, "warmup_s": 0.5, "bundle": str(bundle),
            "arrivals": {"kind": "poisson", "rate_rps": rate_rps}, "requests": {"deadline_ms": 30.0},
            "deployments": [{"name": "fast", "variant": "fast/int8/cpu", "max_batch_size": 4},
                            {"name": "slow", "variant": "slow/fp32/cpu", "max_batch_size": 4}],
            "policy": {"name": "static", "cascade": ["fast", "slow"], "threshold": threshold}}


def run_sim(raw, policy=None, seed=None):
    prepared = prepare(scenario_from_dict(raw))
    scenario = prepared.scenario
    policy = policy or policies.create(scenario.policy.name, scenario.policy.params)
    sim = Simulation(scenario, policy, bundle=prepared.bundle, profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=scenario.seed if seed is None else seed)
    result = sim.run()
    return result, result.summary(scenario), sim


def test_config_records_version_and_commit(tmp_path):
    assert main(["run", _write(tmp_path, BURSTY), "--out", str(tmp_path / "out")]) == 0
    config, _, _ = read_run(tmp_path / "out" / "seed-3")
    info = config["servesim"]
    assert info["version"] == metadata.version("servesim")
    root = Path(records.__file__).resolve().parents[2]  # sim/core/records.py -> the repository
    if (root / ".git").exists():
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert info["git_commit"] == head.strip() and re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
        assert isinstance(info["dirty"], bool)
    else:
        assert info["git_commit"] is None and info["dirty"] is None


def test_label_confidence_and_null_hops(tiny_bundle):
    requests, summary = simulate(cascade(tiny_bundle))
    sample = requests["sample_id"].astype(int).to_numpy()
    assert (requests["label"].astype(int).to_numpy() == sample % 2).all()  # the bundle's label column
    assert np.allclose(requests["hop0_confidence"], np.array(FAST_CONF)[sample])
    reached = requests["hops"].to_numpy() == 2
    assert 0 < reached.sum() < len(requests)
    assert (requests.loc[reached, "hop1_confidence"] == 0.99).all()
    empty = requests.loc[~reached, [c for c in requests.columns if c.startswith("hop1_")]]
    assert len(empty.columns) == 7 and empty.isna().all().all()  # every hop1 column, null
    assert (requests.loc[reached, "hop1_batch_size"] >= 1).all()
    assert requests["hop1_replica"].dtype == "Int64" and requests["hop1_batch_size"].dtype == "Int64"


def test_null_reads_as_null_in_pyarrow(tiny_bundle, tmp_path):
    assert main(["run", _write(tmp_path, cascade(tiny_bundle)), "--out", str(tmp_path / "out")]) == 0
    table = pq.read_table(tmp_path / "out" / "seed-5" / "requests.parquet")
    unreached = table.column("hops").to_numpy() < 2
    assert unreached.any() and not unreached.all()
    for name in ("deployment", "replica", "enqueue_s", "start_s", "finish_s", "batch_size", "confidence"):
        null = table.column(f"hop1_{name}").is_null().to_numpy(zero_copy_only=False)
        assert null[unreached].all(), name
        if name in ("deployment", "enqueue_s", "confidence"):  # set for every request that reached it
            assert not null[~unreached].any(), name
    assert table.column("hop0_deployment").null_count == 0


def test_a_table_has_hop_columns_for_each_hop_a_route_has_and_no_more(tiny_bundle):
    """One set of ``hop{k}_*`` columns per position on the longest route: a single deployment's
    table has hop0's only, a two-hop cascade's hop0's and hop1's."""
    single = {**BURSTY, "duration_s": 1.0}
    for raw, hops in ((single, 1), (cascade(tiny_bundle, duration_s=2.0), 2)):
        requests, _ = simulate(raw)
        found = {int(m.group(1)) for m in map(re.compile(r"hop(\d+)_").match, requests.columns) if m}
        assert found == set(range(hops))


def _two_task_pipeline(rate_rps: float) -> dict:
    """Two stages on two bundles: a digit read by the digits models, then a sentence judged by SST-2's."""
    data = Path(__file__).resolve().parents[1] / "traces" / "data"
    deployment = {"max_batch_size": 4, "batch_wait_timeout_ms": 1.0}
    return {"seed": 5, "duration_s": 3.0, "warmup_s": 0.5, "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
            "requests": {"deadline_ms": 100.0},
            "deployments": [{"name": "digit", "variant": "cnn-small-kd/int8/cpu", "bundle": str(data / "digits-cpu"),
                             **deployment},
                            {"name": "sentiment", "variant": "bert-2-kd/fp32/cpu", "bundle": str(data / "sst2-cpu"),
                             **deployment}],
            "stages": [{"name": "read", "deployments": ["digit"]}, {"name": "judge", "deployments": ["sentiment"]}],
            "policy": {"name": "static", "pipeline": ["digit", "sentiment"]}}


def _tenants(rate_rps: float) -> dict:
    raw = {k: v for k, v in BURSTY.items() if k != "arrivals" and k != "requests"}
    return {**raw, "seed": 5, "tenants": [{"name": "a", "arrivals": {"kind": "poisson", "rate_rps": rate_rps},
                                           "deadline_ms": 40.0}]}


@pytest.mark.parametrize("kind, typed", [
    ("cascade", ("sample_id", "label", "pred", "route", "drop_reason")),
    ("pipeline", ("sample_id", "label", "pred", "stage0_sample_id", "stage1_sample_id")),
    ("tenants", ("tenant", "route", "drop_reason")),
])
def test_a_run_without_requests_writes_the_same_schema_as_one_with_them(tiny_bundle, tmp_path, kind, typed):
    """A quiet run's requests.parquet has no rows, but its columns have the types a busy run's have
    (the sample ids', labels' and answers' from the bundle, each pipeline stage's sample ids from
    its own, the tenant's name), so tables of several runs concatenate."""
    scenario = {"cascade": lambda rate: cascade(tiny_bundle, rate_rps=rate), "pipeline": _two_task_pipeline,
                "tenants": _tenants}[kind]
    schemas = []
    for name, rate_rps in (("busy", 150.0), ("quiet", 1e-6)):
        out = tmp_path / name
        assert main(["run", _write(tmp_path, scenario(rate_rps)), "--out", str(out)]) == 0
        schemas.append(pq.read_schema(out / "seed-5" / "requests.parquet"))
    busy, quiet = schemas
    assert pq.read_metadata(tmp_path / "quiet" / "seed-5" / "requests.parquet").num_rows == 0
    assert set(quiet.names) <= set(busy.names)           # hop1's columns only where a request went
    for field in quiet:
        assert field.type == busy.field(field.name).type, field.name
    assert all(str(quiet.field(n).type) != "null" for n in typed)


def test_unserved_hop_has_null_replica_and_batch_size():
    raw = {**BURSTY, "deployments": [{**BURSTY["deployments"][0], "max_queue_size": 5}]}
    requests, _ = simulate(raw)
    full = requests["drop_reason"] == "queue_full"
    assert full.sum() > 10
    assert requests.loc[full, "hop0_replica"].isna().all() and requests.loc[full, "hop0_batch_size"].isna().all()
    assert requests.loc[full, "hop0_deployment"].eq("m").all()  # it reached the hop, never served there


def test_summary_cost_per_1k_and_cascade_shares(tiny_bundle):
    requests, summary = simulate(cascade(tiny_bundle))
    cost = summary["cost"]
    assert cost["per_1k_requests"] == pytest.approx(cost["total"] / summary["requests"] * 1000)
    measured = requests[requests["measured"]]
    shares = summary["cascade"]["fast@0.8>slow"]
    assert set(shares) == {"hop0"}
    assert shares["hop0"]["reached"] == len(measured)
    assert shares["hop0"]["passed_on"] == int((measured["hops"] == 2).sum())
    expected = (np.array(FAST_CONF)[measured["sample_id"].astype(int)] < 0.8).mean()
    assert shares["hop0"]["passed_on_share"] == pytest.approx(expected)


def test_single_hop_routes_have_no_cascade_and_no_requests_give_null_cost_per_1k():
    _, summary = simulate(BURSTY)
    assert summary["cascade"] == {} and summary["cost"]["per_1k_requests"] > 0
    quiet = {**BURSTY, "arrivals": {"kind": "poisson", "rate_rps": 1e-6}}
    _, summary = simulate(quiet)
    assert summary["requests"] == 0 and summary["cost"]["per_1k_requests"] != summary["cost"]["per_1k_requests"]


def test_streamed_log_matches_a_whole_one(monkeypatch):
    """A tiny ring retires and grows hundreds of times; the table and summary are the same."""
    whole, whole_summary, _ = run_sim(BURSTY)
    monkeypatch.setattr(records, "MIN_CAPACITY", 8)
    streamed, streamed_summary, sim = run_sim(BURSTY)
    assert sim.core.log.capacity > 8  # it had to grow under bursts
    assert pq.ParquetFile(streamed.requests.path).num_row_groups > 20
    pd.testing.assert_frame_equal(streamed.requests.to_pandas(), whole.requests.to_pandas())
    assert streamed_summary == whole_summary
    # and the summary of the table in memory is the streamed one
    frame = whole.requests.to_pandas()
    assert summarize(frame, warmup_s=0.5, duration_s=4.0, deployments=whole.deployments,
                     price_per_replica_hour=1.0) == whole_summary


class _LateCascade(Policy):
    """One hop for the first 300 requests, a two-hop cascade afterwards."""

    name = "late-cascade"

    def setup(self, view):
        self.single, self.cascade = Route.single("fast"), Route.cascade(["fast", "slow"], [0.8])

    def route(self, request, view):
        return self.single if request.id < 300 else self.cascade


def test_a_longer_route_first_seen_late_merges_the_parts(tiny_bundle, monkeypatch):
    raw = cascade(tiny_bundle, duration_s=8.0, rate_rps=100.0)
    monkeypatch.setattr(records, "MIN_CAPACITY", 16)
    result, summary, _ = run_sim(raw, policy=_LateCascade())
    frame = result.requests.to_pandas()
    early, late = frame[frame["id"] < 300], frame[frame["id"] >= 300]
    assert early[[c for c in frame.columns if c.startswith("hop1_")]].isna().all().all()
    assert (late["hops"] == 2).any() and late.loc[late["hops"] == 2, "hop1_deployment"].eq("slow").all()
    assert list(frame["id"]) == list(range(len(frame)))
    assert set(summary["cascade"]) == {"fast@0.8>slow"}
    monkeypatch.setattr(records, "MIN_CAPACITY", 1 << 15)
    whole, whole_summary, _ = run_sim(raw, policy=_LateCascade())
    pd.testing.assert_frame_equal(frame, whole.requests.to_pandas())
    assert summary == whole_summary


def test_spool_is_removed_once_unused_and_the_output_keeps_its_copy(tmp_path):
    result, summary, _ = run_sim(BURSTY)
    spool = result.requests.path
    write_into(tmp_path / "run", {"seed": 3}, result.requests, summary)
    written = tmp_path / "run" / "requests.parquet"
    expected = result.requests.to_pandas()
    assert spool.exists()
    del result
    gc.collect()
    assert not spool.exists()
    pd.testing.assert_frame_equal(pd.read_parquet(written), expected)


def test_requests_parquet_has_the_mode_of_the_other_output_files(tmp_path):
    """A hard link to the spool kept mkstemp's private 0600 (the output on the temporary filesystem),
    while config.json and summary.json were ordinary files."""
    result, summary, _ = run_sim(BURSTY)
    write_into(tmp_path / "run", {"seed": 3}, result.requests, summary)
    modes = {name: (tmp_path / "run" / name).stat().st_mode & 0o777 for name in ("requests.parquet", "summary.json")}
    assert modes["requests.parquet"] == modes["summary.json"], modes


def test_a_failed_run_leaves_no_spool(tmp_path):
    spool = RequestSpool(directory=tmp_path)
    spool.write(pd.DataFrame({"a": [1, 2]}))
    assert list(tmp_path.iterdir())
    del spool
    gc.collect()
    assert not list(tmp_path.iterdir())


def test_same_seed_same_bytes_through_the_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "MIN_CAPACITY", 64)
    scenario = _write(tmp_path, BURSTY)
    for out in ("a", "b"):
        assert main(["run", scenario, "--out", str(tmp_path / out)]) == 0
    for name in ("requests.parquet", "summary.json"):
        assert (tmp_path / "a" / "seed-3" / name).read_bytes() == (tmp_path / "b" / "seed-3" / name).read_bytes()


def _value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # numbers, strings, booleans and lists of them read the same in TOML


def _write(tmp_path, raw) -> str:
    """``raw`` as a scenario file (top-level tables, ``[[deployments]]``, inline tables inside)."""
    lines = [f"{k} = {_value(v)}" for k, v in raw.items() if not isinstance(v, (dict, list))]
    for key, value in raw.items():
        if isinstance(value, dict):
            lines += [f"[{key}]"] + [f"{k} = {_value(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            for item in value:
                lines += [f"[[{key}]]"] + [f"{k} = {_value(v)}" for k, v in item.items()]
    path = tmp_path / "scenario.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
