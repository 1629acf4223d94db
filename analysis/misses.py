"""`analyse misses`: why requests missed their deadlines, one cause per miss.

    analyse misses RUN_DIR [--versus OTHER_RUN_DIR] [--out DIR --force]

A hit rate of 0.93 says how many requests missed, not why, and the remedies differ: requests a full
queue turned away want a longer queue or more replicas; requests that waited too long want more
replicas or a smaller batch timeout; requests served too slowly want a faster variant; requests
lost to a crash want redundancy. Every *miss* (a measured arrival not completed by its deadline:
dropped, or completed late) gets exactly one cause, the first of these that applies:

1. ``fault`` (lost to a fault): dropped because its replica crashed (``replica_failed``), or sent
   back to the queue by a crash (``retries > 0``) and then dropped or late. The crash comes first
   because it is the root cause: the wait or the expiry that followed is its consequence.
2. ``unfinished`` (unfinished at the end): still queued or in service when the run ended
   (``drop_reason`` ``unfinished``), e.g. stranded in a queue whose replicas an outage took.
   Nothing refused it, so it is not a rejection: the run ended before it was served.
3. ``rejected``: refused by a full queue (``queue_full``, at arrival or when a cascade passed it
   on) or by the policy (``rejected``, ``shed`` or any other reason the policy gives).
4. ``expired`` (expired in queue): dropped when its batch formed after its deadline
   (``drop_expired``).
5. ``queued`` (queued too long): completed late, and its time not in service (latency minus the
   service time of every hop: queueing and waiting for a batch to fill) is at least its time in
   service.
6. ``served`` (served too slowly): completed late, mostly in service.

For each cause: how many, their share of the measured arrivals, and how late the completed ones
were (median, p95 and max of latency - deadline). For a pipeline, the late requests are also
counted by the stage that took most of their time (``stage{s}_latency_ms``). ``summary.json``'s
``policy`` object (e.g. ``degrade``'s overrides by reason) says what a degradation policy changed.
``--versus`` puts a second run beside the first, paired by seed: per cause, the counts of both and
the mean per-seed difference with its 95% paired t interval.

``--out DIR`` writes ``misses.md`` (the report) and ``misses.csv`` (one row per miss: ``run``,
``seed``, ``id``, ``cause``, ``drop_reason``, ``late_ms``, ``wait_ms``, ``service_ms``,
``deployment``, the hop where it was dropped or spent most of its time, and ``stage`` for a
pipeline) atomically; an earlier report of ours is replaced only with ``--force``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from traces.errors import InputError

from .runs import SeedRun, add_out_arguments, check_out, markdown_table, pair_by_seed, read_run, unpaired_note

EXAMPLES = """examples:
  analyse misses runs/demo
  analyse misses runs/demo/seed-1
  analyse misses runs/degrade --versus runs/planner --out runs/degrade-misses
"""

CAUSES = (  # in order of precedence: a miss takes the first that applies
    ("fault", "lost to a fault", "dropped as replica_failed, or retried after a crash and then dropped or late"),
    ("unfinished", "unfinished at the end", "still queued or in service when the run ended (unfinished)"),
    ("rejected", "rejected", "refused by a full queue (queue_full) or by the policy (rejected, shed, ...)"),
    ("expired", "expired in queue", "dropped when its batch formed after its deadline (drop_expired)"),
    ("queued", "queued too long", "completed late; time not in service >= time in service"),
    ("served", "served too slowly", "completed late; time in service > time not in service"),
)
CAUSE_NAMES = tuple(name for name, _, _ in CAUSES)
REQUIRED = ("id", "arrival_s", "deadline_ms", "hops", "retries", "latency_ms", "dropped", "drop_reason", "hit",
            "measured")
_TIMING = re.compile(r"^(hop\d+_(deployment|enqueue_s|start_s|finish_s|stage)|stage\d+_latency_ms)$")
_STAGE_TIME = re.compile(r"^stage(\d+)_latency_ms$")
TIE_MS = 1e-6  # waiting and service equal to within a nanosecond (float rounding) count as a tie: queued
MISS_COLUMNS = ("id", "cause", "drop_reason", "late_ms", "wait_ms", "service_ms", "deployment", "stage")


def _hop_count(frame: pd.DataFrame) -> int:
    k = 0
    while f"hop{k}_deployment" in frame:
        k += 1
    return k


def _hop_matrix(frame: pd.DataFrame, suffix: str, hops: int) -> np.ndarray:
    """Column ``hop{k}_{suffix}`` for k < hops, side by side, as floats (NaN where not reached)."""
    if hops == 0:
        return np.empty((len(frame), 0))
    return np.column_stack([pd.to_numeric(frame[f"hop{k}_{suffix}"], errors="coerce").to_numpy(np.float64)
                            for k in range(hops)])


def _pick(frame: pd.DataFrame, prefix: str, suffix: str, index: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row, the value of column ``{prefix}{index}{suffix}`` ('' where not ``valid``)."""
    out = np.full(len(frame), "", dtype=object)
    for k in np.unique(index[valid]):
        rows = valid & (index == k)
        out[rows] = frame[f"{prefix}{k}{suffix}"].to_numpy(dtype=object)[rows]
    return np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in out], dtype=object)


