"""Every definition the README publishes under "Run output", pinned where its alternatives differ.

Each scenario is built by hand (replayed arrivals at exact binary-fraction times, deterministic or
constant service) so that the plausible misreadings of a definition -- completed instead of
arrivals in a denominator, finish instead of arrival for the window, ``<`` instead of ``<=`` --
give a different number. Expected values are computed here from the request table's raw times,
never from the summary code or the ``hit``/``correct`` columns, and the test also checks that the
alternative really differs, so a scenario that stops discriminating fails loudly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import FAST_CONF, FAST_CORRECT, FAST_MS, SLOW_MS, replay_arrivals, simulate, visited

DET = {"kind": "deterministic"}


def one_deployment(arrivals: dict, *, duration_s: float, warmup_s: float = 0.0, deadline_ms: float = 1e6,
                   service_ms: float | None = None, variant: str | None = None, bundle=None,
                   price_per_replica_hour: float = 1.0, **deployment) -> dict:
    dep = {"name": "d", "drop_expired": False, **deployment}
    if variant is not None:
        dep["variant"] = variant
    else:
        dep["service"] = {**DET, "mean_ms": service_ms}
    raw = {"duration_s": duration_s, "warmup_s": warmup_s, "arrivals": arrivals,
           "requests": {"deadline_ms": deadline_ms}, "policy": {"name": "static"}, "deployments": [dep],
           "price_per_replica_hour": price_per_replica_hour}
    if bundle is not None:
        raw["bundle"] = str(bundle)
    return raw


def completed(requests: pd.DataFrame) -> np.ndarray:
    return requests["finish_s"].notna().to_numpy()


def on_time(requests: pd.DataFrame) -> np.ndarray:
    """Completed with finish - arrival <= deadline, from the raw times."""
    latency_ms = (requests["finish_s"] - requests["arrival_s"]).to_numpy() * 1000.0
    return completed(requests) & (latency_ms <= requests["deadline_ms"].to_numpy() + 1e-9)


def fast_correct(requests: pd.DataFrame) -> np.ndarray:
    """Whether the "fast" variant is right on each request's sample (the tiny bundle's truth)."""
    return np.array(FAST_CORRECT)[requests["sample_id"].astype(int).to_numpy()]


# --- hit rate, accuracy, on-time accuracy, throughput: a scenario with drops and late completions ----

@pytest.fixture
def bursts(tmp_path, tiny_bundle):
    """Bursts of three simultaneous arrivals every 125 ms on one replica with room for one waiting:
    the first finishes in 2 ms (a hit, deadline 3 ms), the second waits 2 ms (late), the third is
    turned away (queue_full). Warm-up 0.5 s, duration 4 s: a window of 3.5 s."""
    times = np.repeat(np.arange(32) * 0.125, 3)
    raw = one_deployment(replay_arrivals(tmp_path / "bursts.csv", times, 4.0), duration_s=4.0, warmup_s=0.5,
                         deadline_ms=3.0, variant="fast/int8/cpu", bundle=tiny_bundle, max_batch_size=1,
                         max_queue_size=1)
    requests, summary = simulate(raw, seed=3)
    assert np.array_equal(requests["arrival_s"].to_numpy(), times)
    measured = (requests["arrival_s"] >= 0.5).to_numpy()
    # the scenario is what it claims: per burst one hit, one late completion, one drop
    position = np.arange(len(requests)) % 3
    assert (on_time(requests) == (position == 0)).all()
    assert (completed(requests) == (position < 2)).all()
    assert set(requests.loc[position == 2, "drop_reason"]) == {"queue_full"}
    assert 0 < fast_correct(requests)[measured].mean() < 1
    return requests, summary, measured


def test_hit_rate_is_hits_over_measured_arrivals_drops_counting_as_misses(bursts):
    requests, summary, measured = bursts
    hits, arrivals = on_time(requests)[measured].sum(), measured.sum()
    assert summary["hit_rate"] == pytest.approx(hits / arrivals)
    assert summary["hit_rate"] == pytest.approx(1 / 3)
    over_completed = hits / completed(requests)[measured].sum()
    assert over_completed == pytest.approx(1 / 2) and summary["hit_rate"] != pytest.approx(over_completed)
    assert (requests["hit"].to_numpy(dtype=bool) == on_time(requests)).all()


def test_accuracy_is_correct_over_completed(bursts):
    requests, summary, measured = bursts
    done = measured & completed(requests)
    expected = fast_correct(requests)[done].mean()
    assert summary["accuracy"] == pytest.approx(expected)
    over_arrivals = fast_correct(requests)[done].sum() / measured.sum()
    over_all_samples = fast_correct(requests)[measured].mean()  # dropped requests' samples included
    assert expected != pytest.approx(over_arrivals) and expected != pytest.approx(over_all_samples)
    assert (requests.loc[done, "correct"].to_numpy(dtype=bool) == fast_correct(requests)[done]).all()


def test_ontime_accuracy_is_correct_and_on_time_over_measured_arrivals(bursts):
    requests, summary, measured = bursts
    good = fast_correct(requests) & on_time(requests)
    expected = good[measured].sum() / measured.sum()
    assert summary["ontime_accuracy"] == pytest.approx(expected)
    alternatives = (good[measured].sum() / (measured & completed(requests)).sum(),      # over completed
                    (fast_correct(requests) & completed(requests))[measured].sum() / measured.sum())  # late too
    for other in alternatives:
        assert expected != pytest.approx(other)


@pytest.mark.parametrize("crash_at_s", [0.0, 0.0625])
def test_ontime_accuracy_of_a_run_that_answers_nothing_is_zero_not_unknown(tmp_path, tiny_bundle, crash_at_s):
    """The only replica crashes for the rest of the run (at 0 s: before the first arrival is served;
    at 62.5 ms: after it), so every other request expires: on time and correct for none of them. With
    no answer at all the on-time accuracy is 0 (nothing was correct on time), not unknown; accuracy,
    over answers, has none to judge. With one answer both are that answer's."""
    raw = one_deployment(replay_arrivals(tmp_path / "a.csv", np.arange(8) * 0.125, 1.0), duration_s=1.0,
                         deadline_ms=50.0, variant="fast/int8/cpu", bundle=tiny_bundle, drop_expired=True)
    raw["faults"] = [{"deployment": "d", "replica": 0, "at_s": crash_at_s, "down_s": 5.0, "on_failure": "fail"}]
    requests, summary = simulate(raw, seed=1)
    answered = completed(requests)
    assert answered.sum() == (1 if crash_at_s else 0) and summary["completed"] == answered.sum()
    assert set(requests.loc[~answered, "drop_reason"]) == {"expired"}
    good = fast_correct(requests) & on_time(requests)
    assert summary["ontime_accuracy"] == good.sum() / 8
    if answered.any():
        assert summary["accuracy"] == float(fast_correct(requests)[answered][0])
    else:
        assert summary["ontime_accuracy"] == 0.0 and np.isnan(summary["accuracy"])
        # no latency to measure: the distribution keeps its published keys, each null
        assert list(summary["latency_ms"]) == ["mean", "p50", "p90", "p95", "p99", "max"]
        assert all(np.isnan(v) for v in summary["latency_ms"].values())


