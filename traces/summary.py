"""The run summary: one dict of headline metrics over a run's ``requests`` table.

Only requests that arrived at or after ``warmup_s`` count ("measured"). Definitions:
hit_rate = completed within their deadline / measured arrivals; accuracy = correct / completed
(over requests with a known prediction; null without any); ontime_accuracy = correct and on time /
measured arrivals (null when requests completed but none has a known prediction; 0 when none completed);
wait = time from arrival to the start of the first hop's service; throughput = measured completions
per second of the measurement window [warmup_s, duration_s); cost.total = replica-seconds held
inside the window x the price per replica-hour / 3600, and cost.per_1k_requests = cost.total / measured
arrivals x 1000 (null without any). ``cascade``, for every route of more than one hop: per hop k but
the last, ``reached`` = measured requests of that route that reached hop k (were queued there),
``passed_on`` = those of them hop k forwarded to hop k+1 (its confidence was below the threshold),
and ``passed_on_share`` = passed_on / reached (null when none reached it).

The table comes in chunks (``Tally.add``), so a run of millions of requests never holds it whole:
counts are summed as chunks arrive, and the measured latencies and waits are kept as float64
arrays (8 bytes a request), so the percentiles are exactly ``np.percentile`` of the whole column
(and the mean that of the whole column, summed in the same order).
``summarize`` is the same over one in-memory table.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pandas as pd
from scipy import stats

PERCENTILES = (50, 90, 95, 99)
_HOP_DEPLOYMENT = re.compile(r"^hop(\d+)_deployment$")


def distribution(values: np.ndarray, *, scratch: bool = False) -> dict[str, float]:
    """Mean, percentiles and max of the finite values; ``scratch``: ``values`` may be reordered
    (no copy is made of an all-finite array)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values, scratch = values[finite], True
    del finite
    if values.size == 0:
        return {"mean": math.nan, **{f"p{q}": math.nan for q in PERCENTILES}, "max": math.nan}
    mean = float(values.mean())
    pct = np.percentile(values, PERCENTILES, overwrite_input=scratch)
    return {"mean": mean, **{f"p{q}": float(v) for q, v in zip(PERCENTILES, pct)}, "max": float(values.max())}


def stage_breakdown(requests, stage_names) -> dict[str, dict[str, float]]:
    """A pipeline's time per stage, over the measured requests that completed: the distribution
    (ms) of each ``stage{s}_latency_ms`` and its mean share of the latency. The stages of one
    request add up to its latency (the first counts from the arrival), so the means add up to
    the mean latency. ``requests``: the requests table, a DataFrame or a ``RequestTable``."""
    def column(name):
        return (requests[name].to_numpy() if isinstance(requests, pd.DataFrame)
                else requests.column(name))

    keep = column("measured").astype(bool) & ~column("dropped").astype(bool)
    total = float(np.mean(column("latency_ms")[keep])) if keep.any() else math.nan
    out = {}
    for k, name in enumerate(stage_names):
        values = column(f"stage{k}_latency_ms").astype(np.float64)[keep]
        stats = distribution(values, scratch=True)
        out[name] = {f"{key}_ms": value for key, value in stats.items()}
        out[name]["share_of_latency"] = stats["mean"] / total if total and total == total else math.nan
    return out


class _Values:
    """A growing float64 column: ``reserve`` up front (untouched pages cost no memory), filled
    as chunks come, read once at the end."""

    def __init__(self, reserve: int = 0):
        self._data = np.empty(max(reserve, 1024))
        self.size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.size + values.size
        if end > self._data.size:
            grown = np.empty(max(end, 2 * self._data.size))
            grown[:self.size] = self._data[:self.size]
            self._data = grown
        self._data[self.size:end] = values
        self.size = end

    def take(self) -> np.ndarray:
        """The values (the column is spent: call once)."""
        data, self._data = self._data[:self.size], np.empty(0)
        return data


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def _latency_ms(chunk) -> np.ndarray:
    """Latencies of the chunk's measured completions."""
    keep = np.asarray(chunk["measured"], dtype=bool) & ~np.asarray(chunk["dropped"], dtype=bool)
    return np.asarray(chunk["latency_ms"], dtype=np.float64)[keep]


def _wait_ms(chunk) -> np.ndarray:
    """Waits before the first hop's service of the chunk's measured requests (NaN: never served)."""
    keep = np.asarray(chunk["measured"], dtype=bool)
    start = np.asarray(chunk["hop0_start_s"], dtype=np.float64)[keep]
    return (start - np.asarray(chunk["arrival_s"], dtype=np.float64)[keep]) * 1000.0


# the distributions of the summary: name, the columns they need, how a chunk gives its values
_VALUES = (("latency_ms", ("measured", "dropped", "latency_ms"), _latency_ms),
           ("wait_ms", ("measured", "arrival_s", "hop0_start_s"), _wait_ms))


