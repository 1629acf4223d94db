"""The real server's request log streams like the simulator's: the live state is the ring of
requests in flight (``sim.core.records``), retired in chunks to the Parquet spool and the summary's
tally, so a run's memory does not grow with its requests; and the table it writes still has every
request with what the runners answered.

The runners here are fakes with fixed answers per sample (every number they give is known in
advance), so the table is checked against an independent expectation, and the ring starts tiny
(``MIN_CAPACITY``) so that a few thousand requests retire it many times over: when the ring is
full (as the simulator does), or every few arrivals ahead of need (``RETIRE_ROWS``).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from array import array
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

if importlib.util.find_spec("measure") is None:  # measure/ is not an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import policies  # noqa: E402
import measure.server  # noqa: E402
from measure.server import Server  # noqa: E402
from sim.core import records  # noqa: E402
from sim.core.prepare import check_against_bundle  # noqa: E402
from traces.profiles import PredictionTable  # noqa: E402
from traces.scenario import scenario_from_dict  # noqa: E402
from traces.summary import summarize  # noqa: E402

RING = 64                 # the ring's starting capacity here (the default is 32768)
SAMPLES = 12
LABELS = [s % 4 for s in range(SAMPLES)]
THRESHOLD = 0.5
DET = {"kind": "deterministic", "mean_ms": 0.2}  # parametric in the scenario; the fakes run instead


def fast_answer(sample: int) -> int:
    return (sample * sample) % 4          # right where s*s = s (mod 4): samples 0, 1, 4, 5, 8, 9


def fast_confidence(sample: int) -> float:
    return sample / SAMPLES               # below the threshold on samples 0..5


def slow_answer(sample: int) -> int:
    return LABELS[sample] if sample % 3 else (LABELS[sample] + 1) % 4   # wrong on multiples of 3


class Fake:
    """A model with fixed per-sample outputs, ``answer`` and ``confidence`` of the sample; its
    first batch takes ``first_s`` if given."""

    def __init__(self, answer, confidence, first_s: float = 0.0):
        self.answer, self.confidence, self.first_s = answer, confidence, first_s

    def warmup(self) -> None:
        pass

    def run(self, samples: list[int]) -> tuple[list, list[float]]:
        time.sleep(self.first_s or 0.0002)
        self.first_s = 0.0
        return [self.answer(s) for s in samples], [self.confidence(s) for s in samples]


def serve(raw: dict, runners: dict, stage_samples: tuple[int, ...], stage_labels: list, seed: int = 3):
    """A ``Server`` of ``raw`` on fake runners, with a prediction table of sample ids 0..k-1 per
    stage; returns the server after its run (its ``requests`` and ``summary()`` filled)."""
    scenario = scenario_from_dict(raw)
    tables = tuple(PredictionTable(np.arange(k), {}, {}, {}) for k in stage_samples)
    server = Server(scenario, policies.create(scenario.policy.name, scenario.policy.params), runners, seed=seed,
                    labels=stage_labels[0], profiles=check_against_bundle(scenario).profiles,
                    predictions=tables[0], stage_predictions=tables if len(tables) > 1 else (),
                    stage_labels=stage_labels)
    server.run()
    return server


def sizes(value):
    """The length of a container and of the containers in it, nested."""
    if isinstance(value, (list, tuple, dict, deque, array, np.ndarray)):
        yield len(value)
        if isinstance(value, (list, tuple, deque)):
            for item in value:
                yield from sizes(item)


def bounded(server: Server, n: int) -> None:
    """Nothing the server or its log keeps grows with the requests: every ring column of the log
    has the ring's capacity, far below ``n``, and no container of the server holds that many."""
    log = server.core.log
    assert log.capacity <= n // 4, (log.capacity, n)
    columns = [column for _, _, column, _ in log._owned()] + log._objects()
    assert len(columns) > 10 and {len(c) for c in columns} == {log.capacity}
    for name, value in vars(server).items():
        assert max(sizes(value), default=0) < n // 4, name


