"""Same bytes out: this tree against an earlier commit, on scenarios that use none of its new features.

A change to the engine that is meant to leave existing scenarios alone (a refactor, a new feature
others do not use) must give byte-identical ``requests.parquet`` and ``summary.json`` for them.
This script checks out ``--base`` into a temporary git worktree, runs the same list of scenarios
(the examples, with overrides that reach every mechanism: balancers, faults scheduled and random,
plans, expiry, queue limits, each policy) under both trees with the same seeds, and compares the
files' SHA-256. It writes only under a temporary directory, which it removes.

    python bench/same_bytes.py --base HEAD~1 [--seeds 1-2]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CASES = [  # (name, scenario, --set overrides)
    ("demo", "examples/demo.toml", ["duration_s=20"]),
    ("mmc", "examples/mmc.toml", ["duration_s=10"]),
    ("round-robin", "examples/mmc.toml", ["duration_s=10", "deployments.m.balancer=round_robin"]),
    ("power-of-two", "examples/mmc.toml", ["duration_s=10", "deployments.m.balancer=power_of_two"]),
    ("least-loaded", "examples/mmc.toml", ["duration_s=10", "deployments.m.balancer=least_loaded",
                                           "deployments.m.max_batch_size=4", "deployments.m.batch_wait_timeout_ms=1"]),
    ("random-faults", "examples/mmc.toml", ["duration_s=10", 'faults=[{deployment="m",mttf_s=2.0,mttr_s=0.5}]']),
    ("scheduled-fault", "examples/mmc.toml", ["duration_s=10", "deployments.m.balancer=round_robin",
                                              'faults=[{deployment="m",replica=1,at_s=3.0,down_s=2.0,on_failure="fail"}]']),
    ("expiry", "examples/study/base.toml", ["duration_s=20", "deployments.large.drop_expired=true",
                                            "deployments.large.max_queue_size=20",
                                            'policy={name="static",deployment="large"}']),
] + [(name, "examples/study/base.toml", ["duration_s=20", f"policy={{{spec}}}"]) for name, spec in (
    ("planner", 'name="planner"'), ("infaas", 'name="infaas"'), ("autotuner", 'name="throughput-autotuner"'),
    ("degrade", 'name="degrade"'), ("aimd", 'name="aimd-batching",inner="planner"'),
    ("oracle", 'name="oracle-static"'))]


def run_all(tree: Path, out: Path, seeds: str) -> dict[str, str]:
    """SHA-256 of every seed's requests.parquet and summary.json, by '<case>/seed-<n>/<file>'."""
    hashes = {}
    for name, scenario, overrides in CASES:
        sets = [arg for value in overrides for arg in ("--set", value)]
        target = out / name
        proc = subprocess.run([sys.executable, "-m", "sim", "run", scenario, "--seeds", seeds, "--out", str(target),
                               *sets], cwd=tree, capture_output=True, text=True)
        if proc.returncode != 0:
            hashes[f"{name}/error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"
            continue
        for seed_dir in sorted(target.glob("seed-*")):
            for file in ("requests.parquet", "summary.json"):
                hashes[f"{name}/{seed_dir.name}/{file}"] = hashlib.sha256((seed_dir / file).read_bytes()).hexdigest()
    return hashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. HEAD~1)")
    parser.add_argument("--seeds", default="1-2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="same-bytes-") as scratch:
        scratch = Path(scratch)
        base = scratch / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base],
                       check=True, capture_output=True)
        try:
            before = run_all(base, scratch / "before", args.seeds)
            after = run_all(REPO, scratch / "after", args.seeds)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True)
    differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for key in differ:
        print(f"differs: {key}")
    print(f"{len(after) - len(differ)} of {len(after)} files identical to {args.base}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
