"""The isolation study: if the noisy neighbour's traffic grows, what happens to the premium tenant?

Reads a sweep of ``examples/tenants/isolation-sweep.toml`` (``simulate sweep
examples/tenants/isolation-sweep.toml --out runs/isolation``) and writes into ``--out``
(atomically; ``--force`` to replace an earlier one):

- ``isolation.md``: per queue discipline and neighbour rate, the mean over seeds with a 95%
  Student-t interval of the premium tenant's hit rate and p99, both tenants' cost per 1,000
  requests, the neighbour's hit rate and the fairness figures;
- ``isolation.png``: the premium tenant's hit rate and p99, and both tenants' cost per 1k
  requests, against the neighbour's rate, one line per discipline with its interval.

    python bench/isolation_study.py runs/isolation --out docs/results/isolation --force
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.runs import markdown_table  # noqa: E402
from analysis.stats import mean_interval  # noqa: E402
from traces.cli import run_command  # noqa: E402
from traces.errors import InputError  # noqa: E402
from traces.outputs import atomic_output  # noqa: E402

SCALE, QUEUE = "tenants.neighbour.arrivals.rate_scale", "deployments.shared.queue"
COLUMNS = (("tenants.premium.hit_rate", "premium hit rate", 4), ("tenants.premium.latency_ms.p99", "premium p99 ms", 1),
           ("tenants.premium.cost.per_1k_requests", "premium cost/1k", 4),
           ("tenants.neighbour.hit_rate", "neighbour hit rate", 4),
           ("tenants.neighbour.cost.per_1k_requests", "neighbour cost/1k", 5),
           ("fairness.jain_index", "Jain", 3), ("fairness.max_service_gap_s", "max gap s", 3))


def load(sweep: Path) -> pd.DataFrame:
    path = sweep / "results.parquet"
    if not path.is_file():
        raise InputError(str(path), "not found: run `simulate sweep examples/tenants/isolation-sweep.toml --out DIR` first")
    frame = pd.read_parquet(path)
    for column in (SCALE, QUEUE, "seed") + tuple(c for c, _, _ in COLUMNS):
        if column not in frame:
            raise InputError(f"{path} column {column!r}", "is missing; expected the isolation study's sweep")
    frame[SCALE] = frame[SCALE].astype(float)
    return frame


def table(frame: pd.DataFrame) -> str:
    rows = []
    for (queue, scale), runs in frame.groupby([QUEUE, SCALE], sort=False):
        rows.append([queue, f"{scale:g}x"] + [mean_interval(runs[c]).format(d) for c, _, d in COLUMNS])
    return markdown_table(["queue", "neighbour"] + [label for _, label, _ in COLUMNS], rows)


def figure(frame: pd.DataFrame, staging: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("tenants.premium.hit_rate", "premium hit rate"), ("tenants.premium.latency_ms.p99", "premium p99 (ms)"),
              ("tenants.premium.cost.per_1k_requests", "premium cost per 1k"),
              ("tenants.neighbour.cost.per_1k_requests", "neighbour cost per 1k"))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for queue, runs in frame.groupby(QUEUE, sort=False):
        for ax, (column, label) in zip(axes, panels):
            points = [(scale, mean_interval(r[column])) for scale, r in runs.groupby(SCALE)]
            x = [s for s, _ in points]
            mean = [i.mean for _, i in points]
            half = [0.0 if pd.isna(i.half_width) else i.half_width for _, i in points]
            ax.errorbar(x, mean, yerr=half, label=queue, marker="o", capsize=3)
            ax.set_xlabel("neighbour's rate (x its trace)")
            ax.set_ylabel(label)
    axes[1].set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(staging / "isolation.png", dpi=110)
    plt.close(fig)
    return "isolation.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the isolation sweep's --out directory")
    parser.add_argument("--out", type=Path, required=True, help="directory for isolation.md and its figure")
    parser.add_argument("--force", action="store_true", help="replace an --out this script wrote before")
    args = parser.parse_args(argv)
    return run_command(lambda: report(args))


def report(args) -> int:
    """Write the study's report into ``args.out`` (atomically) and say where."""
    frame = load(args.sweep)
    with atomic_output(args.out, force=args.force, kind="report") as staging:
        name = figure(frame, staging)
        text = ["# Isolation study", "",
                f"From `python bench/isolation_study.py {args.sweep} --out {args.out}` over `simulate sweep "
                f"examples/tenants/isolation-sweep.toml --out {args.sweep}` ({len(frame)} runs; mean ± 95% "
                "interval over seeds).", "", table(frame), "", f"![The premium tenant and both costs]({name})", ""]
        (staging / "isolation.md").write_text("\n".join(text))
    print(f"wrote {args.out}/ (isolation.md, {name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
