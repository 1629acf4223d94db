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
values plus every summary metric, flattened). Local processes by default; ``--executor ray`` runs
the same tasks on Ray (a private, loopback-only instance unless ``--address`` names a cluster).
Results do not depend on the executor: every run is seeded by its own seed axis value. The driver
resolves every path a run reads (bundles, a replayed trace, the bundled default bundle) to an
absolute one before any run starts, so where a worker runs, or from which directory, changes
nothing.

Why run ids are content hashes: a sweep resumed after its base scenario changed used to return the
old results. A run's id is now a hash of what decides its result: the axis point, the seed, the
fully resolved scenario after the point is applied, and the *contents* of the files it reads (the
bundle: ``bundle.json`` and its service and predictions tables; a replayed arrival trace). Where
those files or the sweep file live is left out (``source`` and paths are dropped from the resolved
scenario), so a sweep moved or copied elsewhere with the same contents keeps its ids and resumes.
Changing the base, a bundle, a trace or an axis value changes the id, so a stale run is never reused.

The output: ``sweep.json`` records the sweep's identity (a hash of its ordered run ids) and the
sweep file. A rerun with the same identity resumes in place: finished runs (their ``summary.json``
exists; each run directory appears whole or not at all) are kept, the rest run, and one line says
how many of each. An ``--out`` holding a different sweep (or another output of ours) is refused
without ``--force``; with it the new sweep is built in a staging directory (``traces.outputs``)
holding hard links to the old finished runs, and swapped in only when complete. Run directories
that belong to no run of the sweep are kept and reported, never deleted. ``results.parquet`` is
built from the ``summary.json`` files in task order, so it is byte-identical whether the sweep ran
in one go or was resumed, in any order, on any executor.

Where the runs execute (local processes that die with the driver, or Ray): ``sim.workers``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from traces.checks import reject_unknown, table
from traces.errors import InputError
from traces.arrivals import Replay
from traces.outputs import MARKER, atomic_output, check_target, sweep_leftovers, write_marker
from sim.core.prepare import bundled_bundle_for
from traces.runoutput import write_run
from traces.scenario import Scenario, read_toml, scenario_from_dict, set_path
from traces.summary import flatten
from traces.tables import find_table

from .cluster import CONNECT_TIMEOUT_S
from .workers import Executor

RECORD = "sweep.json"
RESULTS = "results.parquet"
ID_HEX = 16                      # run and sweep ids: the first 16 hex digits of a SHA-256


@dataclass(frozen=True)
class Task:
    run_id: str
    point: dict            # axis name -> value label
    raw: dict              # the scenario, overrides applied, every path it reads absolute
    base_dir: str
    seed: int
    sweep: str = ""        # the sweep file, to name it in errors raised while running
    inputs: tuple[str, ...] = ()  # the bundle directories and trace files the run reads (absolute)


