"""`measure`: train the zoo, time and evaluate variants into a bundle, serve a scenario for real.

Bad input -> one line on stderr, exit status 2, no traceback, nothing half-written.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from traces.cli import CommandLine, run_command

from .profile import Profile, load_profile


def _progress() -> bool:
    from traces.progress import show_progress

    return show_progress()


def _command(argv: list[str] | None) -> str:
    return "measure " + shlex.join(sys.argv[1:] if argv is None else argv)


def cmd_train(args, profile: Profile | None = None) -> int:
    from .data import DataConfig
    from .train import TrainConfig
    from .zoo import train_zoo

    profile = profile or load_profile(args.profile)
    models = sorted({v.model for v in profile.variants})
    data_cfg = DataConfig(seed=profile.seed, **{k: v for k, v in profile.data.items() if k != "task"})
    train_cfg = TrainConfig(seed=profile.seed, **profile.train)
    result = train_zoo(profile.task, profile.zoo_dir, data_cfg, train_cfg, models=models, progress=_progress())
    for model in models:
        info = result.get("models", result).get(model, {}) if isinstance(result, dict) else {}
        acc = info.get("eval_accuracy")
        print(f"  {profile.task}/{model}: " + (f"eval accuracy {acc:.4f}" if acc is not None else "trained"))
    print(f"zoo: {profile.zoo_dir / profile.task}")
    return 0


def _measure(args, *, latency: bool, accuracy: bool, argv) -> int:
    from contextlib import nullcontext

    from traces.outputs import check_target, scratch_directory, sweep_leftovers
    from traces.tracking import bundle_run, parse_track, track

    target = parse_track(getattr(args, "track", None), getattr(args, "track_experiment", None))
    # Before any work (and before importing torch): a file, the current directory or a directory
    # of the user's is refused; an existing bundle is resumed, or with --force replaced only once
    # the new one is complete: nothing is deleted first (see measure.harness).
    out = check_target(Path(args.out), force=args.force, resume="bundle")
    profile = load_profile(args.profile)
    from .harness import assemble, measure

    sweep_leftovers(out)
    with scratch_directory(out, "parts") if args.force else nullcontext() as parts:
        if getattr(args, "train", False):
            cmd_train(args, profile)
        measure(profile, out, latency=latency, accuracy=accuracy, progress=_progress(), parts=parts)
        bundle = assemble(profile, out, _command(argv), parts=parts)
    for failure in bundle.meta.get("failed", []):
        print(f"  skipped {failure['variant']}: {failure['reason']}")
    from .tables import render_variants, variant_rows

    print(render_variants(variant_rows(bundle), (1, 8), markdown=False))
    print(f"wrote {out} ({len(bundle.service)} latency rows, {len(bundle.predictions)} predictions)")
    return track(target, Path(args.profile).stem, lambda: [bundle_run(out, _resolved(profile))], out)


def _resolved(profile: Profile) -> dict:
    """The profile with its defaults filled in, variants as ids: what the MLflow run's params show."""
    from dataclasses import asdict

    return {**{k: v for k, v in asdict(profile).items() if k != "raw"}, "variants": [s.id for s in profile.variants]}


