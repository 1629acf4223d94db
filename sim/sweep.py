"""Sweeps: a base scenario and axes expand to a grid of runs, run in parallel, resumably.

```toml
base = "demo.toml"                    # the base scenario (relative to this file)
seeds = [1, 2, 3]                     # the seed axis

[axes]                                # any scenario key, dotted; each value is one grid point
"requests.deadline_ms" = [20.0, 50.0]
load = [0.5, 0.9]                     # multiplies every arrival rate (replay: its rate_scale)

[groups.policy]                       # a named axis whose values each set several keys
planner = { "policy" = { name = "planner" } }
infaas = { "policy" = { name = "infaas", accuracy_floor = 0.9 } }
```
Each run writes ``runs/<run id>/`` (the run output) and one row of ``results.parquet`` (the axis
values plus every summary metric, flattened). A run whose directory exists is not run again, so an
interrupted sweep resumes. Local processes by default; ``--executor ray`` runs the same tasks on a
Ray cluster. Results do not depend on the executor: every run is seeded by its own seed axis value.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from traces.checks import reject_unknown, table
from traces.errors import InputError
from traces.runoutput import write_run
from traces.scenario import read_toml, scenario_from_dict, set_path
from traces.summary import flatten

@dataclass(frozen=True)
class Task:
    run_id: str
    point: dict            # axis name -> value label
    raw: dict              # the scenario, overrides applied
    base_dir: str
    seed: int


def _label(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def scale_load(arrivals: dict, factor: float) -> dict:
    arrivals = dict(arrivals)
    if "rate_rps" in arrivals:
        arrivals["rate_rps"] = arrivals["rate_rps"] * factor
    if "rates_rps" in arrivals:
        arrivals["rates_rps"] = [r * factor for r in arrivals["rates_rps"]]
    if arrivals.get("kind") == "replay":
        arrivals["rate_scale"] = arrivals.get("rate_scale", 1.0) * factor
    return arrivals


def expand(path: str | Path) -> list[Task]:
    """The grid of a sweep file, in a stable order; every scenario is validated here."""
    path = Path(path)
    sweep = read_toml(path)
    reject_unknown(sweep, ("base", "seeds", "axes", "groups"), "")
    base_path = path.parent / str(sweep.get("base", ""))
    if "base" not in sweep or not base_path.is_file():
        raise InputError(f"{path}: base", f"must name an existing scenario file, got {sweep.get('base')!r}")
    base = read_toml(base_path)
    axes: list[tuple[str, list[tuple[str, dict]]]] = []
    for key, values in table(sweep, "axes", "", required=False).items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: axes.{key}", "must be a non-empty list of values")
        axes.append((key, [(_label(v), {key: v}) for v in values]))
    for name, options in table(sweep, "groups", "", required=False).items():
        if not isinstance(options, dict) or not options:
            raise InputError(f"{path}: groups.{name}", "must be a table of named values, each a table of keys")
        axes.append((name, [(label, keys) for label, keys in options.items()]))
    seeds = sweep.get("seeds", [base.get("seed", 1)])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise InputError(f"{path}: seeds", f"must be a list of non-negative integers, got {seeds!r}")
    tasks = []
    for combo in itertools.product(*[values for _, values in axes]):
        raw = copy.deepcopy(base)
        point = {}
        for (axis, _), (label, keys) in zip(axes, combo):
            point[axis] = label
            for key, value in keys.items():
                _set(raw, key, value, f"{path}: {axis}")
        try:
            scenario_from_dict(raw, base_dir=base_path.parent)
        except InputError as exc:
            raise InputError(f"{path}: point {point}: {exc.where}", exc.problem) from None
        for seed in seeds:
            ident = hashlib.sha1(json.dumps({**point, "seed": seed}, sort_keys=True).encode()).hexdigest()[:10]
            tasks.append(Task(ident, {**point, "seed": seed}, raw, str(base_path.parent), seed))
    return tasks


def _set(raw: dict, key: str, value, where: str) -> None:
    if key == "load":
        raw["arrivals"] = scale_load(raw.get("arrivals", {}), float(value))
    else:
        set_path(raw, key, value, where=f"{where}: {key}")


def run_task(task: Task, runs_dir: str) -> dict:
    """Run one grid point (in a worker) and write its run output; returns its results row."""
    from .runner import prepare, run_once

    scenario = scenario_from_dict(task.raw, base_dir=Path(task.base_dir))
    out = Path(runs_dir) / task.run_id
    config, requests, summary = run_once(prepare(scenario), task.seed)
    summary["point"] = task.point
    write_run(out, config, requests, summary, force=True)
    return result_row(task, summary)


def result_row(task: Task, summary: dict) -> dict:
    row = {"run_id": task.run_id, **task.point}
    row.update({k: v for k, v in flatten(summary).items() if not k.startswith(("point.", "deployments."))})
    return row


def run_sweep(path: str | Path, out: str | Path, *, executor: str = "local", workers: int | None = None,
              address: str | None = None, progress: bool = False) -> pd.DataFrame:
    tasks = expand(path)
    out = Path(out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    todo = []
    for task in tasks:
        done = runs_dir / task.run_id / "summary.json"
        if done.is_file():
            rows[task.run_id] = result_row(task, json.loads(done.read_text()))
        else:
            shutil.rmtree(runs_dir / task.run_id, ignore_errors=True)
            todo.append(task)
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="sweep", unit="run")
    if executor == "ray":
        rows.update(_run_ray(todo, str(runs_dir), address, bar))
    else:
        rows.update(_run_local(todo, str(runs_dir), workers or os.cpu_count() or 1, bar))
    if bar is not None:
        bar.close()
    frame = pd.DataFrame([rows[t.run_id] for t in tasks])
    frame.attrs["axes"] = list(tasks[0].point) if tasks else []
    tmp = out / "results.parquet.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out / "results.parquet")
    (out / "sweep.json").write_text(json.dumps({"sweep": str(Path(path).resolve()), "runs": len(tasks)}, indent=2))
    return frame


def _run_local(tasks: list[Task], runs_dir: str, workers: int, bar) -> dict[str, dict]:
    rows = {}
    if workers <= 1:
        for task in tasks:
            rows[task.run_id] = run_task(task, runs_dir)
            if bar is not None:
                bar.update(1)
        return rows
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_task, task, runs_dir): task for task in tasks}
        for future in as_completed(futures):
            rows[futures[future].run_id] = future.result()
            if bar is not None:
                bar.update(1)
    return rows


def _run_ray(tasks: list[Task], runs_dir: str, address: str | None, bar) -> dict[str, dict]:
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray", "needs the optional extra: pip install 'servesim[dist]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})
    remote = ray.remote(run_task)
    pending = {remote.remote(task, runs_dir): task for task in tasks}
    rows = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            rows[task.run_id] = ray.get(ready[0])
            if bar is not None:
                bar.update(1)
    finally:
        if started:
            ray.shutdown()
    return rows
