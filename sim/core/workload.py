"""The workload of one seeded run: arrival times, each request's deadline and evaluated sample.

Both executors, the simulator and the real server (`measure serve`), draw it here, so the same
scenario and seed give them identical arrivals, deadlines and samples. Random streams are spawned
from the seed in a fixed order: arrivals, deadlines, samples, faults, then two per deployment
(service times, balancer) for the executor's own use.
"""

from __future__ import annotations

import dataclasses
from array import array
from dataclasses import dataclass

import numpy as np

from .records import RequestLog, TableContext
from traces.scenario import Scenario
from traces.stages import stage_index

STREAMS_BEFORE_DEPLOYMENTS = 4


@dataclass(frozen=True)
class Workload:
    arrival_s: np.ndarray       # sorted, in [0, duration_s)
    deadline_class: np.ndarray  # each request's index into deadline_classes_ms (small unsigned ints)
    deadline_classes_ms: np.ndarray
    sample_index: np.ndarray    # index into the prediction table's samples (0 when there are none)
    deployment_rngs: tuple[tuple[np.random.Generator, np.random.Generator], ...]  # (service, balancer)
    fault_rng: np.random.Generator
    stage_sample_index: tuple[np.ndarray, ...] = ()  # a pipeline's later stages: each its own sample
    tenant: np.ndarray | None = None  # each request's tenant (index into scenario.tenants); None: no tenants

    @property
    def size(self) -> int:
        return int(self.arrival_s.size)

    @property
    def deadline_ms(self) -> np.ndarray:
        """Each request's deadline (a new array)."""
        return self.deadline_classes_ms[self.deadline_class]


def make_workload(scenario: Scenario, seed: int, n_samples: int, stage_n_samples: tuple[int, ...] = ()) -> Workload:
    """``n_samples`` is how many evaluated samples requests may draw from (0: none);
    ``stage_n_samples``, as many for each later stage of a pipeline, which draws from streams
    spawned after every other (``sim.engine.startup_rngs`` takes one per deployment before them)."""
    deployments = len(scenario.deployments)
    count = STREAMS_BEFORE_DEPLOYMENTS + 2 * deployments
    seeds = np.random.SeedSequence(seed).spawn(count + deployments + len(stage_n_samples))
    streams = [np.random.default_rng(s) for s in seeds[:count]]
    arrivals_rng, deadline_rng, sample_rng, fault_rng = streams[:4]
    req = scenario.requests
    classes = np.asarray(req.deadline_ms, dtype=np.float64)
    code = _NUMPY[_index_code(len(classes))]
    tenant = None
    if scenario.tenants:  # each tenant's own classes, numbered one tenant after another
        times, tenant = scenario.arrivals.labelled_times_s(scenario.duration_s, arrivals_rng)
        n = times.size
        deadline_class = np.zeros(n, dtype=code)
        offset = 0
        for k, t in enumerate(scenario.tenants):
            mine = np.flatnonzero(tenant == k)
            if len(t.deadline_ms) > 1:
                deadline_class[mine] = offset + deadline_rng.choice(len(t.deadline_ms), size=mine.size, p=t.weights)
            else:
                deadline_class[mine] = offset
            offset += len(t.deadline_ms)
        tenant = tenant.astype(np.uint8)
    else:
        times = np.asarray(scenario.arrivals.times_s(scenario.duration_s, arrivals_rng), dtype=np.float64)
        n = times.size
        if len(classes) == 1:
            deadline_class = np.zeros(n, dtype=code)
        else:
            deadline_class = deadline_rng.choice(len(classes), size=n, p=req.weights).astype(code)
    code = _NUMPY[_index_code(n_samples)]
    sample_index = (sample_rng.integers(0, n_samples, size=n).astype(code) if n_samples
                    else np.zeros(n, dtype=code))
    rest = streams[STREAMS_BEFORE_DEPLOYMENTS:]
    stage_samples = []
    for k, count_k in enumerate(stage_n_samples):
        rng = np.random.default_rng(seeds[count + deployments + k])
        code = _NUMPY[_index_code(count_k)]
        stage_samples.append(rng.integers(0, count_k, size=n).astype(code) if count_k else np.zeros(n, dtype=code))
    return Workload(times, deadline_class, classes, sample_index, tuple(zip(rest[0::2], rest[1::2])), fault_rng,
                    tuple(stage_samples), tenant)


