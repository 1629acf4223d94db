"""Sizes that would exhaust memory or time are refused up front, with the limit, the expected size
and the override; the override lets a big run through. Seeds are plain decimal integers."""

from __future__ import annotations

import time

import pytest

from sim.cli import main
from test_cli_errors import DEPLOYMENT, expect_error, expect_run_error, make_scenario
from traces.errors import InputError
from traces.limits import Limits
from traces.scenario import load_scenario, parse_seeds

PARAMETRIC = 'name = "fast"\nservice = { kind = "exponential", mean_ms = 2.0 }\nmax_batch_size = 4'


def test_request_count_over_the_limit_is_refused_with_count_limit_and_override(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, top="duration_s = 1000.0", arrivals='kind = "poisson"\nrate_rps = 1e6')
    for argv in (["validate", str(scn)], ["run", str(scn), "--out", str(tmp_path / "o")]):
        line = expect_error(capsys, argv, "scn.toml", "arrivals", "about 1e+09 requests", "50,000,000",
                            "limits.max_requests", "--set limits.max_requests=1000000000")
    assert not (tmp_path / "o").exists()
    assert "Traceback" not in line
    # the override named in the line lets the run through (validate does not draw the arrivals)
    assert main(["validate", str(scn), "--set", "limits.max_requests=1000000000"]) == 0
    assert "ok" in capsys.readouterr().out


def test_sizes_no_override_can_cover_are_refused_without_an_override(capsys, tmp_path, tiny_bundle):
    """rate x duration that overflows (inf) or that no machine could draw gets one line that offers no
    override (formatting inf as the override was an OverflowError traceback), and the limits
    themselves stop at the ceiling (a raised limit then made numpy's Poisson draw raise)."""
    scn = make_scenario(tmp_path, tiny_bundle, arrivals='kind = "poisson"\nrate_rps = 150.0')
    for value in ("duration_s=1e308", "arrivals.rate_rps=1e300"):
        line = expect_error(capsys, ["validate", str(scn), "--set", value], f"--set {value.split('=')[0]}",
                            "no run can be that big", "1e+15")
        assert "Traceback" not in line and "--set limits" not in line
    expect_error(capsys, ["run", str(scn), "--set", "arrivals.rate_rps=1e300", "--set", "limits.max_requests=1e301",
                          "--out", str(tmp_path / "o")], "limits.max_requests", "<= 1e+15")
    assert not (tmp_path / "o").exists()


def test_limit_override_in_the_scenario_file(tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, top="duration_s = 1000.0\nlimits = { max_requests = 2_000_000_000 }",
                        arrivals='kind = "poisson"\nrate_rps = 1e6')
    scenario = load_scenario(scn)
    assert scenario.limits.max_requests == 2e9
    assert scenario.resolved()["limits"] == {"max_requests": 2e9}
    assert "limits" not in load_scenario(make_scenario(tmp_path, tiny_bundle, name="plain.toml")).resolved()


def test_unknown_limit_is_refused(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle)
    expect_error(capsys, ["validate", str(scn), "--set", "limits.max_request=5"], "limits.max_request", "unknown key")
    expect_error(capsys, ["validate", str(scn), "--set", "limits.max_requests=-5"], "limits.max_requests", ">= 1")


@pytest.mark.parametrize("arrivals, needle", [
    ('kind = "piecewise"\nrates_rps = [1.0]\ninterval_s = 1e-9', "rate intervals"),
    ('kind = "bursty"\nrates_rps = [1.0, 2.0]\nmean_dwell_s = [1e-9, 1e-9]', "rate intervals"),
])
def test_rate_pieces_over_the_limit_fail_fast(capsys, tmp_path, tiny_bundle, arrivals, needle):
    """Building 1e12 rate intervals would exhaust memory; the check comes before any allocation."""
    scn = make_scenario(tmp_path, tiny_bundle, top="duration_s = 1000.0", arrivals=arrivals)
    start = time.monotonic()
    expect_error(capsys, ["validate", str(scn)], "arrivals", needle, "limits.max_requests")
    assert time.monotonic() - start < 60  # not a timing target: a generous bound on "it did not allocate"


