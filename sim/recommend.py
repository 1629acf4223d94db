"""`simulate recommend`: the batch size, variant and replicas per stage, solved, then checked by simulation.

The question a team asks before a launch: "what should each stage run, and with how many
replicas, to keep this SLA at this load?" The answer here is IPA's decision
(``policies.ipa``): every (variant, batch, replicas) a stage could run at the rate, with its
predicted latency (fill, profiled p99, queueing wait), and the integer program that maximises
alpha x accuracy - beta x cost - gamma x batch under the SLA. Then, since a model is only as good
as its check, the chosen configuration is simulated on the scenario's own arrivals (its static
pipeline, the chosen deployments only, each with its replicas, batch size and fill timeout) and
the simulated hit rate, p99 and cost are printed beside the predicted ones.

The load: ``--rate RPS`` as given; ``--window START:LENGTH``, the peak one-second arrival count in
those seconds of the scenario's arrivals (IPA's load metric: it sizes for the peak), and the
check simulates that window; neither, the arrivals' mean rate over the run. The objective's
weights, the SLA (default: the scenario's tightest deadline), the batch cap and the replica cap
come from the scenario's ``[policy]`` when it is ``ipa``, ``fa2`` or ``rim``, else IPA's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

import policies
from policies.ipa import IpaPolicy
from policies.ipa_model import fill_timeout_ms
from policies.ipa_solver import Infeasible, Plan, pareto_front
from traces.errors import InputError
from traces.scenario import PolicyConfig, Scenario, load_scenario
from traces.stages import StageConfig

from .core.driver import dry_core
from .core.workload import make_workload
from .runner import prepare, run_once

PLANNERS = ("ipa", "fa2", "rim")


def parse_window(text: str) -> tuple[float, float]:
    try:
        start, length = (float(part) for part in text.split(":"))
    except ValueError:
        raise InputError("--window", f"expected START:LENGTH in seconds, e.g. 0:600, got {text!r}") from None
    if not (math.isfinite(start) and math.isfinite(length) and start >= 0 and length > 0):
        raise InputError("--window", f"needs START >= 0 and LENGTH > 0, got {text!r}")
    return start, length


def planning_policy(scenario: Scenario) -> IpaPolicy:
    """The scenario's planner (or ``ipa`` with its defaults), set up over the scenario's deployments."""
    name = scenario.policy.name if scenario.policy.name in PLANNERS else "ipa"
    params = dict(scenario.policy.params) if name == scenario.policy.name else {}
    params.setdefault("sla_ms", float(min(scenario.requests.deadline_ms)))
    params.setdefault("price_per_replica_hour", scenario.price_per_replica_hour)
    planned = dataclasses.replace(scenario, policy=PolicyConfig(name, 1.0, params))
    policy = policies.create(name, params)
    dry_core(prepare(planned), policy)  # calls policy.setup over the live view
    return policy


def peak_rate_rps(scenario: Scenario, start_s: float, length_s: float) -> float:
    """The highest one-second arrival count in [start_s, start_s + length_s) of the run's arrivals."""
    if start_s + length_s > scenario.duration_s + 1e-9:
        raise InputError("--window", f"ends at {start_s + length_s:g} s, after the scenario's duration_s "
                         f"= {scenario.duration_s:g} s")
    times = make_workload(scenario, scenario.seed, 0).arrival_s
    inside = times[(times >= start_s) & (times < start_s + length_s)]
    if inside.size == 0:
        return 0.0
    return float(np.bincount(((inside - start_s) // 1.0).astype(np.int64)).max())


def configured(scenario: Scenario, plan: Plan, rate_rps: float, window: tuple[float, float] | None) -> Scenario:
    """The scenario reduced to the plan: one deployment per stage, as chosen, on a static pipeline."""
    deployments = []
    for option in plan.options:
        dep = scenario.deployment(option.deployment)
        deployments.append(dataclasses.replace(dep, replicas=option.replicas, max_batch_size=option.batch,
                                               batch_wait_timeout_ms=fill_timeout_ms(option.batch, rate_rps),
                                               autoscaling=None))
    names = [option.deployment for option in plan.options]
    stages = tuple(StageConfig(stage.name, (name,)) for stage, name in zip(scenario.stages, names))
    policy = PolicyConfig("static", 0.0, {"pipeline": names} if stages else {"deployment": names[0]})
    changes = {"deployments": tuple(deployments), "stages": stages, "policy": policy}
    if window is not None:
        changes.update(warmup_s=window[0], duration_s=window[0] + window[1])
    return dataclasses.replace(scenario, **changes)


def load_rate_rps(scenario: Scenario, rate_rps: float | None, window: tuple[float, float] | None) -> float:
    """The rate to plan for: as given, the window's peak second, or the arrivals' mean rate."""
    if rate_rps is not None:
        if not (math.isfinite(rate_rps) and rate_rps > 0):
            raise InputError("--rate", f"must be a positive number of requests per second, got {rate_rps:g}")
        return rate_rps
    if window is not None:
        return peak_rate_rps(scenario, *window)
    return scenario.arrivals.mean_rate_rps(scenario.duration_s)


def checked(scenario: Scenario, policy: IpaPolicy, plan: Plan, rate_rps: float,
            window: tuple[float, float] | None) -> dict:
    """One plan, as predicted and as simulated on the scenario's arrivals."""
    check = configured(scenario, plan, rate_rps, window)
    _, _, summary = run_once(prepare(check), check.seed)
    window_h = (check.duration_s - check.warmup_s) / 3600.0
    stage_names = [s.name for s in scenario.stages] or [""]
    return {
        "rate_rps": rate_rps,
        "sla_ms": policy.sla(),
        "stages": [{"name": stage, "deployment": o.deployment, "variant": o.variant, "max_batch_size": o.batch,
                    "replicas": o.replicas, "batch_wait_timeout_ms": fill_timeout_ms(o.batch, rate_rps),
                    "predicted_latency_ms": o.latency_ms, "accuracy": o.accuracy}
                   for stage, o in zip(stage_names, plan.options)],
        "predicted": {"accuracy": plan.accuracy, "latency_ms": plan.latency_ms, "cost_per_hour": plan.cost_per_hour},
        "simulated": {"hit_rate": summary["hit_rate"], "p99_ms": summary["latency_ms"]["p99"],
                      "cost_per_hour": summary["cost"]["total"] / window_h if window_h > 0 else math.nan,
                      "accuracy": summary["accuracy"], "requests": summary["requests"]},
    }


def recommend(scenario: Scenario, *, rate_rps: float | None = None,
              window: tuple[float, float] | None = None) -> dict:
    """The plan and its simulated check, as ``simulate recommend --json`` prints it."""
    rate_rps = load_rate_rps(scenario, rate_rps, window)
    policy = planning_policy(scenario)
    result = policy.decide(rate_rps)
    if isinstance(result, Infeasible):
        raise InputError(f"SLA {policy.sla():g} ms at {rate_rps:.1f} rps", result.message)
    return checked(scenario, policy, result, rate_rps, window)


def front(scenario: Scenario, *, rate_rps: float | None = None, window: tuple[float, float] | None = None) -> dict:
    """The accuracy-cost front at the rate (``policies.ipa_solver.pareto_front``: every plan no
    other beats on both), each point simulated as ``recommend`` simulates its one plan."""
    rate_rps = load_rate_rps(scenario, rate_rps, window)
    policy = planning_policy(scenario)
    plans = pareto_front(policy.options(rate_rps), policy.sla(), score=policy.score, stage_names=policy.stage_names)
    if not plans:
        result = policy.decide(rate_rps)
        raise InputError(f"SLA {policy.sla():g} ms at {rate_rps:.1f} rps",
                         result.message if isinstance(result, Infeasible) else "no plan meets it")
    return {"rate_rps": rate_rps, "sla_ms": policy.sla(),
            "front": [checked(scenario, policy, plan, rate_rps, window) for plan in plans]}


def render(answer: dict) -> str:
    lines = [f"at {answer['rate_rps']:.1f} rps under an SLA of {answer['sla_ms']:g} ms:",
             f"  {'stage':10s} {'deployment':16s} {'variant':26s} {'batch':>5s} {'replicas':>8s} {'timeout ms':>10s} "
             f"{'latency ms':>10s} {'accuracy':>8s}"]
    for s in answer["stages"]:
        lines.append(f"  {s['name'] or '-':10s} {s['deployment']:16s} {s['variant']:26s} {s['max_batch_size']:5d} "
                     f"{s['replicas']:8d} {s['batch_wait_timeout_ms']:10.2f} {s['predicted_latency_ms']:10.2f} "
                     f"{s['accuracy']:8.4f}")
    p, m = answer["predicted"], answer["simulated"]
    lines += ["",
              f"  {'':10s} {'accuracy':>9s} {'latency ms':>11s} {'cost/hour':>10s} {'hit rate':>9s}",
              f"  {'predicted':10s} {p['accuracy']:9.4f} {p['latency_ms']:11.2f} {p['cost_per_hour']:10.3f} "
              f"{'':>9s}   (latency: the sum over stages of fill + p99 service + p99 queueing wait)",
              f"  {'simulated':10s} {m['accuracy']:9.4f} {m['p99_ms']:11.2f} {m['cost_per_hour']:10.3f} "
              f"{m['hit_rate']:9.4f}   (latency: p99 of {m['requests']} requests)"]
    return "\n".join(lines)


def render_front(answer: dict) -> str:
    lines = [f"the accuracy-cost front at {answer['rate_rps']:.1f} rps under an SLA of {answer['sla_ms']:g} ms "
             "(predicted; then simulated):",
             f"  {'cost/hour':>9s} {'accuracy':>8s} {'latency ms':>10s} | {'hit rate':>8s} {'accuracy':>8s} "
             f"{'p99 ms':>7s}  configuration (deployment/batch x replicas per stage)"]
    for point in answer["front"]:
        p, m = point["predicted"], point["simulated"]
        config = "  ".join(f"{s['deployment']}/b{s['max_batch_size']}x{s['replicas']}" for s in point["stages"])
        lines.append(f"  {p['cost_per_hour']:9.3f} {p['accuracy']:8.4f} {p['latency_ms']:10.2f} | {m['hit_rate']:8.4f} "
                     f"{m['accuracy']:8.4f} {m['p99_ms']:7.2f}  {config}")
    return "\n".join(lines)


def cmd_recommend(args) -> int:
    scenario = load_scenario(args.scenario, args.set)
    window = parse_window(args.window) if args.window is not None else None
    if args.front:
        answer = front(scenario, rate_rps=args.rate, window=window)
        print(json.dumps(answer, indent=2) if args.json else render_front(answer))
        return 0
    answer = recommend(scenario, rate_rps=args.rate, window=window)
    print(json.dumps(answer, indent=2) if args.json else render(answer))
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("scenario", help="the scenario file (TOML): its stages, deployments (the variants), "
                        "deadlines and arrivals")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a scenario key")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, metavar="RPS", help="plan for this arrival rate")
    load.add_argument("--window", metavar="START:LENGTH",
                      help="plan for the peak one-second rate of these seconds of the scenario's arrivals, "
                      "and simulate them")
    parser.add_argument("--front", action="store_true",
                        help="the whole accuracy-cost front instead of the one plan, every point simulated")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=cmd_recommend)


EXAMPLES = """examples:
  simulate recommend examples/pipeline.toml
  simulate recommend examples/pipeline.toml --rate 300 --json
  simulate recommend examples/ipa/pipeline.toml --window 0:600
  simulate recommend examples/pipeline.toml --set requests.deadline_ms=40
  simulate recommend examples/ipa/pipeline.toml --window 0:600 --front

It prints, per stage, the variant, batch size (with the batch timeout that lets it fill) and
replicas IPA's integer program chooses, the predicted accuracy, latency and cost, and then the
same configuration simulated on the scenario's arrivals: hit rate, p99 and cost. An SLA no
configuration meets fails with one line naming the stage and the excess (exit status 2)."""
