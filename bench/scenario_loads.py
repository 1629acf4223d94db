"""The load of each shipped scenario, derived from the bundled measurements by the rule its header states.

A scenario's rate is a design choice made against measured capacities: the study's base runs
at 1.5x what its large model sustains, the ablation's base gives its second hop 0.7 of what one
replica serves at batches of 8, and so on. When a bundle is measured again (another machine,
another software stack) the capacities move and the rates must follow, or a study of overload
becomes a study of an idle system. This script states each rule once, works it out on the bundles
as they are, and prints the rate the rule gives beside the rate the scenario holds, with the
factor between them (to scale the scenario's other workloads, bursty phases and replayed traces,
by the same factor):

    python bench/scenario_loads.py            # every rule
    python bench/scenario_loads.py --check    # exit 1 when a scenario is more than 10% off its rule

Capacities are ``LatencyProfile.throughput_rps`` at a batch size (back-to-back batches, as
``simulate validate`` prints them); a cascade's share passed on is the share of the first hop's
evaluated samples below the threshold (the bundle's predictions). Rates are rounded to two
significant figures: the rule fixes a load ratio, not a rate to the request.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.core.prepare import Prepared, check_against_bundle  # noqa: E402
from traces.scenario import load_scenario  # noqa: E402


class Measured:
    """What a rule reads of a prepared scenario: capacities and a cascade's share passed on."""

    def __init__(self, prepared: Prepared):
        self.prepared = prepared
        self.deployments = {d.name: d for d in prepared.scenario.deployments}

    def capacity_rps(self, name: str, batch_size: int | None = None, replicas: int | None = None) -> float:
        """Requests/s that back-to-back batches of ``batch_size`` (default: the deployment's
        largest) sustain on ``replicas`` (default: the deployment's)."""
        dep = self.deployments[name]
        size = batch_size or dep.max_batch_size
        return self.prepared.profiles[name].throughput_rps(size, replicas if replicas is not None else dep.replicas)

    def passed_share(self, name: str, threshold: float) -> float:
        """The share of ``name``'s evaluated samples with confidence below ``threshold``: the
        requests a cascade at that threshold passes on."""
        bundle = self.prepared.bundles[name]
        rows = bundle.predictions[bundle.predictions["variant"] == self.deployments[name].variant]
        return float(np.mean(rows["confidence"].to_numpy(dtype=float) < threshold))

    def threshold(self) -> float:
        return float(self.prepared.scenario.policy.params["threshold"])


@dataclass(frozen=True)
class Rule:
    scenario: str                            # relative to the repository
    rule: str                                # the rule, as the scenario's header states it
    target: Callable[[Measured], float]      # what the rule gives: a rate (requests/s) or a replay's scale
    field: str = "arrivals.rate_rps"         # where the scenario holds it
    also: str = ""                           # what else scales by the same factor


def _study(m: Measured) -> float:
    return 1.5 * m.capacity_rps("large")


def _study_sst2(m: Measured) -> float:
    return m.capacity_rps("medium") + m.capacity_rps("large")


def _ipa_scale(m: Measured) -> float:
    """The replay's scale that makes the window's mean 0.75x one middle judge replica's throughput
    at batches of 8 (the scenario's own scale times the ratio of that target to its mean now)."""
    scenario = m.prepared.scenario
    mean_rps = scenario.arrivals.mean_rate_rps(scenario.duration_s)
    return float(scenario.arrivals_cfg["rate_scale"]) * 0.75 * m.capacity_rps("judge-medium", 8, 1) / mean_rps


def _ablation(share_of_one_replica: float) -> Callable[[Measured], float]:
    def rate(m: Measured) -> float:
        return share_of_one_replica * m.capacity_rps("large", 8, 1) / m.passed_share("small", m.threshold())
    return rate


RULES = (
    Rule("examples/study/base.toml", "1.5x what large sustains at full batches", _study,
         also="study.toml's bursty phases and Twitter rate_scale; learned/digits*.toml"),
    Rule("examples/learned/digits.toml", "the study base's rate", _study),
    Rule("examples/learned/digits-train.toml", "the study base's rate", _study),
    Rule("examples/study/sst2-base.toml", "what medium and large sustain together at full batches", _study_sst2,
         also="learned/sst2*.toml"),
    Rule("examples/learned/sst2.toml", "the SST-2 base's rate", _study_sst2),
    Rule("examples/learned/sst2-train.toml", "the SST-2 base's rate", _study_sst2),
    Rule("examples/ablation/digits-base.toml", "large gets 0.7 of one replica's throughput at batches of 8",
         _ablation(0.7)),
    Rule("examples/ablation/sst2-base.toml", "large gets 0.65 of one replica's throughput at batches of 8",
         _ablation(0.65)),
    Rule("examples/ipa/pipeline.toml", "the replayed window's mean is 0.75x what one BERT-4 INT8 judge replica "
         "sustains at batches of 8", _ipa_scale, field="arrivals.rate_scale",
         also="every window's rate_scale in ipa/study.toml"),
    Rule("examples/autoscale.toml", "the step is 1.5x what one replica sustains at batches of 8 (4x the base)",
         lambda m: 1.5 * m.capacity_rps("m", 8, 1), field="arrivals.rates_rps[1]"),
)


def two_figures(value: float) -> float:
    """``value`` rounded to two significant figures (1886 -> 1900, 596 -> 600)."""
    if value <= 0:
        return value
    digits = 1 - int(math.floor(math.log10(value)))
    return round(value, digits)


def held_value(prepared: Prepared, field: str) -> float:
    """What the scenario file holds at ``field`` (its arrivals' configuration, as written)."""
    arrivals = prepared.scenario.arrivals_cfg
    if field == "arrivals.rates_rps[1]":
        return float(arrivals["rates_rps"][1])
    if field == "arrivals.rate_scale":
        return float(arrivals["rate_scale"])
    return float(arrivals["rate_rps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a scenario is more than 10%% off its rule")
    args = parser.parse_args(argv)
    off = 0
    print(f"{'scenario':38s} {'holds':>7s} {'rule gives':>10s} {'factor':>7s}  rule (rates in requests/s; a replay's scale)")
    for rule in RULES:
        prepared = check_against_bundle(load_scenario(ROOT / rule.scenario))
        wanted = two_figures(rule.target(Measured(prepared)))
        held = held_value(prepared, rule.field)
        factor = wanted / held
        off += abs(factor - 1.0) > 0.10
        print(f"{rule.scenario:38s} {held:7.4g} {wanted:10.4g} {factor:7.3f}  {rule.rule}"
              + (f" (also: {rule.also})" if rule.also else ""))
    return 1 if args.check and off else 0


if __name__ == "__main__":
    sys.exit(main())
