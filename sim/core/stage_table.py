"""The requests table's outcome columns per stage (``sim.core.records`` calls these).

A pipeline's columns (a scenario with ``[[stages]]``): each stage's sample, the deployment a
request left it from, the time spent in it, and whether that deployment was right, from the
bundle's prediction tables. A live log's outcomes (the real server's) come instead from the
answers its runners gave, per stage, checked against the labels the server was given."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .records import RequestLog


def stage_columns(log: "RequestLog", frame: dict, lo: int, hi: int, spans, hop_deps, dropped):
    """A pipeline's columns: each hop's ``hop{k}_stage``, and per stage s: ``stage{s}_sample_id``, the deployment the request left
    the stage from (``stage{s}_deployment``), the time it spent there (``stage{s}_latency_ms``,
    from its arrival for the first stage, so the stages add up to the latency) and whether that
    deployment was right (``stage{s}_correct``); ``pred`` is the last stage's answer and
    ``correct`` that every stage was right (null where some stage is not known)."""
    ctx, n = log.context, hi - lo
    names, stage_of, tables = ctx.stages
    stage_of = np.array(list(stage_of) + [-1], dtype=np.int64)  # index -1: no deployment
    finishes = [log._take(cols.finish_s, spans) for cols in log.hops]
    enqueues = [log._take(cols.enqueue_s, spans) for cols in log.hops]
    arrival = log.work.arrival_s[lo:hi]
    stage_names = np.array(list(names) + [None], dtype=object)  # index -1: a hop not reached
    for k, dep in enumerate(hop_deps):
        frame[f"hop{k}_stage"] = stage_names[stage_of[dep]]
    all_known, all_right = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    pred = np.full(n, None, dtype=object)
    for s_index, table in enumerate(tables):
        samples = (log.work.sample_index if s_index == 0 else log.work.stage_sample_index[s_index - 1])
        sample = samples[lo:hi].astype(np.int64)
        exit_dep = np.full(n, -1, dtype=np.int64)
        entry, leave = np.full(n, np.nan), np.full(n, np.nan)
        for k, dep in enumerate(hop_deps):
            here = stage_of[dep] == s_index
            done = here & ~np.isnan(finishes[k])
            exit_dep[done] = dep[done]
            leave[done] = finishes[k][done]
            first = here & np.isnan(entry)
            entry[first] = enqueues[k][first]
        if s_index == 0:
            entry = arrival.copy()
        prefix = f"stage{s_index}_"
        frame[prefix + "sample_id"] = (table.sample_ids[sample] if table is not None
                                       else np.full(n, None, dtype=object))
        frame[prefix + "deployment"] = ctx.names[exit_dep]
        frame[prefix + "latency_ms"] = np.where(dropped, np.nan, (leave - entry) * 1000.0)
        right, known = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        stage_pred = np.full(n, None, dtype=object)
        if ctx.table_outcomes and table is not None:
            for index, variant in enumerate(ctx.variants):
                if variant is None or variant not in table.pred:
                    continue
                rows = np.flatnonzero((exit_dep == index) & ~dropped)
                stage_pred[rows] = table.pred[variant][sample[rows]]
                right[rows] = table.correct[variant][sample[rows]]
                known[rows] = True
        frame[prefix + "correct"] = pd.arrays.BooleanArray(right, ~known)
        all_known &= known
        all_right &= right
        pred = stage_pred
    return pred, pd.arrays.BooleanArray(all_right & all_known, ~all_known)


def answered_columns(log: "RequestLog", frame: dict, lo: int, hi: int, spans):
    """A live log's outcomes, from its runners' answers: ``pred`` is the last stage's, a
    pipeline's ``stage{s}_correct`` each stage's answer against its label, and ``correct`` that
    every stage was right (null where an answer or the labels are unknown)."""
    n, ctx = hi - lo, log.context
    all_right, all_known = np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    pred = np.full(n, None, dtype=object)
    samples = (log.work.sample_index, *log.work.stage_sample_index)  # each stage's, by request
    for stage, (column, labels) in enumerate(zip(log.answers, ctx.answer_labels)):
        pred = np.fromiter(log._take_list(column, spans), dtype=object, count=n)  # an answer may be a sequence
        known = np.array([p is not None for p in pred], dtype=bool) & (labels is not None)
        right = np.zeros(n, dtype=bool)
        for row in np.flatnonzero(known).tolist():
            right[row] = bool(pred[row] == labels[samples[stage][lo + row]])
        if ctx.stages is not None:
            frame[f"stage{stage}_correct"] = pd.arrays.BooleanArray(right, ~known)
        all_right &= right
        all_known &= known
    return pred, pd.arrays.BooleanArray(all_right & all_known, ~all_known)
