"""The study's policies on the two system shapes the study was not tuned on, paired by seed.

The study's base (``examples/study/base.toml``: three digits classifiers, one replica each, 1,900
requests/s, the large model 1.5x overloaded) is one shape. An independent review reported that
on two others, with spare capacity on the accurate models, the best fixed configuration in
hindsight (``oracle-static``) beat the planner in every seed; this script runs them:

- ``two-large``: the base with a second replica of ``large`` (ResNet-18 INT8), so ``large`` alone
  carries 1,900 requests/s at about 0.76 of its capacity at full batches;
- ``four-deployments``: the base with a fourth deployment (``--fourth``, default MobileNetV2 FP32);
- ``base``: the study's own shape, to check that what helps the other two does not hurt it.

For each shape, deadline and seed this runs every policy named by ``--policy`` on the same
arrivals and prints on-time accuracy and hit rate per seed, and per policy the mean difference to
the first one (paired by seed) with its range over the seeds. It writes nothing.

    python bench/shapes.py [--seeds 1-3] [--duration 30] [--deadlines 20,40] [--shapes two-large,four-deployments]
                           [--policy planner --policy oracle-static --policy infaas:accuracy_floor=0.98 ...]

To compare with an earlier tree, run a copy of this script from that tree (the script imports the
tree it sits in).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim.runner import prepare, run_once  # noqa: E402
from traces.scenario import scenario_from_dict  # noqa: E402

BASE = REPO / "examples" / "study" / "base.toml"


def shapes(fourth: str) -> dict[str, dict]:
    """The two shapes of the review, as scenario dicts built from the study's base."""
    base = tomllib.loads(BASE.read_text())
    two_large = {**base, "deployments": [{**d, "replicas": 2} if d["name"] == "large" else d
                                         for d in base["deployments"]]}
    extra = {**base["deployments"][-1], "name": fourth.split("/")[0].replace("_", "-") + "-" + fourth.split("/")[1],
             "variant": fourth}
    four = {**base, "deployments": [*base["deployments"], extra]}
    return {"base": base, "two-large": two_large, "four-deployments": four}


def run(raw: dict, policy: dict, deadline_ms: float, duration_s: float, seed: int) -> dict:
    raw = {**raw, "duration_s": duration_s, "warmup_s": min(5.0, duration_s / 4), "policy": policy,
           "requests": {**raw["requests"], "deadline_ms": deadline_ms}}
    scenario = scenario_from_dict(raw, base_dir=BASE.parent)
    _, _, summary = run_once(prepare(scenario), seed)
    return summary


def policy_of(spec: str) -> dict:
    """``name[:key=value[:key=value]]`` (values in TOML) as a scenario's [policy] table."""
    name, *pairs = spec.split(":")
    policy = {"name": name}
    for pair in pairs:
        key, value = pair.split("=", 1)
        policy[key] = tomllib.loads(f"v = {value}")["v"]
    return policy


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-3")
    parser.add_argument("--duration", type=float, default=30.0, help="simulated seconds per run")
    parser.add_argument("--deadlines", default="20,40", help="deadlines in ms, comma separated")
    parser.add_argument("--policy", action="append", dest="policies",
                        help="name[:key=value...] (repeat; the first is the reference of the differences; "
                        "default planner and oracle-static)")
    parser.add_argument("--fourth", default="mobilenet_v2/fp32/cpu", help="the fourth deployment's variant")
    parser.add_argument("--shapes", default="two-large,four-deployments")
    args = parser.parse_args()
    seeds = seeds_of(args.seeds)
    names = args.policies or ["planner", "oracle-static"]
    all_shapes = shapes(args.fourth)
    for shape in args.shapes.split(","):
        for deadline in (float(d) for d in args.deadlines.split(",")):
            print(f"\n## {shape}, deadline {deadline:g} ms ({len(seeds)} seeds, {args.duration:g} s)")
            ontime: dict[str, list[float]] = {}
            for name in names:
                results = [run(all_shapes[shape], policy_of(name), deadline, args.duration, s) for s in seeds]
                ontime[name] = [r["ontime_accuracy"] for r in results]
                # what the policy reports: oracle-static its choice, degrade its overrides
                extra = [r["policy"].get("choice", r["policy"].get("overrides")) for r in results]
                cells = "  ".join(f"{r['ontime_accuracy']:.4f}/{r['hit_rate']:.3f}" for r in results)
                print(f"{name:24s} on-time acc/hit per seed: {cells}  {'' if extra[0] is None else extra}")
            reference = ontime[names[0]]
            for name in names[1:]:
                diffs = [a - b for a, b in zip(reference, ontime[name])]
                print(f"{names[0]} - {name}: mean {100 * statistics.mean(diffs):+.2f} points "
                      f"(per seed {', '.join(f'{100 * d:+.2f}' for d in diffs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
