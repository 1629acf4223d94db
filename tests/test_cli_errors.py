"""Bad input to `simulate`: one line on stderr naming the file / key / row, exit status 2, no traceback.

Every case calls ``sim.cli.main`` in-process. For ``run`` it also checks that no output directory
(and no staging directory ``.<name>.*.tmp``) was left behind: outputs are written atomically and an
existing one is never silently overwritten.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.cli import main
from conftest import write_scenario

REPO = Path(__file__).resolve().parents[1]

ARRIVALS = 'kind = "poisson"\nrate_rps = 50.0'
REQUESTS = "deadline_ms = 50.0"
DEPLOYMENT = 'name = "fast"\nvariant = "fast/int8/cpu"\nreplicas = 1\nmax_batch_size = 4\nbatch_wait_timeout_ms = 1.0'
POLICY = 'name = "static"\ndeployment = "fast"'


def scenario_text(bundle: Path | None, *, top: str = "duration_s = 2.0\nwarmup_s = 0.5", arrivals: str = ARRIVALS,
                  requests: str = REQUESTS, deployment: str = DEPLOYMENT, policy: str = POLICY) -> str:
    bundle_line = f"bundle = '{bundle.as_posix()}'\n" if bundle is not None else ""
    return (f"seed = 1\n{top}\n{bundle_line}\n[arrivals]\n{arrivals}\n\n[requests]\n{requests}\n\n"
            f"[[deployments]]\n{deployment}\n\n[policy]\n{policy}\n")


def make_scenario(tmp_path: Path, bundle: Path | None, name: str = "scn.toml", **parts: str) -> Path:
    return write_scenario(tmp_path / name, scenario_text(bundle, **parts))


def copy_bundle(tiny_bundle: Path, tmp_path: Path, name: str = "bad_bundle") -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / name))


def edit_csv(path: Path, edit) -> None:
    frame = pd.read_csv(path)
    frame = edit(frame) if edit is not None else frame
    frame.to_csv(path, index=False)


def leftovers(out: Path) -> list[Path]:
    """Staging (``.<name>.*.tmp``) or replaced (``.<name>.old-*``) directories next to ``out``."""
    return sorted(out.parent.glob(f".{out.name}.*")) if out.parent.is_dir() else []


def expect_error(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI, assert the bad-input contract, return the error line."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}, stderr: {err!r}, stdout: {captured.out!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected exactly one stderr line, got {err!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def expect_run_error(capsys, tmp_path: Path, scenario: Path | str, *needles: str, extra: tuple[str, ...] = (),
                     out: Path | None = None) -> str:
    out = out or tmp_path / "runs" / "out"
    line = expect_error(capsys, ["run", str(scenario), "--out", str(out), *extra], *needles)
    assert not out.exists(), f"partial output left at {out}: {list(out.rglob('*'))}"
    assert leftovers(out) == [], leftovers(out)
    return line


@pytest.fixture(params=["run", "validate"])
def check(request, capsys, tmp_path):
    """``check(scenario, *needles, extra=())``: the contract for ``run`` (with ``--out``) or ``validate``."""
    if request.param == "run":
        return lambda scenario, *needles, extra=(): expect_run_error(capsys, tmp_path, scenario, *needles, extra=extra)
    return lambda scenario, *needles, extra=(): expect_error(capsys, ["validate", str(scenario), *extra], *needles)


# ---------------------------------------------------------------- sanity: the base scenario is good


def test_base_scenario_runs(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle)
    out = tmp_path / "runs" / "out"
    assert main(["validate", str(scn)]) == 0
    assert main(["run", str(scn), "--out", str(out)]) == 0
    assert (out / "seed-1" / "summary.json").is_file()
    assert leftovers(out) == []
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- scenario keys and values


def test_unknown_top_level_key(check, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, top="duration_s = 2.0\nwarmup_s = 0.5\ndurration_s = 3.0")
    check(scn, "durration_s", "scn.toml", "unknown key")


def test_unknown_deployment_key(check, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, deployment=DEPLOYMENT + "\nmax_batchsize = 2")
    check(scn, "max_batchsize", "deployments", "scn.toml")


def test_unknown_policy_name(check, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, policy='name = "statik"')
    check(scn, "policy.name", "statik")


def test_unknown_policy_parameter(check, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, policy=POLICY + "\nthreshhold = 0.5")
    check(scn, "policy.threshhold", "static")


def test_negative_arrival_rate(check, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, arrivals='kind = "poisson"\nrate_rps = -10.0')
    check(scn, "arrivals.rate_rps", "scn.toml")


@pytest.mark.parametrize("deadline", ["0", "-5.0", "[50.0, 0.0]"])
def test_non_positive_deadline(check, tmp_path, tiny_bundle, deadline):
    scn = make_scenario(tmp_path, tiny_bundle, requests=f"deadline_ms = {deadline}")
    check(scn, "requests.deadline_ms", "scn.toml")


@pytest.mark.parametrize("warmup", ["2.0", "3.0"])
def test_warmup_not_below_duration(check, tmp_path, tiny_bundle, warmup):
    scn = make_scenario(tmp_path, tiny_bundle, top=f"duration_s = 2.0\nwarmup_s = {warmup}")
    check(scn, "warmup_s", "duration_s", "scn.toml")


def test_deployment_with_variant_and_service(check, tmp_path, tiny_bundle):
    dep = DEPLOYMENT + '\nservice = { kind = "exponential", mean_ms = 2.0 }'
    scn = make_scenario(tmp_path, tiny_bundle, deployment=dep)
    check(scn, "deployments.fast", "variant", "service")


def test_variant_missing_from_bundle(check, tmp_path, tiny_bundle):
    dep = DEPLOYMENT.replace("fast/int8/cpu", "fast/int4/gpu")
    scn = make_scenario(tmp_path, tiny_bundle, deployment=dep)
    check(scn, "deployments.fast.variant", "fast/int4/gpu")


def test_max_batch_size_beyond_measured(check, tmp_path, tiny_bundle):
    dep = DEPLOYMENT.replace("max_batch_size = 4", "max_batch_size = 8")
    scn = make_scenario(tmp_path, tiny_bundle, deployment=dep)
    check(scn, "deployments.fast.max_batch_size", "8")


def test_bundle_path_does_not_exist(check, tmp_path):
    scn = make_scenario(tmp_path, tmp_path / "no_such_bundle")
    check(scn, "no_such_bundle")


def test_policy_names_unknown_deployment(check, tmp_path, tiny_bundle):
    """Found only when the policy is set up; ``run`` must still leave nothing behind."""
    scn = make_scenario(tmp_path, tiny_bundle, policy='name = "static"\ndeployment = "nosuch"')
    check(scn, "policy.deployment", "nosuch")


# ---------------------------------------------------------------- bundle tables


def test_service_table_missing_column(check, tmp_path, tiny_bundle):
    bundle = copy_bundle(tiny_bundle, tmp_path)
    edit_csv(bundle / "service.csv", lambda f: f.drop(columns=["latency_ms"]))
    check(make_scenario(tmp_path, bundle), "service.csv", "latency_ms")


@pytest.mark.parametrize("row, value", [(4, np.nan), (3, -1.5)])
def test_service_table_bad_latency(check, tmp_path, tiny_bundle, row, value):
    bundle = copy_bundle(tiny_bundle, tmp_path)

    def spoil(f):
        f["latency_ms"] = f["latency_ms"].astype(float)
        f.loc[row - 1, "latency_ms"] = value
        return f

    edit_csv(bundle / "service.csv", spoil)
    check(make_scenario(tmp_path, bundle), "service.csv", f"row {row}", "latency_ms")


def test_predictions_confidence_above_one(check, tmp_path, tiny_bundle):
    bundle = copy_bundle(tiny_bundle, tmp_path)

    def over_one_row_5(f):
        f.loc[4, "confidence"] = 1.2
        return f

    edit_csv(bundle / "predictions.csv", over_one_row_5)
    check(make_scenario(tmp_path, bundle), "predictions.csv", "row 5", "confidence")


def test_list_reports_bad_bundle(capsys, tmp_path, tiny_bundle):
    bundle = copy_bundle(tiny_bundle, tmp_path)

    def negative_row_2(f):
        f["latency_ms"] = f["latency_ms"].astype(float)
        f.loc[1, "latency_ms"] = -3.0
        return f

    edit_csv(bundle / "service.csv", negative_row_2)
    expect_error(capsys, ["list", str(tmp_path)], "service.csv", "row 2", "latency_ms")


def test_row_error_values_are_plain(capsys, tmp_path, tiny_bundle):
    """The offending value is shown as the user wrote it, not as a numpy repr like np.float64(-1.5)."""
    bundle = copy_bundle(tiny_bundle, tmp_path)

    def negative_row_3(f):
        f["latency_ms"] = f["latency_ms"].astype(float)
        f.loc[2, "latency_ms"] = -1.5
        return f

    edit_csv(bundle / "service.csv", negative_row_3)
    line = expect_error(capsys, ["validate", str(make_scenario(tmp_path, bundle))], "row 3", "-1.5")
    assert "np." not in line, line

    stamps = tmp_path / "stamps.csv"
    stamps.write_text("timestamp\n0.0\n0.5\n0.3\n2.5\n")
    scn = make_scenario(tmp_path, tiny_bundle, name="replay.toml", arrivals=replay_arrivals(stamps))
    line = expect_error(capsys, ["validate", str(scn)], "row 3", "0.3")
    assert "np." not in line, line


# ---------------------------------------------------------------- replay traces


def replay_arrivals(path: Path, **keys: str) -> str:
    extra = "".join(f"\n{k} = {v}" for k, v in keys.items())
    return f"kind = \"replay\"\npath = '{path.as_posix()}'{extra}"


def test_replay_counts_non_numeric(check, tmp_path, tiny_bundle):
    counts = tmp_path / "counts.txt"
    counts.write_text("3\n4\nabc\n5\n")
    scn = make_scenario(tmp_path, tiny_bundle, arrivals=replay_arrivals(counts))
    check(scn, "counts.txt", "value 3", "abc")


def test_replay_timestamps_missing_column(check, tmp_path, tiny_bundle):
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("time\n0.0\n0.5\n1.0\n2.5\n")
    scn = make_scenario(tmp_path, tiny_bundle, arrivals=replay_arrivals(stamps, column='"timestamp"'))
    check(scn, "stamps.csv", "timestamp")


def test_replay_timestamps_unsorted(check, tmp_path, tiny_bundle):
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("timestamp\n0.0\n0.5\n0.3\n2.5\n")
    scn = make_scenario(tmp_path, tiny_bundle, arrivals=replay_arrivals(stamps))
    check(scn, "stamps.csv", "row 3")


@pytest.mark.parametrize("content", ["", "timestamp\n"], ids=["zero-bytes", "header-only"])
def test_replay_timestamps_empty(check, tmp_path, tiny_bundle, content):
    stamps = tmp_path / "stamps.csv"
    stamps.write_text(content)
    scn = make_scenario(tmp_path, tiny_bundle, arrivals=replay_arrivals(stamps))
    check(scn, "stamps.csv")


def test_replay_window_beyond_trace(check, tmp_path, tiny_bundle):
    """A 1 s counts trace cannot feed a 2 s run; for ``run`` this surfaces mid-run, after staging began."""
    counts = tmp_path / "counts.txt"
    counts.write_text("20\n")
    scn = make_scenario(tmp_path, tiny_bundle, arrivals=replay_arrivals(counts))
    check(scn, "arrivals.start_s", "counts.txt")


# ---------------------------------------------------------------- the scenario file and the command line


def test_scenario_file_not_found(check, tmp_path):
    check(tmp_path / "missing.toml", "missing.toml")


def test_scenario_not_utf8(check, tmp_path, tiny_bundle):
    scn = tmp_path / "latin1.toml"
    scn.write_bytes(scenario_text(tiny_bundle).replace("seed = 1", "# caf\u00e9\nseed = 1").encode("latin-1"))
    check(scn, "latin1.toml", "not UTF-8 text", "0xe9")


def test_malformed_toml(check, tmp_path, tiny_bundle):
    text = scenario_text(tiny_bundle).replace("rate_rps = 50.0", "rate_rps = [50.0,")
    scn = write_scenario(tmp_path / "broken.toml", text)
    check(scn, "broken.toml", "TOML", "line")


@pytest.mark.parametrize("item, needle", [("arrivals.rate_rps", "arrivals.rate_rps"),
                                          ("deployments.nosuch.replicas=2", "deployments.nosuch"),
                                          ("policy.name.x=1", "policy.name")])
def test_bad_set(check, tmp_path, tiny_bundle, item, needle):
    scn = make_scenario(tmp_path, tiny_bundle)
    check(scn, "--set", needle, extra=("--set", item))


@pytest.mark.parametrize("seeds", ["abc", "5-1", "1,1", "1-x", "1.5", "a-b", "-3", "1e3"])
def test_bad_seeds(capsys, tmp_path, tiny_bundle, seeds):
    scn = make_scenario(tmp_path, tiny_bundle)
    expect_run_error(capsys, tmp_path, scn, "--seeds", repr(seeds), extra=("--seeds", seeds))


# ---------------------------------------------------------------- existing output directory


def existing_output(tmp_path: Path) -> Path:
    """An earlier run output (it holds a summary.json, so it is ours to replace with --force)."""
    out = tmp_path / "runs" / "out"
    out.mkdir(parents=True)
    (out / "summary.json").write_text('{"requests": 3, "hit_rate": 1.0}')
    (out / "marker.txt").write_text("keep me")
    return out


def test_existing_output_without_force_is_untouched(capsys, tmp_path, tiny_bundle):
    out = existing_output(tmp_path)
    scn = make_scenario(tmp_path, tiny_bundle)
    expect_error(capsys, ["run", str(scn), "--out", str(out)], str(out), "--force")
    assert sorted(p.name for p in out.iterdir()) == ["marker.txt", "summary.json"]
    assert (out / "marker.txt").read_text() == "keep me"
    assert leftovers(out) == []


def test_existing_output_with_force_is_replaced(capsys, tmp_path, tiny_bundle):
    out = existing_output(tmp_path)
    scn = make_scenario(tmp_path, tiny_bundle)
    assert main(["run", str(scn), "--out", str(out), "--force", "--seeds", "1-2"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert not (out / "marker.txt").exists()
    for seed in (1, 2):
        summary = json.loads((out / f"seed-{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed
    assert (out / "runs.csv").is_file()
    assert leftovers(out) == []


def test_failed_force_run_keeps_existing_output(capsys, tmp_path, tiny_bundle):
    """With --force, the old output is replaced only by a complete new one, never by nothing."""
    out = existing_output(tmp_path)
    scn = make_scenario(tmp_path, tiny_bundle, policy='name = "static"\ndeployment = "nosuch"')
    expect_error(capsys, ["run", str(scn), "--out", str(out), "--force"], "policy.deployment")
    assert sorted(p.name for p in out.iterdir()) == ["marker.txt", "summary.json"]
    assert leftovers(out) == []


# ---------------------------------------------------------------- the installed entry point


def test_subprocess_bad_scenario_exit_2(tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, arrivals='kind = "poisson"\nrate_rps = -10.0')
    out = tmp_path / "runs" / "out"
    proc = subprocess.run([sys.executable, "-m", "sim", "run", str(scn), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "arrivals.rate_rps" in lines[0], proc.stderr
    assert not out.exists()