def _label(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ContentHashes:
    """Content hashes of the files a sweep's runs read, each file read once per sweep."""

    def __init__(self) -> None:
        self._files: dict[Path, str] = {}
        self._bundles: dict[Path, str] = {}
        self._defaults: dict[str, Path | None] = {}

    def file(self, path: Path) -> str:
        key = Path(path).resolve()
        if key not in self._files:
            digest = hashlib.sha256()
            try:
                with open(key, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError as exc:
                raise InputError(str(path), f"cannot be read ({exc.strerror})") from None
            self._files[key] = digest.hexdigest()
        return self._files[key]

    def bundle(self, path: Path) -> str:
        """bundle.json and the service, predictions and startup tables, as ``TraceBundle.load``
        finds them (a new replica's cold start is drawn from the startup table)."""
        key = Path(path).resolve()
        if key not in self._bundles:
            if not (key / "bundle.json").is_file():
                raise InputError(str(path), "not a trace bundle: missing bundle.json")
            parts = {"bundle.json": self.file(key / "bundle.json")}
            service = find_table(key, "service")
            parts[service.name] = self.file(service)
            try:
                predictions = find_table(key, "predictions")
            except InputError:
                pass  # a latency-only bundle
            else:
                parts[predictions.name] = self.file(predictions)
            try:
                startup = find_table(key, "startup")
            except InputError:
                pass  # no start-up times measured
            else:
                parts[startup.name] = self.file(startup)
            self._bundles[key] = _digest(parts)
        return self._bundles[key]

    def bundle_used(self, scenario: Scenario) -> Path | None:
        """The bundle a scenario runs on: its own, else the bundled one ``prepare`` would pick."""
        measured = [d.variant for d in scenario.deployments if d.variant is not None]
        if not measured:
            return None
        return scenario.bundle if scenario.bundle is not None else self.bundled(measured[0])

    def bundled(self, variant: str) -> Path | None:
        """The bundled bundle that measured ``variant`` (``sim.core.prepare.bundled_bundle_for``)."""
        if variant not in self._defaults:
            self._defaults[variant] = bundled_bundle_for(variant)
        return self._defaults[variant]

    def run_id(self, scenario: Scenario, point: dict) -> str:
        """The id of the run of ``scenario`` at ``point`` (axis labels and the seed)."""
        config = scenario.resolved()
        config.pop("source", None)
        config["seed"] = point["seed"]
        bundle = self.bundle_used(scenario)
        config["bundle"] = None if bundle is None else self.bundle(bundle)
        for resolved, deployment in zip(config["deployments"], scenario.deployments):
            if deployment.bundle is not None:  # a pipeline stage's own bundle: its contents, not its path
                resolved["bundle"] = self.bundle(deployment.bundle)
        for entry, process in _arrival_tables(config, scenario):
            if isinstance(process, Replay):  # a replayed trace: its contents, not its path
                entry["path"] = self.file(process.path)
        return _digest({"point": point, "scenario": config})[:ID_HEX]


def scale_load(arrivals: dict, factor: float) -> dict:
    arrivals = dict(arrivals)
    if "rate_rps" in arrivals:
        arrivals["rate_rps"] = arrivals["rate_rps"] * factor
    if "rates_rps" in arrivals:
        arrivals["rates_rps"] = [r * factor for r in arrivals["rates_rps"]]
    if arrivals.get("kind") == "replay":
        arrivals["rate_scale"] = arrivals.get("rate_scale", 1.0) * factor
    return arrivals


def _axes(path: Path, sweep: dict) -> list[tuple[str, list[tuple[str, dict]]]]:
    """(axis name, [(value label, keys it sets)]) for every axis and group; duplicates refused."""
    axes: list[tuple[str, list[tuple[str, dict]]]] = []
    for key, values in table(sweep, "axes", "", required=False).items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: axes.{key}", "must be a non-empty list of values")
        for i, value in enumerate(values):
            for other in values[:i]:
                if other == value or _label(other) == _label(value):
                    raise InputError(f"{path}: axes.{key}", f"lists the value {_label(value)} twice; "
                                     "each value must be distinct")
        axes.append((key, [(_label(v), {key: v}) for v in values]))
    for name, options in table(sweep, "groups", "", required=False).items():
        if not isinstance(options, dict) or not options:
            raise InputError(f"{path}: groups.{name}", "must be a table of named values, each a table of keys")
        seen: dict[str, str] = {}
        for label, keys in options.items():
            if not isinstance(keys, dict):
                raise InputError(f"{path}: groups.{name}.{label}", "must be a table of keys")
            same = seen.setdefault(_digest(keys), label)
            if same != label:
                raise InputError(f"{path}: groups.{name}", f"values {same!r} and {label!r} set the same keys "
                                 f"{_label(keys)}; each value must be distinct")
        if name in {axis for axis, _ in axes}:
            raise InputError(f"{path}: groups.{name}", "is also the name of an axis; names must be distinct")
        axes.append((name, list(options.items())))
    if "seed" in {axis for axis, _ in axes}:
        raise InputError(f"{path}: seed", "is the seed axis; set seeds = [...] instead")
    return axes


def expand(path: str | Path) -> list[Task]:
    """The grid of a sweep file, in a stable order; every scenario is validated here."""
    path = Path(path)
    sweep = read_toml(path)
    reject_unknown(sweep, ("base", "seeds", "axes", "groups"), "")
    base_path = path.parent / str(sweep.get("base", ""))
    if "base" not in sweep or not base_path.is_file():
        raise InputError(f"{path}: base", f"must name an existing scenario file, got {sweep.get('base')!r}")
    base = read_toml(base_path)
    axes = _axes(path, sweep)
    seeds = sweep.get("seeds", [base.get("seed", 1)])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise InputError(f"{path}: seeds", f"must be a list of non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{path}: seeds", f"lists a seed twice ({seeds!r}); each seed must be distinct")
    hashes = ContentHashes()
    tasks = []
    for combo in itertools.product(*[values for _, values in axes]):
        raw = copy.deepcopy(base)
        point = {}
        for (axis, _), (label, keys) in zip(axes, combo):
            point[axis] = label
            for key, value in keys.items():
                _set(raw, key, value, f"{path}: {axis}")
        try:
            scenario = scenario_from_dict(raw, base_dir=base_path.parent)
            ids = [hashes.run_id(scenario, {**point, "seed": seed}) for seed in seeds]
        except InputError as exc:
            raise InputError(f"{path}: point {point}: {exc.where}", exc.problem) from None
        raw, inputs = absolute_paths(raw, scenario, hashes)
        for seed, run_id in zip(seeds, ids):
            tasks.append(Task(run_id, {**point, "seed": seed}, raw, str(base_path.parent.resolve()), seed, str(path),
                              inputs))
    return tasks


def absolute_paths(raw: dict, scenario: Scenario, hashes: ContentHashes) -> tuple[dict, tuple[str, ...]]:
    """``raw`` with every path in it absolute and the bundled default bundle named, and the paths
    the run reads. Relative paths would otherwise resolve against the working directory of whatever
    process runs the scenario (on Ray: wherever ``ray start`` was run), and the bundled default
    against that process's copy of the project."""
    raw, inputs = copy.deepcopy(raw), []

    def absolute(path: Path, read: bool = True) -> str:
        inputs.extend([str(Path(path).resolve())] if read else [])
        return str(Path(path).resolve())

    shared = [d for d in scenario.deployments if d.variant is not None and d.bundle is None]
    bundle = scenario.bundle if scenario.bundle is not None or not shared else hashes.bundled(shared[0].variant)
    if bundle is not None:
        raw["bundle"] = absolute(bundle, read=bool(shared))
    for entry, deployment in zip(raw.get("deployments") or [], scenario.deployments):
        if deployment.bundle is not None:
            entry["bundle"] = absolute(deployment.bundle, read=deployment.variant is not None)
    for entry, process in _arrival_tables(raw, scenario):
        if isinstance(process, Replay):
            entry["path"] = absolute(process.path)
    return raw, tuple(dict.fromkeys(inputs))


def _arrival_tables(raw: dict, scenario: Scenario) -> list[tuple[dict, object]]:
    """(the raw arrivals table, its process): the scenario's, or each tenant's."""
    if scenario.tenants:
        return [(entry["arrivals"], tenant.arrivals) for entry, tenant in zip(raw["tenants"], scenario.tenants)]
    return [(raw["arrivals"], scenario.arrivals)]


def sweep_identity(tasks: list[Task]) -> str:
    """The identity of a sweep: a hash of its task list (every run id, in order)."""
    return _digest([t.run_id for t in tasks])[:ID_HEX]


def _set(raw: dict, key: str, value, where: str) -> None:
    if key == "load" and isinstance(raw.get("tenants"), list):  # every tenant's traffic
        for tenant in raw["tenants"]:
            if isinstance(tenant, dict):
                tenant["arrivals"] = scale_load(tenant.get("arrivals", {}), float(value))
    elif key == "load":
        raw["arrivals"] = scale_load(raw.get("arrivals", {}), float(value))
    else:
        set_path(raw, key, value, where=f"{where}: {key}")


def compute(task: Task, prepare: Callable | None = None):
    """One run of a grid point: ``(config, requests, summary, timeline)``, the parts of its run
    output (``timeline`` None for the bounds).
    ``prepare`` checks the scenario against its bundle (default ``sim.runner.prepare``; a Ray worker
    passes one that remembers it for the point's other seeds)."""
    from . import runner

    try:
        scenario = scenario_from_dict(task.raw, base_dir=Path(task.base_dir))
        config, requests, summary, timeline = runner.run_seed((prepare or runner.prepare)(scenario), task.seed)
    except InputError as exc:
        raise InputError(f"{task.sweep}: point {task.point}: {exc.where}", exc.problem) from None
    summary["point"] = task.point
    return config, requests, summary, timeline


def run_task(task: Task, runs_dir: str) -> str:
    """Run one grid point (in a local worker) and write its run output ``runs_dir/<run id>``."""
    config, requests, summary, timeline = compute(task)
    write_run(Path(runs_dir) / task.run_id, config, requests, summary, force=True, timeline=timeline)
    return task.run_id


def result_row(task: Task, summary: dict) -> dict:
    row = {"run_id": task.run_id, **task.point}
    row.update({k: v for k, v in flatten(summary).items() if not k.startswith(("point.", "deployments."))})
    return row


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run_sweep(path: str | Path, out: str | Path, *, executor: str = "local", workers: int | None = None,
              address: str | None = None, progress: bool = False, force: bool = False,
              connect_timeout_s: float = CONNECT_TIMEOUT_S, log: Callable[[str], None] = _stderr) -> pd.DataFrame:
    """Run (or resume) a sweep into ``out``; returns the results table, also in ``out/results.parquet``.
    ``executor="ray"``: on a private local Ray instance of ``workers`` CPUs, or on the cluster at
    ``address`` (``"auto"``: one running on this machine)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError("--workers", f"must be an integer >= 1, got {workers}")
    if executor not in ("local", "ray"):
        raise InputError("--executor", f"must be local or ray, got {executor!r}")
    if address is not None and executor != "ray":
        raise InputError("--address", "names a Ray cluster; it needs --executor ray (local processes take no address)")
    if address is not None and workers is not None:
        raise InputError("--workers", "sets the CPUs of a private Ray instance; a cluster at --address has its own")
    if not connect_timeout_s > 0:
        raise InputError("--connect-timeout", f"must be a number of seconds > 0, got {connect_timeout_s}")
    tasks = expand(path)
    record = {"identity": sweep_identity(tasks), "runs": len(tasks), "sweep": str(Path(path).resolve())}
    # a file, the cwd, the home directory, a stranger's directory, or (without --force) another
    # kind of output of ours: refused
    out = check_target(out, force=force, resume="sweep")
    sweep_leftovers(out)
    previous = _read_record(out)
    execute = Executor(executor, workers, address, progress, connect_timeout_s=connect_timeout_s, log=log)
    resumed = out.is_dir() and any(p.name != MARKER for p in out.iterdir())
    if resumed and previous.get("identity") != record["identity"]:
        if not force:
            now = (f"its runs changed since (the base, a bundle, a trace or the axes; now identity {record['identity']})"
                   if previous.get("sweep") == record["sweep"] else
                   f"not this sweep {record['sweep']} (identity {record['identity']})")
            raise InputError(str(out), f"holds {_describe(previous)}, {now}; pass --force to replace it "
                             "(finished runs that still match are kept), or choose another --out")
    needed = any(not (out / "runs" / t.run_id / "summary.json").is_file() for t in tasks)
    with execute.session(needed):  # connected to Ray (or refused) before anything is written
        if resumed and previous.get("identity") != record["identity"]:
            log(f"replacing {_describe(previous)} in {out} with sweep {record['sweep']}")
            with atomic_output(out, force=True, kind="sweep") as staging:
                _link_runs(out / "runs", staging / "runs")
                return _build(staging, record, tasks, execute, log, resumed=True)
        out.mkdir(parents=True, exist_ok=True)
        if not resumed:
            write_marker(out, "sweep")
        return _build(out, record, tasks, execute, log, resumed=resumed)


def _read_record(out: Path) -> dict:
    try:
        record = json.loads((out / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {"sweep": "?"}


def _describe(record: dict) -> str:
    if not record:
        return "an output that is not a sweep (no readable sweep.json)"
    if "identity" not in record:
        return f"sweep {record.get('sweep', '?')} written before runs had content identities"
    return f"sweep {record.get('sweep', '?')} (identity {record['identity']}, {record.get('runs', '?')} runs)"


def finished_runs(runs_dir: Path) -> list[Path]:
    """The run directories in place under ``runs_dir`` with their summary: not a hidden staging
    directory, which a run stopped before its rename leaves (with a summary in it, perhaps)."""
    if not runs_dir.is_dir():
        return []
    return [run for run in sorted(runs_dir.iterdir()) if not run.name.startswith(".") and (run / "summary.json").is_file()]


def _link_runs(old: Path, new: Path) -> None:
    """Hard-link (or copy) the finished run directories of ``old`` into ``new``."""
    new.mkdir(parents=True, exist_ok=True)
    for run in finished_runs(old):
        shutil.copytree(run, new / run.name, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build(directory: Path, record: dict, tasks: list[Task], execute: Executor,
           log: Callable[[str], None], *, resumed: bool) -> pd.DataFrame:
    """Run the unfinished tasks into ``directory/runs`` and write the results table."""
    _write_atomic(directory / RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")
    runs_dir = directory / "runs"
    runs_dir.mkdir(exist_ok=True)
    todo = [t for t in tasks if not (runs_dir / t.run_id / "summary.json").is_file()]
    ids = {t.run_id for t in tasks}
    strays = sorted(p.name for p in runs_dir.iterdir() if not p.name.startswith(".") and p.name not in ids)
    if resumed:
        line = f"resumed: {len(tasks) - len(todo)} runs done before, {len(todo)} run now"
        if strays:
            shown = ", ".join(strays[:3]) + (", ..." if len(strays) > 3 else "")
            line += f"; {len(strays)} run directories in runs/ not in this sweep left alone ({shown})"
        log(line)
    execute(run_task, todo, str(runs_dir))
    rows = [result_row(t, json.loads((runs_dir / t.run_id / "summary.json").read_text())) for t in tasks]
    frame = pd.DataFrame(rows)
    frame.attrs["axes"] = list(tasks[0].point) if tasks else []
    tmp = directory / f".{RESULTS}.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, directory / RESULTS)
    return frame


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