def _compact(values: np.ndarray, typecode: str) -> array:
    """An ``array.array`` holding ``values`` (indexing it gives Python numbers, as a list does, at
    8 bytes or fewer an item instead of a list's 32)."""
    out = array(typecode)
    out.frombytes(memoryview(np.ascontiguousarray(values, dtype=_NUMPY[typecode])).cast("B"))
    return out


_NUMPY = {"d": np.float64, "q": np.int64, "B": np.uint8, "H": np.uint16, "I": np.uint32}


def _index_code(count: int) -> str:
    """The smallest array typecode that holds indices below ``count``."""
    return "B" if count <= 1 << 8 else "H" if count <= 1 << 16 else "I" if count <= 1 << 32 else "q"


class _ByClass:
    """Per-request values stored as a class index each: ``values[codes[i]]`` (cold paths only;
    the simulator's arrival reads the two arrays itself)."""

    __slots__ = ("codes", "values")

    def __init__(self, codes: array, values: list[float]):
        self.codes, self.values = codes, values

    def __getitem__(self, i: int) -> float:
        return self.values[self.codes[i]]

    def __len__(self) -> int:
        return len(self.codes)


class RunState:
    """What both executors keep per run and per request, set up from the scenario's workload.

    ``predictions`` (None when the table is empty), the workload ``work``, ``arrival_times``,
    ``arrivals_seen`` (advanced by the executor), the request ``log`` (``sim.core.records``), and per
    request, as compact ``array.array``s that index like lists on the hot paths,
    ``deadline_class`` (into ``deadline_classes_ms``; ``deadline_ms[i]`` reads through it),
    ``sample`` (index into the prediction table) and the absolute ``deadlines_s``; ``work`` views
    the same memory, so each exists once. The simulator and the real server both subclass it, and
    the policies' ``policies.view.LiveView`` reads the same names from either.
    """

    def __init__(self, scenario: Scenario, seed: int, predictions, *, live_confidence: bool = False,
                 labels=None, stage_labels: tuple = (), stage_predictions: tuple = ()):
        """``stage_predictions``: a pipeline's prediction table per stage (the first is ``predictions``);
        ``live_confidence``: the executor reports its runners' confidences and answers, which the
        log records and checks against ``stage_labels`` (per stage; default ``labels`` for the first)."""
        def usable(table):
            return table if table is not None and table.sample_ids.size else None

        self.predictions = usable(predictions)
        n_samples = self.predictions.sample_ids.size if self.predictions else 0
        later = tuple(usable(t) for t in stage_predictions[1:])
        work = make_workload(scenario, seed, n_samples, tuple(t.sample_ids.size if t else 0 for t in later))
        self.arrival_times = _compact(work.arrival_s, "d")
        self.deadline_class = _compact(work.deadline_class, _index_code(len(work.deadline_classes_ms)))
        self.deadline_classes_ms: list[float] = work.deadline_classes_ms.tolist()
        self.deadline_ms = _ByClass(self.deadline_class, self.deadline_classes_ms)
        self.sample = _compact(work.sample_index, _index_code(n_samples))
        self.deadlines_s = _compact(work.arrival_s + work.deadline_ms / 1000.0, "d")
        self.work = work = dataclasses.replace(
            work, arrival_s=np.frombuffer(self.arrival_times, dtype=np.float64),
            deadline_class=np.frombuffer(self.deadline_class, dtype=_NUMPY[self.deadline_class.typecode]),
            sample_index=np.frombuffer(self.sample, dtype=_NUMPY[self.sample.typecode]))
        self.stage_predictions = (self.predictions,) + later  # per stage; one stage without [[stages]]
        self.stage_samples = [self.sample] + [_compact(a, _index_code(t.sample_ids.size if t else 0))
                                              for a, t in zip(work.stage_sample_index, later)]
        self.arrivals_seen = 0
        self.tenant_names: tuple[str, ...] = tuple(t.name for t in scenario.tenants)
        self.tenant = _compact(work.tenant, "B") if work.tenant is not None else None
        stage_of = stage_index(scenario.stages, [d.name for d in scenario.deployments])
        context = TableContext([d.name for d in scenario.deployments], [d.variant for d in scenario.deployments],
                               self.predictions, scenario.warmup_s, labels=labels,
                               answer_labels=(list(stage_labels) or [labels]) if live_confidence else None,
                               stages=([s.name for s in scenario.stages], [stage_of[d.name] for d in scenario.deployments],
                                       self.stage_predictions) if scenario.stages else None,
                               tenant_names=self.tenant_names)
        self.log = RequestLog(work, context)
