"""bench/widened_study.py: its grid, its verdicts, its cache and its refusals (tiny grids, 2 s runs)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED, load_bench
from sim.core.workload import make_workload
from traces.bundle import TraceBundle
from traces.scenario import scenario_from_dict

REPO = Path(__file__).resolve().parents[1]
TWITTER = SHARED / "data" / "twitter_trace_ipa" / "workload.txt"
T_975_4 = 2.7764451051977987   # t(0.975, 4 degrees of freedom), from tables


@pytest.fixture(scope="module")
def widened():
    return load_bench("widened_study")


def full_batch_capacity(bundle_dir: Path, variant: str, replicas: int, batch: int = 16) -> float:
    """Independently of the script: requests/s of back-to-back full batches, from the raw samples."""
    samples = TraceBundle.load(bundle_dir).latency_samples(variant)[batch]
    return replicas * batch * 1000.0 / float(np.mean(samples))


# --- the grid ------------------------------------------------------------------------------------

@pytest.mark.skipif(not TWITTER.is_file(), reason=f"the Twitter trace is not at {TWITTER}")
def test_the_full_grid_has_every_combination_once(widened):
    cells = widened.grid(widened.Settings())
    assert len(cells) == 2 * 2 * 2 * 2 * 3 * 3 == 144
    labels = {c.label for c, _ in cells}
    assert len(labels) == 144
    twitter = [(c, s) for c, s in cells if c.workload == "twitter"]
    counts = np.array(TWITTER.read_text().split(), dtype=float)
    start = int(twitter[0][1]["arrivals"]["start_s"])
    window_mean = counts[start:start + int(widened.Settings().duration_s)].mean()
    for cell, scenario in twitter:   # the window's mean rate, scaled, is the cell's rate
        assert scenario["arrivals"]["rate_scale"] * window_mean == pytest.approx(cell.rate_rps, rel=1e-5)


def test_replicas_and_deployments_shape_the_scenario(widened):
    cells = widened.grid(widened.Settings(), bundles=("sst2",), replicas=(2,), deployments=(4,),
                         deadlines=("single",), workloads=("poisson",), loads=(1.0,))
    (cell, scenario), = cells
    replicas = {d["name"]: d["replicas"] for d in scenario["deployments"]}
    assert replicas == {"small": 1, "medium": 2, "large": 2, "fourth": 2}
    assert {d["variant"] for d in scenario["deployments"]} >= {"bert-6/fp32/cpu"}


def test_the_load_axis_scales_the_accurate_models_capacity(widened):
    settings = widened.Settings()
    cells = widened.grid(settings, bundles=("digits",), replicas=(2,), deployments=(3,), deadlines=("single",),
                         workloads=("poisson", "bursty"), loads=(0.5, 1.0, 1.5))
    bundle = REPO / "traces" / "data" / "digits-cpu"
    capacity = full_batch_capacity(bundle, "mobilenet_v2/int8/cpu", 2) + full_batch_capacity(bundle, "resnet18/int8/cpu", 2)
    assert len(cells) == 6
    for cell, scenario in cells:
        assert cell.capacity_rps == pytest.approx(capacity, rel=1e-4)
        assert cell.rate_rps == pytest.approx(cell.load * capacity, rel=1e-4)
        arrivals = scenario["arrivals"]
        if cell.workload == "poisson":
            assert arrivals["rate_rps"] == pytest.approx(cell.rate_rps)
        else:   # the two states' rates weighted by their mean dwell times give the cell's rate
            low, high = arrivals["rates_rps"]
            dwell = np.array(arrivals["mean_dwell_s"])
            assert high == pytest.approx(4 * low)
            assert (low * dwell[0] + high * dwell[1]) / dwell.sum() == pytest.approx(cell.rate_rps, rel=1e-6)
    assert sorted(c.load for c, _ in cells) == [0.5, 0.5, 1.0, 1.0, 1.5, 1.5]


def test_mixed_deadline_classes_parse_and_split_the_requests(widened):
    (cell, scenario), = widened.grid(widened.Settings(duration_s=5.0, warmup_s=1.0), bundles=("digits",),
                                     replicas=(1,), deployments=(3,), deadlines=("mixed",),
                                     workloads=("poisson",), loads=(1.0,))
    parsed = scenario_from_dict({**scenario, "policy": {"name": "planner"}}, base_dir=widened.STUDY)
    assert parsed.requests.deadline_ms == (10.0, 40.0) and parsed.requests.weights == (0.5, 0.5)
    deadlines = make_workload(parsed, 3, 10).deadline_ms
    assert set(np.unique(deadlines)) == {10.0, 40.0}
    share = float(np.mean(deadlines == 10.0))
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / deadlines.size)   # binomial, four standard deviations


# --- the verdicts --------------------------------------------------------------------------------

def test_verdicts_against_the_t_interval_by_hand(widened):
    win = np.array([1, 2, 3, 4, 5]) * 0.01          # mean 0.03, s = 0.0158, half-width 0.0196
    half = T_975_4 * np.std(win, ddof=1) / math.sqrt(5)
    v = widened.verdict(win)
    assert v.label == "win" and v.spread == pytest.approx(half) and (v.low, v.high) == (0.01, 0.05)
    tie = win - 0.02                                 # mean 0.01 < the same half-width
    assert widened.verdict(tie).label == "tie"
    assert widened.verdict(-win).label == "loss"
    assert widened.verdict(-tie).label == "tie"
    edge = win - 0.03 + half + 1e-6                  # just past the interval's edge, and just inside
    assert widened.verdict(edge).label == "win" and widened.verdict(edge - 2e-6).label == "tie"
    assert widened.verdict([0.0] * 5).label == "tie"          # identical runs
    assert widened.verdict([0.002] * 5).label == "win"        # the same gain on every seed: no spread
    assert widened.verdict([-0.01]).label == "loss"           # one seed: its sign


def test_compare_pairs_by_seed_not_by_row_order(widened):
    rows = [(seed, "a", 0.90 + 0.01 * seed) for seed in (1, 2, 3)] + [(seed, "b", 0.90 + 0.01 * seed - 0.002)
                                                                     for seed in (3, 1, 2)]
    frame = pd.DataFrame(rows, columns=["seed", "policy", "ontime_accuracy"])
    v = widened.compare(frame, "a", "b")
    assert v.mean == pytest.approx(0.002) and v.label == "win"


# --- the cache and the command --------------------------------------------------------------------

TINY = ["--bundles", "sst2", "--replicas", "1", "--deployments", "3", "--deadlines", "single",
        "--workloads", "poisson", "--loads", "0.5", "--seeds", "1,2", "--warmup", "0.5"]


def test_the_cache_skips_finished_runs_and_not_changed_settings(widened, tmp_path, monkeypatch):
    cache, out = tmp_path / "cache.jsonl", tmp_path / "out"
    assert widened.main(["--out", str(out), "--cache", str(cache), "--duration", "2", *TINY]) == 0
    first = pd.read_parquet(out / "results.parquet")
    assert len(first) == 2 * len(widened.POLICIES) and len(cache.read_text().splitlines()) == len(first)
    assert set(first.policy) == set(widened.POLICIES) and first.ontime_accuracy.between(0, 1).all()
    text = (out / "widened.md").read_text()
    assert "| planner − oracle-static |" in text and "sst2 r1 d3 single poisson 0.5x" in text

    calls, template = [], json.loads(cache.read_text().splitlines()[0])["result"]

    def fake(scenario, policy, seed):
        calls.append((scenario["duration_s"], policy["name"], seed))
        return template

    monkeypatch.setattr(widened, "simulate", fake)
    assert widened.main(["--out", str(out), "--force", "--cache", str(cache), "--duration", "2", *TINY]) == 0
    assert calls == []                                   # everything came from the cache
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), first)
    assert widened.main(["--out", str(out), "--force", "--cache", str(cache), "--duration", "2.5", *TINY]) == 0
    assert sorted(calls) == sorted((2.5, p, s) for p in widened.POLICIES for s in (1, 2))   # a new setting reruns
    assert len(cache.read_text().splitlines()) == 4 * len(widened.POLICIES)


def test_a_remeasured_bundle_changes_the_cache_key(widened, tmp_path):
    copy = tmp_path / "digits-cpu"
    shutil.copytree(REPO / "traces" / "data" / "digits-cpu", copy)
    raw, policy = {**widened.shape("digits", 1, 3), "bundle": str(copy)}, widened.policy_table("planner", "digits")
    before = widened.cache_key(raw, policy, 1)
    assert widened.cache_key(raw, policy, 1) == before
    meta = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps({**meta, "created_at": "rewritten"}))   # metadata only
    widened._files_digest.cache_clear()   # a new process starts with both empty
    widened._DATA_DIGESTS.clear()
    assert widened.cache_key(raw, policy, 1) == before
    service = next(copy.glob("service.*"))
    service.write_bytes(service.read_bytes() + b"\n")   # a re-measured table
    widened._files_digest.cache_clear()
    widened._DATA_DIGESTS.clear()
    assert widened.cache_key(raw, policy, 1) != before


def test_a_line_cut_short_is_skipped(widened, tmp_path):
    cache = tmp_path / "cache.jsonl"
    cache.write_text(json.dumps({"key": "k1", "result": {"hit_rate": 1.0}}) + "\n" + '{"key": "k2", "resu')
    assert widened.read_cache(cache) == {"k1": {"hit_rate": 1.0}}


def one_error_line(capsys, code: int, needle: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_refuses_an_existing_out_before_any_work(widened, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("k")
    cache = tmp_path / "cache.jsonl"
    one_error_line(capsys, widened.main(["--out", str(mine), "--cache", str(cache), *TINY]), "not an output of ours")
    assert (mine / "keep.txt").read_text() == "k" and not cache.exists()
    ours = tmp_path / "ours"
    assert widened.main(["--out", str(ours), "--cache", str(cache), "--duration", "1", *TINY]) == 0
    capsys.readouterr()
    one_error_line(capsys, widened.main(["--out", str(ours), "--cache", str(cache), "--duration", "1", *TINY]),
                   "--force")
    one_error_line(capsys, widened.main(["--out", str(tmp_path / "new"), "--loads", "0.5,heavy"]), "--loads")
    one_error_line(capsys, widened.main(["--out", str(tmp_path / "new"), "--bundles", "imagenet"]), "--bundles")
    assert not (tmp_path / "new").exists()
