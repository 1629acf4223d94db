"""Tenants: several customers (or teams) served from the same deployments, each with its own traffic.

A scenario has either one ``[arrivals]`` table or a list of ``[[tenants]]``, each with:

- ``name``; ``[tenants.arrivals]``, any arrival kind, as ``[arrivals]``;
- its deadlines: ``deadline_ms`` (a number, or request classes with ``weights``, as ``[requests]``;
  default: the scenario's ``[requests]``);
- ``priority`` (1 is the highest, as Triton numbers its levels; default 1), which a deployment
  with ``queue = "priority"`` serves in strict order, and ``weight`` (default 1), its share of
  service under ``queue = "fair"``;
- ``max_queue_size``: at a priority queue, the most requests of its level that may wait (Triton's
  per-level ``max_queue_size``; 0, the default, is unbounded; over it a request is dropped as
  ``queue_full``); ``queue_timeout_ms`` with ``timeout_action``: a request of its level that has
  waited that long is rejected (``timeout``) or delayed behind every level (Triton's REJECT and
  DELAY), applied whenever a replica of the deployment looks at its queue;
- ``rate_limit = { rate_rps, burst }``: a token bucket at admission (full at the start; each
  arrival takes a token; with none left it is rejected as ``rate_limited``);
- ``quota = { max_in_flight, action }``: at most that many of its requests admitted and not yet
  finished; over it an arrival is rejected (``action = "reject"``, reason ``quota``) or waits at
  admission in arrival order until one of its requests finishes (``"wait"``), never silently lost;
- ``price_per_1k_requests``: charged per measured request, beside its share of replica cost.

The tenants' arrivals are merged into one stream (``TenantArrivals``, an ``ArrivalProcess``
whose mean rate is the sum), each arrival labelled with its tenant; the scenario's request
classes become the tenants' classes, one after another.
"""

from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass

import numpy as np

from . import arrivals as arrivals_mod
from .checks import as_number, integer, number, reject_unknown, table, text
from .errors import InputError

TENANT_KEYS = ("name", "arrivals", "deadline_ms", "weights", "priority", "weight", "max_queue_size",
               "queue_timeout_ms", "timeout_action", "rate_limit", "quota", "price_per_1k_requests")
TIMEOUT_ACTIONS = ("reject", "delay")
QUOTA_ACTIONS = ("reject", "wait")


@dataclass(frozen=True)
class RateLimit:
    rate_rps: float
    burst: int


@dataclass(frozen=True)
class Quota:
    max_in_flight: int
    action: str = "reject"


@dataclass(frozen=True)
class TenantConfig:
    name: str
    arrivals: arrivals_mod.ArrivalProcess
    arrivals_cfg: dict
    deadline_ms: tuple[float, ...]
    weights: tuple[float, ...]          # of its request classes, summing to 1
    priority: int = 1
    weight: float = 1.0
    max_queue_size: int = 0
    queue_timeout_ms: float = 0.0      # at a priority queue: 0, none
    timeout_action: str = "reject"
    rate_limit: RateLimit | None = None
    quota: Quota | None = None
    price_per_1k_requests: float = 0.0

    def resolved(self, source_dir: pathlib.Path | None) -> dict:
        arrivals_cfg = dict(self.arrivals_cfg)
        if "path" in arrivals_cfg and source_dir is not None:
            arrivals_cfg["path"] = str((source_dir / arrivals_cfg["path"]).resolve())
        out = {"name": self.name, "arrivals": arrivals_cfg, "deadline_ms": list(self.deadline_ms),
               "weights": list(self.weights), "priority": self.priority, "weight": self.weight,
               "max_queue_size": self.max_queue_size, "queue_timeout_ms": self.queue_timeout_ms,
               "timeout_action": self.timeout_action, "price_per_1k_requests": self.price_per_1k_requests}
        if self.rate_limit is not None:
            out["rate_limit"] = {"rate_rps": self.rate_limit.rate_rps, "burst": self.rate_limit.burst}
        if self.quota is not None:
            out["quota"] = {"max_in_flight": self.quota.max_in_flight, "action": self.quota.action}
        return out


