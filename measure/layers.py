"""`measure layers`: where one variant spends its time, layer by layer, under ``torch.profiler``.

A latency profile says a batch of 8 takes 25 ms, not which part of the model to prune, quantise or
replace. This runs the very model the harness times (zoo checkpoint, pruning, precision, backend,
the profile's device and threads, ``ModelRunner.run`` on real evaluation samples drawn as the
harness draws them) under the PyTorch profiler, and splits the CPU time of a run into rows that
partition it, so the shares add up to 100%. Times are per run, the mean of ``--runs`` profiled runs
after the profile's warm-up runs; the unprofiled median of the same batches is printed beside them.

**By module** (the default), every module's forward runs inside a profiler range (opened by a
forward pre-hook, closed by a forward hook), and each event's self CPU time goes to the innermost
module around it. The rows are the model's top-level parts: its children, except that a part
holding over half of the time is replaced by its parts while these hold most of it. So ResNet-18
reads as ``conv1``, ``layer1`` ... ``layer4``, ``fc`` (stages: what one prunes or swaps), while
MobileNetV2's ``features``, ~100% in one row, opens into its blocks; its 60 leaf modules would be
too fine to name a bottleneck. A container never called whole (``nn.ModuleList``) sums its modules.
``(other)`` is the time in no row's module: the runner's input gather and softmax, glue code.

**By operator**, the rows are the operators (``aten::addmm``, ``quantized::conv2d``) with their
self CPU time; Python code between operators is in no row. On a CUDA device the CPU times are
launches and synchronisation, not the kernels.

**INT8 and backends.** A CNN's INT8 model is an FX ``GraphModule`` whose code calls the quantized
leaves directly (``layer4`` is never called) and whose residual adds and (de)quantize steps are
functions, not modules: it is profiled by operator unless ``--by module`` is asked for, which sums
the leaves by name and counts the functions in ``(other)``. A ``torchscript`` variant is a frozen
graph whose submodules are inlined: by operator only. An ``onnxruntime`` variant runs in kernels
this profiler does not see: ``measure.layers_ort`` splits it with ONNX Runtime's own profiler.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from traces.errors import InputError

from .layers_report import (CSV_COLUMNS, CSV_MARKER, MEASURED, OTHER, ROWS, SESSION, TOP_ROWS,  # noqa: F401
                            LayerProfile, LayerRow, format_table, write_csv)  # (re-exported: the result and its outputs)

BY = ("module", "operator")
RANGE_PREFIX = "measure.layers::"
EXPAND_SHARE = 0.5       # a part above this share of the time is shown as its parts
DEFAULT_RUNS = 10
MAX_RUNS = 1000
MAX_BATCH = 4096
FX_NOTES = {  # what an FX-quantized graph's profile says, by the --by asked for
    None: "an FX-quantized INT8 graph calls its quantized leaves directly (no container module is called), "
          "so it is profiled by operator; --by module sums the leaves by name",
    "module": "an FX-quantized graph: its containers are never called and its functional steps "
              "(residual adds, (de)quantize) count in (other)"}


@contextlib.contextmanager
def _module_ranges(model) -> Iterator[None]:
    """Every named submodule's forward runs inside a profiler range ``RANGE_PREFIX + name``."""
    from torch.autograd.profiler import record_function

    open_ranges: list = []

    def enter(name: str, _module, _inputs) -> None:
        handle = record_function(RANGE_PREFIX + name)
        handle.__enter__()
        open_ranges.append(handle)

    def leave(_module, _inputs, _output) -> None:
        open_ranges.pop().__exit__(None, None, None)

    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(functools.partial(enter, name)))
            hooks.append(module.register_forward_hook(leave, always_call=True))  # closes on an error too
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's C++ side prints a log line at every start and stop; those go nowhere."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def check_count(value, option: str, high: int) -> int:
    """``value`` if it is an integer from 1 to ``high``; ``InputError`` naming ``option`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise InputError(option, f"must be an integer from 1 to {high}, got {value!r}")
    return value


def check_by(by: str | None) -> None:
    if by is not None and by not in BY:
        raise InputError("--by", f"must be one of {', '.join(BY)}, got {by!r}")


def timed_s(forward: Callable[[int], object], k: int) -> float:
    """Wall seconds of ``forward(k)``."""
    start = time.perf_counter()
    forward(k)
    return time.perf_counter() - start


def rows_of(totals: dict[str, tuple[float, float]], runs: int) -> tuple[tuple[LayerRow, ...], float]:
    """Rows, heaviest first, and the total ms per run, of row name -> (microseconds, calls) over ``runs``."""
    total_us = sum(us for us, _ in totals.values())
    rows = sorted((LayerRow(name, us / runs / 1000.0, 100.0 * us / total_us if total_us else 0.0, calls / runs)
                   for name, (us, calls) in totals.items()), key=lambda r: (-r.self_cpu_ms, r.name))
    return tuple(rows), total_us / runs / 1000.0


def default_by(model) -> str:
    """``operator`` for an FX graph (a statically quantised INT8 CNN), else ``module``."""
    import torch.fx

    return "operator" if isinstance(model, torch.fx.GraphModule) else "module"


def profile_layers(model, forward: Callable[[int], object], *, batch_size: int, by: str | None = None,
                   runs: int = DEFAULT_RUNS, warmup_runs: int = 2) -> LayerProfile:
    """Profile ``forward(k)`` (one batch through ``model``; k counts the calls from 0): first
    ``warmup_runs`` then ``runs`` timed runs without the profiler, then ``runs`` runs under it, with
    rows as the module docstring says."""
    from torch.profiler import ProfilerActivity, profile

    note = FX_NOTES.get(by, "") if default_by(model) == "operator" else ""
    check_by(by)
    by = by or default_by(model)
    check_count(batch_size, "--batch", MAX_BATCH)
    check_count(runs, "--runs", MAX_RUNS)
    unprofiled = max(warmup_runs, 1) + runs
    wall_s = [timed_s(forward, k) for k in range(unprofiled)]  # the last `runs` are the unprofiled timing
    ranges = _module_ranges(model) if by == "module" else contextlib.nullcontext()
    prof = profile(activities=[ProfilerActivity.CPU])
    with ranges:
        with _native_stderr_silenced():
            prof.start()
        try:
            for k in range(unprofiled, unprofiled + runs):
                forward(k)
        finally:
            with _native_stderr_silenced():
                prof.stop()
    totals = _module_totals(prof.events(), model) if by == "module" else _operator_totals(prof.events())
    rows, total_ms = rows_of(totals, runs)
    return LayerProfile(by, batch_size, runs, rows, total_ms, 1000.0 * statistics.median(wall_s[-runs:]), note)


def _operator_totals(events) -> dict[str, tuple[float, float]]:
    """Operator name -> (self CPU microseconds, calls), summed over the profiled runs."""
    totals: dict[str, tuple[float, float]] = {}
    for event in events:
        us, calls = totals.get(event.name, (0.0, 0.0))
        totals[event.name] = (us + event.self_cpu_time_total, calls + 1)
    return totals


def _innermost_module(event) -> str | None:
    while event is not None:
        if event.name.startswith(RANGE_PREFIX):
            return event.name[len(RANGE_PREFIX):]
        event = event.cpu_parent
    return None


def _module_totals(events, model) -> dict[str, tuple[float, float]]:
    """Row name -> (self CPU microseconds, calls): each event's self time goes to its innermost
    module, each module's to its row (``select_parts``), the rest to ``OTHER``."""
    own_us: dict[str, float] = {}
    called: dict[str, int] = {}
    other_us = 0.0
    for event in events:
        module = _innermost_module(event)
        if event.name.startswith(RANGE_PREFIX):
            called[module] = called.get(module, 0) + 1
        if module is None:
            other_us += event.self_cpu_time_total
        else:
            own_us[module] = own_us.get(module, 0.0) + event.self_cpu_time_total
    children = _children(name for name, _ in model.named_modules())
    parts = select_parts(children, own_us)
    totals = {part: (0.0, float(_calls(part, children, called))) for part in parts}
    for module, us in own_us.items():
        part = next((p for p in parts if _within(module, p)), None)
        if part is None:
            other_us += us
        else:
            totals[part] = (totals[part][0] + us, totals[part][1])
    totals[OTHER] = (other_us, 0.0)
    return {name: value for name, value in totals.items() if value[0] > 0 or value[1] > 0}


