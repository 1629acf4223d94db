"""Regenerate every table and figure of the README and ``docs/`` that comes from the simulator.

    make reproduce                      # the same as: python bench/reproduce.py
    python bench/reproduce.py --dry-run # print the commands, run nothing
    python bench/reproduce.py --only figures,stats   # some steps (their sweeps must be on disk)

It runs the sweeps (into ``runs/``, resumable: a second call reuses every finished run; with
``--force``, so a sweep whose scenario or data changed is rebuilt, keeping the runs that still
match, and only ever over a sweep of ours) and then
the ``analyse`` commands that turn them into the published tables (``docs/results/``) and figures
(``docs/figures/``), each through the command a user would type, so every number published comes
from a command in the repository. Each output is written atomically and replaces only an earlier
output of the same command (``--force`` on outputs of ours; a file of yours in the way is refused).

What it does not regenerate, and why: the fidelity tables (``bench/fidelity.py``: real replicas
on this machine's wall clock), the speed figures (``bench/sim_speed.py``), the bundles' tables
(``measure``) and the mutation scores (``make mutation``, hours): each depends on the machine it
runs on, not only on the committed bundles, and has its own command in the docs that show it.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    argv: tuple[str, ...]


def _tool(name: str) -> str:
    exe = BIN / name
    return str(exe) if exe.exists() else name


def steps() -> list[Step]:
    simulate, analyse = _tool("simulate"), _tool("analyse")
    study = "runs/study/results.parquet"
    return [
        Step("study", "the policy study: 540 runs", (simulate, "sweep", "examples/study/study.toml", "--out", "runs/study", "--force")),
        Step("threshold", "cascade-threshold sweep: 80 runs",
             (simulate, "sweep", "examples/threshold/threshold.toml", "--out", "runs/threshold", "--force")),
        Step("ablation", "one-factor-at-a-time ablation",
             (simulate, "sweep", "examples/ablation/digits.toml", "--out", "runs/ablation", "--force")),
        Step("tables", "the study tables (docs/results/study.md)",
             (sys.executable, "-m", "analysis.study", study, "--overall",
              "--pivot", "ontime_accuracy", "--pivot", "hit_rate",
              "--versus", "planner:infaas", "--versus", "planner:oracle-static",
              "--out", "docs/results/study.md", "--force")),
        Step("stats", "the pre-declared protocol's tests (docs/results/stats/)",
             (analyse, "stats", study, "--protocol", "analysis/protocol.toml", "--out", "docs/results/stats", "--force")),
        # the reference: a configuration worth deploying is at least 90% on-time accurate with a p99
        # within the study's longest deadline (80 ms); the nadir would be static-large's 0% and 93 ms
        Step("pareto", "Pareto fronts and hypervolume (docs/results/pareto.md)",
             (analyse, "pareto", study, "--objectives", "ontime_accuracy:max,latency_ms.p99:min",
              "--reference", "0.9,80", "--out", "docs/results/pareto.md", "--force")),
        Step("theory", "queueing theory beside the study (docs/results/theory.md)",
             (analyse, "theory", "runs/study", "--out", "docs/results/theory.md", "--force")),
        Step("ablation-report", "the ablation's effects (docs/results/ablation/)",
             (analyse, "ablation", "runs/ablation", "--out", "docs/results/ablation", "--force")),
        Step("figures", "the study's figures (docs/figures/study/)",
             (analyse, "figures", "runs/study", "--out", "docs/figures/study", "--force",
              "--protocol", "analysis/protocol.toml")),
        Step("threshold-figures", "the threshold figures (docs/figures/threshold/)",
             (analyse, "figures", "runs/threshold", "--out", "docs/figures/threshold", "--force")),
        Step("ipa", "IPA's study on its Twitter windows: 120 runs",
             (simulate, "sweep", "examples/ipa/study.toml", "--out", "runs/ipa", "--force")),
        Step("ipa-report", "the IPA study's table and figures (docs/results/ipa/)",
             (sys.executable, "bench/ipa_study.py", "runs/ipa", "--out", "docs/results/ipa", "--force")),
        Step("isolation", "the tenants' isolation study: 75 runs",
             (simulate, "sweep", "examples/tenants/isolation-sweep.toml", "--out", "runs/isolation", "--force")),
        Step("isolation-report", "the isolation study's table and figure (docs/results/isolation/)",
             (sys.executable, "bench/isolation_study.py", "runs/isolation", "--out", "docs/results/isolation", "--force")),
        Step("widened", "the widened study: 144 cells x 5 seeds (docs/results/widened/; resumes from its cache)",
             (sys.executable, "bench/widened_study.py", "--out", "docs/results/widened", "--jobs", "2", "--force")),
        Step("learned-digits", "the learned router against the planner, digits (docs/results/learned/digits.md)",
             (sys.executable, "bench/learned_eval.py", "examples/learned/digits.toml",
              "--out", "docs/results/learned/digits.md", "--force")),
        Step("learned-sst2", "the learned router against the planner, SST-2 (docs/results/learned/sst2.md)",
             (sys.executable, "bench/learned_eval.py", "examples/learned/sst2.toml", "--deadlines", "20,40,80",
              "--out", "docs/results/learned/sst2.md", "--force")),
        Step("data", "the sweeps' results tables for the notebooks (docs/data/)",
             (sys.executable, str(Path(__file__).resolve().relative_to(ROOT)), "--copy-results", "docs/data")),
    ]


# the results tables the notebooks read (small: one row per run), under the names they expect
RESULTS = {"runs/study/results.parquet": "study-results.parquet",
           "runs/threshold/results.parquet": "threshold-results.parquet",
           "runs/ablation/results.parquet": "ablation-results.parquet"}


def copy_results(target: str) -> int:
    """Copy the sweeps' ``results.parquet`` into ``target`` as one output of ours (atomically;
    an earlier copy is replaced, a directory of yours never)."""
    sys.path.insert(0, str(ROOT))
    from traces.cli import run_command
    from traces.errors import InputError
    from traces.outputs import atomic_output

    def copy() -> int:
        missing = [src for src in RESULTS if not (ROOT / src).is_file()]
        if missing:
            raise InputError(missing[0], "is missing: run its sweep first (python bench/reproduce.py)")
        with atomic_output(ROOT / target, force=True, kind="report") as staging:
            for src, name in RESULTS.items():
                shutil.copyfile(ROOT / src, staging / name)
        print(f"wrote {target}/ ({', '.join(RESULTS.values())})")
        return 0

    return run_command(copy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the commands and run nothing")
    parser.add_argument("--copy-results", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--only", help="comma-separated step names (default: all): "
                                       + ", ".join(s.name for s in steps()))
    args = parser.parse_args(argv)
    if args.copy_results:
        return copy_results(args.copy_results)
    chosen = steps()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {s.name for s in chosen})
        if unknown:
            print(f"error: --only: unknown step(s) {', '.join(unknown)}; "
                  f"expected some of {', '.join(s.name for s in chosen)}", file=sys.stderr)
            return 2
        chosen = [s for s in chosen if s.name in wanted]
    started = time.monotonic()
    for k, step in enumerate(chosen, 1):
        line = " ".join(shlex.quote(a if not a.startswith(str(BIN)) else Path(a).name) for a in step.argv)
        print(f"[{k}/{len(chosen)}] {step.what}: {line}", flush=True)
        if args.dry_run:
            continue
        begun = time.monotonic()
        code = subprocess.run(step.argv, cwd=ROOT).returncode
        if code != 0:
            print(f"error: step {step.name!r} exited with {code}; the steps before it are kept, "
                  f"rerun to resume", file=sys.stderr)
            return code
        print(f"[{k}/{len(chosen)}] done in {time.monotonic() - begun:.0f} s "
              f"(total {time.monotonic() - started:.0f} s)", flush=True)
    if not args.dry_run:
        print(f"reproduced {len(chosen)} step(s) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
