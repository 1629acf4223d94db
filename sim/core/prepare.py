"""A scenario checked against its trace bundle: the latency profiles and prediction table it runs on.

Shared by both executors (the simulator and the real server), so they refuse the same scenarios
with the same messages and sample requests from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import traces
from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.limits import check_faults
from traces.profiles import LatencyProfile, PredictionTable
from traces.scenario import Scenario


@dataclass
class Prepared:
    """A scenario checked against its bundles, with what every seed's run shares. ``predictions``
    is the first stage's prediction table; a pipeline has one per stage in ``stage_predictions``."""

    scenario: Scenario
    bundle: TraceBundle | None
    profiles: dict[str, LatencyProfile]
    predictions: PredictionTable | None
    stage_predictions: tuple = ()       # (PredictionTable | None) per stage, the first one included
    bundles: dict = field(default_factory=dict)  # deployment name -> the bundle it is measured in


BUNDLED = Path(traces.__file__).resolve().parent / "data"  # the bundles shipped with the project


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
    """Load the bundles, check every deployment's variant and batch range, build profiles and
    each stage's prediction table. A deployment is measured in its own ``bundle``, else the
    scenario's, else the bundled bundle that has the first such deployment's variant."""
    measured = [d for d in scenario.deployments if d.variant is not None]
    loaded: dict[Path, TraceBundle] = {}

    def load(path: Path) -> TraceBundle:  # one object per bundle directory, however it is spelled
        key = path.resolve()
        if key not in loaded:
            loaded[key] = TraceBundle.load(path)
        return loaded[key]

    shared = [d for d in measured if d.bundle is None]
    bundle = None
    if shared:
        path = scenario.bundle or bundled_bundle_for(shared[0].variant)
        if path is None:
            raise InputError("bundle", f"deployment {shared[0].name!r} serves a measured variant that no bundled "
                             "bundle has, so the scenario needs bundle = \"path/to/bundle\"")
        bundle = load(path)
    bundles = {d.name: (load(d.bundle) if d.bundle is not None else bundle) for d in measured}
    if bundle is None and measured:
        bundle = bundles[measured[0].name]
    profiles: dict[str, LatencyProfile] = {}
    for dep in scenario.deployments:
        where = f"deployments.{dep.name}"
        if dep.variant is None:
            if dep.service_order != "random":
                raise InputError(f"{where}.service_order", "a parametric service has no timeline; only a measured "
                                 "variant can replay one")
            profiles[dep.name] = LatencyProfile.from_distribution(dep.service, max(dep.max_batch_size, 64))
            continue
        bundle = bundles[dep.name]
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
    tables = tuple(_stage_table(scenario, k, bundles) for k in range(max(1, len(scenario.stages))))
    first = bundles[measured[0].name] if measured else None
    return Prepared(scenario, first, profiles, tables[0], tables, bundles)


def _stage_table(scenario: Scenario, stage: int, bundles: dict[str, TraceBundle]) -> PredictionTable | None:
    """The prediction table of a stage's measured deployments, which must share one bundle."""
    members = set(scenario.stages[stage].deployments) if scenario.stages else None
    deps = [d for d in scenario.deployments if d.variant is not None and (members is None or d.name in members)]
    if not deps:
        return None
    bundle = bundles[deps[0].name]
    for dep in deps[1:]:
        if bundles[dep.name] is not bundle:
            raise InputError(f"deployments.{dep.name}.bundle", f"stage {scenario.stages[stage].name!r} is measured "
                             f"in {bundle.path} (deployment {deps[0].name!r}); every deployment of a stage "
                             "must share its bundle, so that a cascade compares the same samples")
    if not bundle.predicted_variants:
        return None
    table = PredictionTable.from_bundle(bundle, sorted({d.variant for d in deps}))
    if table.variants and not table.sample_ids.size:
        # a request draws one sample that every variant answered: with none in common, every answer
        # would be unknown and the run's accuracy silently null
        raise InputError(f"bundle {bundle.path or bundle.name}", f"its predicted variants {', '.join(table.variants)} "
                         "share no evaluated sample, so no request's answer could be looked up: evaluate them "
                         "on the same samples (measure accuracy), or leave one out of the scenario")
    return table
