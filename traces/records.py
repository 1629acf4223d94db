"""Per-request state and results, kept in flat lists indexed by request id (no object per request).

At the end ``to_frame`` turns them into the ``requests`` table of the run output, one row per
arrival: its route, each hop's deployment, enqueue, start and finish times and batch size, its
outcome (finish or drop reason), prediction and whether it was correct and on time.
"""

from __future__ import annotations

import math
from array import array

import numpy as np
import pandas as pd

NAN = math.nan


class HopColumns:
    __slots__ = ("deployment", "replica", "enqueue_s", "start_s", "finish_s", "batch_size")

    def __init__(self, n: int):
        # array.array: item writes as cheap as a list's, and numpy reads it without a copy
        self.deployment = array("q", [-1]) * n
        self.replica = array("q", [-1]) * n
        self.enqueue_s = array("d", [NAN]) * n
        self.start_s = array("d", [NAN]) * n
        self.finish_s = array("d", [NAN]) * n
        self.batch_size = array("q", [0]) * n


class RequestLog:
    def __init__(self, arrival_s: np.ndarray, deadline_ms: np.ndarray, sample_index: np.ndarray):
        n = arrival_s.size
        self.n = n
        self.arrival_s = arrival_s
        self.deadline_ms = deadline_ms
        self.sample_index = sample_index
        self.route: list = [None] * n
        self.hop = [0] * n
        self.retries = array("q", [0]) * n
        self.finish_s = array("d", [NAN]) * n
        self.drop_reason: list[str | None] = [None] * n
        self.hops: list[HopColumns] = []

    def ensure_hops(self, count: int) -> None:
        while len(self.hops) < count:
            self.hops.append(HopColumns(self.n))

    def to_frame(self, deployment_names: list[str], variants: list[str | None], predictions,
                 sample_ids: np.ndarray | None, warmup_s: float) -> pd.DataFrame:
        n = self.n
        finish = np.frombuffer(self.finish_s, dtype=np.float64)
        reasons = np.array([r or "" for r in self.drop_reason], dtype=object)
        dropped = reasons != ""
        latency_ms = np.where(dropped, np.nan, (finish - self.arrival_s) * 1000.0)
        names = np.array(deployment_names + [""], dtype=object)
        exit_hop = np.asarray(self.hop, dtype=np.int64)
        frame = {
            "id": np.arange(n, dtype=np.int64),
            "arrival_s": self.arrival_s,
            "deadline_ms": self.deadline_ms,
            "sample_id": (sample_ids[self.sample_index] if sample_ids is not None and sample_ids.size
                          else np.full(n, None, dtype=object)),
            "route": np.array([r.label if r is not None else "" for r in self.route], dtype=object),
            "hops": np.where(np.asarray([r is None for r in self.route]), 0, exit_hop + 1),
        }
        for k, cols in enumerate(self.hops):
            frame[f"hop{k}_deployment"] = names[np.frombuffer(cols.deployment, dtype=np.int64)]
            frame[f"hop{k}_replica"] = np.frombuffer(cols.replica, dtype=np.int64)
            frame[f"hop{k}_enqueue_s"] = np.frombuffer(cols.enqueue_s, dtype=np.float64)
            frame[f"hop{k}_start_s"] = np.frombuffer(cols.start_s, dtype=np.float64)
            frame[f"hop{k}_finish_s"] = np.frombuffer(cols.finish_s, dtype=np.float64)
            frame[f"hop{k}_batch_size"] = np.frombuffer(cols.batch_size, dtype=np.int64)
        frame["retries"] = np.frombuffer(self.retries, dtype=np.int64)
        frame["finish_s"] = np.where(dropped, np.nan, finish)
        frame["latency_ms"] = latency_ms
        frame["dropped"] = dropped
        frame["drop_reason"] = reasons
        pred, correct = self._outcomes(variants, predictions, exit_hop, dropped)
        frame["pred"] = pred
        frame["correct"] = correct
        frame["hit"] = ~dropped & (latency_ms <= self.deadline_ms)
        frame["measured"] = self.arrival_s >= warmup_s
        return pd.DataFrame(frame)

    def _outcomes(self, variants, predictions, exit_hop, dropped):
        """Prediction and correctness of the variant each completed request exited at."""
        n = self.n
        pred = np.full(n, None, dtype=object)
        correct = np.zeros(n, dtype=bool)
        known = np.zeros(n, dtype=bool)
        if predictions is None or not self.hops:
            return pred, pd.arrays.BooleanArray(correct, ~known)
        exit_dep = np.full(n, -1, dtype=np.int64)
        for k, cols in enumerate(self.hops):
            at_k = exit_hop == k
            exit_dep[at_k] = np.frombuffer(cols.deployment, dtype=np.int64)[at_k]
        for dep, variant in enumerate(variants):
            if variant is None or variant not in predictions.pred:
                continue
            rows = np.flatnonzero((exit_dep == dep) & ~dropped)
            samples = self.sample_index[rows]
            pred[rows] = predictions.pred[variant][samples]
            correct[rows] = predictions.correct[variant][samples]
            known[rows] = True
        return pred, pd.arrays.BooleanArray(correct, ~known)


class ReplicaSeconds:
    """Replica-seconds a deployment holds inside the measurement window ``[lo, hi)``: each
    stretch of time counts ``count`` x its overlap with the window (the cost figure's basis)."""

    __slots__ = ("lo", "hi", "count", "since_s", "total_s")

    def __init__(self, window_s: tuple[float, float]):
        self.lo, self.hi = window_s
        self.count, self.since_s, self.total_s = 0, 0.0, 0.0

    def change(self, count: int, now: float) -> None:
        """From ``now`` on, ``count`` replicas are provisioned."""
        self.until(now)
        self.count = count

    def until(self, now: float) -> float:
        """Account up to ``now`` (never backwards); returns the total so far."""
        if now > self.since_s:
            overlap = min(now, self.hi) - max(self.since_s, self.lo)
            if overlap > 0:
                self.total_s += self.count * overlap
            self.since_s = now
        return self.total_s


def deployment_stats(replica_s: float, replicas) -> dict:
    """Busy fraction, replica-seconds and batches inside the window, from replicas that carry
    ``busy_s``, ``batches`` and ``items`` (both executors' replicas do)."""
    replicas = list(replicas)
    busy_s = sum(r.busy_s for r in replicas)
    batches = sum(r.batches for r in replicas)
    items = sum(r.items for r in replicas)
    return {"replica_seconds": replica_s, "busy_seconds": busy_s,
            "utilization": busy_s / replica_s if replica_s > 0 else 0.0,
            "batches": batches, "mean_batch_size": items / batches if batches else 0.0}
