"""Bounds every policy is reported against, on the same arrivals, deadlines, samples and seed.

- ``oracle_static``: the best fixed configuration in hindsight. Every single deployment and every
  two-stage cascade (a faster deployment, then a slower one, at each threshold of a grid) is
  simulated on the same workload; the one with the highest on-time accuracy is kept.
- ``isolation_bound``: each request alone in the system (no queueing, no batching): it is served by
  the option with the highest expected accuracy whose latency on its own sample (median batch-1
  service times; a cascade's second stage only if the sample does not exit) meets its deadline;
  none fits, it misses. No policy that shares replicas can beat its on-time accuracy by routing.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from policies.options import cascade_pairs
from policies.planner import DEFAULT_TAUS
from sim.core.prepare import Prepared
from traces.runoutput import RequestSpool
from traces.scenario import PolicyConfig
from traces.summary import summarize
from sim.core.workload import make_workload


def _options(prepared: Prepared, taus) -> list[dict]:
    """Singles, then cascades of a faster then a slower deployment, as static-policy parameters."""
    deps = [d.name for d in prepared.scenario.deployments]
    speed = {d: prepared.profiles[d].percentile_ms(1, 50) for d in deps}
    table = prepared.predictions
    variant = {d.name: d.variant for d in prepared.scenario.deployments}
    options = [{"deployment": d} for d in deps]
    if table is not None:
        for fast, slow in cascade_pairs(deps, speed, lambda d: variant[d] in table.pred):
            options += [{"cascade": [fast, slow], "threshold": float(t)} for t in taus]
    return options


def oracle_static(prepared: Prepared, seed: int, taus=DEFAULT_TAUS):
    from .runner import run_once

    best, tried = None, []
    for params in _options(prepared, taus):
        scenario = dataclasses.replace(prepared.scenario, policy=PolicyConfig("static", 0.0, params), seed=seed)
        config, requests, summary = run_once(dataclasses.replace(prepared, scenario=scenario), seed)
        label = summary["route"] = str(requests.column("route")[0]) if len(requests) else str(params)
        tried.append({"route": label, "ontime_accuracy": summary["ontime_accuracy"], "hit_rate": summary["hit_rate"]})
        key = (_num(summary["ontime_accuracy"]), _num(summary["hit_rate"]))
        if best is None or key > best[0]:
            best = (key, config, requests, summary)
    _, config, requests, summary = best
    summary["policy"] = {"name": "oracle-static", "choice": summary.pop("route"), "candidates": tried}
    config["policy"] = {"name": "oracle-static", "choice": summary["policy"]["choice"]}
    return config, requests, summary


def _num(value) -> float:
    return -1.0 if value is None or value != value else float(value)


def isolation_bound(prepared: Prepared, seed: int, taus=DEFAULT_TAUS):
    scenario, table = prepared.scenario, prepared.predictions
    work = make_workload(scenario, seed, table.sample_ids.size if table is not None else 0)
    variant = {d.name: d.variant for d in scenario.deployments}
    alone_ms = {d: prepared.profiles[d].percentile_ms(1, 50) for d in variant}
    n = work.size
    candidates = []  # (expected accuracy, label, latency per request, correct per request, pred per request)
    for params in _options(prepared, taus):
        if "deployment" in params:
            d = params["deployment"]
            if table is None or variant[d] not in table.pred:
                acc, correct, pred = np.nan, np.zeros(n, bool), np.full(n, None, object)
            else:
                acc = table.accuracy(variant[d])
                correct = table.correct[variant[d]][work.sample_index]
                pred = table.pred[variant[d]][work.sample_index]
            candidates.append((acc, d, np.full(n, alone_ms[d]), correct, pred))
        else:
            fast, slow = params["cascade"]
            vf, vs, tau = variant[fast], variant[slow], params["threshold"]
            exits_all = table.confidence[vf] >= tau
            acc = float(np.where(exits_all, table.correct[vf], table.correct[vs]).mean())
            exits = exits_all[work.sample_index]
            latency = alone_ms[fast] + np.where(exits, 0.0, alone_ms[slow])
            correct = np.where(exits, table.correct[vf][work.sample_index], table.correct[vs][work.sample_index])
            pred = np.where(exits, table.pred[vf][work.sample_index], table.pred[vs][work.sample_index])
            candidates.append((acc, f"{fast}@{tau:g}>{slow}", latency, correct, pred))
    candidates.sort(key=lambda c: -(c[0] if c[0] == c[0] else -1.0))
    chosen = np.full(n, -1)
    for index, (_, _, latency, _, _) in enumerate(candidates):
        chosen[(chosen < 0) & (latency <= work.deadline_ms)] = index
    fits = chosen >= 0
    pick = np.where(fits, chosen, 0)
    latency = np.array([candidates[c][2][i] for i, c in enumerate(pick)])
    correct = np.array([candidates[c][3][i] for i, c in enumerate(pick)], dtype=bool)
    pred = np.array([candidates[c][4][i] for i, c in enumerate(pick)], dtype=object)
    labels = np.array([c[1] for c in candidates], dtype=object)
    requests = pd.DataFrame({
        "id": np.arange(n), "arrival_s": work.arrival_s, "deadline_ms": work.deadline_ms,
        "sample_id": table.sample_ids[work.sample_index] if table is not None else None,
        "label": table.labels[work.sample_index] if table is not None and table.labels is not None else None,
        "route": np.where(fits, labels[pick], ""), "hop0_start_s": work.arrival_s,
        "finish_s": np.where(fits, work.arrival_s + latency / 1000.0, np.nan),
        "latency_ms": np.where(fits, latency, np.nan), "dropped": ~fits,
        "drop_reason": np.where(fits, "", "no_option_fits"), "pred": np.where(fits, pred, None),
        "correct": pd.array(np.where(fits, correct, False), dtype="boolean"), "hit": fits,
        "measured": work.arrival_s >= scenario.warmup_s})
    if table is None:
        requests["correct"] = pd.array([pd.NA] * n, dtype="boolean")
    summary = summarize(requests, warmup_s=scenario.warmup_s, duration_s=scenario.duration_s, deployments={},
                        price_per_replica_hour=scenario.price_per_replica_hour)
    summary.update({"seed": seed, "policy": {"name": "isolation-bound"}})
    config = {**dataclasses.replace(scenario, seed=seed).resolved(), "policy": {"name": "isolation-bound"}}
    spool = RequestSpool()
    spool.write(requests)
    return config, spool.close(requests), summary
