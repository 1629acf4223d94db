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
from scipy import stats

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


def flatten(summary: dict, prefix: str = "") -> dict:
    """``{"latency_ms": {"p99": 3}}`` -> ``{"latency_ms.p99": 3}``."""
    flat = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif not isinstance(value, list):
            flat[name] = value
    return flat


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


COLUMNS = (("hit_rate", "hit", ("hit_rate",), 4), ("accuracy", "acc", ("accuracy",), 4),
           ("ontime_accuracy", "ontime", ("ontime_accuracy",), 4), ("p50", "p50 ms", ("latency_ms", "p50"), 2),
           ("p95", "p95 ms", ("latency_ms", "p95"), 2), ("p99", "p99 ms", ("latency_ms", "p99"), 2),
           ("tput", "rps", ("throughput_rps",), 1), ("batch", "batch", ("mean_batch_size",), 2),
           ("cost", "cost", ("cost", "total"), 4))


def _get(summary: dict, path: tuple[str, ...]) -> float:
    for key in path:
        summary = summary[key]
    return math.nan if summary is None else float(summary)


def legend(seeds: int = 1) -> str:
    """What the columns of ``summary_table`` mean, to print below it."""
    text = ("hit: share of measured arrivals (those arriving in [warmup_s, duration_s)) completed by their deadline\n"
            "acc: correct / completed; ontime: correct and on time / measured arrivals; p50/p95/p99 ms: latency\n"
            "of completed requests; rps: completions per second; batch: mean batch size; cost: replica-hours x\n"
            "price_per_replica_hour (price units)")
    return text + ("\n±: the 95% Student-t half-width of the mean over seeds" if seeds > 1 else "")


def summary_table(summaries: list[dict]) -> str:
    header = ["seed", "requests", "dropped"] + [c[1] for c in COLUMNS]
    rows = [[str(s["seed"]), str(s["requests"]), str(s["dropped"])] + [_fmt(_get(s, c[2]), c[3]) for c in COLUMNS]
            for s in summaries]
    if len(summaries) > 1:
        cells = ["mean", "", ""]
        for c in COLUMNS:
            values = np.array([_get(s, c[2]) for s in summaries])
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            cells.append(f"{_fmt(values.mean(), c[3])}±{_fmt(half, c[3])}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header] + rows)