class Tally:
    """Streaming accumulators of the summary: ``add`` each chunk of the table, then ``summary``.

    With ``keep_values`` the measured latencies and waits are kept as chunks come; without, the
    summary reads them back from the written table, one distribution and one row group at a
    time (``summary(values_from=...)``), so a run holds neither while it runs."""

    def __init__(self, rows: int = 0, *, keep_values: bool = True) -> None:
        """``rows``: how many requests will come at most (reserved, not touched)."""
        self.measured = self.completed = self.dropped = self.hits = 0
        self.known = self.correct = self.ontime_correct = 0
        self.reasons: Counter = Counter()
        self.route_reach: Counter = Counter()  # (route label, hops reached) -> measured requests
        self._values = {name: _Values(rows) for name, _, _ in _VALUES} if keep_values else None

    def add(self, chunk) -> None:
        """Count a chunk: a DataFrame, or a dict of column name -> array."""
        measured = np.asarray(chunk["measured"], dtype=bool)
        dropped_all = np.asarray(chunk["dropped"], dtype=bool)
        dropped = measured & dropped_all
        completed = measured & ~dropped_all
        self.measured += int(measured.sum())
        self.completed += int(completed.sum())
        self.dropped += int(dropped.sum())
        hit = np.asarray(chunk["hit"], dtype=bool)
        self.hits += int((measured & hit).sum())
        correct = chunk["correct"]
        known = completed & ~np.asarray(pd.isna(correct), dtype=bool)
        right = known & correct.to_numpy(dtype=bool, na_value=False)
        self.known += int(known.sum())
        self.correct += int(right.sum())
        self.ontime_correct += int((right & hit).sum())
        if dropped.any():
            self.reasons.update(Counter(np.asarray(chunk["drop_reason"], dtype=object)[dropped].tolist()))
        if "hops" in chunk and measured.any():
            codes, labels = pd.factorize(np.asarray(chunk["route"], dtype=object)[measured])
            hops = np.asarray(chunk["hops"], dtype=np.int64)[measured]
            width = int(hops.max()) + 1
            keys, counts = np.unique(codes * width + hops, return_counts=True)
            self.route_reach.update({(str(labels[k // width]), int(k % width)): int(c) for k, c in zip(keys, counts)})
        if self._values is not None:
            for name, _, values_of in _VALUES:
                self._values[name].extend(values_of(chunk))

    def _distributions(self, values_from) -> dict[str, dict]:
        out = {}
        for name, columns, values_of in _VALUES:
            if values_from is None:
                values = self._values[name]
            else:
                values = _Values(len(values_from))
                for chunk in values_from.row_groups(columns):
                    values.extend(values_of(chunk))
            out[name] = distribution(values.take(), scratch=True)
        return out

    def cascade(self, route_hops: dict[str, int]) -> dict:
        out = {}
        for label, count in sorted(route_hops.items()):
            if count < 2:
                continue
            reach = {h: c for (r, h), c in self.route_reach.items() if r == label}
            hops = {}
            for k in range(count - 1):
                reached = sum(c for h, c in reach.items() if h > k)
                passed = sum(c for h, c in reach.items() if h > k + 1)
                hops[f"hop{k}"] = {"reached": reached, "passed_on": passed, "passed_on_share": _ratio(passed, reached)}
            out[label] = hops
        return out

    def summary(self, *, warmup_s: float, duration_s: float, deployments: dict[str, dict],
                price_per_replica_hour: float, route_hops: dict[str, int] | None = None,
                values_from=None) -> dict:
        """``values_from``: the written table (a ``traces.runoutput.RequestTable``) to read the
        latencies and waits from, for a tally that did not keep them."""
        total = self.measured
        window_s = duration_s - warmup_s
        batches = sum(d["batches"] for d in deployments.values())
        batched = sum(d["batches"] * d["mean_batch_size"] for d in deployments.values())
        replica_s = sum(d["replica_seconds"] for d in deployments.values())
        cost = replica_s / 3600.0 * price_per_replica_hour
        # on-time accuracy is unknown only when answers came back and none of them can be judged (the
        # bundle has no predictions for the variants that answered); a run that answered nothing was
        # correct on time for no request: 0, not unknown
        ontime_known = self.known > 0 or self.completed == 0
        values = self._distributions(values_from)
        return {
            "requests": total,
            "completed": self.completed,
            "dropped": self.dropped,
            "dropped_by_reason": {str(k): int(self.reasons[k]) for k in sorted(self.reasons)},
            "hit_rate": _ratio(self.hits, total),
            "accuracy": _ratio(self.correct, self.known),
            "ontime_accuracy": _ratio(self.ontime_correct, total) if ontime_known else math.nan,
            "latency_ms": values["latency_ms"],
            "wait_ms": values["wait_ms"],
            "throughput_rps": _ratio(self.completed, window_s),
            "offered_rps": _ratio(total, window_s),
            "mean_batch_size": _ratio(batched, batches),
            "utilization": {name: d["utilization"] for name, d in deployments.items()},
            "cost": {
                "replica_seconds": replica_s,
                "price_per_replica_hour": price_per_replica_hour,
                "total": cost,
                "per_1k_requests": _ratio(cost * 1000.0, total),
            },
            "cascade": self.cascade(route_hops or {}),
            "window_s": [warmup_s, duration_s],
        }


def route_hops_of(requests: pd.DataFrame) -> dict[str, int]:
    """Hops of each route as far as its requests went (for a table that does not say)."""
    out: dict[str, int] = {}
    routes = requests["route"].astype(str) if "route" in requests else None
    if routes is None:
        return out
    for name in requests.columns:
        match = _HOP_DEPLOYMENT.match(name)
        if match:
            reached = routes[requests[name].notna().to_numpy() & (requests[name] != "").to_numpy(dtype=bool)]
            for label in reached.unique():
                out[label] = max(out.get(label, 0), int(match.group(1)) + 1)
    return out


def summarize(requests: pd.DataFrame, *, warmup_s: float, duration_s: float, deployments: dict[str, dict],
              price_per_replica_hour: float, route_hops: dict[str, int] | None = None) -> dict:
    """The summary of a whole table; ``route_hops`` (route label -> hops) defaults to how far its
    requests went."""
    tally = Tally(len(requests))
    tally.add(requests)
    return tally.summary(warmup_s=warmup_s, duration_s=duration_s, deployments=deployments,
                         price_per_replica_hour=price_per_replica_hour,
                         route_hops=route_hops_of(requests) if route_hops is None else route_hops)


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