def _argmax(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column of the largest finite value, and whether the row has one."""
    if values.shape[1] == 0:
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    finite = np.isfinite(values)
    return np.where(finite, values, -np.inf).argmax(axis=1), finite.any(axis=1)


def classify(requests: pd.DataFrame, stage_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per measured miss of ``requests`` (columns ``MISS_COLUMNS``), in the order of the table.

    ``late_ms`` (latency - deadline), ``wait_ms`` (latency - service) and ``service_ms`` are NaN
    for dropped requests; ``deployment`` is where a dropped request was dropped (its last hop; ''
    for one the policy refused before any hop) or where a late one spent most of its time;
    ``stage`` (pipelines) the stage of that hop, or for a late request the stage with the largest
    ``stage{s}_latency_ms`` (named by ``stage_names``, else ``stage{s}``)."""
    missing = [c for c in REQUIRED if c not in requests]
    if missing:
        raise InputError("requests table", f"has no column {', '.join(missing)}; expected a `simulate run` "
                         "request table (README \"Run output\")")
    measured = requests["measured"].to_numpy(dtype=bool)
    frame = requests[measured & ~requests["hit"].to_numpy(dtype=bool)]
    n = len(frame)
    dropped = frame["dropped"].to_numpy(dtype=bool)
    reason = frame["drop_reason"].fillna("").astype(str).to_numpy(dtype=object)
    retried = frame["retries"].to_numpy(dtype=np.int64) > 0
    latency = frame["latency_ms"].to_numpy(dtype=np.float64)

    hops_max = _hop_count(frame)
    reached = np.clip(frame["hops"].to_numpy(dtype=np.int64), 0, hops_max)
    service_s = np.nansum(_hop_matrix(frame, "finish_s", hops_max) - _hop_matrix(frame, "start_s", hops_max), axis=1)
    service = np.where(dropped, np.nan, service_s * 1000.0)
    wait = latency - service

    conditions = [(reason == "replica_failed") | retried,
                  dropped & (reason == "unfinished"),
                  dropped & (reason != "expired"),
                  dropped & (reason == "expired"),
                  ~dropped & (wait >= service - TIE_MS),
                  ~dropped]
    cause = np.select(conditions, CAUSE_NAMES, default="")

    # where: the last hop reached for a drop, the hop with the longest stay for a late completion
    spans = _hop_matrix(frame, "finish_s", hops_max) - _hop_matrix(frame, "enqueue_s", hops_max)
    longest, has_span = _argmax(spans)
    hop = np.where(dropped, reached - 1, longest)
    valid = np.where(dropped, reached > 0, has_span)
    deployment = _pick(frame, "hop", "_deployment", hop, valid)
    stage = np.full(n, "", dtype=object)
    if "hop0_stage" in frame:
        stage = _pick(frame, "hop", "_stage", hop, valid)
        stage_columns = sorted((int(m[1]), c) for c in frame.columns if (m := _STAGE_TIME.match(c)))
        if stage_columns:
            times = frame[[c for _, c in stage_columns]].to_numpy(dtype=np.float64)
            top, has_time = _argmax(times)
            names = np.array([stage_names[s] if stage_names and s < len(stage_names) else f"stage{s}"
                              for s, _ in stage_columns], dtype=object)
            late = ~dropped & has_time
            stage[late] = names[top[late]]
    return pd.DataFrame({"id": frame["id"].to_numpy(), "cause": cause, "drop_reason": reason,
                         "late_ms": np.where(dropped, np.nan, latency - frame["deadline_ms"].to_numpy(np.float64)),
                         "wait_ms": wait, "service_ms": service, "deployment": deployment, "stage": stage})


@dataclass
class RunMisses:
    """The misses of some seeds of one run, and how many measured arrivals those seeds had."""

    name: str
    misses: pd.DataFrame      # MISS_COLUMNS plus ``seed``
    measured: dict[int, int]  # seed -> measured arrivals
    policies: dict[int, dict]  # seed -> summary.json's ``policy`` object

    @property
    def total(self) -> int:
        return sum(self.measured.values())


def stage_names_of(config: dict) -> list[str] | None:
    stages = config.get("stages")
    if not isinstance(stages, list) or not stages:
        return None
    return [str(s.get("name", f"stage{i}")) if isinstance(s, dict) else f"stage{i}" for i, s in enumerate(stages)]


def run_misses(name: str, runs: list[SeedRun]) -> RunMisses:
    """Classify the misses of every seed of ``runs``."""
    parts, measured, policies = [], {}, {}
    for run in runs:
        columns = [c for c in run.column_names() if c in REQUIRED or _TIMING.match(c)]
        requests = run.read_requests(list(dict.fromkeys([*REQUIRED, *columns])))
        found = classify(requests, stage_names_of(run.config))
        parts.append(found.assign(seed=run.seed))
        measured[run.seed] = int(requests["measured"].to_numpy(dtype=bool).sum())
        policies[run.seed] = run.summary.get("policy") if isinstance(run.summary.get("policy"), dict) else {}
    misses = pd.concat(parts, ignore_index=True)[["seed", *MISS_COLUMNS]]
    return RunMisses(name, misses, measured, policies)


def _ms(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.1f}"


def cause_table(result: RunMisses) -> pd.DataFrame:
    """Per cause (in precedence order): count, share of measured arrivals, lateness of the completed ones."""
    rows = []
    for name in CAUSE_NAMES:
        late = result.misses.loc[result.misses["cause"] == name, "late_ms"]
        count = int((result.misses["cause"] == name).sum())
        done = late.dropna().to_numpy(np.float64)
        quantiles = np.percentile(done, [50, 95]) if done.size else [np.nan, np.nan]
        rows.append({"cause": name, "count": count, "share": count / result.total if result.total else np.nan,
                     "late_p50_ms": quantiles[0], "late_p95_ms": quantiles[1],
                     "late_max_ms": done.max() if done.size else np.nan})
    return pd.DataFrame(rows).set_index("cause")


def _cause_markdown(result: RunMisses) -> str:
    table = cause_table(result)
    labels = {name: label for name, label, _ in CAUSES}
    rows = [[labels[c], int(r["count"]), f"{r['share']:.4f}", _ms(r["late_p50_ms"]), _ms(r["late_p95_ms"]),
             _ms(r["late_max_ms"])] for c, r in table.iterrows()]
    total = int(table["count"].sum())
    rows.append(["all misses", total, f"{total / result.total:.4f}" if result.total else "-", "", "", ""])
    return markdown_table(["cause", "misses", "share of arrivals", "late p50 ms", "late p95 ms", "late max ms"], rows)


def _stage_markdown(result: RunMisses) -> str:
    late = result.misses[result.misses["late_ms"].notna() & (result.misses["stage"] != "")]
    if late.empty:
        return ""
    counts = pd.crosstab(late["stage"], late["cause"]).reindex(columns=["queued", "served", "fault"], fill_value=0)
    totals = counts.sum(axis=1).sort_values(ascending=False)
    rows = [[stage, int(total), f"{total / len(late):.3f}", *map(int, counts.loc[stage])]
            for stage, total in totals.items()]
    return markdown_table(["stage that took most of the time", "late requests", "share of late", "queued too long",
                           "served too slowly", "lost to a fault"], rows)


def _policy_markdown(result: RunMisses) -> str:
    from traces.summary import flatten

    names = sorted({str(p.get("name", "?")) for p in result.policies.values()})
    flat = {seed: {k: v for k, v in flatten(p).items() if k != "name"} for seed, p in result.policies.items()}
    keys = sorted({k for values in flat.values() for k in values})
    head = f"Policy: {', '.join(names) or 'not recorded'}"
    if not keys:
        return head + " (its summary reports nothing else)."
    seeds = sorted(flat)
    rows = []
    for key in keys:
        values = [flat[s].get(key, 0) for s in seeds]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        rows.append([key, *values, sum(values) if numeric else ""])
    header = ["policy report", *(f"seed {s}" for s in seeds), "total"]
    return head + ", what it reports:\n\n" + markdown_table(header, rows)


def run_report(result: RunMisses) -> str:
    """The Markdown report of one run: causes, stages (pipelines), the policy's report."""
    seeds = sorted(result.measured)
    parts = [f"## Misses of {result.name}\n",
             f"Seeds {seeds}: {result.total} measured arrivals, {len(result.misses)} missed their deadline.\n",
             _cause_markdown(result) + "\n"]
    stages = _stage_markdown(result)
    if stages:
        parts.append("Late requests by the stage that took most of their time:\n\n" + stages + "\n")
    parts.append(_policy_markdown(result) + "\n")
    return "\n".join(parts)


def versus_report(a: RunMisses, b: RunMisses, note: str = "") -> str:
    """Both runs' misses per cause, side by side over their common seeds, and the paired difference."""
    from .stats import paired_difference

    seeds = sorted(set(a.measured) & set(b.measured))
    per_seed = [r.misses.groupby(["cause", "seed"]).size() for r in (a, b)]
    rows = []
    for name, label, _ in CAUSES:
        counts = [[int(table.get((name, s), 0)) for s in seeds] for table in per_seed]
        diff = paired_difference(counts[1], counts[0])
        shares = [sum(c) / sum(r.measured[s] for s in seeds) if r.total else np.nan for c, r in zip(counts, (a, b))]
        rows.append([label, sum(counts[0]), f"{shares[0]:.4f}", sum(counts[1]), f"{shares[1]:.4f}",
                     diff.difference.format(1), f"{diff.wins}/{diff.losses}"])
    header = ["cause", "A misses", "A share", "B misses", "B share", "B − A per seed (95%)", "seeds B more/fewer"]
    text = (f"## {b.name} (B) against {a.name} (A), paired by seed\n\nSeeds {seeds}. {note}\n\n"
            + markdown_table(header, rows) + "\n")
    return text


def add_arguments(parser) -> None:
    parser.add_argument("run", metavar="RUN_DIR",
                        help="a run output directory (with seed-<n>/ inside) or one seed-<n>/ directory")
    parser.add_argument("--versus", metavar="OTHER_RUN_DIR",
                        help="a second run to put beside the first, paired by seed")
    add_out_arguments(parser, "misses.md and misses.csv")


def run(args) -> int:
    from traces.outputs import atomic_output

    check_out(args)
    first = read_run(args.run)
    result = run_misses(args.run, first)
    text = run_report(result)
    tables = [result.misses.assign(run=args.run)]
    if args.versus:
        other = read_run(args.versus)
        pairs = pair_by_seed(first, other, f"--versus {args.versus}")
        note = unpaired_note([r.seed for r in first], [r.seed for r in other], (args.run, args.versus))
        b = run_misses(args.versus, [pb for _, pb in pairs])
        a = result if len(pairs) == len(first) else run_misses(args.run, [pa for pa, _ in pairs])
        text += "\n" + versus_report(a, b, note) + "\n" + run_report(b)
        tables.append(b.misses.assign(run=args.versus))
    if args.out:  # written before anything is printed
        table = pd.concat(tables, ignore_index=True)[["run", "seed", *MISS_COLUMNS]]
        with atomic_output(args.out, force=args.force, kind="report") as staging:
            (staging / "misses.md").write_text(text)
            table.to_csv(staging / "misses.csv", index=False)
    print(text, end="")
    if args.out:
        print(f"wrote {args.out}/ (misses.md, misses.csv)")
    return 0