def cmd_startup(args, argv) -> int:
    """Time the profile's variants' replica start-ups into the bundle at --out (``measure.startup``)."""
    import os

    from traces.bundle import TraceBundle
    from traces.errors import InputError
    from traces.outputs import check_target
    from traces.startup import save_startup

    from .startup import MAX_REPEATS, StartupPlan, measure_startups, startup_meta

    if not 1 <= args.repeats <= MAX_REPEATS:
        raise InputError("--repeats", f"must be an integer from 1 to {MAX_REPEATS}, got {args.repeats}")
    if not 1 <= args.max_batch_size <= 1024:
        raise InputError("--max-batch-size", f"must be an integer from 1 to 1024, got {args.max_batch_size}")
    out = check_target(Path(args.out), force=True, kind="bundle")
    if not (out / "bundle.json").is_file():
        raise InputError(str(out), "not a trace bundle (no bundle.json): `measure latency` makes one, "
                         "then `measure startup` adds its start-up times")
    bundle = TraceBundle.load(out)
    if len(bundle.startup) and not args.force:
        raise InputError(str(out), "already has a startup table; pass --force to replace it")
    profile = load_profile(args.profile)
    measured = set(bundle.variants)
    specs = tuple(spec for spec in profile.variants if spec.id in measured)
    for spec in profile.variants:
        if spec.id not in measured:
            print(f"  skipped {spec.id}: the bundle has no service rows for it")
    if not specs:
        raise InputError(str(out), f"holds none of the variants of {args.profile}; nothing to time")
    plan = StartupPlan(specs, args.repeats, args.max_batch_size)
    load_before = os.getloadavg()
    print(f"timing {len(specs)} variants x {plan.repeats} start-ups (after one untimed start each), "
          f"warm-up to batch {plan.max_batch_size}")
    table, failed = measure_startups(profile, plan)
    if table.empty:
        raise InputError(str(out), "no variant started (see the reasons above); the bundle is unchanged")
    command = _command(argv)
    meta = dict(bundle.meta)
    meta["commands"] = list(meta.get("commands", [])) + [command]
    meta["units"] = {**meta.get("units", {}), "startup": "s"}
    meta["startup"] = startup_meta(command, plan, table, failed, load_before)
    save_startup(out, table, meta)
    print(f"wrote {out} ({len(table)} start-ups of {table['variant'].nunique()} variants)")
    return 0


def cmd_features(args) -> int:
    """Add the ``features`` table (``measure.features``) to an existing bundle, from the profile's
    data alone (no model runs); a bundle that already has one is left as it is."""
    from traces.bundle import TraceBundle
    from traces.errors import InputError
    from traces.features import add_features

    from .features import profile_task_data, sample_features

    bundle = TraceBundle.load(args.bundle)
    if len(bundle.features):
        raise InputError(str(args.bundle), "already has a features table; it is left as it is")
    profile = load_profile(args.profile)
    data = profile_task_data(profile)
    have, want = set(bundle.predictions["sample_id"].astype(str)), set(data.eval_ids)
    if have != want:
        odd = sorted(have - want) or sorted(want - have)
        raise InputError(str(args.bundle), f"its {len(have)} prediction sample ids are not the {len(want)} evaluation "
                         f"ids of {args.profile} (e.g. {odd[0]!r}); features must describe the samples measured")
    frame = sample_features(data)
    written = add_features(args.bundle, frame)
    print(f"wrote {written} ({len(frame)} samples; features {', '.join(frame.columns[1:])})")
    return 0


def cmd_serve(args) -> int:
    from .serve_cli import serve_command

    return serve_command(args)


