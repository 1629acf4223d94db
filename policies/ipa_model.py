"""What one stage of a pipeline would do with a given variant, batch size and replica count.

IPA (Ghafouri et al., "IPA: Inference Pipeline Adaptation to Achieve High Accuracy and
Cost-Efficiency") chooses, per stage, a variant v, a batch size b and replicas n, and checks the
choice against an end-to-end latency SLA with, per stage, the profiled p99 of a batch of b plus
the time (b - 1) / lambda a batch takes to fill. Its code, in the mode its experiments used,
attaches that filling term to the batch binary rather than the batch size, so it never enters the
constraint, and it has no queueing term at all: a configuration whose replicas are 95% busy is
predicted as fast as an idle one. This module builds each candidate's latency as the serving core
would make it happen:

- **the batch fills**: a batch of b waits for b requests, so the policy sets the deployment's
  batch timeout to T = (b - 1) / lambda (the mean time b - 1 more requests take to arrive at the
  predicted rate; 0 for b = 1) and the first request of a batch waits up to T: T is added whole,
  as IPA meant to;
- **the batch is served**: the profiled p99 of a full batch of b (IPA's term);
- **the queue waits**: the p99 of the wait a request spends behind busy replicas: the mean from
  the batching extension of Allen-Cunneen (``traces.queueing.batching_wait``: the residual of a
  busy replica plus the full batches queued ahead) at the batch the batcher forms at that rate
  (``policies.estimates.formed_batch_size``), carried into the exponential tail that is exact for
  M/M/c (``traces.queueing.wait_quantile_ms``); a configuration that cannot keep up (full
  batches busier than 100%) is no candidate.

Replicas are explicit per candidate, from the fewest that sustain the rate with full batches,
``ceil(lambda / throughput(b))``, up to a cap, stopping once one more replica saves under 0.01 ms:
so the solver can buy latency with replicas, where IPA fixes n at the fewest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from traces.queueing import BatchService, batching_wait, erlang_c, wait_quantile_ms

from .estimates import formed_batch_size, mean_service_ms
from .ipa_solver import Option

if TYPE_CHECKING:
    from traces.profiles import LatencyProfile

LATENCY_QUANTILE = 99.0      # IPA plans with each batch's profiled p99
MIN_GAIN_MS = 0.01           # stop adding replicas once one more saves less than this


@dataclass(frozen=True)
class Candidate:
    """One deployment (a variant) a stage may use, with what the planner needs of it."""

    deployment: str
    variant: str
    profile: "LatencyProfile"
    accuracy: float


def fill_timeout_ms(batch: int, rate_rps: float) -> float:
    """The batch timeout that lets a batch of ``batch`` fill at ``rate_rps``: (b - 1) / lambda."""
    if batch <= 1 or rate_rps <= 0:
        return 0.0
    return 1000.0 * (batch - 1) / rate_rps


def _squared_cv(grid: np.ndarray) -> float:
    mean = float(grid.mean())
    return float(grid.var() / mean ** 2) if mean > 0 else 0.0


def stage_latency_ms(profile: "LatencyProfile", rate_rps: float, batch: int, replicas: int) -> float:
    """Predicted latency of a stage (module docstring): fill + p99 of a full batch + queueing wait;
    ``inf`` when ``replicas`` cannot keep up with ``rate_rps`` at this batch size."""
    timeout_ms = fill_timeout_ms(batch, rate_rps)
    service_p99_ms = profile.percentile_ms(batch, LATENCY_QUANTILE)
    if rate_rps <= 0:
        return service_p99_ms
    formed = formed_batch_size(profile, rate_rps, replicas, batch, timeout_ms)
    served = max(1, min(batch, round(formed)))
    service = BatchService(mean_ms=mean_service_ms(profile, formed), cs2=_squared_cv(profile.grid(served)),
                           mean_batch_size=formed, full_mean_ms=profile.mean_ms(batch),
                           full_cs2=_squared_cv(profile.grid(batch)), max_batch_size=batch)
    wait = batching_wait(rate_rps, replicas, service, 1.0, timeout_ms)
    if not wait.stable:
        return math.inf
    waits = erlang_c(replicas, wait.rho * replicas)  # a request finds every replica busy
    queued_ms = wait_quantile_ms(wait.residual_ms + wait.queue_ahead_ms, waits, LATENCY_QUANTILE / 100.0)
    return timeout_ms + service_p99_ms + queued_ms


def batch_sizes(profile: "LatencyProfile", cap: int) -> list[int]:
    """The measured batch sizes up to ``cap`` (at least the smallest measured)."""
    sizes = [b for b in profile.measured_batch_sizes if b <= cap]
    return sizes or [profile.min_batch_size]


def stage_options(candidates: Sequence[Candidate], rate_rps: float, *, max_batch_size: int, max_replicas: int,
                  price_per_replica_hour: float, replicas: int | None = None,
                  batches: Sequence[int] | None = None) -> list[Option]:
    """Every (variant, batch, replicas) a stage could run at ``rate_rps``. ``replicas`` pins the
    count (RIM's fixed replicas); ``batches`` pins the sizes (default: measured ones up to the cap)."""
    options: list[Option] = []
    for cand in candidates:
        for b in (batches if batches is not None else batch_sizes(cand.profile, max_batch_size)):
            if not cand.profile.covers(b):
                continue
            fewest = max(1, math.ceil(rate_rps / cand.profile.throughput_rps(b) - 1e-12)) if rate_rps > 0 else 1
            counts = [replicas] if replicas is not None else range(fewest, max_replicas + 1)
            previous = math.inf
            for n in counts:
                latency = stage_latency_ms(cand.profile, rate_rps, b, n)
                if math.isinf(latency):
                    continue
                options.append(Option(variant=cand.variant, deployment=cand.deployment, batch=b, replicas=n,
                                      accuracy=cand.accuracy, latency_ms=latency,
                                      cost_per_hour=n * price_per_replica_hour))
                if replicas is None and previous - latency < MIN_GAIN_MS:
                    break
                previous = latency
    return options
