"""The load model of ``policies.estimates`` against the simulator: the mean batch the batcher forms
and the share of replica time it keeps busy, where no closed form is exact.

The grid: four services, two measured on the bundled digits bundle (ResNet-18 INT8, whose batch
time grows about linearly with its size, up to 16 at 1 ms timeout; MobileNetV2 INT8, nearly flat, up
to 8) and two parametric (an exponential 4 + 1 ms per item, up to 8 at a 2 ms timeout, the most
variable; a deterministic 10 + 0.5 ms per item, up to 16, no timeout); 1, 2 and 4 replicas; Poisson
arrivals at 0.1, 0.4, 0.7 and 0.9 of the capacity at full batches. One 8 s run each (48 runs, a few
seconds), predicted at the run's own measured arrival rate so the Poisson count's noise is not
counted as model error.

Tolerances, and why:

- the busy share within 0.05: the planner caps it at 0.9 (``policies.planner``), so an error of
  0.05 moves that cap by less than the share moves between 0.7 and 0.9 of capacity on any service
  here; the seeds of one 8 s run spread it by up to 0.03 (sd) near capacity;
- the mean batch within 15% up to 0.7 of capacity, 25% at 0.9: the pile-up b = lambda m(b) / R is
  ill-conditioned near capacity (an error in m(b) is multiplied by 1 / (1 - lambda m'(b) / R),
  3.3x for ResNet-18 INT8 at 0.9), and the simulator's own seeds spread the mean batch there by up
  to 13% (sd) where they spread it by 3% at 0.7. On seed 1 of the bundle re-measured on 2026-12-05
  the model's worst errors, the known limit aside, are 9% (up to 0.7) and 8% (at 0.9) for the batch
  and 0.04 for the busy share.

One known limit, pinned rather than hidden (``KNOWN_LIMIT``): MobileNetV2 INT8 as re-measured on
2026-12-05 is step-shaped (2.9 ms alone, then 4.5 to 5.1 ms from 2 to 8), and on four replicas its
interval between freeings (about m(b) / 4, 1.2 ms) is close to the 1 ms timeout, so most batches a
freeing replica starts wait for the timer. The model counts the pile-up from a freeing, not from the
later timer start, so at 0.7 and 0.9 of capacity it over-counts the batch by 11% and under-counts
the busy share by 0.08 (0.857 against 0.939). It errs on the planner's safe side for latency
(``steady_latency_ms`` over-predicts that cell's p95 1.6x) and a flat profile near a busy share of 1
is not overloaded; the test holds those cells to that direction and to 0.10 and 15%.

The previous estimate (what piles up during one service at the p50, iterated from b = 1, against
what arrives in one timeout; copied here as ``_previous``) fails both, by far.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import traces
from conftest import simulate
from policies.estimates import formed_batch_size, steady_latency_ms, utilization
from traces.bundle import TraceBundle
from traces.distributions import service_from_config
from traces.profiles import LatencyProfile

BUNDLE = Path(traces.__file__).parent / "data" / "digits-cpu"
SERVICES = {  # name: (the deployment's service keys, max batch, timeout ms)
    "resnet18-int8": ({"variant": "resnet18/int8/cpu"}, 16, 1.0),
    "mobilenet-int8": ({"variant": "mobilenet_v2/int8/cpu"}, 8, 1.0),
    "exponential": ({"service": {"kind": "exponential", "mean_ms": 4.0, "per_item_ms": 1.0}}, 8, 2.0),
    "deterministic": ({"service": {"kind": "deterministic", "mean_ms": 10.0, "per_item_ms": 0.5}}, 16, 0.0),
}
REPLICAS = (1, 2, 4)
LOADS = (0.1, 0.4, 0.7, 0.9)  # of the capacity at full batches
BUSY_TOLERANCE = 0.05
BATCH_TOLERANCE = {0.1: 0.15, 0.4: 0.15, 0.7: 0.15, 0.9: 0.25}
KNOWN_LIMIT = {"mobilenet-int8 x4 at 0.7", "mobilenet-int8 x4 at 0.9"}   # the docstring's known limit
KNOWN_LIMIT_BUSY, KNOWN_LIMIT_BATCH = 0.10, 0.15


def _profile(keys: dict, bundle: TraceBundle) -> LatencyProfile:
    """The profile a policy sees for this deployment (as ``sim.core.prepare`` builds it)."""
    if "variant" in keys:
        return LatencyProfile.from_bundle(bundle, keys["variant"])
    return LatencyProfile.from_distribution(service_from_config(keys["service"], "service"), 64)


def _previous(profile: LatencyProfile, rate_rps: float, replicas: int, max_batch_size: int,
              timeout_ms: float) -> tuple[float, float]:
    """(batch, busy share) by the estimate the load model replaced: b = min(B, max(1 + lambda T,
    lambda / R s_p50(b))), rounded up, iterated from b = 1 for at most eight rounds."""
    limit = min(max_batch_size, profile.max_batch_size)
    by_timeout = 1.0 + rate_rps * timeout_ms / 1000.0
    b = 1
    for _ in range(8):
        piled = rate_rps / replicas * profile.percentile_ms(b, 50.0) / 1000.0
        following = int(min(limit, max(1, math.ceil(max(by_timeout, piled)))))
        if following == b:
            break
        b = following
    return float(b), rate_rps * profile.mean_ms(b) / 1000.0 / (b * replicas)


@pytest.fixture(scope="module")
def grid() -> list[dict]:
    """Each cell: its service, replicas, load, the simulated batch and busy share and both estimates'."""
    bundle = TraceBundle.load(BUNDLE)
    cells = []
    for name, (keys, max_batch, timeout_ms) in SERVICES.items():
        profile = _profile(keys, bundle)
        for replicas in REPLICAS:
            capacity_rps = profile.throughput_rps(max_batch, replicas)
            for load in LOADS:
                deployment = {"name": "m", "replicas": replicas, "max_batch_size": max_batch,
                              "batch_wait_timeout_ms": timeout_ms, "drop_expired": False, **keys}
                raw = {"duration_s": 8.0, "warmup_s": 1.0, "bundle": str(BUNDLE),
                       "arrivals": {"kind": "poisson", "rate_rps": load * capacity_rps},
                       "requests": {"deadline_ms": 1e9}, "policy": {"name": "static"}, "deployments": [deployment]}
                frame, summary = simulate(raw, seed=1)
                rate = summary["offered_rps"]
                cells.append({
                    "cell": f"{name} x{replicas} at {load}", "load": load,
                    "batch": summary["mean_batch_size"], "busy": summary["utilization"]["m"],
                    "new": (formed_batch_size(profile, rate, replicas, max_batch, timeout_ms),
                            utilization(profile, rate, replicas, max_batch, timeout_ms)),
                    "old": _previous(profile, rate, replicas, max_batch, timeout_ms),
                    "p95_ms": float(np.nanpercentile(frame["latency_ms"].to_numpy(), 95)),
                    "steady_ms": steady_latency_ms(profile, rate, replicas, max_batch, timeout_ms),
                })
    return cells


