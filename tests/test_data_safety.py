"""Nothing a user owns is ever lost, and a killed run leaves no visible output.

Every command that writes checks its ``--out`` before any work (a file, the current directory or
a parent of it, a directory of the user's, a file-typed or unwritable parent: one line, exit
status 2, nothing created), builds its output in a hidden staging directory and swaps it in whole
(``traces.outputs``). The kill tests run ``simulate run`` in a subprocess and send SIGTERM or
SIGKILL while it is mid-run: SIGTERM leaves nothing, SIGKILL leaves a hidden staging directory
that the next run into the same place removes (and says so); an earlier output of ours stays
byte-identical either way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.study import REPORT_MARKER
from analysis.study import main as study_main
from conftest import QUICK_LATENCY, load_bench, write_profile
from measure.cli import main as measure_main
from sim.cli import main as simulate_main
from traces import outputs
from traces.bundle import TraceBundle
from traces.errors import InputError

from test_harness import _profile

REPO = Path(__file__).resolve().parents[1]


def scenario(path: Path, bundle: Path, *, duration_s: float = 2.0, rate_rps: float = 50.0) -> Path:
    path.write_text(f"""seed = 1
duration_s = {duration_s}
warmup_s = 0.5
bundle = '{bundle.as_posix()}'

[arrivals]
kind = "poisson"
rate_rps = {rate_rps}

[requests]
deadline_ms = 50.0

[[deployments]]
name = "fast"
variant = "fast/int8/cpu"
replicas = 1
max_batch_size = 4
batch_wait_timeout_ms = 1.0

[policy]
name = "static"
deployment = "fast"
""")
    return path


def long_scenario(tmp_path: Path, bundle: Path) -> Path:
    """About 70,000 requests a seed (run with ``LONG``: many seeds, many seconds of wall time)."""
    return scenario(tmp_path / "long.toml", bundle, duration_s=120.0, rate_rps=600.0)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (empty for a missing path)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[Path]:
    """The hidden staging, old or parts entries beside ``out``."""
    return sorted(out.parent.glob(f".{out.name}.*")) if out.parent.is_dir() else []


def one_error_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def dead_pid() -> int:
    """The process id of a process that has exited (for leftovers of a "killed" run)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- killing `simulate run`


LONG = ("--seeds", "1-200")  # ~0.35 s of wall time a seed today: always killed long before its end


