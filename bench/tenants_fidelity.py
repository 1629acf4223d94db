"""Two tenants served for real and simulated on the same arrivals: the per-tenant table side by side.

Runs ``measure serve SCENARIO`` (real replicas of the trained zoo; the ``measure`` extra and
``measure train`` first) and ``simulate run SCENARIO`` for the same seeds, then prints, per tenant
and executor, the measured requests, rate-limited rejections, hit rate and latency percentiles,
mean over the seeds. Outputs go under ``--out`` (``real/`` and ``sim/``; ``--force`` replaces an
earlier one of ours).

    python bench/tenants_fidelity.py examples/tenants/fidelity.toml --seeds 1-2 --out runs/tenants-fidelity
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.runs import markdown_table  # noqa: E402

BIN = Path(sys.executable).parent


def run(tool: str, scenario: str, seeds: str, out: Path, force: bool) -> list[dict]:
    argv = [str(BIN / tool), "serve" if tool == "measure" else "run", scenario, "--seeds", seeds, "--out", str(out)]
    subprocess.run(argv + (["--force"] if force else []), check=True, cwd=ROOT)
    return [json.loads(p.read_text()) for p in sorted(out.glob("seed-*/summary.json"))]


def rows(summaries: list[dict], executor: str) -> list[list[str]]:
    out = []
    for name in summaries[0]["tenants"]:
        per = [s["tenants"][name] for s in summaries]

        def mean(get) -> float:
            return sum(get(t) for t in per) / len(per)

        out.append([name, executor, f"{mean(lambda t: t['requests']):.0f}",
                    f"{mean(lambda t: t['dropped_by_reason'].get('rate_limited', 0)):.0f}",
                    f"{mean(lambda t: t['hit_rate']):.4f}",
                    *(f"{mean(lambda t, q=q: t['latency_ms'][q]):.1f}" for q in ("p50", "p95", "p99"))])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", help="a scenario with [[tenants]]")
    parser.add_argument("--seeds", default="1", help="seeds, as simulate run takes them (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="directory for real/ and sim/")
    parser.add_argument("--force", action="store_true", help="replace earlier outputs of ours there")
    args = parser.parse_args(argv)
    real = run("measure", args.scenario, args.seeds, args.out / "real", args.force)
    simulated = run("simulate", args.scenario, args.seeds, args.out / "sim", args.force)
    table = sorted(rows(real, "real") + rows(simulated, "simulated"), key=lambda r: (r[0], r[1]))
    print(markdown_table(["tenant", "executor", "requests", "rate-limited", "hit rate", "p50 ms", "p95 ms", "p99 ms"],
                         table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
