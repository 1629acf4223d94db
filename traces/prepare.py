"""A scenario checked against its trace bundle: the latency profiles and prediction table it runs on.

Shared by both executors (the simulator and the real server), so they refuse the same scenarios
with the same messages and sample requests from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .bundle import TraceBundle
from .errors import InputError
from .limits import check_faults
from .profiles import LatencyProfile, PredictionTable
from .scenario import Scenario


@dataclass
class Prepared:
    """A scenario checked against its bundle, with what every seed's run shares."""

    scenario: Scenario
    bundle: TraceBundle | None
    profiles: dict[str, LatencyProfile]
    predictions: PredictionTable | None


BUNDLED = Path(__file__).resolve().parent / "data"


def bundled_bundle_for(variant: str) -> Path | None:
    """The first bundle shipped under ``traces/data/`` that measured this variant."""
    for meta in sorted(BUNDLED.glob("*/bundle.json")):
        try:
            if variant in TraceBundle.load(meta.parent).variants:
                return meta.parent
        except InputError:
            continue
    return None


def check_against_bundle(scenario: Scenario) -> Prepared:
    """Load the bundle, check every deployment's variant and batch range, build profiles."""
    measured = [d for d in scenario.deployments if d.variant is not None]
    bundle = None
    if measured:
        path = scenario.bundle or bundled_bundle_for(measured[0].variant)
        if path is None:
            raise InputError("bundle", f"deployment {measured[0].name!r} serves a measured variant that no bundled "
                             "bundle has, so the scenario needs bundle = \"path/to/bundle\"")
        bundle = TraceBundle.load(path)
    profiles: dict[str, LatencyProfile] = {}
    for dep in scenario.deployments:
        where = f"deployments.{dep.name}"
        if dep.variant is None:
            if dep.service_order != "random":
                raise InputError(f"{where}.service_order", "a parametric service has no timeline; only a measured "
                                 "variant can replay one")
            profiles[dep.name] = LatencyProfile.from_distribution(dep.service, max(dep.max_batch_size, 64))
            continue
        if dep.variant not in bundle.variants:
            raise InputError(f"{where}.variant", f"{dep.variant!r} is not in bundle {bundle.path}; "
                             f"variants: {', '.join(bundle.variants)}")
        profile = LatencyProfile.from_bundle(bundle, dep.variant, spells=dep.slow_spells, idle_classes=dep.idle_classes,
                                             timeline=dep.service_order == "timeline")
        if dep.service_order == "timeline":
            if not profile.timeline:
                raise InputError(f"{where}.service_order", f"{dep.variant!r} has no timed runs with a start time "
                                 f"in bundle {bundle.path}; a timeline needs started_at_s")
            first = min(float(starts[0]) for starts, _ in profile.timeline.values())
            last = max(float(starts[-1]) for starts, _ in profile.timeline.values())
            if last < 0 or first > scenario.duration_s:
                raise InputError(f"{where}.service_order", f"{dep.variant!r}'s runs in bundle {bundle.path} started at "
                                 f"{first:g}..{last:g} s, outside this scenario's 0..{scenario.duration_s:g} s; a "
                                 "timeline needs start times in seconds from the run's start (traces/served.py)")
        if not profile.min_batch_size <= dep.max_batch_size <= profile.max_batch_size:
            raise InputError(f"{where}.max_batch_size", f"{dep.variant!r} is measured at batch sizes "
                             f"{profile.min_batch_size}..{profile.max_batch_size}; got {dep.max_batch_size}")
        if profile.min_batch_size > 1:
            raise InputError(f"{where}.variant", f"{dep.variant!r} has no batch-size-1 measurements; "
                             "a batch of one request could not be timed")
        profiles[dep.name] = profile
    check_faults(scenario, profiles)
    predictions = None
    if bundle is not None and bundle.predicted_variants:
        predictions = PredictionTable.from_bundle(bundle, sorted({d.variant for d in measured}))
    return Prepared(scenario, bundle, profiles, predictions)