def test_a_long_cascade_run_keeps_only_the_requests_in_flight(monkeypatch):
    monkeypatch.setattr(records, "MIN_CAPACITY", RING)
    raw = {"duration_s": 2.0, "warmup_s": 0.2, "arrivals": {"kind": "poisson", "rate_rps": 1500.0},
           "requests": {"deadline_ms": 1e6},
           "deployments": [{"name": n, "service": DET, "replicas": 2, "max_batch_size": 8, "drop_expired": False}
                           for n in ("fast", "slow")],
           "policy": {"name": "static", "cascade": ["fast", "slow"], "threshold": THRESHOLD}}
    # one replica's first batch holds the oldest requests for 0.15 s, while the other serves on:
    # nothing can retire past them, so the ring has to grow around them (answers included)
    first_s = iter([0.15])
    runners = {"fast": lambda: Fake(fast_answer, fast_confidence, next(first_s, 0.0)),
               "slow": lambda: Fake(slow_answer, lambda s: 0.99)}
    server = serve(raw, runners, (SAMPLES,), [LABELS])
    frame = server.requests.to_pandas()
    n = len(frame)
    print(f"{n} requests, ring capacity {server.core.log.capacity} (from {RING}), "
          f"{pq.ParquetFile(server.requests.path).num_row_groups} row groups")
    assert n > 2500
    assert server.core.log.capacity > RING
    bounded(server, n)
    assert pq.ParquetFile(server.requests.path).num_row_groups >= n // server.core.log.capacity  # retired in chunks
    # every request, in order, each with the answers the fakes give for its sample
    assert (frame["id"].to_numpy() == np.arange(n)).all()
    assert not frame["dropped"].any()
    sample = frame["sample_id"].to_numpy(dtype=int)
    assert set(sample) == set(range(SAMPLES))
    assert (frame["label"].to_numpy(dtype=int) == np.array(LABELS)[sample]).all()
    confidence = sample / SAMPLES
    confident = confidence >= THRESHOLD
    assert (frame["hops"].to_numpy() == np.where(confident, 1, 2)).all()
    assert np.array_equal(frame["hop0_confidence"].to_numpy(), confidence)
    assert np.array_equal(frame["hop1_confidence"].to_numpy(), np.where(confident, np.nan, 0.99), equal_nan=True)
    want = np.where(confident, [fast_answer(s) for s in sample], [slow_answer(s) for s in sample])
    assert (frame["pred"].to_numpy(dtype=int) == want).all()
    assert (frame["correct"].to_numpy(dtype=bool) == (want == np.array(LABELS)[sample])).all()
    lag = frame["dispatch_lag_s"].to_numpy()
    assert np.isfinite(lag).all() and (lag >= -1e-9).all()
    assert np.allclose(frame["hop0_enqueue_s"], frame["arrival_s"] + lag)
    # the streamed summary is the one of the whole table in memory
    scenario = server.core.scenario
    whole = summarize(frame, warmup_s=scenario.warmup_s, duration_s=scenario.duration_s,
                      deployments=server.core.deployment_stats(scenario.duration_s),
                      price_per_replica_hour=scenario.price_per_replica_hour, route_hops=server.core.route_hops)
    assert server.summary() == whole
    measured = frame[frame["measured"]]
    assert whole["accuracy"] == pytest.approx((want == np.array(LABELS)[sample])[frame["measured"]].mean())
    assert whole["cascade"]["fast@0.5>slow"]["hop0"]["passed_on"] == int((~confident[frame["measured"]]).sum())
    assert whole["requests"] == len(measured)


def test_a_pipeline_records_each_stages_answer_in_the_ring(monkeypatch):
    monkeypatch.setattr(records, "MIN_CAPACITY", 2 * RING)
    monkeypatch.setattr(measure.server, "RETIRE_ROWS", 16)   # retired every few arrivals, before the ring fills
    second = 7                                              # stage 1 draws from 7 samples of its own
    labels1 = [(s * 5) % 3 for s in range(second)]
    raw = {"duration_s": 1.5, "arrivals": {"kind": "poisson", "rate_rps": 1200.0}, "requests": {"deadline_ms": 1e6},
           "deployments": [{"name": n, "service": DET, "max_batch_size": 8, "drop_expired": False} for n in ("a", "b")],
           "stages": [{"name": "read", "deployments": ["a"]}, {"name": "judge", "deployments": ["b"]}],
           "policy": {"name": "static", "pipeline": ["a", "b"]}}
    runners = {"a": lambda: Fake(fast_answer, fast_confidence), "b": lambda: Fake(lambda s: s % 3, lambda s: 1.0)}
    server = serve(raw, runners, (SAMPLES, second), [LABELS, labels1])
    frame = server.requests.to_pandas()
    n = len(frame)
    print(f"{n} requests, ring capacity {server.core.log.capacity} (from {2 * RING}), "
          f"{pq.ParquetFile(server.requests.path).num_row_groups} row groups")
    assert n > 1200
    bounded(server, n)
    assert pq.ParquetFile(server.requests.path).num_row_groups > n // 48  # chunks far smaller than the ring
    s0, s1 = frame["stage0_sample_id"].to_numpy(dtype=int), frame["stage1_sample_id"].to_numpy(dtype=int)
    assert set(s1) == set(range(second))
    right0 = np.array([fast_answer(s) == LABELS[s] for s in s0])
    right1 = np.array([s % 3 == labels1[s] for s in s1])
    assert 0 < (right0 & ~right1).sum() and 0 < (~right0 & right1).sum()
    assert (frame["stage0_correct"].to_numpy(dtype=bool) == right0).all()
    assert (frame["stage1_correct"].to_numpy(dtype=bool) == right1).all()
    assert (frame["pred"].to_numpy(dtype=int) == s1 % 3).all()      # the last stage answers
    assert (frame["correct"].to_numpy(dtype=bool) == (right0 & right1)).all()
    assert server.summary()["accuracy"] == pytest.approx((right0 & right1).mean())
