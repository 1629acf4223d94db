"""The workload of one seeded run: arrival times, each request's deadline and evaluated sample.

Both executors, the simulator and the real server (`measure serve`), draw it here, so the same
scenario and seed give them identical arrivals, deadlines and samples. Random streams are spawned
from the seed in a fixed order: arrivals, deadlines, samples, faults, then two per deployment
(service times, balancer) for the executor's own use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import RequestLog
from .scenario import Scenario

STREAMS_BEFORE_DEPLOYMENTS = 4


@dataclass(frozen=True)
class Workload:
    arrival_s: np.ndarray       # sorted, in [0, duration_s)
    deadline_ms: np.ndarray
    sample_index: np.ndarray    # index into the prediction table's samples (0 when there are none)
    deployment_rngs: tuple[tuple[np.random.Generator, np.random.Generator], ...]  # (service, balancer)
    fault_rng: np.random.Generator

    @property
    def size(self) -> int:
        return int(self.arrival_s.size)


def make_workload(scenario: Scenario, seed: int, n_samples: int) -> Workload:
    """``n_samples`` is how many evaluated samples requests may draw from (0: none)."""
    count = STREAMS_BEFORE_DEPLOYMENTS + 2 * len(scenario.deployments)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]
    arrivals_rng, deadline_rng, sample_rng, fault_rng = streams[:4]
    times = np.asarray(scenario.arrivals.times_s(scenario.duration_s, arrivals_rng), dtype=np.float64)
    n = times.size
    req = scenario.requests
    if len(req.deadline_ms) == 1:
        deadline_ms = np.full(n, req.deadline_ms[0])
    else:
        deadline_ms = np.asarray(req.deadline_ms)[deadline_rng.choice(len(req.deadline_ms), size=n, p=req.weights)]
    sample_index = sample_rng.integers(0, n_samples, size=n) if n_samples else np.zeros(n, dtype=np.int64)
    rest = streams[STREAMS_BEFORE_DEPLOYMENTS:]
    return Workload(times, deadline_ms, sample_index, tuple(zip(rest[0::2], rest[1::2])), fault_rng)


class RunState:
    """What both executors keep per run and per request, set up from the scenario's workload.

    ``predictions`` (None when the table is empty), the workload ``work``, ``arrival_times``,
    ``arrivals_seen`` (advanced by the executor), the request ``log``, and per request, as Python
    lists for the hot paths, ``deadline_ms``, ``sample`` (index into the prediction table) and the
    absolute ``deadlines_s``. The simulator and the real server both subclass it, and the policies'
    ``policies.view.LiveView`` reads the same names from either.
    """

    def __init__(self, scenario: Scenario, seed: int, predictions):
        self.predictions = predictions if predictions is not None and predictions.sample_ids.size else None
        self.work = make_workload(scenario, seed, self.predictions.sample_ids.size if self.predictions else 0)
        work = self.work
        self.arrival_times: list[float] = work.arrival_s.tolist()
        self.arrivals_seen = 0
        self.log = RequestLog(work.arrival_s, work.deadline_ms, work.sample_index)
        self.deadline_ms: list[float] = work.deadline_ms.tolist()
        self.sample: list[int] = work.sample_index.tolist()
        self.deadlines_s: list[float] = (work.arrival_s + work.deadline_ms / 1000.0).tolist()
