"""Cascades replay what the real models did: an exact test on the tiny hand-made bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import FAST_CONF, FAST_CORRECT, FAST_MS, SLOW_MS, simulate, tiny_bundle_frames
from traces.bundle import TraceBundle


def cascade_scenario(bundle, arrivals_csv, threshold, deadline_ms=100.0):
    return {
        "duration_s": 10.0, "bundle": str(bundle),
        "arrivals": {"kind": "replay", "path": str(arrivals_csv), "length_s": 9.9},
        "requests": {"deadline_ms": deadline_ms},
        "deployments": [{"name": "fast", "variant": "fast/int8/cpu", "max_batch_size": 4},
                        {"name": "slow", "variant": "slow/fp32/cpu", "max_batch_size": 4}],
        "policy": {"name": "static", "cascade": ["fast", "slow"], "threshold": threshold},
    }


@pytest.fixture
def spaced_arrivals(tmp_path):
    """One arrival every 100 ms: nothing ever queues, so each latency is a sum of service times."""
    path = tmp_path / "arrivals.csv"
    pd.DataFrame({"t": np.arange(0.0, 9.95, 0.1)}).to_csv(path, index=False)
    return path


def test_cascade_exits_replay_the_fast_models_confidence(tiny_bundle, spaced_arrivals):
    requests, summary = simulate(cascade_scenario(tiny_bundle, spaced_arrivals, 0.8), seed=1)
    assert len(requests) == 99 and summary["dropped"] == 0  # the window [0, 9.9) leaves the last one out
    sample = requests["sample_id"].astype(int).to_numpy()
    confident = np.array(FAST_CONF)[sample] >= 0.8
    assert set(sample) == {0, 1, 2, 3}
    assert (requests["hops"].to_numpy() == np.where(confident, 1, 2)).all()
    expected_ms = np.where(confident, FAST_MS[1], FAST_MS[1] + SLOW_MS[1])
    assert np.allclose(requests["latency_ms"].to_numpy(), expected_ms, atol=1e-9)
    # predictions come from the variant the request exited at
    expected_correct = np.where(confident, np.array(FAST_CORRECT)[sample], True)
    assert (requests["correct"].to_numpy(dtype=bool) == expected_correct).all()
    label = sample % 2                                     # the tiny bundle's labels; "slow" is always right
    assert (requests["label"].astype(int).to_numpy() == label).all()
    assert (requests["pred"].astype(int).to_numpy() == np.where(expected_correct, label, 1 - label)).all()
    assert (requests.loc[~confident, "hop1_deployment"] == "slow").all()
    assert requests.loc[confident, "hop1_deployment"].isna().all()  # a hop never reached is null
    assert summary["accuracy"] == pytest.approx(expected_correct.mean())
    assert requests["route"].eq("fast@0.8>slow").all()


@pytest.mark.parametrize("threshold, hops, accuracy", [(0.0, 1, 0.75), (1.0, 2, 1.0)])
def test_cascade_extremes(tiny_bundle, spaced_arrivals, threshold, hops, accuracy):
    requests, summary = simulate(cascade_scenario(tiny_bundle, spaced_arrivals, threshold), seed=2)
    assert (requests["hops"] == hops).all()
    # the confidence columns are floats, NaN where unknown: also a hop that no request reached
    assert requests["hop0_confidence"].dtype == requests["hop1_confidence"].dtype == np.float64
    assert requests["hop1_confidence"].isna().all() == (hops == 1)
    sample = requests["sample_id"].astype(int).to_numpy()
    expected = np.array(FAST_CORRECT)[sample].mean() if hops == 1 else 1.0
    assert summary["accuracy"] == pytest.approx(expected)
    assert abs(summary["accuracy"] - accuracy) < 0.2  # and it is near the population value


def test_deadline_counts_the_whole_cascade(tiny_bundle, spaced_arrivals):
    """A 5 ms deadline is met by a fast exit (2 ms) and missed by a second hop (12 ms)."""
    requests, summary = simulate(cascade_scenario(tiny_bundle, spaced_arrivals, 0.8, deadline_ms=5.0), seed=3)
    one_hop = requests["hops"] == 1
    assert requests.loc[one_hop, "hit"].all() and not requests.loc[~one_hop, "hit"].any()
    assert summary["hit_rate"] == pytest.approx(one_hop.mean())
    on_time_correct = (requests["hit"] & requests["correct"].astype(bool)).mean()
    assert summary["ontime_accuracy"] == pytest.approx(on_time_correct)


def test_batched_cascade_uses_interpolated_latency(tiny_bundle, tmp_path):
    """Three simultaneous arrivals form one batch of 3 on 'fast': between measured sizes 2 and 4."""
    path = tmp_path / "burst.csv"
    pd.DataFrame({"t": [0.0, 0.0, 0.0, 9.9]}).to_csv(path, index=False)  # the last one ends the window
    raw = cascade_scenario(tiny_bundle, path, 0.0)
    raw["deployments"][0]["batch_wait_timeout_ms"] = 1.0
    requests, _ = simulate(raw, seed=4)
    assert len(requests) == 3 and (requests["hop0_batch_size"] == 3).all()
    interpolated = (FAST_MS[2] + FAST_MS[4]) / 2
    assert np.allclose(requests["latency_ms"], 1.0 + interpolated, atol=1e-9)


def test_a_cascade_into_a_variant_without_predictions_keeps_the_fast_exits_outcomes(tmp_path, spaced_arrivals):
    """A bundle that predicts for "fast" only ("slow" was timed, never evaluated), with "slow" listed
    first: requests that exit at "fast" keep its recorded answers, those that exit at "slow" have
    none (null), and accuracy is over the known ones. A log that stopped at the first variant without
    predictions, or looked one up, would lose the first or fail."""
    service, predictions = tiny_bundle_frames()
    bundle = TraceBundle(meta={"name": "half", "description": "fast predicted only", "units": {"latency": "ms"}},
                         service=service, predictions=predictions[predictions["variant"] == "fast/int8/cpu"])
    path = bundle.save(tmp_path / "half", fmt="csv")
    raw = cascade_scenario(path, spaced_arrivals, 0.8)
    raw["deployments"].reverse()
    requests, summary = simulate(raw, seed=1)
    sample = requests["sample_id"].astype(int).to_numpy()
    confident = np.array(FAST_CONF)[sample] >= 0.8
    assert confident.any() and not confident.all()
    assert (requests["hops"].to_numpy() == np.where(confident, 1, 2)).all()
    correct = requests["correct"]
    assert correct[~confident].isna().all() and correct[confident].notna().all()
    assert np.allclose(requests["hop0_confidence"], np.array(FAST_CONF)[sample])   # "fast"'s, though listed second
    assert requests["hop1_confidence"].isna().all()                             # "slow" has none
    assert (correct[confident].to_numpy(dtype=bool) == np.array(FAST_CORRECT)[sample[confident]]).all()
    assert summary["accuracy"] == pytest.approx(np.array(FAST_CORRECT)[sample[confident]].mean())
