"""Autoscaling, cold starts and the timeline: the core's periodic look at every deployment.

Every deployment is watched on a tick: its autoscaler's (``traces.autoscaling``: HPA's sync
period, Ray Serve's metrics interval, Knative's 2 s, INFaaS's 1 s), or once a second when it has
none. At each tick the watch builds one ``Observation`` (replicas provisioned and ready, requests
waiting and in service, the rate of requests that joined its queues since the last tick), asks
the autoscaler how many replicas it wants and resizes the deployment to that, then writes one
row of the run's timeline. A replica the resize adds serves only after its start-up time (the
executor's business: a draw from the bundle's ``startup`` table in the simulator, the real model
loading on the server); the deployment keeps each cold start's interval, so the summary can count
the misses that happened during one. Both executors run this code on their own timers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .autoscalers import Observation, make_autoscaler

if TYPE_CHECKING:
    from .deployment import Deployment
    from .serving import ServingCore

TIMELINE_COLUMNS = ("time_s", "deployment", "replicas", "ready_replicas", "queue_length", "in_flight",
                    "arrival_rate_rps")
UNSCALED_TICK_S = 1.0  # how often the timeline samples a deployment without an autoscaler


class Watch:
    """One deployment's ticks: a decision of its autoscaler (if any), then a timeline row."""

    def __init__(self, core: "ServingCore", dep: "Deployment"):
        self.core, self.dep = core, dep
        config = dep.config.autoscaling
        self.autoscaler = make_autoscaler(config) if config is not None else None
        self.tick_s = config.tick_s if config is not None else UNSCALED_TICK_S
        profile = core.profiles.get(dep.name)  # (a caller may give no profile for a parametric service)
        self.capacity_rps = (profile.throughput_rps(min(dep.max_batch_size, profile.max_batch_size))
                             if profile is not None else math.nan)
        self._enqueued, self._last_s = 0, 0.0
        tenant = getattr(config, "tenant", None)  # HPA on one tenant's waiting requests
        self._tenant = core.tenant_names.index(tenant) if tenant is not None else None

    def start(self) -> None:
        self._due_s = self.tick_s  # ticks keep to their grid, however late a real timer fires
        if self.tick_s < self.core.duration_s:
            self.core.executor.call_at(self._due_s, self.tick)

    def tick(self, _event: object = None) -> None:
        core, dep = self.core, self.dep
        now = core.executor.now()
        enqueued = dep.enqueued
        rate = (enqueued - self._enqueued) / (now - self._last_s) if now > self._last_s else 0.0
        self._enqueued, self._last_s = enqueued, now
        if self.autoscaler is not None:
            waiting, _, ready = dep.load()
            if self._tenant is not None:
                tenant_of, mine = core.tenant, self._tenant
                waiting = sum(1 for b in dep.batchers for r in b.queue.requests() if tenant_of[r] == mine)
            obs = Observation(now, dep.provisioned, ready, waiting, dep.in_flight, rate, self.capacity_rps)
            desired = self.autoscaler.desired(obs)
            if desired != dep.provisioned:
                dep.set_replicas(desired, now)
        waiting, _, ready = dep.load()
        core.timeline.append((now, dep.name, dep.provisioned, ready, waiting, dep.in_flight, rate))
        self._due_s += self.tick_s
        if self._due_s < core.duration_s:
            core.executor.call_at(self._due_s, self.tick)


def timeline_frame(rows: list[tuple]) -> pd.DataFrame:
    """The ``timeline.parquet`` table: one row per deployment per tick, in time order."""
    frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS))
    for column in ("replicas", "ready_replicas", "queue_length", "in_flight"):
        frame[column] = frame[column].astype(np.int64)
    for column in ("time_s", "arrival_rate_rps"):
        frame[column] = frame[column].astype(np.float64)
    frame["deployment"] = frame["deployment"].astype(object)
    return frame.sort_values(["time_s", "deployment"], kind="stable").reset_index(drop=True)


def cold_start_stats(dep: "Deployment", requests, end_s: float) -> dict:
    """What a deployment's cold starts cost: how many, their seconds, the replica-seconds spent
    idle, and the measured requests that missed their deadline after joining its queue while one
    of its replicas was starting (``requests``: the run's table, or anything with ``to_pandas``)."""
    intervals = [(start, ready if not math.isnan(ready) else end_s) for start, ready in dep.cold_starts]
    stats = dep.stats(end_s)
    out = {"cold_starts": len(intervals),
           "cold_start_seconds": float(sum(ready - start for start, ready in intervals)),
           "idle_replica_seconds": max(0.0, stats["replica_seconds"] - stats["busy_seconds"]),
           "misses_during_cold_start": 0}
    if not intervals:
        return out
    frame = requests if isinstance(requests, pd.DataFrame) else requests.to_pandas()
    missed = (frame["measured"].to_numpy(dtype=bool) & ~frame["hit"].to_numpy(dtype=bool))
    during = np.zeros(len(frame), dtype=bool)
    k = 0
    while f"hop{k}_deployment" in frame:
        at = (frame[f"hop{k}_deployment"] == dep.name).to_numpy(dtype=bool)
        enqueue = frame[f"hop{k}_enqueue_s"].to_numpy(dtype=float)
        for start, ready in intervals:
            during |= at & (enqueue >= start) & (enqueue < ready)
        k += 1
    out["misses_during_cold_start"] = int((missed & during).sum())
    return out
