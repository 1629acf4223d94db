"""`simulate validate` runs exactly the checks `simulate run` runs, so ok means the run starts;
errors from a `--set` name the `--set`; validate warns of overload; the command line explains itself
(help with examples on every command, --version, the table's legend) and ends quietly on a closed pipe."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from sim.cli import build_parser as simulate_parser
from sim.cli import main
from test_cli_errors import (DEPLOYMENT, REPO, expect_error, expect_run_error, make_scenario, replay_arrivals)

PARAMETRIC = ('name = "a"\nservice = { kind = "exponential", mean_ms = 1.0 }\n\n[[deployments]]\n'
              'name = "b"\nservice = { kind = "exponential", mean_ms = 3.0 }')
SECOND = DEPLOYMENT + '\n\n[[deployments]]\nname = "slow"\nvariant = "slow/fp32/cpu"\nmax_batch_size = 4'


def _bad_scenarios(tmp_path: Path, bundle: Path) -> dict[str, Path]:
    counts = tmp_path / "counts.txt"
    counts.write_text("20\n")
    return {
        # a 1 s trace cannot feed a 2 s run (run used to find out only while drawing arrivals)
        "replay window": make_scenario(tmp_path, bundle, name="w.toml", arrivals=replay_arrivals(counts)),
        # a cascade needs predictions at its first hop; parametric services have none (run used to
        # find out at the first arrival)
        "cascade over parametric": make_scenario(tmp_path, None, name="c.toml", deployment=PARAMETRIC,
                                                 policy='name = "static"\ncascade = ["a", "b"]\nthreshold = 0.5'),
        "request limit": make_scenario(tmp_path, bundle, name="l.toml", top="duration_s = 1e6",
                                       arrivals='kind = "poisson"\nrate_rps = 1e3'),
        "mttf limit": make_scenario(tmp_path, bundle, name="m.toml", policy='name = "static"\ndeployment = "fast"'
                                    '\n\n[[faults]]\ndeployment = "fast"\nmttf_s = 0.001\nmttr_s = 0.001'),
        "unknown policy": make_scenario(tmp_path, bundle, name="p.toml", policy='name = "statik"'),
        "policy deployment": make_scenario(tmp_path, bundle, name="d.toml", policy='name = "static"\ndeployment = "x"'),
        "variant": make_scenario(tmp_path, bundle, name="v.toml", deployment=DEPLOYMENT.replace("int8", "int4")),
        "batch size": make_scenario(tmp_path, bundle, name="b.toml", deployment=DEPLOYMENT.replace("= 4", "= 64")),
        "policy parameter": make_scenario(tmp_path, bundle, name="q.toml", policy='name = "infaas"\naccuracy_floor = 2'),
        "bound parameter": make_scenario(tmp_path, bundle, name="o.toml", policy='name = "oracle-static"\nx = 1'),
    }


CASES = ["replay window", "cascade over parametric", "request limit", "mttf limit", "unknown policy",
         "policy deployment", "variant", "batch size", "policy parameter", "bound parameter"]


@pytest.mark.parametrize("case", CASES)
def test_validate_and_run_refuse_the_same_scenarios_with_the_same_line(capsys, tmp_path, tiny_bundle, case):
    scn = _bad_scenarios(tmp_path, tiny_bundle)[case]
    validate_line = expect_error(capsys, ["validate", str(scn)])
    run_line = expect_run_error(capsys, tmp_path, scn)
    assert validate_line == run_line


def test_cascade_over_parametric_names_the_policy_and_the_reason(capsys, tmp_path, tiny_bundle):
    scn = _bad_scenarios(tmp_path, tiny_bundle)["cascade over parametric"]
    expect_error(capsys, ["validate", str(scn)], "policy 'static'", "'a'", "predictions")


# ---------------------------------------------------------------- --set names the --set


@pytest.mark.parametrize("item, where", [
    ("arrivals.rate_rps=-5", "--set arrivals.rate_rps: "),
    ("deployments.0.replicas=-1", "--set deployments.0.replicas: "),
    ("deployments.fast.max_batch_size=64", "--set deployments.fast.max_batch_size: "),  # found against the bundle
    ("policy.deployment=nosuch", "--set policy.deployment: "),                         # found by the policy
    ("duration_s=1e9", "--set duration_s: arrivals: "),                                # a limit the value broke
    ('arrivals={kind="poisson", rate_rps=0}', "--set arrivals: arrivals.rate_rps: "),
])
def test_an_error_from_a_set_names_the_set_not_the_file(capsys, tmp_path, tiny_bundle, item, where):
    scn = make_scenario(tmp_path, tiny_bundle)
    for argv in (["validate", str(scn), "--set", item], ["run", str(scn), "--out", str(tmp_path / "o"), "--set", item]):
        line = expect_error(capsys, argv)
        assert line.startswith("error: " + where), line
        assert "scn.toml" not in line, line


def test_an_error_in_the_file_still_names_the_file_when_sets_are_given(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, requests="deadline_ms = -1.0")
    line = expect_error(capsys, ["validate", str(scn), "--set", "arrivals.rate_rps=10"], "requests.deadline_ms")
    assert "scn.toml" in line and "--set" not in line


# ---------------------------------------------------------------- overload warnings


def _validate(capsys, scn: Path, *extra: str) -> tuple[str, str]:
    assert main(["validate", str(scn), *extra]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out, captured.err


def test_validate_warns_when_the_single_deployment_is_overloaded(capsys, tmp_path, tiny_bundle):
    # fast: batches of 4 take 5 ms on one replica: 800 rps at most
    scn = make_scenario(tmp_path, tiny_bundle, arrivals='kind = "poisson"\nrate_rps = 1000.0')
    out, err = _validate(capsys, scn)
    assert "ok" in out
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert "'fast'" in lines[0] and "~1000.0 rps" in lines[0] and "~800.0 rps" in lines[0], lines[0]
    _, err = _validate(capsys, scn, "--set", "arrivals.rate_rps=700")
    assert err == ""


def test_validate_warns_for_the_next_hop_of_a_cascade_with_its_share(capsys, tmp_path, tiny_bundle):
    # fast is unsure (< 0.8) on 2 of 4 samples, so slow gets half the arrivals; slow serves at most
    # 4 / 28 ms = 142.9 rps on one replica, fast 800 rps
    policy = 'name = "static"\ncascade = ["fast", "slow"]\nthreshold = 0.8'
    scn = make_scenario(tmp_path, tiny_bundle, deployment=SECOND, policy=policy,
                        arrivals='kind = "poisson"\nrate_rps = 400.0')
    _, err = _validate(capsys, scn)
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 1, err
    assert "'slow'" in lines[0] and "~200.0 rps" in lines[0] and "50.0% passed on by fast@0.8" in lines[0]
    assert "~142.9 rps" in lines[0]
    _, err = _validate(capsys, scn, "--set", "deployments.slow.replicas=2")
    assert "warning" not in err


def test_validate_warns_for_static_small_and_static_large(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, deployment=SECOND, policy='name = "static-large"',
                        arrivals='kind = "poisson"\nrate_rps = 400.0')
    _, err = _validate(capsys, scn)
    assert "warning: deployment 'slow'" in err and "'fast'" not in err
    _, err = _validate(capsys, scn, "--set", 'policy={name="static-small"}')
    assert "warning" not in err  # fast takes all 400 rps of its 800
    _, err = _validate(capsys, scn, "--set", 'policy={name="planner"}')
    assert "warning" not in err  # routes decided at run time: nothing to say in advance


# ---------------------------------------------------------------- the command line explains itself


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _parsers():
    from measure.cli import build_parser as measure_parser

    return {"simulate": simulate_parser(), "measure": measure_parser()}


@pytest.mark.parametrize("prog", ["simulate", "measure"])
def test_every_command_and_option_has_help_and_an_example(prog):
    top = _parsers()[prog]
    subs = _subparsers(top)
    assert subs
    assert prog in top.epilog and "examples:" in top.epilog
    for name, sub in subs.items():
        assert sub.epilog and "examples:" in sub.epilog, name
        assert f"{prog} {name} " in sub.epilog, f"{prog} {name}: no example of the command itself"
        assert isinstance(sub.formatter_class, type) and issubclass(sub.formatter_class,
                                                                    argparse.RawDescriptionHelpFormatter)
        for action in sub._actions:
            assert action.help, f"{prog} {name}: {action.dest} has no help"


@pytest.mark.parametrize("prog", ["simulate", "measure"])
def test_version(capsys, prog):
    with pytest.raises(SystemExit) as exit_:
        _parsers()[prog].parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} (servesim {metadata.version('servesim')})"


def test_run_prints_a_legend_below_the_table(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle)
    assert main(["run", str(scn), "--out", str(tmp_path / "o"), "--seeds", "1-2"]) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(out) if line.split()[:3] == ["seed", "requests", "dropped"])
    mean = next(i for i, line in enumerate(out) if line.startswith("mean"))
    legend = "\n".join(out[mean + 1:])
    assert header < mean
    for needle in ("hit:", "deadline", "acc:", "ontime:", "p50/p95/p99 ms", "rps:", "batch:", "cost:",
                   "95% Student-t", "seeds"):
        assert needle in legend, (needle, legend)


# ---------------------------------------------------------------- closed pipes, the missing extra


@pytest.mark.parametrize("args", [["list"], ["validate", "{scn}"]])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, tiny_bundle, args):
    scn = make_scenario(tmp_path, tiny_bundle)
    argv = [a.replace("{scn}", str(scn)) for a in args]
    proc = subprocess.Popen([sys.executable, "-m", "sim", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written, like `| head -0`
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert err == "", err
    assert code == 141


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to stand for a full disk")
@pytest.mark.parametrize("args", [["list"], ["validate", "{scn}"]])
def test_a_full_disk_is_one_line_not_a_traceback(tmp_path, tiny_bundle, args):
    scn = make_scenario(tmp_path, tiny_bundle)
    argv = [a.replace("{scn}", str(scn)) for a in args]
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "sim", *argv], cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == ["error: standard output: No space left on device"], proc.stderr


def test_measure_without_the_extra_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules.update(dict.fromkeys(['torch', 'torchvision', 'transformers'])); "
            "from measure.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "latency", str(REPO / "examples/profiles/digits-cpu.toml"),
                           "--out", str(tmp_path / "bundle")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pip install -e '.[measure]'" in lines[0], proc.stderr
    assert not (tmp_path / "bundle").exists()


def test_progress_lines_off_a_terminal(capsys):
    from traces.progress import Progress

    now = [0.0]
    with Progress(120.0, "seed 2", "sim s", bar=False, clock=lambda: now[0]) as progress:
        for t, wall in ((10.0, 3.0), (40.0, 10.5), (50.0, 15.0), (80.0, 21.0), (120.0, 22.0)):
            now[0] = wall
            progress.update(t)
    assert capsys.readouterr().err.splitlines() == ["progress: seed 2: 40 of 120 sim s",
                                                     "progress: seed 2: 80 of 120 sim s"]
    with Progress(5.0, "short", "run", bar=False) as progress:
        progress.update(5.0)
    assert capsys.readouterr().err == ""
    now[0] = 0.0
    with Progress(10, "bundle", "config", bar=False, clock=lambda: now[0]) as progress:  # by increments
        for _ in range(3):
            now[0] += 6.0
            progress.advance(2)
    assert capsys.readouterr().err.splitlines() == ["progress: bundle: 4 of 10 config"]


def test_progress_of_a_run_spans_its_seeds(capsys, monkeypatch, tmp_path, tiny_bundle):
    """Many short seeds are long work too: the ~10 s clock runs across seeds (a Progress per seed
    restarted it, so 200 seeds of 0.1 s each printed nothing), and the line counts all seeds."""
    import functools

    import sim.core.driver
    from traces.progress import Progress

    now = [0.0]

    def clock():  # each call 0.1 s later: a seed's 50 updates take 5 s, under the 10 s line interval
        now[0] += 0.1
        return now[0]

    monkeypatch.setattr(sim.core.driver, "Progress", functools.partial(Progress, bar=False, clock=clock))
    scn = make_scenario(tmp_path, tiny_bundle)
    assert main(["run", str(scn), "--out", str(tmp_path / "o"), "--seeds", "1-4"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("progress:")]
    assert len(lines) >= 1, lines
    assert all(line.startswith("progress: 4 seeds: ") for line in lines), lines
    duration_s = float(next(line for line in scn.read_text().splitlines() if line.startswith("duration_s")).split("=")[1])
    assert lines[-1].endswith(f"of {4 * duration_s:g} sim s"), lines


def test_predicted_variants_that_share_no_sample_are_refused(tmp_path):
    """Each request draws a sample every deployed variant answered; variants evaluated on disjoint
    samples have none, and the run would report a null accuracy without saying why."""
    from conftest import simulate, tiny_bundle_frames
    from traces.bundle import TraceBundle
    from traces.errors import InputError

    service, predictions = tiny_bundle_frames()
    apart = (((predictions["variant"] == "fast/int8/cpu") & (predictions["sample_id"] < 2))
             | ((predictions["variant"] == "slow/fp32/cpu") & (predictions["sample_id"] >= 2)))
    bundle = TraceBundle(meta={"name": "apart", "description": "disjoint samples", "units": {"latency": "ms"}},
                         service=service, predictions=predictions[apart]).save(tmp_path / "apart", fmt="csv")
    raw = {"duration_s": 1.0, "arrivals": {"kind": "poisson", "rate_rps": 10.0}, "requests": {"deadline_ms": 100.0},
           "bundle": str(bundle), "policy": {"name": "static", "deployment": "fast"},
           "deployments": [{"name": "fast", "variant": "fast/int8/cpu"}, {"name": "slow", "variant": "slow/fp32/cpu"}]}
    with pytest.raises(InputError, match="fast/int8/cpu, slow/fp32/cpu share no evaluated sample"):
        simulate(raw)
    raw["deployments"] = raw["deployments"][:1]          # one variant alone is fine
    requests, summary = simulate(raw, seed=1)
    assert requests["correct"].notna().all() and 0 <= summary["accuracy"] <= 1
