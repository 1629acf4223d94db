"""bench/scenario_loads.py: each shipped scenario's rate is what its stated rule gives on the bundled
measurements, so a re-measured bundle cannot leave a study of overload running an idle system."""

from __future__ import annotations

import pytest

from conftest import SHARED, load_bench


@pytest.fixture(scope="module")
def loads():
    return load_bench("scenario_loads")


@pytest.mark.parametrize("value, rounded", [(1886.0, 1900.0), (596.2, 600.0), (1257.0, 1300.0), (0.0449, 0.045)])
def test_rates_round_to_two_significant_figures(loads, value, rounded):
    assert loads.two_figures(value) == pytest.approx(rounded)


def test_every_shipped_scenario_holds_the_rate_its_rule_gives(loads, capsys):
    if not (SHARED / "data" / "twitter_trace_ipa").is_dir():
        pytest.skip(f"the IPA scenario replays the Twitter trace, not at {SHARED / 'data'}")
    assert loads.main(["--check"]) == 0, capsys.readouterr().out


def test_a_rate_off_its_rule_is_reported(loads, monkeypatch, capsys):
    rule = loads.RULES[0]
    doubled = loads.Rule(rule.scenario, rule.rule, lambda m: 2 * rule.target(m))
    monkeypatch.setattr(loads, "RULES", (doubled,))
    assert loads.main(["--check"]) == 1
    assert " 2.000 " in capsys.readouterr().out
