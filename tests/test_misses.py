"""`analyse misses`: every measured miss gets exactly one cause, by the documented precedence.

The request tables are written by hand, with each request's waits and service times chosen so its
cause and lateness are known; one end-to-end test classifies a short real `simulate run`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.cli import main as analyse
from analysis.misses import CAUSE_NAMES, RunMisses, cause_table, classify

REPO = Path(__file__).resolve().parents[1]


def request(id_: int, *, hops: list[tuple[str, float, float]] | None = None, deadline_ms: float = 50.0,
            measured: bool = True, dropped_reason: str = "", retries: int = 0, arrival_s: float = 10.0,
            stages: list[str] | None = None) -> dict:
    """One row of a request table. ``hops``: (deployment, wait ms, service ms) per hop, in order; a
    dropped request's last hop has NaN service (never served). Timestamps follow from the hops."""
    hops = hops or []
    row = {"id": id_, "arrival_s": arrival_s, "deadline_ms": deadline_ms, "hops": len(hops), "retries": retries,
           "measured": measured, "dropped": bool(dropped_reason), "drop_reason": dropped_reason}
    t = arrival_s
    for k, (deployment, wait_ms, service_ms) in enumerate(hops):
        row[f"hop{k}_deployment"] = deployment
        row[f"hop{k}_enqueue_s"] = t
        if stages:
            row[f"hop{k}_stage"] = stages[k]
        if np.isnan(service_ms):
            row[f"hop{k}_start_s"] = row[f"hop{k}_finish_s"] = np.nan
            continue
        row[f"hop{k}_start_s"] = t + wait_ms / 1000
        t = row[f"hop{k}_finish_s"] = t + (wait_ms + service_ms) / 1000
    latency_ms = np.nan if dropped_reason else (t - arrival_s) * 1000
    row.update(finish_s=np.nan if dropped_reason else t, latency_ms=latency_ms,
               hit=not dropped_reason and latency_ms <= deadline_ms)
    return row


def table(rows: list[dict], hops: int = 2) -> pd.DataFrame:
    """The rows as a request table with every hop column (null where a request never got there)."""
    columns = [f"hop{k}_{c}" for k in range(hops) for c in ("deployment", "enqueue_s", "start_s", "finish_s")]
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame:
            frame[column] = np.nan
    return frame


NAN = float("nan")
# id -> (row, the cause it must get, late ms, wait ms, deployment); cause None: not a miss
CASES = {
    0: (request(0, hops=[("small", 1, 2)]), None, None, None, None),                      # a hit
    1: (request(1, hops=[("small", NAN, NAN)], measured=False, dropped_reason="queue_full"), None, None, None, None),
    2: (request(2, hops=[("small", 0, NAN)], dropped_reason="queue_full"), "rejected", NAN, NAN, "small"),
    3: (request(3, dropped_reason="shed"), "rejected", NAN, NAN, ""),                    # refused before any hop
    4: (request(4, hops=[("small", 1, 2), ("large", 0, NAN)], dropped_reason="expired"), "expired", NAN, NAN, "large"),
    5: (request(5, hops=[("large", 0, NAN)], dropped_reason="replica_failed", retries=1), "fault", NAN, NAN, "large"),
    6: (request(6, hops=[("large", 30, 25)], retries=1), "fault", 5.0, 30.0, "large"),   # retried, then late
    7: (request(7, hops=[("large", 0, NAN)], dropped_reason="expired", retries=2), "fault", NAN, NAN, "large"),
    8: (request(8, hops=[("large", 30, 25)]), "queued", 5.0, 30.0, "large"),
    9: (request(9, hops=[("large", 10, 45)]), "served", 5.0, 10.0, "large"),
    10: (request(10, hops=[("large", 30, 30)]), "queued", 10.0, 30.0, "large"),          # a tie counts as queued
    11: (request(11, hops=[("small", 1, 2), ("large", 40, 15)]), "queued", 8.0, 41.0, "large"),
    12: (request(12, hops=[("small", 50, 2), ("large", 1, 20)]), "queued", 23.0, 51.0, "small"),
    13: (request(13, hops=[("large", 10, 45)], measured=False), None, None, None, None),  # late in the warm-up
    14: (request(14, hops=[("small", 1, 2), ("large", 2, 60)], deadline_ms=40), "served", 25.0, 3.0, "large"),
}


