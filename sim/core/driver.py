"""From a scenario to run outputs, for either executor: one validation path, one per-seed loop.

``prepare`` is everything checked before the first seed, so that ``simulate validate`` saying ok
means that both ``simulate run`` and ``measure serve`` start. ``run_seeds`` runs each seed with
the executor's own ``run_one`` and writes every seed's output and ``runs.csv`` atomically;
``seed_summary`` completes a seed's summary with the keys both executors report, so a simulated
and a real run of one scenario have summaries with the same keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pandas as pd

import policies
from policies.base import Policy, Reject, Request, Route
from traces.errors import InputError
from traces.outputs import atomic_output, scratch_directory
from traces.progress import Progress
from traces.runoutput import write_into
from traces.scenario import Scenario
from traces.summary import flatten, stage_breakdown

from .prepare import Prepared, check_against_bundle
from .scaling import cold_start_stats, timeline_frame
from .serving import ServingCore

BOUNDS = ("oracle-static", "isolation-bound")  # computed by sim.bounds, not routing policies


def prepare(scenario: Scenario) -> Prepared:
    """The scenario against its bundle (and the limits), the policy against the deployments, and
    the route it gives a first request. Errors name the ``--set`` or the scenario file they come
    from (``Scenario.blame``)."""
    try:
        prepared = check_against_bundle(scenario)
        if scenario.policy.name in BOUNDS:
            if scenario.policy.params:
                key = next(iter(scenario.policy.params))
                raise InputError(f"policy.{key}", f"{scenario.policy.name} takes no parameters")
            return prepared
        first_route(prepared)
        return prepared
    except InputError as exc:
        raise scenario.blame(exc) from None


class _Idle:
    """An executor that never runs: enough for a core to be built and asked for a route."""

    def now(self) -> float:
        return 0.0

    def call_at(self, time_s, callback) -> None:
        pass

    def start_batch(self, replica, batch, now) -> None:
        raise RuntimeError("an idle executor runs no batch")

    def start_replica(self, replica, now) -> bool:
        return True

    def stop_replica(self, replica) -> None:
        pass

    def batching_changed(self, deployment, max_batch_size) -> None:
        pass


def first_route(prepared: Prepared) -> Route | Reject:
    """The route the policy gives a request arriving first, in an empty system, as the core
    checks it: fails fast on the policy's name, parameters and setup against the deployments,
    and on a route no executor can serve (a cascade over deployments without predictions)."""
    scenario = prepared.scenario
    policy = policies.create(scenario.policy.name, scenario.policy.params)
    if policy.needs_plan_interval and not scenario.policy.plan_interval_s > 0:
        raise InputError("policy.plan_interval_s", f"policy {policy.name!r} acts on a clock: set it > 0 "
                         "(1 s gives the per-second rate its forecasts read)")
    core = dry_core(prepared, policy)
    route = policy.route(Request(0, 0.0, max(scenario.requests.deadline_ms), 0), core.view)
    core.resolve(route)
    if isinstance(policy.fixed_route(), Route) and type(policy).plan is Policy.plan:
        for hop in route.hops:  # nothing would ever start a replica for it
            dep = scenario.deployment(hop.deployment)
            if dep.replicas == 0 and dep.autoscaling is None:
                raise InputError(f"deployments.{dep.name}.replicas", f"is 0 and nothing starts one (no autoscaling; "
                                 f"policy {policy.name!r} routes every request there and plans nothing)")
    return route


def dry_core(prepared: Prepared, policy: Policy) -> ServingCore:
    """A core over the prepared scenario that never runs (no arrivals, an idle executor): building
    it sets ``policy`` up over the live view, so its checks run and it can be asked questions."""
    scenario = prepared.scenario
    dry = dataclasses.replace(scenario, duration_s=min(scenario.duration_s, 1e-6), warmup_s=0.0)
    return ServingCore(dry, policy, _Idle(), profiles=prepared.profiles, predictions=prepared.predictions,
                       seed=scenario.seed, stage_predictions=prepared.stage_predictions)


def seed_config(prepared: Prepared, scenario: Scenario, **extra) -> dict:
    """A seed's ``config.json``: every setting, and the bundle actually used (the bundled default
    included), plus what the executor adds."""
    config = scenario.resolved()
    if prepared.bundle is not None:
        config["bundle"] = str(prepared.bundle.path)
    config.update(extra)
    return config


def seed_summary(summary: dict, seed: int, core: ServingCore, end_s: float, requests) -> dict:
    """A seed's summary completed with what both executors report: the seed, the deployments'
    accounting (with their cold starts, for those that autoscale or pay a start-up time), the
    faults that happened and the policy's own report."""
    summary["seed"] = seed
    summary["deployments"] = stats = core.deployment_stats(end_s)
    for dep in core.deployments:
        if dep.config.autoscaling is not None or dep.config.startup_s is not None or dep.cold_starts:
            stats[dep.name].update(cold_start_stats(dep, requests, end_s))
    if core.scenario.stages:
        summary["stages"] = stage_breakdown(requests, [stage.name for stage in core.scenario.stages])
    summary["faults"] = core.fault_log
    summary["policy"] = {"name": core.scenario.policy.name, **core.policy.report()}
    if core.scenario.tenants:
        tenant_metrics(summary, core, requests)
    return summary