def test_replicas_and_batch_size_over_the_limit(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, None, deployment=PARAMETRIC + "\nreplicas = 5000")
    expect_error(capsys, ["validate", str(scn)], "deployments.fast.replicas", "5000", "1024", "limits.max_replicas")
    assert main(["validate", str(scn), "--set", "limits.max_replicas=5000"]) == 0
    capsys.readouterr()
    scn = make_scenario(tmp_path, None, name="big.toml", deployment=PARAMETRIC.replace("= 4", "= 100000"))
    expect_error(capsys, ["validate", str(scn)], "deployments.fast.max_batch_size", "100000", "4096",
                 "limits.max_batch_size")


def test_plan_ticks_over_the_limit(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle, top="duration_s = 1000.0",
                        policy='name = "static"\ndeployment = "fast"\nplan_interval_s = 1e-9')
    expect_error(capsys, ["validate", str(scn)], "policy.plan_interval_s", "plans", "limits.max_requests")


def test_mttf_far_below_the_service_time_is_refused_by_run_and_validate(capsys, tmp_path, tiny_bundle):
    # fast/int8/cpu takes 2 ms at batch 1: an mttf of 5 ms is under 10 x 2 ms
    faults = '\n\n[[faults]]\ndeployment = "fast"\nmttf_s = 0.005\nmttr_s = 0.001'
    scn = make_scenario(tmp_path, tiny_bundle, policy='name = "static"\ndeployment = "fast"' + faults)
    lines = {expect_error(capsys, ["validate", str(scn)], "faults[0].mttf_s", "0.005", "10 x", "2 ms",
                          "limits.mttf_service_ratio"),
             expect_run_error(capsys, tmp_path, scn)}
    assert len(lines) == 1, lines
    assert main(["validate", str(scn), "--set", "limits.mttf_service_ratio=0"]) == 0


def test_mttf_check_applies_to_parametric_services(capsys, tmp_path):
    faults = '\n\n[[faults]]\ndeployment = "fast"\nmttf_s = 0.01\nmttr_s = 0.001'
    scn = make_scenario(tmp_path, None, deployment=PARAMETRIC, policy='name = "static"' + faults)
    expect_error(capsys, ["validate", str(scn)], "faults[0].mttf_s", "limits.mttf_service_ratio")
    scn = make_scenario(tmp_path, None, name="ok.toml", deployment=PARAMETRIC,
                        policy='name = "static"' + faults.replace("0.01", "0.05"))
    assert main(["validate", str(scn)]) == 0


def test_too_many_seeds_is_refused_before_expanding_the_range(capsys, tmp_path, tiny_bundle):
    scn = make_scenario(tmp_path, tiny_bundle)
    expect_run_error(capsys, tmp_path, scn, "--seeds", "1001 seeds", "1000", "limits.max_seeds",
                     extra=("--seeds", "0-1000"))
    start = time.monotonic()
    with pytest.raises(InputError, match="100000000001 seeds"):
        parse_seeds("0-100000000000")
    assert time.monotonic() - start < 10
    assert parse_seeds("0-1000", Limits(max_seeds=1001)) == list(range(1001))


@pytest.mark.parametrize("text", ["1.5", "a-b", "1-b", "-1", "1_0", "\u0663", "1,,2", "", "0x3", "1-2-3"])
def test_seeds_must_be_plain_integers(text):
    with pytest.raises(InputError, match="--seeds"):
        parse_seeds(text)


def test_seed_forms_that_are_accepted():
    assert parse_seeds("3") == [3]
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    assert parse_seeds(" 4 , 5 ") == [4, 5]


def test_a_big_run_within_the_limit_is_not_refused(tmp_path, tiny_bundle):
    """The limit is on the expected count: 49 million requests load (nothing is drawn at load)."""
    scn = make_scenario(tmp_path, tiny_bundle, top="duration_s = 49000.0", arrivals='kind = "poisson"\nrate_rps = 1000.0',
                        deployment=DEPLOYMENT)
    assert load_scenario(scn).duration_s == 49000.0
