"""The run summary: one dict of headline metrics computed from a ``requests`` table.

Only requests that arrived at or after ``warmup_s`` count ("measured"). Definitions:
hit_rate = completed within their deadline / measured arrivals; accuracy = correct / completed
(over requests with a known prediction); ontime_accuracy = correct and on time / measured arrivals;
wait = time from arrival to the start of the first hop's service; throughput = measured completions
per second of the measurement window [warmup_s, duration_s).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

PERCENTILES = (50, 90, 95, 99)


def distribution(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"mean": math.nan, **{f"p{q}": math.nan for q in PERCENTILES}, "max": math.nan}
    pct = np.percentile(values, PERCENTILES)
    return {"mean": float(values.mean()), **{f"p{q}": float(v) for q, v in zip(PERCENTILES, pct)},
            "max": float(values.max())}


def summarize(requests: pd.DataFrame, *, warmup_s: float, duration_s: float, deployments: dict[str, dict],
              price_per_replica_hour: float) -> dict:
    measured = requests[requests["measured"].to_numpy(dtype=bool)]
    total = len(measured)
    dropped = measured["dropped"].to_numpy(dtype=bool)
    completed = measured[~dropped]
    hits = int(measured["hit"].to_numpy(dtype=bool).sum())
    correct = completed["correct"]
    known = correct.notna().to_numpy()
    correct_known = correct[known].to_numpy(dtype=bool)
    ontime_correct = int((correct_known & completed["hit"].to_numpy(dtype=bool)[known]).sum())
    window_s = duration_s - warmup_s
    batches = sum(d["batches"] for d in deployments.values())
    batched = sum(d["batches"] * d["mean_batch_size"] for d in deployments.values())
    replica_s = sum(d["replica_seconds"] for d in deployments.values())

    def ratio(num: float, den: float) -> float:
        return float(num / den) if den else math.nan

    has_predictions = bool(known.any())
    reasons = measured.loc[dropped, "drop_reason"].value_counts().sort_index()
    return {
        "requests": total,
        "completed": int(len(completed)),
        "dropped": int(dropped.sum()),
        "dropped_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "hit_rate": ratio(hits, total),
        "accuracy": ratio(correct_known.sum(), known.sum()) if has_predictions else math.nan,
        "ontime_accuracy": ratio(ontime_correct, total) if has_predictions else math.nan,
        "latency_ms": distribution(completed["latency_ms"].to_numpy()),
        "wait_ms": distribution((measured["hop0_start_s"] - measured["arrival_s"]).to_numpy() * 1000.0),
        "throughput_rps": ratio(len(completed), window_s),
        "offered_rps": ratio(total, window_s),
        "mean_batch_size": ratio(batched, batches),
        "utilization": {name: d["utilization"] for name, d in deployments.items()},
        "cost": {
            "replica_seconds": replica_s,
            "price_per_replica_hour": price_per_replica_hour,
            "total": replica_s / 3600.0 * price_per_replica_hour,
        },
        "window_s": [warmup_s, duration_s],
    }