def tenant_metrics(summary: dict, core: ServingCore, requests) -> None:
    """``tenants`` (each tenant's figures, its share of the replica cost and its price) and
    ``fairness`` (``traces.tenant_metrics``), for a scenario with ``[[tenants]]``."""
    from traces.tenant_metrics import fairness, tenant_summary

    scenario = core.scenario
    frame = requests if isinstance(requests, pd.DataFrame) else requests.to_pandas()
    window = (scenario.warmup_s, scenario.duration_s)
    names = [t.name for t in scenario.tenants]
    summary["tenants"] = tenant_summary(
        frame, tenants=names, window_s=window,
        replica_seconds={d: s["replica_seconds"] for d, s in summary["deployments"].items()},
        price_per_replica_hour=scenario.price_per_replica_hour,
        price_per_1k_requests={t.name: t.price_per_1k_requests for t in scenario.tenants})
    for name, held in core.admission.report().items():
        summary["tenants"][name]["held_most"] = held["held_most"]
    summary["fairness"] = fairness(frame, weights={t.name: t.weight for t in scenario.tenants}, window_s=window)


def seed_timeline(core: ServingCore) -> pd.DataFrame:
    """A seed's ``timeline.parquet``: each deployment at each tick of its watch (``sim.core.scaling``)."""
    return timeline_frame(core.timeline)


RunOne = Callable[[int, Callable[[float], None], Path], tuple[dict, object, dict, "pd.DataFrame | None"]]


def run_seeds(prepared: Prepared, seeds: list[int], out: Path, run_one: RunOne, *, force: bool = False,
              unit: str = "sim s") -> list[dict]:
    """Run every seed into ``out/seed-<n>/`` with ``run_one(seed, progress, spool_dir) -> (config,
    requests, summary, timeline or None)``; ``out`` appears only once all seeds succeeded."""
    summaries = []
    duration_s = prepared.scenario.duration_s
    # one Progress over all seeds: many short seeds are long work too (one per seed never reported)
    desc = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    # the request spool beside the output: on its filesystem (requests.parquet is a link, not a
    # copy of a big file through a small /tmp), and gone with the staging directory if killed
    with atomic_output(out, force=force) as staging, scratch_directory(out, "spool") as spool, \
            Progress(duration_s * len(seeds), desc, unit) as progress:
        for index, seed in enumerate(seeds):
            config, requests, summary, timeline = run_one(
                seed, lambda done, before=index * duration_s: progress.update(before + done), spool)
            write_into(staging / f"seed-{seed}", config, requests, summary, timeline)
            del requests
            summaries.append(summary)
        pd.DataFrame([flatten(s) for s in summaries]).to_csv(staging / "runs.csv", index=False)
    return summaries
