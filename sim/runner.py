"""From a scenario to run outputs: check it against its bundle, build the policy, run each seed."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

import policies
from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable
from traces.runoutput import write_into
from traces.scenario import Scenario
from traces.summary import summarize
from traces.tables import atomic_directory

from .engine import Simulation


@dataclass
class Prepared:
    """A scenario checked against its bundle, with what every seed's run shares."""

    scenario: Scenario
    bundle: TraceBundle | None
    profiles: dict[str, LatencyProfile]
    predictions: PredictionTable | None


def prepare(scenario: Scenario) -> Prepared:
    measured = [d for d in scenario.deployments if d.variant is not None]
    bundle = None
    if measured:
        if scenario.bundle is None:
            raise InputError("bundle", f"deployment {measured[0].name!r} serves a measured variant, so the "
                             "scenario needs bundle = \"path/to/bundle\"")
        bundle = TraceBundle.load(scenario.bundle)
    profiles: dict[str, LatencyProfile] = {}
    for dep in scenario.deployments:
        where = f"deployments.{dep.name}"
        if dep.variant is None:
            profiles[dep.name] = LatencyProfile.from_distribution(dep.service, max(dep.max_batch_size, 64))
            continue
        if dep.variant not in bundle.variants:
            raise InputError(f"{where}.variant", f"{dep.variant!r} is not in bundle {bundle.path}; "
                             f"variants: {', '.join(bundle.variants)}")
        profile = LatencyProfile(bundle.latency_samples(dep.variant), measured=True)
        if not profile.min_batch_size <= dep.max_batch_size <= profile.max_batch_size:
            raise InputError(f"{where}.max_batch_size", f"{dep.variant!r} is measured at batch sizes "
                             f"{profile.min_batch_size}..{profile.max_batch_size}; got {dep.max_batch_size}")
        if profile.min_batch_size > 1:
            raise InputError(f"{where}.variant", f"{dep.variant!r} has no batch-size-1 measurements; "
                             "a batch of one request could not be timed")
        profiles[dep.name] = profile
    predictions = None
    if bundle is not None and bundle.predicted_variants:
        predictions = PredictionTable.from_bundle(bundle, sorted({d.variant for d in measured}))
    prepared = Prepared(scenario, bundle, profiles, predictions)
    # fail fast on the policy: its name, its parameters, and its setup against the deployments
    dry = dataclasses.replace(scenario, duration_s=min(scenario.duration_s, 1e-6), warmup_s=0.0)
    Simulation(dry, policies.create(scenario.policy.name, scenario.policy.params), bundle=bundle,
               profiles=profiles, predictions=predictions, seed=scenario.seed)
    return prepared


def run_once(prepared: Prepared, seed: int, progress: Callable[[float], None] | None = None):
    """One seed: returns (config, requests, summary), the three parts of a run output."""
    scenario = dataclasses.replace(prepared.scenario, seed=seed)
    policy = policies.create(scenario.policy.name, scenario.policy.params)
    sim = Simulation(scenario, policy, bundle=prepared.bundle, profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=seed)
    result = sim.run(progress)
    summary = summarize(result.requests, warmup_s=scenario.warmup_s, duration_s=scenario.duration_s,
                        deployments=result.deployments, price_per_replica_hour=scenario.price_per_replica_hour)
    summary["seed"] = seed
    summary["deployments"] = result.deployments
    return scenario.resolved(), result.requests, summary


def show_progress() -> bool:
    """Progress bars on a terminal, never in CI or when output is piped."""
    return sys.stderr.isatty() and not os.environ.get("CI")


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


def flatten(summary: dict, prefix: str = "") -> dict:
    """``{"latency_ms": {"p99": 3}}`` -> ``{"latency_ms.p99": 3}``."""
    flat = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        elif not isinstance(value, list):
            flat[name] = value
    return flat