def test_a_run_without_predictions_has_unknown_accuracy_and_ontime_accuracy(tmp_path):
    """Parametric service times carry no predictions: both accuracies are null although every request
    is answered on time (0 would claim every answer was wrong)."""
    raw = one_deployment(replay_arrivals(tmp_path / "a.csv", np.arange(8) * 0.125, 1.0), duration_s=1.0,
                         service_ms=10.0)
    requests, summary = simulate(raw, seed=1)
    assert on_time(requests).all() and summary["hit_rate"] == 1.0
    assert np.isnan(summary["accuracy"]) and np.isnan(summary["ontime_accuracy"])


def test_throughput_is_measured_completions_over_the_window(bursts):
    requests, summary, measured = bursts
    done = (measured & completed(requests)).sum()
    assert summary["throughput_rps"] == pytest.approx(done / 3.5)
    assert summary["offered_rps"] == pytest.approx(measured.sum() / 3.5)
    assert summary["throughput_rps"] != pytest.approx(done / 4.0)  # not over the whole run
    assert summary["requests"] == measured.sum() == 84 and summary["completed"] == done == 56
    assert summary["dropped"] == 28 and summary["dropped_by_reason"] == {"queue_full": 28}


# --- the measurement window --------------------------------------------------------------------

def test_the_window_is_by_arrival_from_warmup_inclusive(tmp_path):
    """Warm-up 1 s, duration 2 s, 375 ms service, no queueing. By arrival, [1, 2) holds the arrivals
    at 1.0 and 1.75 (the latter finishing after the run's end); by finish time it would hold the
    arrivals at 0.75, 0.875 and 1.0; with ``arrival > warmup`` it would lose the one at exactly 1.0."""
    times = [0.5, 0.75, 0.875, 1.0, 1.75]
    raw = one_deployment(replay_arrivals(tmp_path / "a.csv", times, 2.0), duration_s=2.0, warmup_s=1.0,
                         service_ms=375.0, replicas=4)
    requests, summary = simulate(raw, seed=1)
    assert requests["arrival_s"].tolist() == times
    assert requests["finish_s"].tolist() == [0.875, 1.125, 1.25, 1.375, 2.125]
    assert requests["measured"].tolist() == [False, False, False, True, True]
    assert summary["requests"] == summary["completed"] == 2 and summary["window_s"] == [1.0, 2.0]
    assert summary["throughput_rps"] == pytest.approx(2.0)
    assert summary["latency_ms"]["mean"] == pytest.approx(375.0)
    assert summary["wait_ms"]["max"] == pytest.approx(0.0)


