"""`measure layers`: where one variant spends its time, layer by layer, under ``torch.profiler``.

A latency profile says a batch of 8 takes 25 ms, not which part of the model to prune, quantise or
replace. This runs the very model object the harness times (the zoo checkpoint with the variant's
pruning and precision, on the profile's device and threads, fed through ``ModelRunner.run`` with
real evaluation samples drawn as the harness draws them) under the PyTorch profiler, and splits
the CPU time of a run into rows that partition it, so the shares add up to 100%.

**By module** (the default), every module's forward runs inside a profiler range (a
``record_function`` opened by a forward pre-hook, closed by a forward hook), and the self CPU time
of every event goes to the innermost module around it (a range's own time is the Python code of
that forward between operators). The rows are the model's top-level parts: its children, except
that a part holding more than half of the time is replaced by its parts, again and again, while
these hold most of its time. So ResNet-18 reads as ``conv1``, ``layer1`` ... ``layer4``, ``fc`` (stages: what one
prunes or swaps), while MobileNetV2's ``features`` or a BERT wrapper, ~100% in one row, open into
their blocks; leaf modules (ResNet-18 has 60) would be too fine to name a bottleneck. A container
never called as a whole (``nn.ModuleList``) sums the modules in it. ``(other)`` is the time in no
row's module: the runner's input gather and softmax, the model's code between its parts.

**By operator**, the rows are the operators (``aten::addmm``, ``quantized::conv2d``) with their
self CPU time, as ``key_averages`` groups them; Python code between operators is in no row, so the
total is a little lower than by module. Times are per run, the mean of ``--runs`` profiled runs
after the profile's warm-up runs; the unprofiled median of the same batches is printed beside them.
On a CUDA device the CPU times are launches and synchronisation, not the kernels.

**INT8.** A CNN's INT8 model is an FX ``GraphModule`` (``measure.variants``): its generated
``forward`` calls the quantized leaves directly, so containers such as ``layer4`` are never called,
and residual adds and (de)quantize steps are graph functions, not modules. Such a model is
profiled by operator unless ``--by module`` is asked for; then the leaves are summed by name
(``layer4.*`` into ``layer4``) and the graph functions count in ``(other)``. Dynamically quantised
transformers keep their modules and profile by module as usual.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from traces.errors import InputError

BY = ("module", "operator")
OTHER = "(other)"
RANGE_PREFIX = "measure.layers::"
EXPAND_SHARE = 0.5       # a part above this share of the time is shown as its parts
DEFAULT_RUNS = 10
MAX_RUNS = 1000
MAX_BATCH = 4096
TOP_ROWS = 12            # rows printed; the rest are summed into one
CSV_COLUMNS = ("variant", "batch_size", "by", "name", "self_cpu_ms", "share_pct", "calls")
CSV_MARKER = "# written by measure layers; replaced by its --force"
FX_NOTES = {  # what an FX-quantized graph's profile says, by the --by asked for
    None: "an FX-quantized INT8 graph calls its quantized leaves directly (no container module is called), "
          "so it is profiled by operator; --by module sums the leaves by name",
    "module": "an FX-quantized graph: its containers are never called and its functional steps "
              "(residual adds, (de)quantize) count in (other)"}


@dataclass(frozen=True)
class LayerRow:
    name: str
    self_cpu_ms: float   # per run
    share_pct: float     # of the run's profiled CPU time
    calls: float         # per run: forward calls of the module, or calls of the operator


@dataclass(frozen=True)
class LayerProfile:
    by: str
    batch_size: int
    runs: int
    rows: tuple[LayerRow, ...]     # heaviest first
    total_cpu_ms: float            # per run, under the profiler
    unprofiled_ms: float           # median wall time of one run without the profiler
    note: str = ""

    @property
    def bottleneck(self) -> LayerRow:
        """The heaviest named row (``(other)`` is not a layer)."""
        named = [row for row in self.rows if row.name != OTHER]
        return named[0] if named else self.rows[0]

    def bottleneck_line(self) -> str:
        row = self.bottleneck
        return f"{row.name} takes {row.share_pct:.0f}% of the time at batch {self.batch_size}"


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
    by = by or default_by(model)
    if by not in BY:
        raise InputError("--by", f"must be one of {', '.join(BY)}, got {by!r}")
    check_count(batch_size, "--batch", MAX_BATCH)
    check_count(runs, "--runs", MAX_RUNS)
    wall_s = []
    unprofiled = max(warmup_runs, 1) + runs
    for k in range(unprofiled):  # the last `runs` of these are the unprofiled timing
        start = time.perf_counter()
        forward(k)
        wall_s.append(time.perf_counter() - start)
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
    total_us = sum(us for us, _ in totals.values())
    rows = sorted((LayerRow(name, us / runs / 1000.0, 100.0 * us / total_us if total_us else 0.0, calls / runs)
                   for name, (us, calls) in totals.items()), key=lambda r: (-r.self_cpu_ms, r.name))
    return LayerProfile(by, batch_size, runs, tuple(rows), total_us / runs / 1000.0,
                        1000.0 * statistics.median(wall_s[-runs:]), note)


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
            if getattr(spec, "backend", "eager") != "eager":  # a frozen graph or an ORT session: no modules to hook
                raise InputError("--variant", f"{variant_id!r} runs on {spec.backend}; the layer profile reads "
                                 "PyTorch's modules and operators, so give its eager variant")
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


def profile_variant(profile, variant_id: str, batch_size: int, *, by: str | None = None,
                    runs: int = DEFAULT_RUNS) -> LayerProfile:
    """``profile_layers`` on the variant as the harness builds and runs it: zoo checkpoint, pruning
    and precision applied, the profile's threads, batches of evaluation samples drawn as it draws them."""
    check_count(batch_size, "--batch", MAX_BATCH)
    check_count(runs, "--runs", MAX_RUNS)
    spec = find_variant(profile, variant_id)
    _check_trained(profile, spec)
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
            raise InputError(variant_id, f"cannot be built here: {exc}") from None
        warmup_runs = max(profile.latency.warmup_runs, 1)
        rng = _rng(profile, spec.id, batch_size)
        draws = [rng.integers(0, len(data.eval_ids), batch_size).tolist() for _ in range(warmup_runs + runs)]
        schedule = draws + draws[warmup_runs:]  # timed unprofiled, then profiled, on the same samples
        return profile_layers(runner.model, lambda k: runner.run(schedule[k]), batch_size=batch_size,
                              by=by, runs=runs, warmup_runs=warmup_runs)
    finally:
        torch.set_num_threads(threads)


