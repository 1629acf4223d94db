"""Service times as a server served them: a trace bundle from a run output's batches.

A profile times each batch alone; a server runs it among everything else the machine does (the
front end's threads, a neighbour on the same core, the VM's slower minutes). The batches that a
run output records (each hop's deployment, replica, start, finish and size) are service samples
too, taken while serving. ``served_bundle`` turns them into a bundle the simulator can replay:
fed a run's own service times, what error the simulator has left is its model of queueing,
batching and dispatch alone, apart from how well a profile predicts the machine's speed
(``bench/fidelity.py`` reports both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .bundle import TraceBundle
from .runoutput import read_run

_HOP_FIELDS = ("deployment", "replica", "start_s", "finish_s", "batch_size")


def served_batches(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per batch served, over every hop: deployment, replica, start_s, finish_s,
    batch_size, service_ms and idle_ms (since the same replica's previous batch finished; NaN
    for its first)."""
    parts, hop = [], 0
    while f"hop{hop}_deployment" in requests:
        columns = {f"hop{hop}_{f}": f for f in _HOP_FIELDS}
        part = requests[list(columns)].rename(columns=columns)
        parts.append(part[part["batch_size"].fillna(0) > 0].dropna(subset=["start_s", "finish_s"]))
        hop += 1
    if not parts:
        return pd.DataFrame(columns=[*_HOP_FIELDS, "service_ms", "idle_ms"])
    batches = (pd.concat(parts, ignore_index=True).drop_duplicates(["deployment", "replica", "start_s"])
               .sort_values(["deployment", "replica", "start_s"], kind="stable").reset_index(drop=True))
    batches["service_ms"] = (batches["finish_s"] - batches["start_s"]) * 1000.0
    previous = batches.groupby(["deployment", "replica"])["finish_s"].shift(1)
    batches["idle_ms"] = (batches["start_s"] - previous) * 1000.0
    return batches


def served_bundle(run_dir: str | Path, base: TraceBundle, *, min_batches: int = 5) -> TraceBundle:
    """``base`` with each served variant's timings replaced by the batches of the run in ``run_dir``.

    A batch size the run formed fewer than ``min_batches`` times keeps the base bundle's rows (so
    the bundle still covers every size a scenario may form), without start times. Served batches
    keep theirs (seconds from the run's start): the run's own slow spells are measured from them,
    and a deployment with ``service_order = "timeline"`` replays them in time. Predictions are the
    base bundle's. Runs timed after idleness (``idle_ms``) are left out: a served time already is
    what it was after whatever idleness preceded it.
    """
    config, requests, _ = read_run(run_dir)
    variants = {d["name"]: d["variant"] for d in config["deployments"] if d.get("variant")}
    batches = served_batches(requests)
    batches = batches[batches["deployment"].isin(list(variants))]
    batches = batches.assign(variant=batches["deployment"].map(variants))
    rows = []
    for variant, service in base.service.groupby("variant", sort=False):
        if "idle_ms" in service:  # served times already are what they were after whatever idleness
            idle = service["idle_ms"].fillna(0.0)
            service = service[idle == idle.min()].drop(columns=["idle_ms"])
        served = batches[batches["variant"] == variant]
        counts = served["batch_size"].value_counts()
        enough = {int(b) for b, n in counts.items() if n >= min_batches}
        # kept profile rows lose their start times: they are no part of the run's timeline
        rows.append(service[~service["batch_size"].isin(enough)].assign(source="profile", started_at_s=np.nan))
        if enough:
            like = service.iloc[0]
            served = served[served["batch_size"].isin(enough)]
            timed = pd.DataFrame({"batch_size": served["batch_size"].astype(np.int64).to_numpy(),
                                  "latency_ms": served["service_ms"].to_numpy(),
                                  "started_at_s": served["start_s"].to_numpy(), "source": "served"})
            for column in service.columns.difference(timed.columns):  # variant, model, threads...
                timed[column] = like[column]
            rows.append(timed[[*service.columns.drop(["source", "started_at_s"], errors="ignore"), "started_at_s",
                               "source"]])
    service = pd.concat(rows, ignore_index=True)
    meta = {**base.meta, "name": f"{base.name} as served", "served_from": str(run_dir),
            "description": f"{base.meta.get('description', '')}; timings replaced by the batches served in {run_dir}"}
    return TraceBundle(meta=meta, service=service, predictions=base.predictions)