# --- hits, expiry and the cascade at their boundaries ------------------------------------------

def test_a_request_finishing_exactly_at_its_deadline_is_a_hit(tmp_path):
    """250 ms service, 250 ms deadline: the first request finishes exactly at its deadline, the
    second (queued behind it) 125 ms after its own."""
    raw = one_deployment(replay_arrivals(tmp_path / "a.csv", [0.0, 0.125], 1.0), duration_s=1.0,
                         deadline_ms=250.0, service_ms=250.0)
    requests, summary = simulate(raw, seed=1)
    assert requests["latency_ms"].tolist() == [250.0, 375.0]
    assert requests["hit"].tolist() == [True, False]
    assert summary["hit_rate"] == 0.5


@pytest.mark.parametrize("queue", ["fifo", "edf"])
def test_a_request_whose_deadline_is_exactly_now_expires(tmp_path, queue):
    """250 ms service, deadline 125 ms, drop_expired. The request arriving at 0.125 s is due at
    0.25 s, exactly when the first batch finishes and the next forms: it is dropped and the one
    behind it (due 0.3125 s) served in its place. Were it kept, that one would expire instead."""
    times = [0.0, 0.125, 0.1875]
    raw = one_deployment(replay_arrivals(tmp_path / "a.csv", times, 1.0), duration_s=1.0, deadline_ms=125.0,
                         service_ms=250.0, drop_expired=True, queue=queue)
    requests, summary = simulate(raw, seed=1)
    due = requests["arrival_s"] + requests["deadline_ms"] / 1000.0
    assert due.tolist() == [0.125, 0.25, 0.3125]
    assert requests["dropped"].tolist() == [False, True, False] and requests["drop_reason"][1] == "expired"
    assert requests["hop0_start_s"].tolist()[0::2] == [0.0, 0.25] and np.isnan(requests["hop0_start_s"].iloc[1])
    assert summary["dropped_by_reason"] == {"expired": 1} and summary["completed"] == 2


@pytest.mark.parametrize("queue", ["fifo", "edf"])
def test_a_deadline_exactly_now_expires_when_a_batch_refills_too(tmp_path, queue):
    """Batches of up to 2, 250 ms service, deadline 125 ms. At 0.25 s the replica frees with A, B
    (both past due) and C (due exactly then) waiting: the batch takes A and B, drops both, refills
    with C, which expires as well, so no batch forms."""
    times = [0.0, 0.0625, 0.09375, 0.125]
    raw = one_deployment(replay_arrivals(tmp_path / "a.csv", times, 1.0), duration_s=1.0, deadline_ms=125.0,
                         service_ms=250.0, drop_expired=True, queue=queue, max_batch_size=2,
                         batch_wait_timeout_ms=0.0)
    requests, summary = simulate(raw, seed=1)
    due = requests["arrival_s"] + requests["deadline_ms"] / 1000.0
    assert due.tolist()[1:] == [0.1875, 0.21875, 0.25]
    assert requests["dropped"].tolist() == [False, True, True, True]
    assert summary["dropped_by_reason"] == {"expired": 3}


