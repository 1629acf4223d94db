"""Per-request state of a run, held only while requests are in flight, retired in row groups.

Why: a replayed day of traffic is millions of requests, and a run's memory must not grow with
them. What must exist up front (arrival times, deadlines, samples) lives in compact arrays of
``sim.core.workload.RunState``; the state a request gathers as it is served (route, hop, each hop's
deployment, replica, times and batch size, retries, finish, drop reason) lives here, in ring
columns: request ``i`` sits at slot ``i & mask`` of a capacity that is a power of two and covers
every request from the oldest not yet retired to the newest arrived. When an arrival finds the
ring full (``limit``), ``make_room`` retires the longest prefix of requests that have all ended
(finished or dropped), as one table chunk of consecutive ids handed to every sink (the Parquet
spool, the summary's accumulators); if too few have ended, the ring doubles.

A live log (the real server's, whose context has ``answer_labels``) also records what its runners
and its clock gave: each hop's confidence, each stage's answer (``answers[stage]``, an object ring
column per stage, set as a request leaves the stage) and each request's dispatch lag; its ``pred``
and correctness come from those answers, checked against ``answer_labels``.

The ``requests`` table, one row per arrival: its id, arrival, deadline, sample id and true label
(null when unknown), route label and hops reached; per hop k the deployment, replica, enqueue,
start and finish times, batch size and the hop's confidence on the sample (its variant's, from the
prediction table; the server's runner's own); then retries, finish, latency, whether and why it
was dropped, its prediction and whether it was correct (the variant it exited at), on time, and
measured (arrived at or after the warm-up); a live log ends with ``dispatch_lag_s``. A hop a
request never reached is null in every ``hop{k}_`` column; replica and batch size are also null
where the hop never started service.
"""

from __future__ import annotations

import math
from array import array
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

NAN = math.nan
MIN_CAPACITY = 1 << 15   # slots a log starts with (about 0.3 MB a hop)
_HOP_FIELDS = (("deployment", "q", -1), ("replica", "q", -1), ("enqueue_s", "d", NAN), ("start_s", "d", NAN),
               ("finish_s", "d", NAN), ("batch_size", "q", 0))
_LOG_FIELDS = (("hop", "q", 0), ("retries", "q", 0), ("finish_s", "d", NAN))
_LIVE_FIELDS = (("dispatch_lag_s", "d", NAN),)  # a live log's own: how late its arrival was dispatched


def _column(typecode: str, default, capacity: int) -> array:
    return array(typecode, [default]) * capacity


class HopColumns:
    """Ring columns of one hop; ``confidence`` only where the executor records it live."""

    __slots__ = ("deployment", "replica", "enqueue_s", "start_s", "finish_s", "batch_size", "confidence")

    def __init__(self, capacity: int, live_confidence: bool):
        for name, code, default in _HOP_FIELDS:
            setattr(self, name, _column(code, default, capacity))
        self.confidence = _column("d", NAN, capacity) if live_confidence else None

    def arrays(self):
        """(name, column, default) of every ring column."""
        fields = [(name, getattr(self, name), default) for name, _, default in _HOP_FIELDS]
        if self.confidence is not None:
            fields.append(("confidence", self.confidence, NAN))
        return fields