def test_each_miss_gets_its_known_cause_lateness_and_place():
    misses = classify(table([row for row, *_ in CASES.values()])).set_index("id")
    expected = {i: case for i, case in CASES.items() if case[1] is not None}
    assert sorted(misses.index) == sorted(expected)
    for i, (row, cause, late_ms, wait_ms, deployment) in expected.items():
        got = misses.loc[i]
        assert got["cause"] == cause, i
        assert got["deployment"] == deployment, i
        assert got["late_ms"] == pytest.approx(late_ms, nan_ok=True, abs=1e-6), i
        assert got["wait_ms"] == pytest.approx(wait_ms, nan_ok=True, abs=1e-6), i
        if not row["dropped"]:
            assert got["late_ms"] == pytest.approx(row["latency_ms"] - row["deadline_ms"])
            assert got["wait_ms"] + got["service_ms"] == pytest.approx(row["latency_ms"])


def test_counts_sum_to_the_measured_misses_and_follow_the_precedence():
    frame = table([row for row, *_ in CASES.values()])
    misses = classify(frame)
    measured_misses = int((frame["measured"] & ~frame["hit"]).sum())
    assert len(misses) == measured_misses and set(misses["cause"]) <= set(CAUSE_NAMES)
    # precedence: a retried request is a fault whatever came after; a drop is never "late"
    retried = misses["id"].isin(frame.loc[frame["retries"] > 0, "id"])
    assert (misses.loc[retried, "cause"] == "fault").all()
    dropped = misses["id"].isin(frame.loc[frame["dropped"], "id"])
    assert not misses.loc[dropped, "cause"].isin(["queued", "served"]).any()
    # a drop reason the engine does not know (a policy's own) is a rejection
    odd = table([request(1, dropped_reason="over_budget")])
    assert list(classify(odd)["cause"]) == ["rejected"]


def test_a_pipeline_late_request_names_the_stage_that_took_longest():
    stages = ["read", "judge"]
    rows = [request(1, hops=[("d-small", 1, 2), ("j-large", 5, 60)], stages=stages),     # judge took the time
            request(2, hops=[("d-small", 40, 10), ("j-large", 1, 5)], stages=stages),    # read took the time
            request(3, hops=[("d-small", 1, 2), ("j-large", 0, NAN)], stages=stages, dropped_reason="expired")]
    frame = table(rows)
    for row in frame.index:  # stage times: the first from the arrival, each to the end of its hop
        frame.loc[row, "stage0_latency_ms"] = (frame.loc[row, "hop0_finish_s"] - frame.loc[row, "arrival_s"]) * 1000
        frame.loc[row, "stage1_latency_ms"] = (frame.loc[row, "hop1_finish_s"] - frame.loc[row, "hop0_finish_s"]) * 1000
    misses = classify(frame, stages).set_index("id")
    assert misses.loc[1, "stage"] == "judge" and misses.loc[2, "stage"] == "read"
    assert misses.loc[3, "stage"] == "judge"          # dropped: the stage of the hop it was dropped at
    assert classify(frame).set_index("id").loc[1, "stage"] == "stage1"   # no names: stage{s}


