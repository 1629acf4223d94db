"""Replica faults as a scenario declares them: scheduled crashes, or random ones on every replica.

What a crash does while a run goes on lives in the serving core (``sim.core.faults``); this is the
data contract: the keys of a ``[[faults]]`` table, their checks, and the resolved form written to
``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .checks import integer, number, reject_unknown, text
from .errors import InputError

FAULT_KEYS = ("deployment", "replica", "at_s", "down_s", "mttf_s", "mttr_s", "on_failure")
ON_FAILURE = ("retry", "fail")


@dataclass(frozen=True)
class FaultConfig:
    """A replica crash and its recovery: scheduled (``at_s`` for ``down_s``) on one replica, or
    random on every replica of the deployment (exponential times with means ``mttf_s``, ``mttr_s``).
    Requests in the crashed replica's batch are retried on the deployment or fail (``on_failure``)."""

    deployment: str
    replica: int = 0
    at_s: float | None = None
    down_s: float | None = None
    mttf_s: float | None = None
    mttr_s: float | None = None
    on_failure: str = "retry"

    def resolved(self) -> dict:
        return {k: getattr(self, k) for k in FAULT_KEYS if getattr(self, k) is not None}


def parse_faults(items: Any, deployments: Sequence) -> tuple[FaultConfig, ...]:
    """The ``[[faults]]`` tables, checked against the deployments (their names and replicas)."""
    if not isinstance(items, list):
        raise InputError("faults", "must be a list of [[faults]] tables")
    names = {d.name: d for d in deployments}
    out = []
    for index, cfg in enumerate(items):
        where = f"faults[{index}]"
        if not isinstance(cfg, dict):
            raise InputError(where, "must be a table")
        reject_unknown(cfg, FAULT_KEYS, where)
        name = text(cfg, "deployment", where, choices=names)
        scheduled, random = "at_s" in cfg or "down_s" in cfg, "mttf_s" in cfg or "mttr_s" in cfg
        if scheduled == random:
            raise InputError(where, "needs either at_s and down_s (a scheduled crash) or mttf_s and mttr_s (random crashes)")
        fault = FaultConfig(
            deployment=name, replica=integer(cfg, "replica", where, default=0, low=0),
            at_s=number(cfg, "at_s", where, low=0) if scheduled else None,
            down_s=number(cfg, "down_s", where, low=0, strict=True) if scheduled else None,
            mttf_s=number(cfg, "mttf_s", where, low=0, strict=True) if random else None,
            mttr_s=number(cfg, "mttr_s", where, low=0, strict=True) if random else None,
            on_failure=text(cfg, "on_failure", where, default="retry", choices=ON_FAILURE))
        if fault.replica >= names[name].replicas:
            raise InputError(f"{where}.replica", f"deployment {name!r} has replicas 0..{names[name].replicas - 1}")
        out.append(fault)
    return tuple(out)