class TableContext:
    """What turning ring rows into table rows needs besides the rows: names, predictions, labels."""

    def __init__(self, deployment_names: list[str], variants: list[str | None], predictions,
                 warmup_s: float, labels=None, answer_labels: list | None = None, stages=None,
                 tenant_names: tuple[str, ...] = ()):
        """``labels``: true labels in the table's sample order (default: the table's own);
        ``answer_labels``, for a live log: per stage, the labels its runners' answers are checked
        against, in the stage's sample order (None, or missing: unknown); ``stages``, for a
        pipeline: (stage names, each deployment's stage, each stage's prediction table or None)."""
        self.stages = stages
        self.tenant_names = np.array(tenant_names, dtype=object) if tenant_names else None
        if answer_labels is not None:
            count = len(stages[0]) if stages is not None else 1
            answer_labels = (list(answer_labels) + [None] * count)[:count]
        self.answer_labels = answer_labels
        self.names = np.array(list(deployment_names) + [None], dtype=object)  # index -1: no deployment
        self.variants = list(variants)
        self.predictions = predictions
        self.warmup_s = warmup_s
        table = predictions
        self.sample_ids = table.sample_ids if table is not None and table.sample_ids.size else None
        if labels is None and table is not None:
            labels = table.labels
        self.labels = None if labels is None or self.sample_ids is None else np.asarray(labels, dtype=object)
        # outcomes from the prediction tables (a simulation), wherever a stage has one: a pipeline
        # whose first stage is parametric still has its later stages' answers
        tables = stages[2] if stages is not None else (predictions,)
        self.table_outcomes = answer_labels is None and any(t is not None for t in tables)

    def arrow_types(self) -> dict[str, pa.DataType]:
        """Arrow types of the object columns, fixed for every chunk (a chunk of all-null values
        would otherwise be typed ``null``)."""
        def of(values) -> pa.DataType:
            return pa.array(values, from_pandas=True).type if values is not None and len(values) else pa.null()

        types = {"sample_id": of(self.sample_ids), "label": of(self.labels), "route": pa.string(),
                 "drop_reason": pa.string(), **({"tenant": pa.string()} if self.tenant_names is not None else {})}
        tables = self.stages[2] if self.stages is not None else (self.predictions,)
        for k, table in enumerate(tables if self.stages is not None else ()):
            types[f"stage{k}_sample_id"] = of(table.sample_ids) if table is not None else pa.null()
            types[f"stage{k}_deployment"] = pa.string()
        pred, last = pa.null(), tables[-1]  # a pipeline answers with its last stage
        if self.table_outcomes and last is not None:
            for variant in self.variants:
                if variant is not None and variant in last.pred:
                    pred = of(last.pred[variant])
                    break
        if self.answer_labels is not None and self.answer_labels[-1] is not None:
            pred = of(self.answer_labels[-1])  # a runner answers with its task's labels
        types["pred"] = pred
        return types