def test_cause_table_counts_shares_and_lateness():
    rng = np.random.default_rng(3)
    late = rng.exponential(20.0, 200)
    rows = [request(i, hops=[("m", 26 + x / 2, 25 + x / 2)]) for i, x in enumerate(late)]  # queued, late 1 + x
    rows += [request(1000 + i, hops=[("m", 0, NAN)], dropped_reason="queue_full") for i in range(7)]
    rows += [request(2000 + i, hops=[("m", 1, 2)]) for i in range(93)]                                   # hits
    frame = table(rows, hops=1)
    misses = classify(frame)
    result = RunMisses("run", misses.assign(seed=1), {1: len(frame)}, {1: {}})
    got = cause_table(result)
    late_ms = 1.0 + late
    assert got.loc["queued", "count"] == 200 and got.loc["rejected", "count"] == 7
    assert got.loc["queued", "share"] == pytest.approx(200 / 300)
    assert got.loc["queued", "late_p50_ms"] == pytest.approx(np.median(late_ms))
    assert got.loc["queued", "late_p95_ms"] == pytest.approx(stats.scoreatpercentile(late_ms, 95))
    assert got.loc["queued", "late_max_ms"] == pytest.approx(late_ms.max())
    assert np.isnan(got.loc["rejected", "late_p50_ms"]) and got["count"].sum() == len(misses)


def write_seed(directory: Path, seed: int, requests: pd.DataFrame, summary: dict, config: dict | None = None) -> Path:
    """A seed directory of a run output, written by hand."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config or {"seed": seed}))
    requests.to_parquet(directory / "requests.parquet", index=False)
    (directory / "summary.json").write_text(json.dumps({"seed": seed, **summary}))
    return directory


def _run(tmp_path: Path, name: str, seeds: dict[int, list[dict]], policy: dict) -> Path:
    for seed, rows in seeds.items():
        write_seed(tmp_path / name / f"seed-{seed}", seed, table(rows, hops=1),
                   {"requests": sum(r["measured"] for r in rows), "policy": policy})
    return tmp_path / name


def test_cli_versus_pairs_by_seed_and_writes_the_report(tmp_path, capsys):
    queued = lambda i: request(i, hops=[("m", 40, 20)])         # noqa: E731 - late by 10 ms, mostly waiting
    rejected = lambda i: request(i, hops=[("m", 0, NAN)], dropped_reason="queue_full")  # noqa: E731
    hit = lambda i: request(i, hops=[("m", 1, 2)])              # noqa: E731
    a = _run(tmp_path, "a", {1: [queued(0), hit(1)], 2: [queued(0), queued(1), rejected(2), hit(3)]},
             {"name": "degrade", "overrides": {"step_down": 3, "shed": 1}})
    b = _run(tmp_path, "b", {2: [queued(0), hit(1), hit(2), hit(3)], 3: [rejected(0)]}, {"name": "planner"})
    out = tmp_path / "report"
    assert analyse(["misses", str(a), "--versus", str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| overrides.step_down | 3 | 3 | 6 |" in text and "only in " in text
    # seed 2 alone is paired: queued 2 -> 1 (B - A = -1), rejected 1 -> 0
    assert "| queued too long | 2 | 0.5000 | 1 | 0.2500 | -1.0 | 0/1 |" in text
    assert "| rejected | 1 | 0.2500 | 0 | 0.0000 | -1.0 | 0/1 |" in text
    rows = pd.read_csv(out / "misses.csv")
    assert len(rows) == 4 + 1            # A's four misses (both seeds), B's one of seed 2
    assert set(rows.loc[rows["run"] == str(b), "seed"]) == {2}
    assert (out / "misses.md").read_text() == text.rsplit("wrote ", 1)[0]
    assert analyse(["misses", str(a), "--out", str(out)]) == 2          # ours, but no --force
    assert analyse(["misses", str(a), "--out", str(out), "--force"]) == 0
    assert len(pd.read_csv(out / "misses.csv")) == 4


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    seed = write_seed(tmp_path / "run" / "seed-1", 1, table([request(0)], hops=1), {"requests": 1})
    (seed / "requests.parquet").unlink()
    for argv, words in ((["misses", str(tmp_path / "none")], "not found"),
                        (["misses", str(tmp_path / "empty")], "no seed-<n>/"),
                        (["misses", str(tmp_path / "run")], "missing requests.parquet")):
        capsys.readouterr()
        assert analyse(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    good = _run(tmp_path, "good", {1: [request(0, hops=[("m", 40, 20)])]}, {"name": "static"})
    assert analyse(["misses", str(good), "--out", str(foreign)]) == 2
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


SCENARIO = """
seed = 1
duration_s = 6.0
warmup_s = 1.0
bundle = "{bundle}"

