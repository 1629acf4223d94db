"""IPA's study, reported as IPA reports it: over time, as a table with intervals, and on the front.

Reads a sweep of ``examples/ipa/study.toml`` (``simulate sweep examples/ipa/study.toml --out
runs/ipa``) and writes, into ``--out`` (atomically; ``--force`` to replace):

- ``ipa.md``: per window and policy, the mean over seeds with a 95% Student-t interval of the
  end-to-end accuracy, the SLA attainment (hit rate), the p99 latency, the cost per hour and the
  replica-seconds; then ``ipa`` against each other policy paired by seed (mean difference, interval,
  wins/losses) on accuracy, cost and attainment;
- ``ipa-over-time-<window>.png``: cost per hour (replicas provisioned x price, from each run's
  ``timeline.parquet``), accuracy, p99 latency and SLA violations per second, in 10 s bins, mean
  over seeds, one line per policy;
- ``ipa-front.png``: each policy's (cost, accuracy) per window beside the front the planner
  predicts at the window's mean rate (``simulate recommend --front``'s points, not simulated here).

    python bench/ipa_study.py runs/ipa --out docs/results/ipa --force
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.runs import markdown_table  # noqa: E402
from analysis.stats import mean_interval, paired_difference  # noqa: E402
from traces.cli import run_command  # noqa: E402
from traces.errors import InputError  # noqa: E402
from traces.outputs import atomic_output  # noqa: E402

BIN_S = 10.0
METRICS = (("accuracy", "accuracy", 4), ("hit_rate", "SLA attainment", 4), ("latency_ms.p99", "p99 ms", 1),
           ("cost_per_hour", "cost/hour", 2), ("cost.replica_seconds", "replica-s", 0))
PAIRED = (("accuracy", 4), ("cost_per_hour", 3), ("hit_rate", 4))


def load(sweep: Path) -> pd.DataFrame:
    path = sweep / "results.parquet"
    if not path.is_file():
        raise InputError(str(path), "not found: run `simulate sweep examples/ipa/study.toml --out DIR` first")
    frame = pd.read_parquet(path)
    for column in ("window", "policy", "seed", "run_id", "accuracy", "hit_rate", "cost.total"):
        if column not in frame:
            raise InputError(f"{path} column {column!r}", "is missing; expected the IPA study's sweep")
    hours = [measured_hours(sweep / "runs" / run_id) for run_id in frame["run_id"]]
    return frame.assign(cost_per_hour=frame["cost.total"] / np.asarray(hours))


def measured_hours(run: Path) -> float:
    config = json.loads((run / "config.json").read_text())
    return (float(config["duration_s"]) - float(config["warmup_s"])) / 3600.0


def table(frame: pd.DataFrame) -> str:
    rows = []
    for (window, policy), runs in frame.groupby(["window", "policy"], sort=False):
        rows.append([window, policy] + [mean_interval(runs[m]).format(d) for m, _, d in METRICS])
    return markdown_table(["window", "policy"] + [label for _, label, _ in METRICS], rows)


def paired(frame: pd.DataFrame) -> str:
    rows = []
    for window, runs in frame.groupby("window", sort=False):
        ipa = runs[runs["policy"] == "ipa"].set_index("seed")
        for other, theirs in runs[runs["policy"] != "ipa"].groupby("policy", sort=False):
            theirs = theirs.set_index("seed")
            seeds = ipa.index.intersection(theirs.index)
            cells = []
            for metric, digits in PAIRED:
                d = paired_difference(ipa.loc[seeds, metric], theirs.loc[seeds, metric])
                cells.append(f"{d.difference.format(digits)} ({d.wins}/{d.losses})")
            rows.append([window, f"ipa - {other}"] + cells)
    return markdown_table(["window", "pair"] + [f"{m} (wins/losses)" for m, _ in PAIRED], rows)


def over_time(sweep: Path, runs: pd.DataFrame, price: float) -> pd.DataFrame:
    """Per 10 s bin of one run: cost per hour, accuracy, p99 ms, violations per second."""
    run = sweep / "runs" / runs
    requests = pd.read_parquet(run / "requests.parquet", columns=["arrival_s", "latency_ms", "correct", "hit"])
    timeline = pd.read_parquet(run / "timeline.parquet", columns=["time_s", "deployment", "replicas"])
    requests["bin"] = (requests["arrival_s"] // BIN_S) * BIN_S
    grouped = requests.groupby("bin")
    frame = pd.DataFrame({"accuracy": grouped["correct"].mean(), "p99_ms": grouped["latency_ms"].quantile(0.99),
                          "violations_per_s": grouped["hit"].apply(lambda h: (~h.astype(bool)).sum()) / BIN_S})
    # each deployment's count holds until its next row (an autoscaler's tick, else every second)
    held = timeline.pivot_table(index="time_s", columns="deployment", values="replicas", aggfunc="last")
    grid = np.arange(1.0, float(held.index.max()) + 1.0)
    replicas = held.reindex(held.index.union(grid)).ffill().fillna(0).loc[grid].sum(axis=1)
    replicas.index = (replicas.index // BIN_S) * BIN_S
    frame["cost_per_hour"] = replicas.groupby(level=0).mean() * price
    return frame


def figures(sweep: Path, frame: pd.DataFrame, staging: Path, price: float) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    panels = (("cost_per_hour", "cost per hour"), ("accuracy", "accuracy"), ("p99_ms", "p99 latency (ms)"),
              ("violations_per_s", "SLA violations per s"))
    for window, runs in frame.groupby("window", sort=False):
        fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
        for policy, mine in runs.groupby("policy", sort=False):
            series = pd.concat([over_time(sweep, run_id, price) for run_id in mine["run_id"]]).groupby(level=0).mean()
            for ax, (column, label) in zip(axes, panels):
                ax.plot(series.index, series[column], label=policy, lw=1.2)
                ax.set_ylabel(label)
        axes[2].set_yscale("log")
        axes[0].legend(ncol=4, fontsize=8)
        axes[-1].set_xlabel("time (s), 10 s bins, mean over seeds")
        fig.suptitle(f"IPA study, {window} window")
        fig.tight_layout()
        name = f"ipa-over-time-{window}.png"
        fig.savefig(staging / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def front_figure(frame: pd.DataFrame, fronts: dict, staging: Path) -> str:
    import matplotlib.pyplot as plt

    windows = list(dict.fromkeys(frame["window"]))
    fig, axes = plt.subplots(1, len(windows), figsize=(4 * len(windows), 3.6), squeeze=False)
    for ax, window in zip(axes[0], windows):
        runs = frame[frame["window"] == window]
        for policy, mine in runs.groupby("policy", sort=False):
            ax.scatter(mine["cost_per_hour"].mean(), mine["accuracy"].mean(), label=policy, s=30)
        points = fronts.get(window, [])
        if points:
            ax.step([p[0] for p in points], [p[1] for p in points], where="post", color="grey", lw=1,
                    label="predicted front at the mean rate")
        ax.set_title(window)
        ax.set_xlabel("cost per hour")
    axes[0][0].set_ylabel("end-to-end accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(staging / "ipa-front.png", dpi=110)
    plt.close(fig)
    return "ipa-front.png"


def predicted_fronts(sweep_file: Path, frame: pd.DataFrame) -> dict:
    """The planner's front at each window's mean rate, on the sweep's own scenarios (not simulated)."""
    from policies.ipa_solver import pareto_front
    from sim.recommend import planning_policy
    from sim.sweep import expand
    from traces.scenario import scenario_from_dict

    fronts = {}
    for task in expand(sweep_file):
        window = task.point.get("window")
        if window in fronts or task.point.get("policy") != "ipa" or window not in set(frame["window"]):
            continue
        scenario = scenario_from_dict(task.raw, base_dir=Path(task.base_dir))
        policy = planning_policy(scenario)
        rate = scenario.arrivals.mean_rate_rps(scenario.duration_s)
        plans = pareto_front(policy.options(rate), policy.sla(), score=policy.score)
        fronts[window] = [(p.cost_per_hour, p.accuracy) for p in plans]
    return fronts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the study sweep's --out directory")
    parser.add_argument("--out", type=Path, required=True, help="directory for ipa.md and the figures")
    parser.add_argument("--force", action="store_true", help="replace an --out this script wrote before")
    parser.add_argument("--sweep-file", type=Path, default=ROOT / "examples/ipa/study.toml",
                        help="the sweep file the study ran (for the predicted fronts)")
    args = parser.parse_args(argv)
    return run_command(lambda: report(args))