@pytest.fixture
def spaced(tmp_path):
    """One arrival every 125 ms for 10 s: nothing queues."""
    return replay_arrivals(tmp_path / "spaced.csv", np.arange(80) * 0.125, 10.0)


def cascade(bundle, arrivals, threshold: float) -> dict:
    return {"duration_s": 10.0, "bundle": str(bundle), "arrivals": arrivals, "requests": {"deadline_ms": 1e6},
            "deployments": [{"name": "fast", "variant": "fast/int8/cpu"},
                            {"name": "slow", "variant": "slow/fp32/cpu"}],
            "policy": {"name": "static", "cascade": ["fast", "slow"], "threshold": threshold}}


def test_a_cascade_exits_when_confidence_equals_the_threshold(tiny_bundle, spaced):
    """The threshold is exactly "fast"'s confidence on sample 1 (0.90): ``>=`` exits there."""
    threshold = FAST_CONF[1]
    requests, summary = simulate(cascade(tiny_bundle, spaced, threshold), seed=2)
    sample = requests["sample_id"].astype(int).to_numpy()
    assert (sample == 1).sum() > 5 and set(sample) == {0, 1, 2, 3}
    exits = np.array(FAST_CONF)[sample] >= threshold
    assert (requests["hops"].to_numpy() == np.where(exits, 1, 2)).all()
    assert (requests.loc[sample == 1, "hops"] == 1).all()
    assert (visited(requests, 1).to_numpy() == ~exits).all()
    assert np.allclose(requests["latency_ms"], np.where(exits, FAST_MS[1], FAST_MS[1] + SLOW_MS[1]), atol=1e-9)
    expected_correct = np.where(exits, np.array(FAST_CORRECT)[sample], True)
    assert summary["accuracy"] == pytest.approx(expected_correct.mean())


# --- wait, batch size, utilisation and cost ---------------------------------------------------------

def test_wait_is_from_arrival_to_the_first_hops_start(tiny_bundle, tmp_path):
    """Pairs of simultaneous arrivals into a cascade: at "fast" one waits 0 ms and the other 2 ms;
    those forwarded to "slow" queue there too, which a last-hop or whole-route wait would count."""
    times = np.repeat(np.arange(40) * 0.25, 2)
    requests, summary = simulate(cascade(tiny_bundle, replay_arrivals(tmp_path / "p.csv", times, 10.0), 0.8), seed=5)
    wait_ms = (requests["hop0_start_s"] - requests["arrival_s"]).to_numpy() * 1000.0
    assert np.allclose(np.sort(wait_ms.reshape(-1, 2), axis=1), [[0.0, FAST_MS[1]]] * 40, atol=1e-9)
    assert summary["wait_ms"]["mean"] == pytest.approx(wait_ms.mean())
    assert summary["wait_ms"]["max"] == pytest.approx(FAST_MS[1])
    assert summary["wait_ms"]["p90"] == pytest.approx(np.percentile(wait_ms, 90))
    two = visited(requests, 1).to_numpy()
    assert two.sum() > 10
    last_start = np.where(two, requests["hop1_start_s"].astype(float), requests["hop0_start_s"])
    last_wait_ms = (last_start - requests["arrival_s"].to_numpy()) * 1000.0
    assert last_wait_ms.mean() > wait_ms.mean() + 1.0  # the alternative really differs