[arrivals]
kind = "poisson"
rate_rps = 400.0

[requests]
deadline_ms = 30.0

[[deployments]]
name = "small"
variant = "cnn-small-kd/int8/cpu"
max_batch_size = 8
batch_wait_timeout_ms = 1.0

[[deployments]]
name = "large"
variant = "resnet18/fp32/cpu"
replicas = 1
max_batch_size = 4
batch_wait_timeout_ms = 2.0
max_queue_size = 6
drop_expired = true

[policy]
name = "static"
cascade = ["small", "large"]
threshold = 0.95

[[faults]]
deployment = "large"
mttf_s = 0.5
mttr_s = 0.2
on_failure = "retry"
"""


def test_end_to_end_on_a_real_run_counts_match_the_summary(tmp_path, capsys):
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.format(bundle=REPO / "traces" / "data" / "digits-cpu"))
    out = tmp_path / "run"
    simulate = Path(sys.executable).parent / "simulate"
    done = subprocess.run([str(simulate), "run", str(scenario), "--seeds", "1-2", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert analyse(["misses", str(out), "--out", str(tmp_path / "report")]) == 0
    rows = pd.read_csv(tmp_path / "report" / "misses.csv", keep_default_na=False)
    for seed in (1, 2):
        summary = json.loads((out / f"seed-{seed}" / "summary.json").read_text())
        mine = rows[rows["seed"] == seed]
        assert len(mine) == round((1 - summary["hit_rate"]) * summary["requests"])
        dropped = mine[mine["drop_reason"] != ""]
        assert len(dropped) == summary["dropped"]
        assert mine["cause"].isin(["rejected", "expired", "queued", "served", "fault"]).all()
    assert {"rejected", "expired", "fault"} <= set(rows["cause"])   # the scenario makes each of them happen


def test_a_request_left_unfinished_at_the_end_is_not_a_rejection():
    """An outage strands requests in a queue; the run ends with them unfinished (``drop_reason``
    ``unfinished``): their own cause, after a fault and before a rejection."""
    rows = [request(1, hops=[("large", 0, NAN)], dropped_reason="unfinished"),             # stranded in a queue
            request(2, hops=[("large", 0, NAN)], dropped_reason="unfinished", retries=1),  # a crash came first
            request(3, hops=[("large", 0, NAN)], dropped_reason="queue_full")]
    misses = classify(table(rows, hops=1)).set_index("id")
    assert misses["cause"].to_dict() == {1: "unfinished", 2: "fault", 3: "rejected"}
    assert misses.loc[1, "deployment"] == "large" and np.isnan(misses.loc[1, "late_ms"])
    assert CAUSE_NAMES.index("fault") < CAUSE_NAMES.index("unfinished") < CAUSE_NAMES.index("rejected")
    result = RunMisses("run", misses.reset_index().assign(seed=1), {1: 3}, {1: {}})
    assert cause_table(result).loc["unfinished", "count"] == 1


def test_out_is_written_before_anything_is_printed(tmp_path, capsys, monkeypatch):
    import traces.outputs
    from traces.errors import InputError

    def refused(*_, **__):
        raise InputError("out", "cannot be written")

    good = _run(tmp_path, "good", {1: [request(0, hops=[("m", 40, 20)])]}, {"name": "static"})
    monkeypatch.setattr(traces.outputs, "atomic_output", refused)
    assert analyse(["misses", str(good), "--out", str(tmp_path / "report")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot be written" in captured.err