EXTRA_MODULES = ("torch", "torchvision", "transformers", "tokenizers", "sklearn")  # the 'measure' extra
EXAMPLES = {
    "measure": """examples:
  measure all examples/profiles/digits-cpu.toml --out bundles/digits-cpu    # train, time, evaluate
  measure serve examples/demo.toml --seeds 1-3                              # the demo on real replicas

Needs the optional extra: pip install -e '.[measure]'""",
    "train": """examples:
  measure train examples/profiles/digits-cpu.toml""",
    "latency": """examples:
  measure latency examples/profiles/digits-cpu.toml --out bundles/digits-cpu
  measure latency examples/profiles/digits-cpu.toml --out bundles/digits-cpu --force   # afresh""",
    "accuracy": """examples:
  measure accuracy examples/profiles/digits-cpu.toml --out bundles/digits-cpu""",
    "all": """examples:
  measure all examples/profiles/sst2-cpu.toml --out bundles/sst2-cpu
  measure all examples/profiles/digits-cpu.toml --out bundles/digits-cpu --track mlflow   # and log it to MLflow""",
    "startup": """examples:
  measure startup examples/profiles/digits-cpu.toml --out traces/data/digits-cpu --repeats 3
  measure startup examples/profiles/digits-cpu.toml --out bundles/digits-cpu --force   # time them again

Adds the bundle's `startup` table (its other tables stay byte for byte as they were).""",
    "features": """examples:
  measure features examples/profiles/digits-cpu.toml --bundle traces/data/digits-cpu

Adds the bundle's `features` table: cheap per-sample input features computed from the profile's
evaluation data, no model run (see docs/difficulty.md). A bundle that has one is left as it is.""",
    "layers": """examples:
  measure layers examples/profiles/digits-cpu.toml --variant resnet18/fp32/cpu --batch 8
  measure layers examples/profiles/digits-cpu.toml --variant resnet18/int8/cpu --batch 8   # by operator
  measure layers examples/profiles/sst2-cpu.toml --variant bert-6/fp32/cpu --batch 16 --by operator \\
      --runs 20 --out bert6-ops.csv
  measure layers examples/profiles/digits-cpu.toml --variant mobilenet_v2/fp32/cpu/onnxruntime --batch 8

Rows by module are the model's top-level parts (a part over half of the time opens into its parts);
(other) is the time outside them: the input gather, the softmax, the model's glue code.
A torchscript variant is profiled by operator; an onnxruntime one by ONNX Runtime's own profiler,
by operator type (default) or by node (--by module), with (session) its time outside the kernels.""",
    "table": """examples:
  measure table traces/data/digits-cpu
  measure table traces/data/digits-cpu --by-backend --markdown
  measure table traces/data/sst2-cpu --batch-sizes 1,8,32
  measure table traces/data/sst2-cpu --startup --markdown

Per variant: the median of the runs timed at each batch size (blank where none was), how many
runs that is, and the accuracy on the held-out split. --by-backend puts each model and
precision's backends side by side (eager PyTorch, TorchScript, ONNX Runtime), for those measured
under more than one. --startup prints the start-ups `measure startup` timed instead.""",
    "serve": """examples:
  measure serve examples/demo.toml
  measure serve examples/demo.toml --seeds 1-3 --out runs/demo-real --force
  measure serve examples/demo.toml --replica thread --no-pin --set arrivals.rate_rps=100

It refuses the scenarios `simulate run` refuses, the same limits included ([limits] in the scenario,
or --set limits.max_requests=N).""",
}


