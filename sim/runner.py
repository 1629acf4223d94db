"""From a scenario to run outputs: check it against its bundle, build the policy, run each seed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pandas as pd

import policies
from policies.base import Reject, Request, Route
from traces.errors import InputError
from traces.outputs import atomic_output, scratch_directory
from traces.prepare import Prepared, check_against_bundle
from traces.progress import Progress
from traces.runoutput import write_into
from traces.scenario import Scenario
from traces.summary import flatten

from .engine import Simulation


BOUNDS = ("oracle-static", "isolation-bound")  # computed by sim.bounds, not routing policies


def prepare(scenario: Scenario) -> Prepared:
    """Everything ``run`` checks before its first seed, so that ``simulate validate`` saying ok
    means ``simulate run`` starts: the scenario against its bundle (and the limits), the policy
    against the deployments, and the route it gives a first request. Errors name the ``--set`` or
    the scenario file they come from (``Scenario.blame``)."""
    try:
        return _prepare(scenario)
    except InputError as exc:
        raise scenario.blame(exc) from None


def _prepare(scenario: Scenario) -> Prepared:
    prepared = check_against_bundle(scenario)
    if scenario.policy.name in BOUNDS:
        if scenario.policy.params:
            key = next(iter(scenario.policy.params))
            raise InputError(f"policy.{key}", f"{scenario.policy.name} takes no parameters")
        return prepared
    first_route(prepared)
    return prepared


def first_route(prepared: Prepared) -> Route | Reject:
    """The route the policy gives a request arriving first, in an empty system, as checked by the
    engine: fails fast on the policy's name, parameters and setup against the deployments, and on
    a route the engine cannot serve (a cascade over deployments without predictions)."""
    scenario = prepared.scenario
    dry = dataclasses.replace(scenario, duration_s=min(scenario.duration_s, 1e-6), warmup_s=0.0)
    policy = policies.create(scenario.policy.name, scenario.policy.params)
    sim = Simulation(dry, policy, bundle=prepared.bundle, profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=scenario.seed)
    route = policy.route(Request(0, 0.0, max(scenario.requests.deadline_ms), 0), sim.view)
    sim._resolve(route)
    return route


def run_once(prepared: Prepared, seed: int, progress: Callable[[float], None] | None = None,
             spool_dir: Path | None = None):
    """One seed: returns (config, requests, summary), the three parts of a run output; ``requests``
    is a ``traces.runoutput.RequestTable`` (on disk, in ``spool_dir`` or the temporary directory:
    ``to_pandas()`` loads it)."""
    if prepared.scenario.policy.name in BOUNDS:
        from .bounds import isolation_bound, oracle_static

        bound = oracle_static if prepared.scenario.policy.name == "oracle-static" else isolation_bound
        return bound(prepared, seed)
    scenario = dataclasses.replace(prepared.scenario, seed=seed)
    policy = policies.create(scenario.policy.name, scenario.policy.params)
    sim = Simulation(scenario, policy, bundle=prepared.bundle, profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=seed)
    result = sim.run(progress, spool_dir)
    summary = result.summary(scenario)
    summary["seed"] = seed
    summary["deployments"] = result.deployments
    summary["faults"] = result.faults
    summary["policy"] = {"name": scenario.policy.name, **result.policy}
    config = scenario.resolved()
    if prepared.bundle is not None:
        config["bundle"] = str(prepared.bundle.path)  # the bundle actually used, bundled default included
    return config, result.requests, summary


def run_seeds(prepared: Prepared, seeds: list[int], out: Path, *, force: bool = False) -> list[dict]:
    """Run every seed into ``out/seed-<n>/``; ``out`` appears only once all seeds succeeded."""
    summaries = []
    duration_s = prepared.scenario.duration_s
    # one Progress over all seeds: many short seeds are long work too (one per seed never reported)
    desc = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    # the request spool beside the output: on its filesystem (requests.parquet is a link, not a
    # copy of a big file through a small /tmp), and gone with the staging directory if killed
    with atomic_output(out, force=force) as staging, scratch_directory(out, "spool") as spool, \
            Progress(duration_s * len(seeds), desc, "sim s") as progress:
        for index, seed in enumerate(seeds):
            config, requests, summary = run_once(prepared, seed,
                                                 lambda done, before=index * duration_s: progress.update(before + done),
                                                 spool_dir=spool)
            write_into(staging / f"seed-{seed}", config, requests, summary)
            del requests
            summaries.append(summary)
        pd.DataFrame([flatten(s) for s in summaries]).to_csv(staging / "runs.csv", index=False)
    return summaries
