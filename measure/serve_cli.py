"""`measure serve`: the scenario file that `simulate run` takes, executed on real model replicas."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import replace
from pathlib import Path


import policies
from traces.errors import InputError
from sim.core.driver import prepare, run_seeds, seed_config, seed_summary, seed_timeline  # validate ok means serve starts
from sim.core.prepare import Prepared
from traces.outputs import check_target
from traces.provenance import REPO_ROOT  # not measure.harness's: that one imports torch
from traces.scenario import load_scenario, parse_seeds
from traces.stages import stage_index
from traces.summary import legend, summary_table


def zoo_location(bundle, override: str | None) -> tuple[Path, str]:
    """Where the models of ``bundle``'s task were trained: ``--zoo``, else its ``zoo_dir``."""
    meta = bundle.meta
    task = meta.get("task")
    if override:
        zoo = Path(override)
    elif meta.get("zoo_dir"):
        zoo = Path(meta["zoo_dir"])
        zoo = zoo if zoo.is_absolute() else REPO_ROOT / zoo
    else:
        raise InputError(str(bundle.path), "bundle.json names no zoo_dir; pass --zoo DIR")
    if not task or not (zoo / task).is_dir():
        raise InputError(str(zoo), f"no trained models for task {task!r} here; run `measure train` or pass --zoo DIR")
    return zoo, task


def runner_factories(prepared: Prepared, zoo_override: str | None, seed: int,
                     replica: str = "process", pin: bool = True) -> tuple[dict, list]:
    """One factory per deployment (called once per replica) and each stage's labels in its
    table's sample order (None for a stage with no measured deployment).

    ``replica="process"`` gives each replica a process of its own (``measure.replicas``), the way
    the bundle's latencies were timed; ``"thread"`` runs every model in this process. ``pin`` puts
    each replica process on a CPU of its own where there are enough (``measure.replicas.replica_cpus``).
    A pipeline's stages may be measured in different bundles, each with its own zoo and task.
    """
    from .server import parametric_runners

    scenario = prepared.scenario
    factories, labels = {}, []
    stage_of = stage_index(scenario.stages, [d.name for d in scenario.deployments])
    cpus = None
    for stage, table in enumerate(prepared.stage_predictions or (prepared.predictions,)):
        measured = [d for d in scenario.deployments if d.variant is not None and stage_of[d.name] == stage]
        if not measured:
            labels.append(None)
            continue
        import torch

        from .replicas import ProcessRunner, RunnerRecipe, build_runner, replica_cpus
        from .zoo import load_zoo_task

        bundle = prepared.bundles.get(measured[0].name, prepared.bundle)
        zoo, task = zoo_location(bundle, zoo_override)
        data = load_zoo_task(zoo, task)
        threads = int(bundle.meta.get("threads", 1))
        torch.set_num_threads(threads)
        row_of = {sample_id: row for row, sample_id in enumerate(data.eval_ids)}
        if table is None:
            raise InputError(str(bundle.path), "serving needs the bundle's predictions (run `measure accuracy`)")
        missing = [s for s in table.sample_ids if s not in row_of]
        if missing:
            raise InputError(str(bundle.path), f"sample {missing[0]!r} is not in the zoo's evaluation set")
        rows = tuple(row_of[s] for s in table.sample_ids)
        labels.append(data.y_eval.index_select(0, torch.as_tensor(rows)).numpy())
        if replica == "process":
            if cpus is None:
                cpus = replica_cpus() if pin else itertools.repeat(None)
            for dep in measured:
                recipe = RunnerRecipe(str(zoo), task, dep.variant, threads, rows,
                                      tuple(range(1, dep.max_batch_size + 1)))
                factories[dep.name] = (lambda recipe=recipe: ProcessRunner(replace(recipe, cpus=next(cpus))))
        else:
            for dep in measured:
                recipe = RunnerRecipe(str(zoo), task, dep.variant, threads, rows)
                factories[dep.name] = (lambda recipe=recipe: build_runner(recipe))
    # parametric deployments sleep their sampled times, drawn from the simulator's own streams
    factories.update(parametric_runners(scenario, seed))
    return factories, labels


def serve_command(args) -> int:
    from .replicas import front_end_cpus, pinned
    from .server import Server

    out = Path("runs") / f"{Path(args.scenario).stem}-real" if args.out is None else Path(args.out)
    check_target(out, force=args.force, kind="run")  # at once; run_seeds checks again before writing
    scenario = load_scenario(args.scenario, args.set)
    seeds = parse_seeds(args.seeds, scenario.limits) if args.seeds else [scenario.seed]
    prepared = prepare(scenario)
    pin = args.replica == "process" and not args.no_pin

    def run_one(seed, progress, spool):
        factories, labels = runner_factories(prepared, args.zoo, seed, args.replica, pin)
        run_scenario = dataclasses.replace(scenario, seed=seed)
        policy = policies.create(scenario.policy.name, scenario.policy.params)
        with pinned(front_end_cpus() if pin else None):
            server = Server(run_scenario, policy, factories, seed=seed, labels=labels[0], profiles=prepared.profiles,
                            predictions=prepared.predictions, stage_predictions=prepared.stage_predictions,
                            stage_labels=labels)
            requests = server.run(progress, spool)  # streamed to the spool beside the output, as sim's
        core = server.core
        summary = seed_summary(server.summary(), seed, core, scenario.duration_s, requests)
        config = seed_config(prepared, run_scenario, executor="real", replicas_run_in=args.replica)
        return config, requests, summary, seed_timeline(core)

    # the output is claimed before any model is loaded; it appears once every seed has run
    summaries = run_seeds(prepared, seeds, out, run_one, force=args.force, unit="s")
    print(summary_table(summaries))
    print(legend(len(summaries)))
    print(f"wrote {out}/ (real executor)")
    return 0