def start_run(scn: Path, out: Path, *extra: str) -> subprocess.Popen:
    """The run in a subprocess whose temporary files (the request spool) go to ``out``'s
    grandparent's ``tmp/``, where the tests can see them."""
    temp = out.parent.parent / "tmp"
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "CI": "1", "TMPDIR": str(temp)}
    return subprocess.Popen([sys.executable, "-m", "sim", "run", str(scn), "--out", str(out), *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_mid_run(proc: subprocess.Popen, out: Path, sig: signal.Signals) -> tuple[int, list[Path]]:
    """Wait for the run's staging directory, send ``sig`` while the run is still going; returns
    the exit status and the hidden entries beside ``out`` right after it died."""
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(f".{out.name}.staging-{proc.pid}-") for p in leftovers(out)):
        assert proc.poll() is None, f"the run ended before it started writing: {proc.communicate()}"
        assert time.monotonic() < deadline, "no staging directory appeared"
        time.sleep(0.02)
    def spooling() -> bool:  # into the simulation proper: its first requests are in the spool
        return any(part.name.startswith("servesim-requests-") for p in leftovers(out)
                   if p.name.startswith(f".{out.name}.spool-{proc.pid}-") and p.is_dir() for part in p.iterdir())

    while not spooling():  # a busy machine may take longer than any fixed sleep to get there
        assert proc.poll() is None, "the run finished before it could be killed; lengthen the scenario"
        assert time.monotonic() < deadline, "no requests reached the spool"
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; lengthen the scenario"
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    return proc.returncode, leftovers(out)


def test_sigterm_leaves_nothing(tmp_path, tiny_bundle):
    out = tmp_path / "runs" / "out"
    code, left = kill_mid_run(start_run(long_scenario(tmp_path, tiny_bundle), out, *LONG), out, signal.SIGTERM)
    assert code == -signal.SIGTERM
    assert left == [] and not out.exists()
    assert list((tmp_path / "tmp").iterdir()) == []  # the request spool went with it


def test_sigkill_leftover_is_swept_by_the_next_run(tmp_path, tiny_bundle):
    out = tmp_path / "runs" / "out"
    proc = start_run(long_scenario(tmp_path, tiny_bundle), out, *LONG)
    code, left = kill_mid_run(proc, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not out.exists(), "a killed run must leave no visible output"
    # the staging directory and the request spool beside it, both hidden and named by the pid
    assert sorted(p.name.split("-")[0] for p in left) == [".out.spool", ".out.staging"]
    assert all(p.name.startswith((f".out.spool-{proc.pid}-", f".out.staging-{proc.pid}-")) for p in left)
    assert any(p.name.startswith("servesim-requests-") for d in left for p in d.iterdir())
    short = scenario(tmp_path / "short.toml", tiny_bundle)
    done = start_run(short, out)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    for leftover in left:
        assert f"note: removed {leftover}" in err, err
    assert leftovers(out) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # nothing went through the temporary directory
    assert (out / "seed-1" / "summary.json").is_file() and (out / outputs.MARKER).is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_force_run_keeps_the_previous_output_byte_identical(tmp_path, tiny_bundle, sig, capsys):
    out = tmp_path / "runs" / "out"
    assert simulate_main(["run", str(scenario(tmp_path / "short.toml", tiny_bundle)), "--out", str(out)]) == 0
    before = tree(out)
    assert "seed-1/summary.json" in before
    code, left = kill_mid_run(start_run(long_scenario(tmp_path, tiny_bundle), out, *LONG, "--force"), out, sig)
    assert code == -sig
    assert tree(out) == before
    assert len(left) == (2 if sig == signal.SIGKILL else 0), left  # SIGKILL: staging and spool


# ---------------------------------------------------------------- where `simulate run --out` may not go


@pytest.fixture
def short(tmp_path, tiny_bundle) -> Path:
    return scenario(tmp_path / "short.toml", tiny_bundle)


def refused(capsys, scn: Path, out: str, *needles: str, force: bool = False) -> str:
    code = simulate_main(["run", str(scn), "--out", out, *(["--force"] if force else [])])
    return one_error_line(capsys, code, *needles)


def test_out_is_a_file(capsys, tmp_path, short):
    user = tmp_path / "notes.txt"
    user.write_text("mine")
    for force in (False, True):
        refused(capsys, short, str(user), "existing file", force=force)
    assert user.read_text() == "mine" and leftovers(user) == []


def test_out_is_the_current_directory_or_a_parent(capsys, tmp_path, short, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    for out in (".", "..", str(tmp_path / "a"), str(tmp_path)):
        refused(capsys, short, out, "current directory", force=True)
    assert list(work.iterdir()) == [] and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b"]


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_out_is_a_directory_of_the_users(capsys, tmp_path, short, force):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    refused(capsys, short, str(user), "not an output of ours", force=force)
    assert tree(user) == {"thesis.tex": b"years of work"} and leftovers(user) == []


def test_out_under_a_file(capsys, tmp_path, short):
    user = tmp_path / "notes.txt"
    user.write_text("mine")
    refused(capsys, short, str(user / "sub"), "is a file, not a directory")
    assert user.read_text() == "mine"


def test_out_under_an_unwritable_directory(capsys, tmp_path, short, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    refused(capsys, short, str(locked / "out"), "not writable")
    assert list(locked.iterdir()) == []


def test_out_where_nothing_can_be_created(capsys, short):
    """os.access says /proc is writable to root; creating a directory there still fails: one line."""
    refused(capsys, short, "/proc/servesim-no-such/out", "cannot create it")
    assert not Path("/proc/servesim-no-such").exists()


def never(*args, **kwargs):
    raise AssertionError("long work started before --out was checked")


def test_a_bad_out_fails_before_the_simulation(capsys, tmp_path, short, monkeypatch):
    import sim.runner

    monkeypatch.setattr(sim.runner, "run_once", never)
    user = tmp_path / "notes.txt"
    user.write_text("mine")
    refused(capsys, short, str(user), "existing file")


# ---------------------------------------------------------------- traces.outputs itself


def test_resume_accepts_only_an_output_of_the_same_kind(tmp_path, tiny_bundle):
    assert outputs.output_kind(tiny_bundle) == "bundle"
    assert outputs.check_target(tiny_bundle, force=False, resume="bundle") == tiny_bundle
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"requests": 10, "hit_rate": 1.0}')
    assert outputs.output_kind(run) == "run"
    for force in (False, True):  # a bundle never replaces a run output, nor a run a bundle
        with pytest.raises(InputError, match="a run output of ours, which a bundle output never replaces"):
            outputs.check_target(run, force=force, resume="bundle")
        with pytest.raises(InputError, match="a bundle output of ours, which a run output never replaces"):
            outputs.check_target(tiny_bundle, force=force, kind="run")


def test_a_summary_json_of_the_users_own_is_not_ours(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("{}")
    (mine / "data.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an output of ours"):
        outputs.check_target(mine, force=True, kind="run")


def test_force_refuses_an_output_holding_a_file_we_did_not_write(capsys, tmp_path, tiny_bundle):
    """The marker lists every file of the output: a user's file inside it stops a --force."""
    out = tmp_path / "runs" / "out"
    short = scenario(tmp_path / "short.toml", tiny_bundle)
    assert simulate_main(["run", str(short), "--out", str(out)]) == 0
    listed = json.loads((out / outputs.MARKER).read_text())["entries"]
    assert "seed-1/summary.json" in listed and "runs.csv" in listed
    (out / "seed-1" / "my-notes.txt").write_text("keep me")
    capsys.readouterr()
    code = simulate_main(["run", str(short), "--out", str(out), "--force"])
    one_error_line(capsys, code, "seed-1/my-notes.txt", "no command of ours wrote")
    assert (out / "seed-1" / "my-notes.txt").read_text() == "keep me"
    (out / "seed-1" / "my-notes.txt").unlink()
    assert simulate_main(["run", str(short), "--out", str(out), "--force"]) == 0


def test_bundles_are_marked_as_bundles(tiny_bundle):
    """``TraceBundle.save`` marks its output as a bundle, which ``measure`` then resumes."""
    assert json.loads((tiny_bundle / outputs.MARKER).read_text())["kind"] == "bundle"
    assert TraceBundle.load(tiny_bundle).variants


def test_an_old_output_caught_between_the_renames_is_put_back(tmp_path, capsys):
    out = tmp_path / "out"
    aside = tmp_path / f".out.old-{dead_pid()}-x1"
    aside.mkdir()
    (aside / "summary.json").write_text('{"kept": true}')
    notes = outputs.sweep_leftovers(out)
    assert len(notes) == 1 and "put back" in notes[0]
    assert json.loads((out / "summary.json").read_text()) == {"kept": True} and leftovers(out) == []
    assert "note: put back" in capsys.readouterr().err


def test_leftovers_of_live_processes_and_other_targets_are_kept(tmp_path):
    mine = tmp_path / f".out.staging-{os.getpid()}-a"
    other = tmp_path / f".other.staging-{dead_pid()}-b"
    user = tmp_path / ".out.parts"  # the resumable pieces of `measure`, not a leftover
    for path in (mine, other, user):
        path.mkdir()
    assert outputs.sweep_leftovers(tmp_path / "out") == []
    assert mine.is_dir() and other.is_dir() and user.is_dir()


SIGTERM_MID_SWAP = """
import os, signal, sys
from pathlib import Path
from traces import outputs

real_replace = os.replace
def replace(src, dst):  # SIGTERM right after the old output was moved aside
    real_replace(src, dst)
    if ".old-" in str(dst):
        os.kill(os.getpid(), signal.SIGTERM)
outputs.os.replace = replace
with outputs.atomic_output(Path(sys.argv[1]), force=True) as staging:
    (staging / "summary.json").write_text("new")
print("survived SIGTERM")
"""


def test_sigterm_during_the_swap_waits_for_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"requests": 0, "hit_rate": 0, "old": true}')
    proc = subprocess.run([sys.executable, "-c", SIGTERM_MID_SWAP, str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "survived" not in proc.stdout
    assert (out / "summary.json").read_text() == "new" and leftovers(out) == []


def test_scratch_directory_is_removed_however_the_block_ends(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.scratch_directory(tmp_path / "out") as scratch:
            (scratch / "piece.json").write_text("{}")
            raise RuntimeError("boom")
    assert leftovers(tmp_path / "out") == [] and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- measure latency|accuracy|all, serve


def bad_zoo_profile(tmp_path: Path) -> Path:
    """A well-formed profile whose zoo holds no models: it fails once measuring starts."""
    return write_profile(tmp_path / "profile.toml", tmp_path / "no-zoo", latency=QUICK_LATENCY)


@pytest.mark.parametrize("profile", ["missing-zoo", "malformed"])
def test_measure_force_with_a_bad_profile_keeps_the_bundle(capsys, tmp_path, tiny_bundle, profile):
    path = bad_zoo_profile(tmp_path)
    if profile == "malformed":
        path.write_text("name = [unclosed\n")
    before = tree(tiny_bundle)
    code = measure_main(["latency", str(path), "--out", str(tiny_bundle), "--force"])
    one_error_line(capsys, code)
    assert tree(tiny_bundle) == before and leftovers(tiny_bundle) == []


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_measure_refuses_a_directory_of_the_users(capsys, tmp_path, force):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "data.csv").write_text("1,2\n")
    code = measure_main(["latency", str(bad_zoo_profile(tmp_path)), "--out", str(user), *(["--force"] * force)])
    one_error_line(capsys, code, "not an output of ours")
    assert tree(user) == {"data.csv": b"1,2\n"} and leftovers(user) == []


def test_measure_resumes_only_a_bundle(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"requests": 3, "hit_rate": 1.0}')
    for force in ([], ["--force"]):
        code = measure_main(["accuracy", str(bad_zoo_profile(tmp_path)), "--out", str(run), *force])
        one_error_line(capsys, code, "a run output of ours, which a bundle output never replaces")
        assert tree(run) == {"summary.json": b'{"requests": 3, "hit_rate": 1.0}'} and leftovers(run) == []


def test_measure_sweeps_the_pieces_of_a_killed_force_run(capsys, tmp_path, tiny_bundle):
    killed = tiny_bundle.parent / f".{tiny_bundle.name}.parts-{dead_pid()}-k1"
    killed.mkdir()
    (killed / "service__x__b1.parquet").write_bytes(b"half")
    code = measure_main(["latency", str(bad_zoo_profile(tmp_path)), "--out", str(tiny_bundle), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and f"note: removed {killed}" in err and "Traceback" not in err, err
    assert leftovers(tiny_bundle) == []


def test_measure_serve_checks_its_out_first(capsys, tmp_path, short, monkeypatch):
    import measure.serve_cli

    monkeypatch.setattr(measure.serve_cli, "runner_factories", never)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("k")
    code = measure_main(["serve", str(short), "--out", str(user), "--force"])
    one_error_line(capsys, code, "not an output of ours")
    assert tree(user) == {"keep.txt": b"k"} and leftovers(user) == []


# ---------------------------------------------------------------- bench/fidelity.py (fast failure paths only)


@pytest.fixture(scope="module")
def fidelity():
    return load_bench("fidelity")


def test_fidelity_refuses_what_is_not_its_own(capsys, tmp_path, fidelity):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "keep.txt").write_text("k")
    one_error_line(capsys, fidelity.main(["--out", str(user), "--force"]), "not an output of ours")
    notes = tmp_path / "notes.txt"
    notes.write_text("n")
    one_error_line(capsys, fidelity.main(["--out", str(notes)]), "existing file")
    earlier = tmp_path / "fid"
    earlier.mkdir()
    outputs.write_marker(earlier, "fidelity")
    (earlier / "fidelity.md").write_text("table")
    one_error_line(capsys, fidelity.main(["--out", str(earlier)]), "--force")
    assert tree(user) == {"keep.txt": b"k"} and notes.read_text() == "n"
    assert (earlier / "fidelity.md").read_text() == "table"
    assert leftovers(user) == leftovers(notes) == leftovers(earlier) == []


def test_fidelity_bad_arguments(capsys, tmp_path, fidelity):
    one_error_line(capsys, fidelity.main(["--out", str(tmp_path / "new"), "--loads", "0.3,high"]), "--loads")
    one_error_line(capsys, fidelity.main(["--out", str(tmp_path / "nothing"), "--table-only"]), "finished bench output")
    one_error_line(capsys, fidelity.main(["--out", str(tmp_path / "new"), "--bundle", str(tmp_path / "none")]),
                   "none")
    assert sorted(tmp_path.iterdir()) == []


def test_fidelity_scenarios_name_their_bundle_relative_to_themselves(fidelity, tmp_path):
    text = fidelity.scenario_toml("bundle", "single", 100.0, 20.0, 5.0, 1)
    assert 'bundle = "bundle"' in text


# ---------------------------------------------------------------- analysis.study --out (a single file)


def results(tmp_path: Path) -> Path:
    import pandas as pd

    path = tmp_path / "results.parquet"
    rows = [{"policy": p, "seed": s, "requests": 100, "hit_rate": 0.9, "accuracy": 0.8, "ontime_accuracy": 0.7,
             "latency_ms.p99": 10.0 + s} for p in ("a", "b") for s in (1, 2)]
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_study_report_is_ours_and_replaced_only_with_force(capsys, tmp_path):
    path, report = results(tmp_path), tmp_path / "study.md"
    assert study_main([str(path), "--out", str(report)]) == 0
    first = report.read_text()
    assert first.splitlines()[0] == REPORT_MARKER and "| a | 2 |" in first
    capsys.readouterr()
    one_error_line(capsys, study_main([str(path), "--out", str(report)]), "--force")
    assert study_main([str(path), "--out", str(report), "--force"]) == 0
    assert report.read_text() == first and leftovers(report) == []


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_study_never_replaces_a_file_of_the_users(capsys, tmp_path, force):
    path, user = results(tmp_path), tmp_path / "notes.md"
    user.write_text("# my notes\n")
    one_error_line(capsys, study_main([str(path), "--out", str(user), *(["--force"] * force)]), "not written by us")
    assert user.read_text() == "# my notes\n" and leftovers(user) == []


def test_study_checks_its_out_before_reading_results(capsys, tmp_path):
    (tmp_path / "dir.md").mkdir()
    one_error_line(capsys, study_main([str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "dir.md")]),
                   "dir.md", "directory")


# ---------------------------------------------------------------- measure --force end to end (torch, tiny zoo)


def test_measure_force_starts_afresh_and_swaps_the_bundle_in_whole(capsys, tmp_path, zoo):
    out = tmp_path / "bundle"
    assert measure_main(["latency", str(_profile(tmp_path, zoo, sizes=(1,), precisions=("fp32",))),
                         "--out", str(out)]) == 0
    stale = tmp_path / ".bundle.parts"  # the pieces of an interrupted plain run
    stale.mkdir()
    (stale / "failed__stale.json").write_text(json.dumps({"variant": "stale", "reason": "old"}))
    assert measure_main(["latency", str(_profile(tmp_path, zoo, sizes=(2,), precisions=("fp32",))),
                         "--out", str(out), "--force"]) == 0
    bundle = TraceBundle.load(out)
    assert sorted(bundle.service["batch_size"].unique()) == [2]  # afresh: the old rows are not merged
    assert bundle.meta["failed"] == [] and len(bundle.meta["commands"]) == 1
    assert json.loads((out / outputs.MARKER).read_text())["kind"] == "bundle"
    assert leftovers(out) == []  # neither the fresh pieces nor the stale ones are left


def test_outputs_nested_in_an_output_keep_their_own_lists(tmp_path, tiny_bundle):
    """A fidelity bench's output holds run outputs, and ``--replay-only`` adds more later: each
    nested output answers for its own files, so only a file nobody wrote is foreign."""
    short = scenario(tmp_path / "short.toml", tiny_bundle)
    out = tmp_path / "fid"
    with outputs.atomic_output(out, kind="fidelity") as staging:
        (staging / "fidelity.md").write_text("table\n")
        assert simulate_main(["run", str(short), "--out", str(staging / "a-sim")]) == 0
    assert json.loads((out / outputs.MARKER).read_text())["entries"] == ["fidelity.md"]
    assert simulate_main(["run", str(short), "--out", str(out / "b-sim")]) == 0  # added afterwards
    assert outputs.foreign_entry(out) is None
    (out / "b-sim" / "seed-1" / "mine.txt").write_text("keep me")
    assert outputs.foreign_entry(out) == "b-sim/seed-1/mine.txt"
    with pytest.raises(InputError, match="b-sim/seed-1/mine.txt"):
        outputs.check_target(out, force=True, kind="fidelity")