def test_mean_batch_size_is_per_batch_inside_the_window(tmp_path):
    """Batches of 3 before the window (t = 0) and alternating 1 and 3 inside it: per batch 2.0;
    per request it would be 2.5, and with the warm-up batch 19/9."""
    single, triple = 0.25 + 0.5 * np.arange(4), np.repeat(0.5 + 0.5 * np.arange(4), 3)
    times = np.sort(np.concatenate([[0.0, 0.0, 0.0], single, triple]))
    raw = one_deployment(replay_arrivals(tmp_path / "b.csv", times, 2.5), duration_s=2.5, warmup_s=0.125,
                         service_ms=1.0, max_batch_size=3, batch_wait_timeout_ms=1.0)
    requests, summary = simulate(raw, seed=1)
    inside = requests[requests["hop0_start_s"] >= 0.125]
    sizes = inside.groupby(["hop0_replica", "hop0_start_s"]).size()
    assert sorted(sizes.tolist()) == [1] * 4 + [3] * 4
    assert summary["mean_batch_size"] == pytest.approx(sizes.mean()) == 2.0
    assert inside["hop0_batch_size"].mean() == pytest.approx(2.5)  # the per-request alternative


def test_a_batch_counts_in_the_window_by_its_start_from_warmup_inclusive(tmp_path):
    """One replica, 250 ms service, window [0.5, 1): batches run 0.25-0.5, 0.5-0.75 (the one at
    0.375 waited), 0.75-1.0 and 1.0-1.25. The two that start at 0.5 and 0.75 count; the one that
    starts exactly at the window's end does not, nor does the one that ends exactly at its start."""
    raw = one_deployment(replay_arrivals(tmp_path / "w.csv", [0.25, 0.375, 0.625, 0.6875], 1.0), duration_s=1.0,
                         warmup_s=0.5, service_ms=250.0, max_batch_size=1)
    requests, summary = simulate(raw, seed=1)
    assert requests["hop0_start_s"].tolist() == [0.25, 0.5, 0.75, 1.0]
    stats = summary["deployments"]["d"]
    assert (stats["batches"], stats["mean_batch_size"]) == (2, 1.0)
    assert (stats["busy_seconds"], stats["utilization"]) == (0.5, 1.0)


def test_utilization_and_cost_count_only_the_window(tmp_path):
    """Two replicas, 500 ms service, window [1, 2): busy 0.875-1.375, 1.25-1.75 and 1.75-2.25, of
    which 0.375 + 0.5 + 0.25 s fall inside, over 2 replica-seconds: 0.5625. Unclipped busy time (1.5 s)
    or the whole run's 4 replica-seconds would give another number."""
    raw = one_deployment(replay_arrivals(tmp_path / "u.csv", [0.875, 1.25, 1.75], 2.0), duration_s=2.0,
                         warmup_s=1.0, service_ms=500.0, replicas=2, price_per_replica_hour=3.6)
    requests, summary = simulate(raw, seed=1)
    start, finish = requests["hop0_start_s"].to_numpy(), requests["hop0_finish_s"].to_numpy()
    busy_s = (np.minimum(finish, 2.0) - np.maximum(start, 1.0)).clip(min=0).sum()
    assert busy_s == pytest.approx(1.125)
    assert summary["utilization"]["d"] == pytest.approx(busy_s / 2.0) == 0.5625
    assert summary["cost"]["replica_seconds"] == pytest.approx(2.0)
    assert summary["cost"]["total"] == pytest.approx(2.0 * 3.6 / 3600.0)
    assert summary["cost"]["price_per_replica_hour"] == 3.6


def test_a_deployment_without_replica_seconds_has_utilization_zero(tmp_path):
    """A standby deployment with no replicas holds no replica-seconds: its utilization is 0 (busy 0
    of 0), not an error, its mean batch size 0 (no batch), and it adds nothing to the cost."""
    raw = one_deployment(replay_arrivals(tmp_path / "u.csv", [0.25, 0.5], 1.0), duration_s=1.0, service_ms=100.0)
    raw["deployments"].append({"name": "standby", "service": {**DET, "mean_ms": 50.0}, "replicas": 0})
    raw["policy"]["deployment"] = "d"
    requests, summary = simulate(raw, seed=1)
    assert summary["utilization"] == {"d": pytest.approx(0.2), "standby": 0.0}
    standby = summary["deployments"]["standby"]
    assert (standby["replica_seconds"], standby["batches"], standby["mean_batch_size"]) == (0.0, 0, 0.0)
    assert summary["cost"]["replica_seconds"] == pytest.approx(1.0)