# ---- output ------------------------------------------------------------------------------

def format_table(result: LayerProfile, top: int = TOP_ROWS) -> str:
    """The heaviest ``top`` rows, the rest summed into one, and the total."""
    head = "module" if result.by == "module" else "operator"
    width = max([len(head), len("total")] + [len(row.name) for row in result.rows[:top]]) + 2
    lines = [f"{head:<{width}s}{'self CPU ms':>12s}{'share':>9s}{'calls':>9s}"]

    def line(name: str, ms: float, share_pct: float, calls: str) -> str:
        return f"{name:<{width}s}{ms:12.3f}{share_pct:8.1f}%{calls:>9s}"

    for row in result.rows[:top]:
        lines.append(line(row.name, row.self_cpu_ms, row.share_pct, f"{row.calls:g}" if row.calls else "-"))
    rest = result.rows[top:]
    if rest:
        lines.append(line(f"({len(rest)} more)", sum(r.self_cpu_ms for r in rest), sum(r.share_pct for r in rest),
                          f"{sum(r.calls for r in rest):g}"))
    lines.append(line("total", result.total_cpu_ms, 100.0, "").rstrip())
    return "\n".join(lines)


def write_csv(result: LayerProfile, variant_id: str, path: str | Path, *, force: bool) -> Path:
    """Every row (``CSV_COLUMNS``) under the marker line ``CSV_MARKER``, written atomically."""
    import csv

    from traces.outputs import atomic_file

    with atomic_file(path, force=force, marker_line=CSV_MARKER) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            handle.write(CSV_MARKER + "\n")
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in result.rows:
                writer.writerow([variant_id, result.batch_size, result.by, row.name, f"{row.self_cpu_ms:.6f}",
                                 f"{row.share_pct:.6f}", f"{row.calls:g}"])
    return Path(path)


# ---- the subcommand (wired into measure/cli.py) ---------------------------------------------

HELP = "the torch.profiler breakdown of one variant at a batch size, by module or by operator"
EXAMPLES = """examples:
  measure layers examples/profiles/digits-cpu.toml --variant resnet18/fp32/cpu --batch 8
  measure layers examples/profiles/digits-cpu.toml --variant resnet18/int8/cpu --batch 8   # by operator
  measure layers examples/profiles/sst2-cpu.toml --variant bert-6/fp32/cpu --batch 16 --by operator \\
      --runs 20 --out bert6-ops.csv

Rows by module are the model's top-level parts (a part over half of the time opens into its parts);
(other) is the time outside them: the input gather, the softmax, the model's glue code."""


def add_arguments(parser) -> None:
    parser.add_argument("profile", help="the measurement profile (TOML)")
    parser.add_argument("--variant", required=True, metavar="ID", help="the variant id, e.g. resnet18/fp32/cpu")
    parser.add_argument("--batch", required=True, type=int, metavar="B", help="the batch size profiled")
    parser.add_argument("--by", choices=BY, help="rows by module (default) or by operator "
                                                 "(default for an FX-quantized INT8 model)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"profiled runs, averaged (default {DEFAULT_RUNS})")
    parser.add_argument("--out", metavar="FILE.csv", help="also write every row as CSV (atomically)")
    parser.add_argument("--force", action="store_true", help="replace an earlier CSV of this command at --out")


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
    rows = "the top-level parts" if result.by == "module" else "operator"
    print(f"{args.variant} at batch {args.batch}, {profile.threads} thread{'s' * (profile.threads != 1)}: "
          f"self CPU time per run by {rows}, mean of {result.runs} profiled runs")
    if result.note:
        print(f"note: {result.note}")
    print(format_table(result))
    print(f"profiled CPU time {result.total_cpu_ms:.3f} ms per run; unprofiled median {result.unprofiled_ms:.3f} ms")
    print(result.bottleneck_line())
    if args.out:
        print(f"wrote {write_csv(result, args.variant, args.out, force=args.force)} ({len(result.rows)} rows)")
    return 0
