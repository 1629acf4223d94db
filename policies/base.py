"""The policy interface: what a policy decides, and the read-only view it decides from.

A policy answers two questions. ``route(request, view)`` is called once per arrival and returns a
``Route`` (an ordered list of hops; a hop with a confidence threshold lets a confident request exit
there, which makes a cascade) or a ``Reject``. ``plan(view)``, called every ``plan_interval_s``
when the scenario sets one, may return ``PlanAction``s that resize a deployment or retune its
batcher. Routes should be built once (in ``setup`` or ``plan``) and reused: the engine caches what
it derives from a route by the route object's identity, so a per-request decision stays a lookup.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, Sequence

if TYPE_CHECKING:
    from traces.profiles import LatencyProfile, PredictionTable


@dataclass(frozen=True, slots=True)
class Hop:
    """One hop of a route. With a ``threshold``, a request whose prediction here has
    ``confidence >= threshold`` leaves here (it ends, or goes on to a pipeline's next stage);
    without one (the last hop of its stage), every request leaves here."""

    deployment: str
    threshold: float | None = None


@dataclass(frozen=True, eq=False)
class Route:
    """An ordered list of hops. Compared by identity: build it once, return it many times."""

    hops: tuple[Hop, ...]

    @property
    def label(self) -> str:
        parts = [h.deployment + (f"@{h.threshold:g}" if h.threshold is not None else "") for h in self.hops]
        return ">".join(parts)

    @classmethod
    def single(cls, deployment: str) -> "Route":
        return cls((Hop(deployment),))

    @classmethod
    def pipeline(cls, stages: Sequence["Route"]) -> "Route":
        """One route through a pipeline: each stage's own route (one deployment, or a cascade), in
        stage order. A request that leaves a stage (its last hop, or a confident exit) goes on to
        the next stage's first hop; it ends after the last stage."""
        return cls(tuple(hop for stage in stages for hop in stage.hops))

    @classmethod
    def cascade(cls, deployments: Sequence[str], thresholds: Sequence[float]) -> "Route":
        if len(thresholds) != len(deployments) - 1:
            raise ValueError("a cascade of n deployments needs n - 1 thresholds")
        hops = [Hop(d, float(t)) for d, t in zip(deployments, thresholds)]
        return cls(tuple(hops) + (Hop(deployments[-1]),))


def repeated_deployment(deployments: Sequence[str]) -> str | None:
    """The first deployment a route visits twice, or None. A route must not: a request would meet
    the same model (and the same confidence) again, and its hops share one deployment's record."""
    seen: set[str] = set()
    for name in deployments:
        if name in seen:
            return name
        seen.add(name)
    return None


def check_route(route: Route, policy_name: str) -> None:
    """Refuse a route no executor can run; both executors call it when they first see a route."""
    from traces.errors import InputError

    twice = repeated_deployment([hop.deployment for hop in route.hops])
    if twice is not None:
        raise InputError(f"policy {policy_name!r}", f"route {route.label} visits deployment {twice!r} twice; "
                         "each stage of a cascade must be a different deployment")


@dataclass(frozen=True, eq=False)
class Reject:
    """Refuse a request at arrival; ``reason`` is recorded as its drop reason."""

    reason: str = "rejected"


@dataclass(frozen=True)
class PlanAction:
    """A change to one deployment; fields left None stay as they are."""

    deployment: str
    replicas: int | None = None
    max_batch_size: int | None = None
    batch_wait_timeout_ms: float | None = None


def check_plan_action(action: PlanAction, where: str, max_measured_batch: int | None) -> None:
    """Refuse a plan that no executor could apply (``max_measured_batch`` None: no limit)."""
    from traces.errors import InputError

    if action.max_batch_size is not None:
        limit = max_measured_batch if max_measured_batch is not None else action.max_batch_size
        if not 1 <= action.max_batch_size <= limit:
            raise InputError(where, f"max_batch_size must be in 1..{limit} (the measured sizes), "
                             f"got {action.max_batch_size}")
    if action.batch_wait_timeout_ms is not None and not action.batch_wait_timeout_ms >= 0:
        raise InputError(where, f"batch_wait_timeout_ms must be >= 0, got {action.batch_wait_timeout_ms}")
    if action.replicas is not None and action.replicas < 0:
        raise InputError(where, f"replicas must be >= 0, got {action.replicas}")


class Request:
    """What a policy knows of an arriving request."""

    __slots__ = ("id", "arrival_s", "deadline_ms", "sample_index", "tenant")

    def __init__(self, id: int, arrival_s: float, deadline_ms: float, sample_index: int, tenant: str | None = None):
        self.id = id
        self.arrival_s = arrival_s
        self.deadline_ms = deadline_ms
        self.sample_index = sample_index
        self.tenant = tenant  # the tenant's name in a scenario with [[tenants]], else None


class SystemView(Protocol):
    """Read-only state of the serving system, as the engine exposes it to policies."""

    @property
    def now_s(self) -> float: ...
    @property
    def deployments(self) -> tuple[str, ...]: ...
    @property
    def predictions(self) -> "PredictionTable | None": ...
    @property
    def stages(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(name, deployments) of every stage of a pipeline, in order (one stage without [[stages]])."""
    def stage_predictions(self, stage: int) -> "PredictionTable | None": ...
    def variant(self, deployment: str) -> str | None: ...
    def replicas(self, deployment: str) -> int: ...
    def busy_replicas(self, deployment: str) -> int: ...
    def queue_length(self, deployment: str) -> int: ...
    def load(self, deployment: str) -> tuple[int, int, int]:
        """(waiting requests, busy replicas, replicas) in one call, for per-request predictions."""
    def max_batch_size(self, deployment: str) -> int: ...
    def batch_wait_timeout_ms(self, deployment: str) -> float: ...
    def arrival_rate_rps(self, window_s: float = 1.0) -> float: ...
    def recent_batch_latency_ms(self, deployment: str, q: float = 95.0, window_s: float = 5.0) -> float:
        """Observed q-th percentile batch service time over the last ``window_s`` (NaN if none)."""
    def last_service_ms(self, deployment: str) -> float:
        """Service time of the deployment's most recently finished batch (NaN before the first)."""
    def latency_profile(self, deployment: str) -> "LatencyProfile": ...
    def accuracy(self, deployment: str) -> float: ...


class Policy(abc.ABC):
    """Base class. Subclasses take their scenario parameters as keyword arguments to ``__init__``
    (so the registry can name an unknown one), set ``name``, and implement ``route``."""

    name: ClassVar[str] = ""
    needs_plan_interval: ClassVar[bool] = False  # True: it acts only in ``plan``, so a run must set plan_interval_s

    def setup(self, view: SystemView) -> None:
        """Called once before the first arrival: check names against the view, precompute routes.
        Raise ``traces.errors.InputError`` naming ``policy.<param>`` for a bad parameter."""

    @abc.abstractmethod
    def route(self, request: Request, view: SystemView) -> Route | Reject: ...

    def fixed_route(self) -> "Route | Reject | None":
        """The route of every request, for a policy whose choice depends on neither the request
        nor the system's state (asked once, after ``setup``); the executor then skips the
        per-request ``route`` call. None (the default): ``route`` decides each request."""
        return None

    def plan(self, view: SystemView) -> Sequence[PlanAction]:
        return ()

    def report(self) -> dict:
        """What the policy did, for the run output (e.g. overrides by reason). JSON-able."""
        return {}