class RequestLog:
    """Live per-request state in ring columns, retired in order to ``sinks`` (module docstring)."""

    def __init__(self, work, context: TableContext):
        """``work``: the run's ``sim.core.workload.Workload`` (arrivals, deadline classes, samples)."""
        self.n = work.size
        self.work = work
        self.context = context
        self.live = live = context.answer_labels is not None  # module docstring
        capacity = MIN_CAPACITY
        self.capacity, self.mask = capacity, capacity - 1
        self._fields = _LOG_FIELDS + (_LIVE_FIELDS if live else ())
        for name, code, default in self._fields:
            setattr(self, name, _column(code, default, capacity))
        self.route: list = [None] * capacity
        self.drop_reason: list[str | None] = [None] * capacity
        stages = len(context.stages[0]) if context.stages is not None else 1
        self.answers: list[list] = [[None] * capacity for _ in range(stages)] if live else []
        self.hops: list[HopColumns] = []
        self.retired = 0                      # requests below this id are in the sinks
        self.limit = capacity                 # the first id with no slot yet
        self.sinks: list[Callable[[dict], None]] = []  # each gets every chunk (column name -> array)

    def ensure_hops(self, count: int) -> None:
        while len(self.hops) < count:
            self.hops.append(HopColumns(self.capacity, self.live))

    # --- ring upkeep ---------------------------------------------------------------------------
    def _owned(self):
        """(owner, name, column, default) of every numeric ring column."""
        fields = [(self, name, getattr(self, name), default) for name, _, default in self._fields]
        for cols in self.hops:
            fields.extend((cols, name, column, default) for name, column, default in cols.arrays())
        return fields

    def _spans(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The slots of requests [lo, hi) as at most two ranges (the ring may wrap)."""
        if hi <= lo:
            return []
        a, b = lo & self.mask, ((hi - 1) & self.mask) + 1
        return [(a, b)] if a < b else [(a, self.capacity), (0, b)]

    def admit_stretch(self, lo: int, hi: int, route, deployment: int, arrival_times: array) -> None:
        """Requests [lo, hi) (all with a slot) join ``deployment`` on ``route`` at their arrival
        times: what admitting each would write, written for the whole stretch at once."""
        hop0 = self.hops[0]
        first = lo & self.mask
        for a, b in self._spans(lo, hi):
            start = lo + (a - first) % self.capacity   # the request in slot a
            self.route[a:b] = [route] * (b - a)
            hop0.deployment[a:b] = array("q", [deployment]) * (b - a)
            hop0.enqueue_s[a:b] = arrival_times[start:start + b - a]   # both array("d")

    def _take(self, column, spans) -> np.ndarray:
        """A copy of a numeric ring column over ``spans``."""
        values = np.frombuffer(column, dtype=_np_type(column))
        return np.concatenate([values[a:b] for a, b in spans]) if spans else values[:0].copy()

    def _take_list(self, column: list, spans) -> list:
        out: list = []
        for a, b in spans:
            out.extend(column[a:b])
        return out

    def _objects(self) -> list[list]:
        """Every object ring column: route, drop reason, then each stage's answers."""
        return [self.route, self.drop_reason, *self.answers]

    def _open(self, upto: int) -> np.ndarray:
        """The ids in [retired, upto) that have not ended (of those with a slot: below ``limit``)."""
        lo = self.retired
        return np.flatnonzero(np.isnan(self._take(self.finish_s, self._spans(lo, min(upto, self.limit))))) + lo

    def ended_prefix(self, upto: int) -> int:
        """The first id in [retired, upto) that has not ended (``upto`` if all have)."""
        if upto <= self.retired:
            return self.retired
        open_ = self._open(upto)
        return int(open_[0]) if open_.size else upto

    def open_count(self, upto: int) -> int:
        """How many requests in [retired, upto) have not ended."""
        return int(self._open(upto).size)

    def make_room(self, i: int) -> None:
        """Give request ``i`` (the next arrival) a slot: retire what has ended, or grow."""
        while i >= self.limit:
            end = self.ended_prefix(i)
            if end - self.retired >= self.capacity // 4:
                self.retire(end)
            else:
                self._grow(i)

    def _grow(self, upto: int) -> None:
        """Double the ring, moving requests [retired, upto) to their new slots."""
        capacity = self.capacity * 2
        live = np.arange(self.retired, upto, dtype=np.int64)
        old, new = live & self.mask, live & (capacity - 1)
        for owner, name, column, default in self._owned():
            grown = _column(column.typecode, default, capacity)
            np.frombuffer(grown, dtype=_np_type(column))[new] = np.frombuffer(column, dtype=_np_type(column))[old]
            setattr(owner, name, grown)
        moved = []
        for column in self._objects():
            grown = [None] * capacity
            for o, g in zip(old.tolist(), new.tolist()):
                grown[g] = column[o]
            moved.append(grown)
        self.route, self.drop_reason, *self.answers = moved
        self.capacity, self.mask = capacity, capacity - 1
        self.limit = self.retired + capacity

    def retire(self, upto: int) -> None:
        """Hand requests [retired, upto) to the sinks and free their slots."""
        lo = self.retired
        if upto <= lo:
            return
        spans = self._spans(lo, upto)
        chunk = self._rows(lo, upto, spans)
        for sink in self.sinks:
            sink(chunk)
        for _, _, column, default in self._owned():
            values = np.frombuffer(column, dtype=_np_type(column))
            for a, b in spans:
                values[a:b] = default
        for column in self._objects():
            for a, b in spans:
                column[a:b] = [None] * (b - a)
        self.retired = upto
        self.limit = upto + self.capacity

    def end_unfinished(self, end_s: float, reason: str = "unfinished") -> list[int]:
        """Drop every request not yet ended at ``end_s`` (all have arrived); returns their ids."""
        ids = self._open(self.n).tolist()
        for i in ids:
            j = i & self.mask
            self.drop_reason[j] = reason
            self.finish_s[j] = end_s
        return ids

    def retire_all(self) -> None:
        self.retire(self.n)

    def empty_chunk(self) -> dict:
        """A chunk of no rows with every column (for a run without requests)."""
        return self._rows(self.retired, self.retired, [])

    # --- table rows ----------------------------------------------------------------------------
    def _rows(self, lo: int, hi: int, spans) -> dict:
        """Table rows [lo, hi) as a chunk: column name -> array (a DataFrame costs more to build
        than the sinks spend on it)."""
        ctx, n, take = self.context, hi - lo, self._take
        finish = take(self.finish_s, spans)
        reasons = np.array(self._take_list(self.drop_reason, spans) or [], dtype=object)
        dropped = reasons != None  # noqa: E711 (elementwise)
        reasons[~dropped] = ""
        work = self.work
        arrival = work.arrival_s[lo:hi]
        deadline = work.deadline_classes_ms[work.deadline_class[lo:hi]]
        sample = work.sample_index[lo:hi].astype(np.int64)
        latency_ms = np.where(dropped, np.nan, (finish - arrival) * 1000.0)
        routes = np.empty(n, dtype=object)
        routes[:] = self._take_list(self.route, spans)
        codes, uniques = pd.factorize(routes)  # few distinct routes; None -> -1
        route_labels = np.array([r.label for r in uniques] + [""], dtype=object)
        exit_hop = take(self.hop, spans)
        none = np.full(n, None, dtype=object)
        frame = {
            "id": np.arange(lo, hi, dtype=np.int64),
            "arrival_s": arrival,
            "deadline_ms": deadline,
            **({"tenant": ctx.tenant_names[work.tenant[lo:hi]]} if ctx.tenant_names is not None else {}),
            "sample_id": ctx.sample_ids[sample] if ctx.sample_ids is not None else none,
            "label": ctx.labels[sample] if ctx.labels is not None else none,
            "route": route_labels[codes],
            "hops": np.where(codes < 0, 0, exit_hop + 1),
        }
        hop_deps = []
        for k, cols in enumerate(self.hops):
            dep = take(cols.deployment, spans)
            hop_deps.append(dep)
            start = take(cols.start_s, spans)
            idle = np.isnan(start)  # never started service here (or never reached the hop)
            frame[f"hop{k}_deployment"] = ctx.names[dep]
            frame[f"hop{k}_replica"] = pd.arrays.IntegerArray(take(cols.replica, spans),
                                                              idle.copy())
            frame[f"hop{k}_enqueue_s"] = take(cols.enqueue_s, spans)
            frame[f"hop{k}_start_s"] = start
            frame[f"hop{k}_finish_s"] = take(cols.finish_s, spans)
            frame[f"hop{k}_batch_size"] = pd.arrays.IntegerArray(
                take(cols.batch_size, spans), idle)
            frame[f"hop{k}_confidence"] = (take(cols.confidence, spans)
                                           if cols.confidence is not None else self._confidence(dep, sample))
        frame["retries"] = take(self.retries, spans)
        frame["finish_s"] = np.where(dropped, np.nan, finish)
        frame["latency_ms"] = latency_ms
        frame["dropped"] = dropped
        frame["drop_reason"] = reasons
        if ctx.stages is None:
            pred, correct = self._outcomes(hop_deps, exit_hop, sample, dropped)
        else:
            from .stage_table import stage_columns

            pred, correct = stage_columns(self, frame, lo, hi, spans, hop_deps, dropped)
        if self.live:
            from .stage_table import answered_columns

            pred, correct = answered_columns(self, frame, lo, hi, spans)
        frame["pred"] = pred
        frame["correct"] = correct
        frame["hit"] = ~dropped & (latency_ms <= deadline)
        frame["measured"] = arrival >= ctx.warmup_s
        if self.live:
            frame["dispatch_lag_s"] = take(self.dispatch_lag_s, spans)
        return frame

    def _confidence(self, dep: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """Each request's confidence at the hop's variant on its sample (NaN: none known)."""
        ctx = self.context
        out = np.full(dep.size, np.nan)
        table = ctx.predictions
        if table is None or ctx.sample_ids is None:
            return out
        for index, variant in enumerate(ctx.variants):
            if variant is None or variant not in table.confidence:
                continue
            rows = np.flatnonzero(dep == index)
            out[rows] = table.confidence[variant][sample[rows]]
        return out

    def _outcomes(self, hop_deps, exit_hop, sample, dropped):
        """Prediction and correctness of the variant each completed request exited at."""
        ctx, n = self.context, exit_hop.size
        pred = np.full(n, None, dtype=object)
        correct = np.zeros(n, dtype=bool)
        known = np.zeros(n, dtype=bool)
        if not ctx.table_outcomes or not hop_deps:
            return pred, pd.arrays.BooleanArray(correct, ~known)
        exit_dep = np.full(n, -1, dtype=np.int64)
        for k, dep in enumerate(hop_deps):
            at_k = exit_hop == k
            exit_dep[at_k] = dep[at_k]
        table = ctx.predictions
        for index, variant in enumerate(ctx.variants):
            if variant is None or variant not in table.pred:
                continue
            rows = np.flatnonzero((exit_dep == index) & ~dropped)
            samples = sample[rows]
            pred[rows] = table.pred[variant][samples]
            correct[rows] = table.correct[variant][samples]
            known[rows] = True
        return pred, pd.arrays.BooleanArray(correct, ~known)


def _np_type(column: array):
    return np.float64 if column.typecode == "d" else np.int64


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
