"""Timing replica start-ups (cold starts) into an existing bundle's ``startup`` table.

An autoscaler's new replica serves only once it has started, so the simulator needs each
variant's start-up time. It is timed here exactly as ``measure serve`` pays it: from
``ProcessRunner(recipe)`` (a freshly spawned process pinned to the replica core, the recipe the
server uses) until ``warmup()`` returns, that is the process started,
torch and the model code imported, the task's data and the checkpoint loaded, the variant built
(pruning, precision) and its warm-up batches run (``WARM_RUNS`` of every size up to
``max_batch_size``, as the server warms a deployment of that batch size). The child reports how
long each of its phases took; what is left of the total is ``spawn_s``.

One difference from the server: the child runs at normal priority, not idle (``SCHED_IDLE``).
The server lowers its replicas so that its front end always wins; on a machine with nothing else
running that changes nothing for a start-up, but on a shared one any busy process would starve an
idle-priority start-up for as long as it runs (seen here: a tiny CNN's replica not ready after
300 s beside a training job), and the table would measure the neighbours instead.

Each variant is started once untimed first, since the first start reads torch's libraries from
disk; before that a pruned variant's fine-tune, which runs on its first use and is then cached in
the zoo, is done here (``prime``), without the replica's start-up timeout. The timed start-ups are
thus warm-cache ones, what a machine already serving that model pays to add a replica.

The table goes into a bundle that ``measure latency`` made: a start-up time belongs to a measured
variant. Every other file of the bundle is copied byte for byte (``traces.startup.save_startup``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from traces.startup import PHASE_COLUMNS

from .profile import Profile, VariantSpec
from .replicas import ProcessRunner, RunnerRecipe, replica_cpus

MAX_REPEATS = 1000


@dataclass(frozen=True)
class StartupPlan:
    """What to time: which variants, how many timed start-ups each, warmed up to which batch size."""

    variants: tuple[VariantSpec, ...]
    repeats: int = 5
    max_batch_size: int = 8

    def recipe(self, profile: Profile, spec: VariantSpec) -> RunnerRecipe:
        return RunnerRecipe(str(profile.zoo_dir), profile.task, spec.id, profile.threads,
                            warm_batch_sizes=tuple(range(1, self.max_batch_size + 1)), background=False,
                            cpus=next(replica_cpus()))


def time_startup(recipe: RunnerRecipe) -> dict[str, float]:
    """One start-up of a replica process, spawn to ready: ``startup_s``, the phases, ``started_at_s``."""
    started_at_s = time.time()
    t0 = time.perf_counter()
    runner = ProcessRunner(recipe)
    try:
        runner.warmup()
        total_s = time.perf_counter() - t0
        phases = {k: float(v) for k, v in runner.startup_phases_s.items() if k in PHASE_COLUMNS}
    finally:
        runner.close()
    phases["spawn_s"] = max(total_s - sum(phases.values()), 0.0)
    return {"startup_s": total_s, **phases, "started_at_s": started_at_s}


def prime(profile: Profile, spec: VariantSpec) -> None:
    """Fill the zoo cache that a pruned variant's first start would fill (its fine-tuned weights)."""
    if spec.pruning == "none":
        return
    from .variants import finetuned_pruned_state
    from .zoo import load_zoo_task

    data = load_zoo_task(profile.zoo_dir, profile.task)
    finetuned_pruned_state(profile.zoo_dir, profile.task, spec.model, spec.pruning, data)


def time_variant(profile: Profile, spec: VariantSpec, plan: StartupPlan) -> pd.DataFrame:
    """The caches filled (``prime``, one untimed start), then ``plan.repeats`` timed starts, one row each."""
    prime(profile, spec)
    recipe = plan.recipe(profile, spec)
    time_startup(recipe)
    rows = [time_startup(recipe) for _ in range(plan.repeats)]
    frame = pd.DataFrame(rows)
    frame.insert(0, "variant", spec.id)
    return frame[["variant", "startup_s", *PHASE_COLUMNS, "started_at_s"]]


def describe(frame: pd.DataFrame) -> str:
    """One line about one variant's start-ups: median and range, median phases."""
    total = frame["startup_s"]
    phases = ", ".join(f"{c[:-2]} {frame[c].median():.2f}" for c in PHASE_COLUMNS)
    return (f"startup median {total.median():.2f} s (min {total.min():.2f}, max {total.max():.2f}; "
            f"{phases} s; {len(frame)} runs)")


def measure_startups(profile: Profile, plan: StartupPlan, say=print) -> tuple[pd.DataFrame, list[dict]]:
    """Time every variant of the plan; a line per variant through ``say``. Returns the table
    and the variants that failed to start (variant, reason)."""
    from .variants import VariantUnsupported

    frames, failed = [], []
    for spec in plan.variants:
        try:
            frame = time_variant(profile, spec, plan)
        except (RuntimeError, VariantUnsupported) as exc:  # RuntimeError: the child's, raised by ProcessRunner
            reason = str(exc).splitlines()[0][:300]
            failed.append({"variant": spec.id, "reason": reason})
            say(f"  skipped {spec.id}: {reason}")
            continue
        frames.append(frame)
        say(f"  {spec.id}: {describe(frame)}")
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, failed


def startup_meta(command: str, plan: StartupPlan, table: pd.DataFrame, failed: list[dict],
                 load_before: tuple[float, ...]) -> dict:
    """What ``bundle.json`` records under ``startup``: how and when the table was measured, and
    each variant's median start-up time (s)."""
    return {
        "command": command, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "repeats": plan.repeats, "max_batch_size": plan.max_batch_size, "untimed_first_start": True,
        "timed": "ProcessRunner spawn to ready (measure.replicas), pinned as measure serve starts one, normal priority",
        "load_average_before": [round(x, 2) for x in load_before], "cores": os.cpu_count(), "failed": failed,
        "median_s": {str(v): round(float(np.median(g)), 3) for v, g in table.groupby("variant")["startup_s"]},
    }
