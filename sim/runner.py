"""The simulator's seeds: each one a ``Simulation`` of the prepared scenario, through the core's driver."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import policies
from sim.core import driver
from sim.core.driver import BOUNDS, first_route, prepare  # noqa: F401  (the simulator's API, used by its CLI)
from sim.core.prepare import Prepared

from .engine import Simulation


def run_once(prepared: Prepared, seed: int, progress: Callable[[float], None] | None = None,
             spool_dir: Path | None = None):
    """One seed: returns (config, requests, summary), the three parts of a run output; ``requests``
    is a ``traces.runoutput.RequestTable`` (on disk, in ``spool_dir`` or the temporary directory:
    ``to_pandas()`` loads it)."""
    return run_seed(prepared, seed, progress, spool_dir)[:3]


def run_seed(prepared: Prepared, seed: int, progress: Callable[[float], None] | None = None,
             spool_dir: Path | None = None):
    """``run_once`` and the seed's timeline (None for the bounds, which serve no requests over time)."""
    if prepared.scenario.policy.name in BOUNDS:
        from .bounds import isolation_bound, oracle_static

        bound = oracle_static if prepared.scenario.policy.name == "oracle-static" else isolation_bound
        return (*bound(prepared, seed), None)
    scenario = dataclasses.replace(prepared.scenario, seed=seed)
    policy = policies.create(scenario.policy.name, scenario.policy.params)
    sim = Simulation(scenario, policy, bundle=prepared.bundle, profiles=prepared.profiles,
                     predictions=prepared.predictions, seed=seed, stage_predictions=prepared.stage_predictions,
                     bundles=prepared.bundles)
    result = sim.run(progress, spool_dir)
    summary = driver.seed_summary(result.summary(scenario), seed, sim.core, scenario.duration_s, result.requests)
    return driver.seed_config(prepared, scenario), result.requests, summary, driver.seed_timeline(sim.core)


def run_seeds(prepared: Prepared, seeds: list[int], out: Path, *, force: bool = False) -> list[dict]:
    """Every seed simulated into ``out/seed-<n>/``; ``out`` appears only once all seeds succeeded."""
    return driver.run_seeds(prepared, seeds, out, lambda seed, progress, spool: run_seed(prepared, seed, progress, spool),
                            force=force)
