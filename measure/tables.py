"""The tables a bundle is read by: per variant, the median latency at a few batch sizes and the
accuracy; and the same side by side per backend, the serving-stack comparison (eager PyTorch,
TorchScript, ONNX Runtime) the README and docs/bundles.md print; and the replica start-ups of a
bundle with a ``startup`` table (``measure startup``): per variant the median time from spawn to
ready with its range, and the median of each phase.

Medians are of the runs measured back to back at that size (the shortest idle gap the bundle
timed, as ``LatencyProfile.percentile_ms`` reads them), and the run count is of those runs; a size
that was not measured is left blank rather than interpolated, since these tables report measurements.
Accuracy is the mean of ``correct`` over the held-out split's predictions of that variant.

    measure table traces/data/digits-cpu
    measure table traces/data/digits-cpu --by-backend --markdown
    measure table traces/data/digits-cpu --startup --markdown
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.profiles import LatencyProfile
from traces.startup import PHASE_COLUMNS as PHASES

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


def startup_rows(bundle: TraceBundle) -> list[dict]:
    """Per variant with timed start-ups, in id order: ``startups`` (how many), ``median_s``,
    ``min_s``, ``max_s`` of ``startup_s``, and the median of each phase (None where none was
    recorded)."""
    table = bundle.startup
    if not len(table):
        raise InputError(str(bundle.path or bundle.name), "has no startup table (measure startup adds one)")
    rows = []
    for variant, group in table.groupby("variant", sort=True):
        seconds = group["startup_s"]
        row = {"variant": variant, "startups": int(seconds.size), "median_s": float(seconds.median()),
               "min_s": float(seconds.min()), "max_s": float(seconds.max())}
        for phase in PHASES:
            known = group[phase].dropna() if phase in group else []
            row[phase] = float(known.median()) if len(known) else None
        rows.append(row)
    return rows


def render_startup(rows: list[dict], markdown: bool) -> str:
    head = ["variant", "startup_s median (min-max)", "runs", *(p.removesuffix("_s") for p in PHASES)]
    body = [[r["variant"], f"{r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f})", str(r["startups"]),
             *(_num(r[p], 2) for p in PHASES)] for r in rows]
    return _render(head, body, markdown)


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
    """``measure table``: print a bundle's table (per variant, per backend side by side, or its
    start-ups)."""
    path = Path(args.bundle)
    if not (path / "bundle.json").is_file():
        raise InputError(str(path), "is not a trace bundle (no bundle.json)")
    bundle = TraceBundle.load(path)
    sizes = batch_sizes_of(args.batch_sizes)
    if args.startup:
        print(render_startup(startup_rows(bundle), args.markdown))
    elif args.by_backend:
        backends, rows = backend_rows(bundle, sizes)
        print(render_backends(backends, rows, sizes, args.markdown))
    else:
        print(render_variants(variant_rows(bundle, sizes), sizes, args.markdown))
    return 0
