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


STUDY_SCENARIOS = [Path(__file__).resolve().parents[1] / "examples" / p for p in
                   ("ipa/pipeline.toml", "tenants/isolation.toml", "tenants/fidelity.toml")]
STUDY_SWEEPS = [Path(__file__).resolve().parents[1] / "examples" / p for p in
                ("ipa/study.toml", "tenants/isolation-sweep.toml")]


def _needs_shared(path: Path) -> bool:
    return "shared/data" in path.read_text()


@pytest.mark.parametrize("path", STUDY_SCENARIOS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_study_scenarios_validate(path, request):
    if _needs_shared(path):
        request.getfixturevalue("shared_data")  # skips, saying why, without ../shared
    prepared = prepare(load_scenario(path))
    assert prepared.scenario.tenants or prepared.scenario.stages


@pytest.mark.parametrize("path", STUDY_SWEEPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_study_sweeps_expand(path, shared_data):
    from sim.sweep import expand

    tasks = expand(path)
    assert len(tasks) == {"study.toml": 120, "isolation-sweep.toml": 75}[path.name]
    assert len({t.run_id for t in tasks}) == len(tasks)


def test_a_variant_without_a_bundle_finds_the_study_bundle_that_measured_it():
    """A scenario without `bundle` takes the bundled bundle that measured its variant: the backend
    variants sit in the study bundles beside the eager ones they are compared with."""
    from sim.core.prepare import bundled_bundle_for

    assert bundled_bundle_for("resnet18/int8/cpu").name == "digits-cpu"
    assert bundled_bundle_for("resnet18/int8/cpu/onnxruntime").name == "digits-cpu"
    assert bundled_bundle_for("mobilenet_v2/fp32/cpu/torchscript").name == "digits-cpu"
    assert bundled_bundle_for("bert-6/int8/cpu").name == "sst2-cpu"
    assert bundled_bundle_for("bert-2-kd/fp32/cpu").name == "sst2-cpu"
    assert bundled_bundle_for("bert-6/int8/cpu/onnxruntime").name == "sst2-cpu"