def report(args) -> int:
    """Write the study's report into ``args.out`` (atomically) and say where."""
    frame = load(args.sweep)
    price = float(json.loads((args.sweep / "runs" / frame["run_id"].iloc[0] / "config.json").read_text())
                  .get("price_per_replica_hour", 1.0))
    fronts = predicted_fronts(args.sweep_file, frame)
    with atomic_output(args.out, force=args.force, kind="report") as staging:
        names = figures(args.sweep, frame, staging, price) + [front_figure(frame, fronts, staging)]
        text = ["# IPA study", "", f"From `python bench/ipa_study.py {args.sweep} --out {args.out}` over "
                f"`simulate sweep examples/ipa/study.toml --out {args.sweep}` ({len(frame)} runs; "
                f"mean ± 95% interval over seeds).", "", table(frame), "",
                "## `ipa` against each policy, paired by seed", "", "Mean difference ± 95% interval "
                "(seeds where ipa is higher / lower).", "", paired(frame), "",
                "## The planner's predicted front at each window's mean rate", ""]
        for window, points in fronts.items():
            text.append(f"- {window}: " + ", ".join(f"{c:g}/h: {a:.4f}" for c, a in points))
        text += ["", "Figures: " + ", ".join(f"[{n}]({n})" for n in names), ""]
        (staging / "ipa.md").write_text("\n".join(text))
    print(f"wrote {args.out}/ (ipa.md, {len(names)} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
