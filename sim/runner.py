"""From a scenario to run outputs: check it against its bundle, build the policy, run each seed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import pandas as pd

import policies
from traces.errors import InputError
from traces.prepare import Prepared, check_against_bundle
from traces.progress import show_progress
from traces.runoutput import write_into
from traces.scenario import Scenario
from traces.summary import flatten, summarize
from traces.tables import atomic_directory

from .engine import Simulation


BOUNDS = ("oracle-static", "isolation-bound")  # computed by sim.bounds, not routing policies


def prepare(scenario: Scenario) -> Prepared:
    """Check the scenario against its bundle and the policy against the deployments."""
    prepared = check_against_bundle(scenario)
    if scenario.policy.name in BOUNDS:
        if scenario.policy.params:
            key = next(iter(scenario.policy.params))
            raise InputError(f"policy.{key}", f"{scenario.policy.name} takes no parameters")
        return prepared
    # fail fast on the policy: its name, its parameters, and its setup against the deployments
    dry = dataclasses.replace(scenario, duration_s=min(scenario.duration_s, 1e-6), warmup_s=0.0)
    Simulation(dry, policies.create(scenario.policy.name, scenario.policy.params), bundle=prepared.bundle,
               profiles=prepared.profiles, predictions=prepared.predictions, seed=scenario.seed)
    return prepared


def run_once(prepared: Prepared, seed: int, progress: Callable[[float], None] | None = None):
    """One seed: returns (config, requests, summary), the three parts of a run output."""
    if prepared.scenario.policy.name in BOUNDS:
        from .bounds import isolation_bound, oracle_static

        bound = oracle_static if prepared.scenario.policy.name == "oracle-static" else isolation_bound
        return bound(prepared, seed)
    scenario = dataclasses.replace(prepared.scenario, seed=seed)
    policy = policies.create(scenario.policy.name, scenario.policy.params)
    sim = Simulation(scenario, policy, bundle=prepared.bundle, profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=seed)
    result = sim.run(progress)
    summary = summarize(result.requests, warmup_s=scenario.warmup_s, duration_s=scenario.duration_s,
                        deployments=result.deployments, price_per_replica_hour=scenario.price_per_replica_hour)
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
    with atomic_directory(out, force=force) as staging:
        for seed in seeds:
            bar = None
            if show_progress():
                from tqdm import tqdm
                bar = tqdm(total=prepared.scenario.duration_s, desc=f"seed {seed}", unit="sim s", leave=False)
            config, requests, summary = run_once(prepared, seed, None if bar is None else
                                                 lambda t, bar=bar: bar.update(t - bar.n))
            if bar is not None:
                bar.close()
            write_into(staging / f"seed-{seed}", config, requests, summary)
            summaries.append(summary)
        pd.DataFrame([flatten(s) for s in summaries]).to_csv(staging / "runs.csv", index=False)
    return summaries
