"""The tables a bundle is read by: per variant, the median latency at a few batch sizes and the
accuracy; and the same side by side per backend, the serving-stack comparison (eager PyTorch,
TorchScript, ONNX Runtime) the README and docs/bundles.md print.

Medians are of the runs measured back to back at that size (the shortest idle gap the bundle
timed, as ``LatencyProfile.percentile_ms`` reads them), and the run count is of those runs; a size
that was not measured is left blank rather than interpolated, since these tables report measurements.
Accuracy is the mean of ``correct`` over the held-out split's predictions of that variant.

    measure table traces/data/digits-cpu
    measure table traces/data/digits-cpu --by-backend --markdown
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.profiles import LatencyProfile

from .profile import BACKENDS, VariantSpec

BLANK = "-"


def variant_rows(bundle: TraceBundle, batch_sizes: tuple[int, ...] = (1, 8)) -> list[dict]:
    """Per variant: ``p50_b{size}_ms`` (None where not measured), ``runs_b{size}`` and ``accuracy``
    (None without predictions)."""
    predictions = bundle.predictions
    rows = []
    for variant in bundle.variants:
        profile = LatencyProfile.from_bundle(bundle, variant)
        samples = bundle.latency_samples(variant)   # the back-to-back runs (shortest idle gap): the median's
        row: dict = {"variant": variant}
        for b in batch_sizes:
            measured = b in profile.measured_batch_sizes
            row[f"p50_b{b}_ms"] = profile.percentile_ms(b, 50) if measured else None
            row[f"runs_b{b}"] = int(samples[b].size) if b in samples else 0
        correct = predictions.loc[predictions["variant"] == variant, "correct"] if len(predictions) else []
        row["accuracy"] = float(correct.mean()) if len(correct) else None
        rows.append(row)
    return rows


def backend_rows(bundle: TraceBundle, batch_sizes: tuple[int, ...] = (1, 8)) -> tuple[list[str], list[dict]]:
    """The backends the bundle has (in ``BACKENDS`` order), and one row per model, pruning,
    precision and device measured under more than one backend (every one when none is):
    ``{backend: variant row}`` for the backends measured there (the precision column names the
    device too when the bundle has several). Only rows with something to compare are kept: a study
    bundle holds many eager-only variants beside the few it also serves under other stacks."""
    groups: dict[tuple, dict] = defaultdict(dict)
    for row in variant_rows(bundle, batch_sizes):
        spec = VariantSpec.parse(row["variant"])
        model = spec.model if spec.pruning == "none" else f"{spec.model}-{spec.pruning}"
        groups[(model, spec.precision, spec.device)][spec.backend] = row
    compared = {key: by for key, by in groups.items() if len(by) > 1}
    groups = compared or groups
    present = [b for b in BACKENDS if any(b in by for by in groups.values())]
    devices = {d for _, _, d in groups}
    return present, [{"model": m, "precision": p if len(devices) == 1 else f"{p}/{d}", "device": d, "by": by}
                     for (m, p, d), by in groups.items()]


def _num(value: float | None, digits: int) -> str:
    return BLANK if value is None else f"{value:.{digits}f}"


def render_variants(rows: list[dict], batch_sizes: tuple[int, ...], markdown: bool) -> str:
    head = ["variant", *(f"p50 batch {b} (ms)" for b in batch_sizes), *(f"runs b{b}" for b in batch_sizes), "accuracy"]
    body = [[r["variant"], *(_num(r[f"p50_b{b}_ms"], 3) for b in batch_sizes),
             *(str(r[f"runs_b{b}"]) for b in batch_sizes), _num(r["accuracy"], 4)] for r in rows]
    return _render(head, body, markdown)


def render_backends(backends: list[str], rows: list[dict], batch_sizes: tuple[int, ...], markdown: bool) -> str:
    head = ["model", "precision"]
    for b in batch_sizes:
        head += [f"p50 b{b} {name}" for name in backends]
    head.append("accuracy " + " / ".join(backends))
    body = []
    for row in rows:
        by = row["by"]
        cells = [row["model"], row["precision"]]
        for b in batch_sizes:
            cells += [_num(by[name][f"p50_b{b}_ms"], 3) if name in by else BLANK for name in backends]
        cells.append(" / ".join(_num(by[name]["accuracy"], 4) if name in by else BLANK for name in backends))
        body.append(cells)
    return _render(head, body, markdown)


def _render(head: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(c) for c in column) for column in zip(head, *body)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
                     for cells in [head, *body])


def batch_sizes_of(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(b < 1 for b in sizes):
        raise InputError("--batch-sizes", f"must be positive integers separated by commas, got {text!r}")
    return sizes


def run(args) -> int:
    """``measure table``: print a bundle's table (per variant, or per backend side by side)."""
    path = Path(args.bundle)
    if not (path / "bundle.json").is_file():
        raise InputError(str(path), "is not a trace bundle (no bundle.json)")
    bundle = TraceBundle.load(path)
    sizes = batch_sizes_of(args.batch_sizes)
    if args.by_backend:
        backends, rows = backend_rows(bundle, sizes)
        print(render_backends(backends, rows, sizes, args.markdown))
    else:
        print(render_variants(variant_rows(bundle, sizes), sizes, args.markdown))
    return 0