def _children(names) -> dict[str, list[str]]:
    """Dotted module names -> each name's direct children ("" is the model itself)."""
    children: dict[str, list[str]] = {}
    for name in names:
        children.setdefault(name, [])
        if name:
            children.setdefault(name.rpartition(".")[0], []).append(name)
    return children


def _within(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def select_parts(children: dict[str, list[str]], own_us: dict[str, float]) -> list[str]:
    """The model's children; a part above ``EXPAND_SHARE`` of all module time is replaced by its
    children, again and again, while they hold more than that share of its own time (a quantized
    Linear's packed weights, a module never called, hold none of it)."""
    def subtree_us(part: str) -> float:
        return sum(us for module, us in own_us.items() if _within(module, part))

    total_us = sum(own_us.values())
    parts = list(children.get("", []))
    while parts:
        heaviest = max(parts, key=subtree_us)
        inside_us = sum(subtree_us(child) for child in children.get(heaviest, []))
        if subtree_us(heaviest) <= EXPAND_SHARE * total_us or inside_us <= EXPAND_SHARE * subtree_us(heaviest):
            return parts
        at = parts.index(heaviest)
        parts[at:at + 1] = children[heaviest]
    return parts


def _calls(part: str, children: dict[str, list[str]], called: dict[str, int]) -> int:
    """Forward calls of ``part``; for a container never called as a whole, those of its parts."""
    if called.get(part, 0) or not children.get(part):
        return called.get(part, 0)
    return sum(_calls(child, children, called) for child in children[part])


# ---- one variant of a profile --------------------------------------------------------------

def find_variant(profile, variant_id: str):
    """The profile's ``VariantSpec`` with this id; ``InputError`` listing the known ids otherwise."""
    for spec in profile.variants:
        if spec.id == variant_id:
            return spec
    known = ", ".join(spec.id for spec in profile.variants)
    raise InputError("--variant", f"{variant_id!r} is not a variant of profile {profile.name!r}; known: {known}")


def _check_trained(profile, spec) -> None:
    from .harness import zoo_summary
    from .zoo import INDEX

    try:
        trained = zoo_summary(Path(profile.zoo_dir), profile.task).get("models", {})
    except (OSError, ValueError):  # an unreadable index: load_zoo_task would say why; here, train again
        trained = {}
    if spec.model not in trained:
        raise InputError(str(Path(profile.zoo_dir) / profile.task / INDEX),
                         f"the zoo has no trained {spec.model!r} (needed by {spec.id}); "
                         f"run `measure train {profile.source or 'PROFILE.toml'}` first")


TORCHSCRIPT_NOTE = "a frozen TorchScript graph has its submodules inlined, so it is profiled by operator"


def profile_variant(profile, variant_id: str, batch_size: int, *, by: str | None = None,
                    runs: int = DEFAULT_RUNS) -> LayerProfile:
    """The variant's profile as the harness builds and runs it: ``profile_layers`` for eager and
    TorchScript (by operator) variants, ``measure.layers_ort`` for ONNX Runtime ones."""
    check_count(batch_size, "--batch", MAX_BATCH)
    check_count(runs, "--runs", MAX_RUNS)
    check_by(by)
    spec = find_variant(profile, variant_id)
    if spec.backend == "torchscript" and by == "module":
        raise InputError("--by", f"{variant_id!r} is a frozen TorchScript graph (its modules are inlined): "
                         "profile it by operator")
    _check_trained(profile, spec)
    if spec.backend == "onnxruntime":
        from .layers_ort import profile_ort_variant

        return profile_ort_variant(profile, spec, batch_size, by=by, runs=runs)
    script = spec.backend == "torchscript"
    with variant_batches(profile, spec, batch_size, runs) as (model, forward, warmup_runs):
        result = profile_layers(model, forward, batch_size=batch_size, by="operator" if script else by, runs=runs,
                                warmup_runs=warmup_runs)
    return replace(result, note=TORCHSCRIPT_NOTE) if script else result


@contextlib.contextmanager
def variant_batches(profile, spec, batch_size: int, runs: int) -> Iterator[tuple[object, Callable[[int], object], int]]:
    """``(model, forward, warmup_runs)``: the variant as the harness builds it, on the profile's
    threads while open; ``forward(k)`` runs the k-th batch of samples drawn as the harness draws them:
    the warm-up, ``runs`` batches, then these ``runs`` again (one timing profiled, one not)."""
    import torch

    from .harness import _rng
    from .variants import ModelRunner, VariantUnsupported, load_variant
    from .zoo import load_zoo_task

    threads = torch.get_num_threads()
    torch.set_num_threads(profile.threads)
    try:
        data = load_zoo_task(profile.zoo_dir, profile.task)
        try:
            runner = ModelRunner(load_variant(profile.zoo_dir, profile.task, spec, data), data.x_eval, spec)
        except VariantUnsupported as exc:
            raise InputError(spec.id, f"cannot be built here: {exc}") from None
        warmup_runs = max(profile.latency.warmup_runs, 1)
        rng = _rng(profile, spec.id, batch_size)
        draws = [rng.integers(0, len(data.eval_ids), batch_size).tolist() for _ in range(warmup_runs + runs)]
        schedule = draws + draws[warmup_runs:]
        yield runner.model, lambda k: runner.run(schedule[k]), warmup_runs
    finally:
        torch.set_num_threads(threads)


# ---- the subcommand (wired into measure/cli.py) ---------------------------------------------

def run(args) -> int:
    from traces.outputs import check_file_target

    from .profile import load_profile

    check_count(args.batch, "--batch", MAX_BATCH)
    check_count(args.runs, "--runs", MAX_RUNS)
    if args.out:  # refused before any work
        check_file_target(args.out, force=args.force, marker_line=CSV_MARKER)
    profile = load_profile(args.profile)
    if find_variant(profile, args.variant).pruning != "none":
        print("note: a pruned variant is fine-tuned once on first use (then cached in the zoo): "
              "the first run may take minutes", flush=True)
    result = profile_variant(profile, args.variant, args.batch, by=args.by, runs=args.runs)
    title, _, total = MEASURED[result.profiler]
    print(f"{args.variant} at batch {args.batch}, {profile.threads} thread{'s' * (profile.threads != 1)}: "
          f"{title} per run by {ROWS[result.by]}, mean of {result.runs} profiled runs")
    if result.note:
        print(f"note: {result.note}")
    print(format_table(result))
    print(f"{total} {result.total_cpu_ms:.3f} ms per run; unprofiled median {result.unprofiled_ms:.3f} ms")
    print(result.bottleneck_line())
    if args.out:
        print(f"wrote {write_csv(result, args.variant, args.out, force=args.force)} ({len(result.rows)} rows)")
    return 0
