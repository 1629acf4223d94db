"""The result of `measure layers` and its two outputs: the printed table and the CSV.

Both profilers (``torch.profiler`` in ``measure.layers``, ONNX Runtime's in ``measure.layers_ort``)
produce a ``LayerProfile``: rows that partition a run's profiled time, heaviest first, so the
shares add up to 100%; ``(other)`` and ``(session)`` are the time outside every named row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OTHER = "(other)"
SESSION = "(session)"    # an ONNX Runtime run's time outside its kernels (measure.layers_ort)
TOP_ROWS = 12            # rows printed; the rest are summed into one
CSV_COLUMNS = ("variant", "batch_size", "by", "name", "self_cpu_ms", "share_pct", "calls")
CSV_MARKER = "# written by measure layers; replaced by its --force"
MEASURED = {  # what a row's time is, by profiler: in the title, as the column head, in the total line
    "torch": ("self CPU time", "self CPU ms", "profiled CPU time"),
    "onnxruntime": ("ONNX Runtime's kernel and session time", "time ms", "profiled wall time")}
ROWS = {"module": "the top-level parts", "operator": "operator", "node": "ONNX node"}  # by LayerProfile.by


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
    profiler: str = "torch"        # or "onnxruntime" (measure.layers_ort)

    @property
    def bottleneck(self) -> LayerRow:
        """The heaviest named row (``(other)`` and ``(session)`` are not layers)."""
        named = [row for row in self.rows if row.name not in (OTHER, SESSION)]
        return named[0] if named else self.rows[0]

    def bottleneck_line(self) -> str:
        row = self.bottleneck
        return f"{row.name} takes {row.share_pct:.0f}% of the time at batch {self.batch_size}"


def format_table(result: LayerProfile, top: int = TOP_ROWS) -> str:
    """The heaviest ``top`` rows, the rest summed into one, and the total."""
    width = max([len(result.by), len("total")] + [len(row.name) for row in result.rows[:top]]) + 2
    lines = [f"{result.by:<{width}s}{MEASURED[result.profiler][1]:>12s}{'share':>9s}{'calls':>9s}"]

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