class TenantArrivals(arrivals_mod.ArrivalProcess):
    """The tenants' arrival processes as one stream: each draws from its own generator (spawned
    from the one given, in tenant order), and ``labelled_times_s`` says whose each arrival is."""

    kind = "tenants"
    _shown = ()

    def __init__(self, processes: tuple[arrivals_mod.ArrivalProcess, ...]):
        self.processes = processes

    def labelled_times_s(self, duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Merged arrival times and each one's tenant index (ties: the lower index first)."""
        streams = rng.spawn(len(self.processes))
        times = [np.asarray(p.times_s(duration_s, r), dtype=np.float64) for p, r in zip(self.processes, streams)]
        owners = [np.full(len(t), k, dtype=np.int64) for k, t in enumerate(times)]
        merged, owner = np.concatenate(times), np.concatenate(owners)
        order = np.lexsort((owner, merged))
        return merged[order], owner[order]

    def times_s(self, duration_s: float, rng: np.random.Generator) -> np.ndarray:
        return self.labelled_times_s(duration_s, rng)[0]

    def mean_rate_rps(self, duration_s: float) -> float:
        return float(sum(p.mean_rate_rps(duration_s) for p in self.processes))

    def segments(self, duration_s: float) -> float:
        return float(sum(p.segments(duration_s) for p in self.processes))


def parse_tenants(items: object, base_dir: pathlib.Path, requests: tuple | None) -> tuple[TenantConfig, ...]:
    """The ``[[tenants]]`` list; ``requests``: the scenario's (deadlines, weights), the default
    deadlines of a tenant that sets none (None: every tenant must set ``deadline_ms``)."""
    if not isinstance(items, list) or not items:
        raise InputError("tenants", "must be a non-empty list of tables ([[tenants]])")
    tenants, names = [], set()
    for index, cfg in enumerate(items):
        where = f"tenants[{index}]"
        if not isinstance(cfg, dict):
            raise InputError(where, "must be a table")
        reject_unknown(cfg, TENANT_KEYS, where)
        name = text(cfg, "name", where)
        if name in names:
            raise InputError(f"{where}.name", f"{name!r} is used twice; tenant names must be unique")
        names.add(name)
        where = f"tenants.{name}"
        arrivals_cfg = table(cfg, "arrivals", where)
        process = arrivals_mod.from_config(arrivals_cfg, base_dir, where=f"{where}.arrivals")
        if "deadline_ms" in cfg:
            deadlines, weights = deadline_classes(cfg, where)
        elif requests is not None:
            deadlines, weights = requests
        else:
            raise InputError(f"{where}.deadline_ms", "is required (or give the scenario a [requests] table)")
        tenants.append(TenantConfig(
            name=name, arrivals=process, arrivals_cfg=arrivals_cfg, deadline_ms=deadlines, weights=weights,
            priority=integer(cfg, "priority", where, default=1, low=1),
            weight=number(cfg, "weight", where, default=1.0, low=0, strict=True),
            max_queue_size=integer(cfg, "max_queue_size", where, default=0, low=0),
            queue_timeout_ms=number(cfg, "queue_timeout_ms", where, default=0.0, low=0),
            timeout_action=text(cfg, "timeout_action", where, default="reject", choices=TIMEOUT_ACTIONS),
            rate_limit=_rate_limit(cfg, where), quota=_quota(cfg, where),
            price_per_1k_requests=number(cfg, "price_per_1k_requests", where, default=0.0, low=0)))
    if len(tenants) > 255:
        raise InputError("tenants", f"at most 255 tenants, got {len(tenants)}")
    return tuple(tenants)


def deadline_classes(cfg: dict, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``deadline_ms`` (a number or a list) and its ``weights`` (normalised), of ``[requests]`` or a tenant."""
    deadlines = cfg["deadline_ms"] if isinstance(cfg["deadline_ms"], list) else [cfg["deadline_ms"]]
    if not deadlines:
        raise InputError(f"{where}.deadline_ms", "must not be an empty list")
    values = tuple(as_number(d, f"{where}.deadline_ms", low=0, strict=True) for d in deadlines)
    weights = cfg.get("weights", [1.0] * len(values))
    if not isinstance(weights, list) or len(weights) != len(values):
        raise InputError(f"{where}.weights", f"must be a list of {len(values)} numbers, one per deadline")
    weights = tuple(as_number(w, f"{where}.weights", low=0) for w in weights)
    if sum(weights) <= 0:
        raise InputError(f"{where}.weights", "must not all be zero")
    return values, tuple(w / sum(weights) for w in weights)


def _rate_limit(cfg: dict, where: str) -> RateLimit | None:
    if "rate_limit" not in cfg:
        return None
    limit = table(cfg, "rate_limit", where)
    reject_unknown(limit, ("rate_rps", "burst"), f"{where}.rate_limit")
    return RateLimit(number(limit, "rate_rps", f"{where}.rate_limit", low=0, strict=True),
                     integer(limit, "burst", f"{where}.rate_limit", default=1, low=1))


def _quota(cfg: dict, where: str) -> Quota | None:
    if "quota" not in cfg:
        return None
    quota = table(cfg, "quota", where)
    reject_unknown(quota, ("max_in_flight", "action"), f"{where}.quota")
    if "max_in_flight" not in quota:
        raise InputError(f"{where}.quota.max_in_flight", "is required (the most requests admitted and not finished)")
    return Quota(integer(quota, "max_in_flight", f"{where}.quota", low=1),
                 text(quota, "action", f"{where}.quota", default="reject", choices=QUOTA_ACTIONS))


def merged_requests(tenants: tuple[TenantConfig, ...], duration_s: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The scenario's request classes with tenants: every tenant's classes, one after another,
    weighted by the tenant's share of arrivals (what ``[requests]`` would say of the mix)."""
    rates = [max(t.arrivals.mean_rate_rps(duration_s), 0.0) for t in tenants]
    total = sum(rates) or 1.0
    deadlines = tuple(d for t in tenants for d in t.deadline_ms)
    weights = tuple(r / total * w for t, r in zip(tenants, rates) for w in t.weights)
    if not math.isclose(sum(weights), 1.0):
        weights = tuple(1.0 / len(deadlines) for _ in deadlines)
    return deadlines, weights
