"""How big one run may be, so that a slip (``duration_s = 1e9``, ``rate_rps = 1e8``) fails at once
with one line instead of exhausting memory or running for days.

Each limit names its override, for a run that is meant to be that big. In a scenario::

    [limits]
    max_requests = 200_000_000  # expected arrivals per run; also rate intervals, plan ticks, fault events
    max_replicas = 4096         # per deployment
    max_batch_size = 8192       # per deployment (a parametric service is tabulated at every size)
    mttf_service_ratio = 10     # random crashes: mttf_s >= this many batch-1 service times; 0: no check
    max_seeds = 5000            # seeds in one --seeds

or on the command line, ``--set limits.max_requests=2e8``. The checks run when a scenario is loaded
(``check_scenario``) and once its service times are known (``check_faults``), so ``simulate run``,
``simulate validate``, sweeps and ``measure serve`` refuse the same runs with the same line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from .checks import number, reject_unknown
from .errors import InputError

if TYPE_CHECKING:
    from .profiles import LatencyProfile
    from .scenario import Scenario


class SizeError(InputError):
    """A run over a limit; ``keys`` are the scenario keys whose values make its size, so that an
    error a ``--set`` of any of them caused names that ``--set``."""

    def __init__(self, where: str, problem: str, keys: tuple[str, ...] = ()):
        super().__init__(where, problem)
        self.keys = keys or (where,)


CEILING = 1e15  # no override goes beyond this: the arrival draw itself fails near 1e19, memory long before


@dataclass(frozen=True)
class Limits:
    max_requests: float = 50_000_000
    max_replicas: float = 1024
    max_batch_size: float = 4096
    mttf_service_ratio: float = 10.0
    max_seeds: float = 1000

    def resolved(self) -> dict:
        """The limits that differ from the defaults (none: an empty dict)."""
        default = Limits()
        return {k: v for k, v in asdict(self).items() if v != getattr(default, k)}


def limits_from_config(cfg: dict) -> Limits:
    """The ``[limits]`` table of a scenario; every key optional."""
    names = [f.name for f in fields(Limits)]
    reject_unknown(cfg, names, "limits")
    default = Limits()
    values = {k: number(cfg, k, "limits", default=getattr(default, k), low=0 if k == "mttf_service_ratio" else 1,
                        high=None if k == "mttf_service_ratio" else CEILING)
              for k in names}
    return Limits(**values)


def _override(key: str, needed: float) -> str:
    if not needed <= CEILING:  # inf (rate x duration overflowed) included: no override makes that a run
        return f"no run can be that big (limits.{key} goes up to {CEILING:.0e}); use smaller values"
    value = f"{math.ceil(needed):d}"
    return (f"if the run is meant to be this big, raise limits.{key} (in the scenario: [limits] {key} = "
            f"{value}, or --set limits.{key}={value})")


def check_scenario(scenario: "Scenario") -> None:
    """Sizes known from the scenario alone: replicas and batch sizes, arrivals, plan ticks, crashes."""
    limits, duration_s = scenario.limits, scenario.duration_s
    for dep in scenario.deployments:
        for key, value, name in (("replicas", dep.replicas, "max_replicas"),
                                 ("max_batch_size", dep.max_batch_size, "max_batch_size")):
            limit = getattr(limits, name)
            if value > limit:
                raise InputError(f"deployments.{dep.name}.{key}", f"{value} is over the limit of {limit:.0f} per "
                                 f"deployment; {_override(name, value)}")
        scaling = dep.autoscaling
        if scaling is not None and scaling.max_replicas > limits.max_replicas:
            raise InputError(f"deployments.{dep.name}.autoscaling.max_replicas", f"{scaling.max_replicas} is over "
                             f"the limit of {limits.max_replicas:.0f} per deployment; "
                             f"{_override('max_replicas', scaling.max_replicas)}")
    pieces = scenario.arrivals.segments(duration_s)
    if pieces > limits.max_requests:
        raise SizeError("arrivals", f"{scenario.arrivals.kind} arrivals over duration_s = {duration_s:g} s need "
                        f"about {pieces:.3g} rate intervals, over the limit of {limits.max_requests:,.0f} per run; "
                        + _override("max_requests", pieces), ("arrivals", "duration_s"))
    rate = scenario.arrivals.mean_rate_rps(duration_s)
    expected = rate * duration_s
    if expected > limits.max_requests:
        raise SizeError("arrivals", f"about {expected:.3g} requests expected (mean {rate:g} rps over duration_s = "
                        f"{duration_s:g} s), over the limit of {limits.max_requests:,.0f} requests per run; "
                        + _override("max_requests", expected), ("arrivals", "duration_s"))
    interval = scenario.policy.plan_interval_s
    if interval > 0 and duration_s / interval > limits.max_requests:
        ticks = duration_s / interval
        raise SizeError("policy.plan_interval_s", f"{interval:g} s over duration_s = {duration_s:g} s makes "
                        f"{ticks:.3g} plans, over the limit of {limits.max_requests:,.0f} per run; "
                        + _override("max_requests", ticks), ("policy.plan_interval_s", "duration_s"))
    for index, fault in enumerate(scenario.faults):
        if fault.mttf_s is None:
            continue
        crashes = scenario.deployment(fault.deployment).replicas * duration_s / fault.mttf_s
        if crashes > limits.max_requests:
            raise SizeError(f"faults[{index}].mttf_s", f"{fault.mttf_s:g} s makes about {crashes:.3g} crashes in "
                            f"the run, over the limit of {limits.max_requests:,.0f} per run; "
                            + _override("max_requests", crashes), (f"faults[{index}]", "duration_s"))


def check_seeds(count: int, limits: Limits) -> None:
    if count > limits.max_seeds:
        raise InputError("--seeds", f"{count} seeds is over the limit of {limits.max_seeds:.0f} per command; "
                         + _override("max_seeds", count))


def check_faults(scenario: "Scenario", profiles: dict[str, "LatencyProfile"]) -> None:
    """Random crashes much more frequent than a batch of one would make the fault process, not the
    serving, the run (and a replica would hardly ever finish a batch)."""
    ratio = scenario.limits.mttf_service_ratio
    for index, fault in enumerate(scenario.faults):
        if fault.mttf_s is None or ratio <= 0:
            continue
        service_s = profiles[fault.deployment].mean_ms(1) / 1000.0
        if fault.mttf_s < ratio * service_s:
            raise InputError(f"faults[{index}].mttf_s", f"{fault.mttf_s:g} s is below {ratio:g} x the batch-1 service "
                             f"time of deployment {fault.deployment!r} ({service_s * 1000:.3g} ms), so crashes would "
                             "dominate the run; use a longer mttf_s, or lower limits.mttf_service_ratio "
                             "(0 turns this check off)")
