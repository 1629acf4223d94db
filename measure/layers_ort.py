"""`measure layers` on an ONNX Runtime variant: its batch time split by ONNX Runtime's own profiler.

To PyTorch's profiler an ONNX Runtime session is one opaque call: the graph runs in ONNX Runtime's
C++ kernels, after its own fusions (a Conv and the Relu after it become one ``Conv`` node, a
MatMul and an Add one ``Gemm``). So an ``onnxruntime`` variant is profiled by the runtime that runs
it. Its session is built exactly as the harness builds it (``measure.backends.onnxruntime_model``:
the export, ONNX Runtime's own INT8 quantization, the check against the PyTorch model) with one
option more, ``SessionOptions.enable_profiling``, writing its trace into a temporary directory of
ours that is removed afterwards. ONNX Runtime then records, per ``session.run``, a ``model_run``
event and one ``Node`` event per kernel (name ``<node>_kernel_time``, ``dur`` in microseconds, the
operator type in ``args.op_name``, the execution provider in ``args.provider``).

**Rows.** By operator (the default), the operator types after fusion (``Conv``, ``Gemm``,
``QLinearConv``; ``ReorderOutput`` is the layout change to and from the blocked NCHWc format that
ONNX Runtime picks for convolutions on x86). By node (``--by module``: an ONNX graph has no modules,
its nodes are its finest named parts), the node names. Two more rows make the shares add up to the
batch's wall time: ``(session)``, the time inside ``session.run`` outside every kernel (input
binding, memory planning, output copies), and ``(other)``, the batch's time outside
``session.run`` (the runner's input gather, the conversion to numpy, the softmax).

**Runs.** The batches of the PyTorch path: the profile's warm-up runs, then ``--runs`` profiled
runs, whose kernels are those inside the last ``--runs`` ``model_run`` events of the trace (the
check when built and the warm-up come before), then ``session.end_profiling()``, which stops the
profiler and writes the trace, and the same batches once more unprofiled, for the median printed
beside the profile. Kernel times are wall times of the node on the calling thread (with several
intra-op threads, a node's time includes waiting for its workers); this is not CPU time summed
over threads as ``torch.profiler``'s self CPU time is.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .layers import (DEFAULT_RUNS, MAX_BATCH, MAX_RUNS, OTHER, SESSION, LayerProfile, check_by, check_count,
                     rows_of, timed_s, variant_batches)

BY_ORT = {"operator": "operator", "module": "node"}   # --by -> what the rows are
KERNEL_SUFFIX = "_kernel_time"                         # a Node event's name: the node's, then this
RUN_EVENT = "model_run"                                # one Session event per session.run
NOTE = ("ONNX Runtime times each node's kernel; (session) is the time inside session.run outside the "
        "kernels and (other) the batch's time outside session.run, so the rows add up to its wall time")


def trace_totals(events: Sequence[dict], runs: int, by: str, wall_us: Sequence[float]) -> dict[str, tuple[float, float]]:
    """Row name -> (microseconds, calls), summed over the last ``runs`` ``model_run`` events of an
    ONNX Runtime trace: the kernels by ``by`` (``operator`` type or ``node`` name), ``SESSION``
    and, given ``wall_us`` (those runs' wall times as the caller measured them), ``OTHER``."""
    spans = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == RUN_EVENT),
                   key=lambda e: e["ts"])[-runs:]
    if len(spans) != runs:
        raise RuntimeError(f"the ONNX Runtime trace holds {len(spans)} runs, expected {runs}")
    starts = [span["ts"] for span in spans]
    totals: dict[str, tuple[float, float]] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith(KERNEL_SUFFIX):
            continue  # older versions also write zero-length "_fence_before"/"_fence_after" events
        at = bisect.bisect_right(starts, event["ts"]) - 1
        if at < 0 or event["ts"] > spans[at]["ts"] + spans[at]["dur"]:
            continue  # a kernel of an earlier run
        name = event["args"]["op_name"] if by == "operator" else event["name"][:-len(KERNEL_SUFFIX)]
        us, calls = totals.get(name, (0.0, 0.0))
        totals[name] = (us + event["dur"], calls + 1)
    run_us = float(sum(span["dur"] for span in spans))
    kernel_us = sum(us for us, _ in totals.values())
    totals[SESSION] = (max(run_us - kernel_us, 0.0), 0.0)
    totals[OTHER] = (max(sum(wall_us) - run_us, 0.0), 0.0)   # trace times are whole microseconds
    return totals


def profile_session(session, forward: Callable[[int], object], *, batch_size: int, by: str | None = None,
                    runs: int = DEFAULT_RUNS, warmup_runs: int = 2) -> LayerProfile:
    """Profile ``forward(k)`` (one batch through a runner of ``session``, an ONNX Runtime session
    made with profiling on; k counts the calls from 0), as the module docstring says. The profiler
    is stopped (``end_profiling``) on the way out, also on an error; the trace file is left where
    the session's ``profile_file_prefix`` put it."""
    check_by(by)
    by = BY_ORT[by or "operator"]
    check_count(batch_size, "--batch", MAX_BATCH)
    check_count(runs, "--runs", MAX_RUNS)
    warmup_runs = max(warmup_runs, 1)
    trace_file = ""
    try:
        for k in range(warmup_runs):
            forward(k)
        profiled_s = [timed_s(forward, k) for k in range(warmup_runs, warmup_runs + runs)]
    finally:
        trace_file = session.end_profiling()
    unprofiled_s = [timed_s(forward, k) for k in range(warmup_runs + runs, warmup_runs + 2 * runs)]
    events = json.loads(Path(trace_file).read_text(encoding="utf-8"))
    totals = trace_totals(events, runs, by, [1e6 * s for s in profiled_s])
    rows, total_ms = rows_of(totals, runs)
    return LayerProfile(by, batch_size, runs, rows, total_ms, 1000.0 * statistics.median(unprofiled_s), NOTE,
                        profiler="onnxruntime")


@contextlib.contextmanager
def profiling_sessions(prefix: Path) -> Iterator[None]:
    """While open, every session ``measure.backends`` makes profiles itself into ``prefix*.json``.

    The session is made inside ``backends.onnxruntime_model``, between the export and quantization
    and the check of its logits; wrapping ``backends.session_options`` (looked up there at each
    call) adds the two profiling options to the harness's own, so nothing of the build is copied."""
    from . import backends

    plain = backends.session_options

    def profiling(onnxruntime, threads: int):
        options = plain(onnxruntime, threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(prefix)
        return options

    backends.session_options = profiling
    try:
        yield
    finally:
        backends.session_options = plain


def profile_ort_variant(profile, spec, batch_size: int, *, by: str | None = None,
                        runs: int = DEFAULT_RUNS) -> LayerProfile:
    """``profile_session`` on an ``onnxruntime`` variant built as the harness builds it, with its
    batches (``measure.layers.variant_batches``); the trace goes to a temporary directory, removed."""
    with tempfile.TemporaryDirectory(prefix="servesim-ort-profile-") as tmp:
        with profiling_sessions(Path(tmp) / "ort"), \
                variant_batches(profile, spec, batch_size, runs) as (model, forward, warmup_runs):
            return profile_session(model.session, forward, batch_size=batch_size, by=by, runs=runs,
                                   warmup_runs=warmup_runs)