def _misses(cells: list[dict], estimate: str) -> list[str]:
    """The cells where ``estimate`` is outside a tolerance, with its errors."""
    out = []
    for c in cells:
        if estimate == "new" and c["cell"] in KNOWN_LIMIT:
            continue
        batch, busy = c[estimate]
        batch_error, busy_error = batch / c["batch"] - 1.0, busy - c["busy"]
        if abs(batch_error) > BATCH_TOLERANCE[c["load"]] or abs(busy_error) > BUSY_TOLERANCE:
            out.append(f"{c['cell']}: batch {c['batch']:.2f} vs {batch:.2f} ({batch_error:+.0%}), "
                       f"busy {c['busy']:.3f} vs {busy:.3f} ({busy_error:+.3f})")
    return out


def test_the_grid_spans_light_load_to_near_capacity(grid):
    assert len(grid) == len(SERVICES) * len(REPLICAS) * len(LOADS)
    assert min(c["busy"] for c in grid) < 0.3 and max(c["busy"] for c in grid) > 0.99
    assert min(c["batch"] for c in grid) < 1.25 and max(c["batch"] for c in grid) > 12


def test_the_load_model_holds_at_every_load_and_replica_count(grid):
    assert _misses(grid, "new") == []


def test_the_known_limit_errs_in_its_stated_direction_and_within_its_bounds(grid):
    """The step-shaped MobileNetV2 INT8 on four replicas: the model's batch is larger than the
    simulator's and its busy share smaller, by no more than the docstring's bounds."""
    cells = [c for c in grid if c["cell"] in KNOWN_LIMIT]
    assert len(cells) == len(KNOWN_LIMIT)
    for c in cells:
        batch, busy = c["new"]
        assert 0.0 < batch / c["batch"] - 1.0 <= KNOWN_LIMIT_BATCH, c
        assert -KNOWN_LIMIT_BUSY <= busy - c["busy"] < 0.0, c


def test_the_previous_estimate_fails_the_same_tolerance(grid):
    misses = _misses(grid, "old")
    assert len(misses) > len(grid) // 2, misses
    worst_busy = max(abs(c["old"][1] - c["busy"]) for c in grid)
    worst_batch = max(abs(c["old"][0] / c["batch"] - 1.0) for c in grid)
    assert worst_busy > 3 * BUSY_TOLERANCE and worst_batch > 2 * BATCH_TOLERANCE[0.9]


def test_the_steady_latency_follows_the_simulated_p95_up_to_0_7_of_capacity(grid):
    """``steady_latency_ms``, the planner's test of whether an option fits its deadline at a rate,
    within 0.6x to 2x of the simulated p95 latency up to 0.7 of capacity at full batches (it
    over-predicts most for flat, low-variance services, whose queue carries less than the
    heavy-traffic term says: the safe side); past capacity it is infinite."""
    ratios = {c["cell"]: c["steady_ms"] / c["p95_ms"] for c in grid if c["load"] <= 0.7}
    assert all(0.6 <= r <= 2.0 for r in ratios.values()), {k: round(v, 2) for k, v in ratios.items()}
    at_most = {c["cell"]: c["steady_ms"] for c in grid if c["load"] == 0.9}
    assert all(math.isfinite(v) for v in at_most.values())
    profile = LatencyProfile.from_bundle(TraceBundle.load(BUNDLE), "resnet18/int8/cpu")
    assert steady_latency_ms(profile, profile.throughput_rps(16, 2) * 1.01, 2, 16, 1.0) == math.inf


def test_the_steady_latency_tells_a_flat_service_from_a_steep_one_at_the_same_busy_share(grid):
    """Both busy over 90% of the time: MobileNetV2 INT8 (flat) at 0.4 of its capacity answers fast,
    ResNet-18 INT8 (steep) at 0.7 carries a queue; the steady latency says so, the busy share cannot."""
    cells = {c["cell"]: c for c in grid}
    flat, steep = cells["mobilenet-int8 x1 at 0.4"], cells["resnet18-int8 x1 at 0.7"]
    assert flat["busy"] > 0.9 and steep["busy"] > 0.9
    assert steep["p95_ms"] > 1.5 * flat["p95_ms"] and steep["steady_ms"] > 1.5 * flat["steady_ms"]
