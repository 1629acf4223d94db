"""Every scenario shipped in examples/ loads and passes the checks `simulate run` makes first."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.runner import prepare
from traces.scenario import load_scenario

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_scenario_validates(path):
    prepared = prepare(load_scenario(path))
    assert prepared.profiles.keys() == {d.name for d in prepared.scenario.deployments}


def test_the_examples_cover_pipelines_and_autoscaling():
    scenarios = [load_scenario(p) for p in EXAMPLES]
    assert any(s.stages for s in scenarios)
    assert any(d.autoscaling is not None for s in scenarios for d in s.deployments)