def build_parser() -> argparse.ArgumentParser:
    cli = CommandLine("measure", "Measure model variants and serve them for real.", EXAMPLES)
    parser, _sub = cli.parser, cli.command
    train = _sub("train", "train the profile's models into its zoo (skips trained ones)")
    train.add_argument("profile", help="the measurement profile (TOML)")
    train.set_defaults(func=lambda a, argv: cmd_train(a))
    for name, lat, acc, text in (("latency", True, False, "time every variant x batch size"),
                                 ("accuracy", False, True, "per-sample predictions of every variant"),
                                 ("all", True, True, "train if needed, then latency and accuracy")):
        p = _sub(name, text + " into a bundle (resumable)")
        p.add_argument("profile", help="the measurement profile (TOML)")
        p.add_argument("--out", required=True, help="bundle directory (created, or resumed if it exists)")
        p.add_argument("--force", action="store_true", help="start the bundle afresh instead of resuming")
        if name == "all":
            p.set_defaults(train=True)
            from traces.tracking import add_track_arguments

            add_track_arguments(p)
        p.set_defaults(func=lambda a, argv, lat=lat, acc=acc: _measure(a, latency=lat, accuracy=acc, argv=argv))
    startup = _sub("startup", "time each variant's replica start-up (spawn, load, build, warm up) into a bundle")
    startup.add_argument("profile", help="the measurement profile (TOML) the bundle was measured with")
    startup.add_argument("--out", required=True, help="the bundle directory (made by `measure latency`)")
    startup.add_argument("--repeats", type=int, default=5, help="timed start-ups per variant (default 5)")
    startup.add_argument("--max-batch-size", type=int, default=8,
                         help="warm up batch sizes 1..this, as `measure serve` warms such a deployment (default 8)")
    startup.add_argument("--force", action="store_true", help="replace the bundle's startup table if it has one")
    startup.set_defaults(func=cmd_startup)
    features = _sub("features", "add per-sample input features (no model) to a bundle's evaluated samples")
    features.add_argument("profile", help="the measurement profile (TOML) the bundle was measured with")
    features.add_argument("--bundle", required=True, help="the bundle directory (with predictions)")
    features.set_defaults(func=lambda a, argv: cmd_features(a))
    from . import layers

    profiled = _sub("layers", "the profiler breakdown of one variant at a batch size, by module or by operator "
                              "(torch.profiler; ONNX Runtime's own profiler for onnxruntime variants)")
    profiled.add_argument("profile", help="the measurement profile (TOML)")
    profiled.add_argument("--variant", required=True, metavar="ID", help="the variant id, e.g. resnet18/fp32/cpu")
    profiled.add_argument("--batch", required=True, type=int, metavar="B", help="the batch size profiled")
    profiled.add_argument("--by", choices=layers.BY, help="rows by module (default) or by operator (default for "
                          "an FX-quantized INT8 model, the only one for torchscript); for onnxruntime, by ONNX "
                          "operator type (default) or by node (module)")
    profiled.add_argument("--runs", type=int, default=layers.DEFAULT_RUNS,
                          help=f"profiled runs, averaged (default {layers.DEFAULT_RUNS})")
    profiled.add_argument("--out", metavar="FILE.csv", help="also write every row as CSV (atomically)")
    profiled.add_argument("--force", action="store_true", help="replace an earlier CSV of this command at --out")
    profiled.set_defaults(func=lambda a, argv: layers.run(a))
    table = _sub("table", "print a bundle's median latencies and accuracy per variant, or per backend side by side")
    table.add_argument("bundle", help="the bundle directory")
    table.add_argument("--batch-sizes", default="1,8", help="the batch sizes of the latency columns (default 1,8)")
    table.add_argument("--startup", action="store_true",
                       help="the replica start-ups instead: median (min-max) and median phases per variant")
    table.add_argument("--by-backend", action="store_true",
                       help="one row per model and precision measured under several backends, backends side by side")
    table.add_argument("--markdown", action="store_true", help="a Markdown table")
    table.set_defaults(func=lambda a, argv: _tables().run(a))
    serve = _sub("serve", "run a scenario on real model replicas; writes the simulator's run output")
    serve.add_argument("scenario", help="the scenario file (TOML), as `simulate run` takes it")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a scenario key (repeatable), e.g. arrivals.rate_rps=300")
    serve.add_argument("--seeds", help="seeds: 3, 1-5 or 1,4,9 (default: the scenario's seed)")
    serve.add_argument("--out", help="output directory (default: runs/<scenario name>-real)")
    serve.add_argument("--force", action="store_true", help="replace an existing run output there")
    serve.add_argument("--zoo", help="zoo directory (default: the one recorded in the bundle's profile)")
    serve.add_argument("--replica", choices=("process", "thread"), default="process",
                       help="run each model replica in a process of its own (default) or as a thread of this one")
    serve.add_argument("--no-pin", action="store_true",
                       help="let the OS place replica processes (default: the front end on the first CPU, "
                            "replicas on the others)")
    serve.set_defaults(func=lambda a, argv: cmd_serve(a))
    return parser


def _tables():
    from . import tables

    return tables


def _with_extra(call):
    """``call()``, with a missing module of the 'measure' extra as one line saying what to install."""
    from traces.errors import InputError

    try:
        return call()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in EXTRA_MODULES:
            raise
        raise InputError("measure", f"needs the optional extra 'measure' (module {exc.name!r} is missing): "
                         "pip install -e '.[measure]'") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _with_extra(lambda: args.func(args, argv)),
                       interrupted="interrupted (finished work is kept; run the same command to resume)")


if __name__ == "__main__":
    sys.exit(main())
