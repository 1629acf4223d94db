"""The simulation: arrivals flow through policies' routes into deployments' batchers and replicas.

One SimPy environment drives everything with events and callbacks: one event per arrival, one
timeout per batch, at most one batching timer per waiting line, and one periodic process for the
policy's plan. Request state lives in flat lists (``RequestLog``). Every random stream (arrivals,
deadlines, samples, each deployment's service times, balancers) is spawned from the scenario seed,
so the same seed gives the same bytes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from policies.base import PlanAction, Policy, Reject, Request, Route, check_plan_action, check_route
from policies.view import LiveView
from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable
from traces.scenario import Scenario
from traces.workload import RunState

from .deployment import Deployment
from .environment import ServingEnvironment
from .service import MeasuredSampler, ParametricSampler, TimelineSampler


class _Stages:
    """A route as the engine uses it: (deployment, threshold, confidences or None) per hop."""

    __slots__ = ("label", "stages")

    def __init__(self, label: str, stages: tuple):
        self.label = label
        self.stages = stages


@dataclass
class RunResult:
    requests: pd.DataFrame
    deployments: dict[str, dict]
    faults: list[dict]
    policy: dict


class Simulation(RunState):
    def __init__(self, scenario: Scenario, policy: Policy, *, bundle: TraceBundle | None = None,
                 profiles: dict[str, LatencyProfile], predictions: PredictionTable | None, seed: int):
        self.scenario = scenario
        self.policy = policy
        self.env = ServingEnvironment()
        self.duration_s = scenario.duration_s
        RunState.__init__(self, scenario, seed, predictions)
        work = self.work
        window = (scenario.warmup_s, scenario.duration_s)
        self.profiles = profiles
        self.deployments: list[Deployment] = []
        for index, config in enumerate(scenario.deployments):
            service_rng, balance_rng = work.deployment_rngs[index]
            sampler = (ParametricSampler(config.service, config.max_batch_size, service_rng) if config.service
                       else MeasuredSampler(profiles[config.name], config.max_batch_size, service_rng))
            if config.service is None and profiles[config.name].timeline:
                sampler = TimelineSampler(profiles[config.name].timeline, sampler)
            self.deployments.append(Deployment(self.env, self, index, config, sampler, self.deadlines_s,
                                               window, balance_rng))
        self._by_name = {d.name: d for d in self.deployments}
        self._fault_rng = work.fault_rng
        self._on_failure = {self._by_name[f.deployment].index: f.on_failure for f in scenario.faults}
        self.fault_log: list[dict] = []
        self.deployment_names = tuple(self._by_name)
        self._routes: dict[object, _Stages | Reject] = {}  # Route and Reject hash by identity
        self.view = LiveView(self, lambda env=self.env: env.now)
        policy.setup(self.view)

    def deployment(self, name: str) -> Deployment:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"policy {self.policy.name!r}", f"used unknown deployment {name!r}") from None

    # --- arrivals and routing ---------------------------------------------------------------
    def _arrive(self, i: int) -> None:
        self.arrivals_seen = i + 1
        now = self.env.now
        route = self.policy.route(Request(i, self.arrival_times[i], self.deadline_ms[i], self.sample[i]), self.view)
        resolved = self._routes.get(route) or self._resolve(route)
        if resolved.__class__ is Reject:
            self.drop(i, now, resolved.reason)
        else:
            log = self.log
            log.route[i] = resolved
            first = resolved.stages[0][0]
            hop0 = log.hops[0]
            hop0.deployment[i] = first.index
            hop0.enqueue_s[i] = now
            if not first.submit(i, now):
                self.drop(i, now, "queue_full")

    def _resolve(self, route: object) -> _Stages | Reject:
        if isinstance(route, Reject):
            resolved: _Stages | Reject = route
        elif isinstance(route, Route) and route.hops:
            check_route(route, self.policy.name)
            last = len(route.hops) - 1
            stages = []
            for k, hop in enumerate(route.hops):
                dep = self.deployment(hop.deployment)
                confidence = None
                if hop.threshold is not None and k < last:
                    table = self.predictions
                    if table is None or dep.variant not in table.confidence:
                        raise InputError(f"policy {self.policy.name!r}", f"cascade threshold at deployment "
                                         f"{dep.name!r} needs per-sample predictions for its variant in the bundle")
                    confidence = table.confidence[dep.variant].tolist()
                stages.append((dep, hop.threshold, confidence))
            self.log.ensure_hops(len(stages))
            resolved = _Stages(route.label, tuple(stages))
        else:
            raise InputError(f"policy {self.policy.name!r}", f"route() must return a non-empty Route or a Reject, got {route!r}")
        self._routes[route] = resolved
        return resolved

    # --- the BatchSink the batchers report to -----------------------------------------------
    def drop(self, request: int, now: float, reason: str) -> None:
        self.log.drop_reason[request] = reason
        self.log.finish_s[request] = now

    def batch_started(self, deployment: int, batch: list[int], now: float, replica: int) -> None:
        log = self.log
        hop, hops, size = log.hop, log.hops, len(batch)
        for i in batch:
            cols = hops[hop[i]]
            cols.start_s[i] = now
            cols.batch_size[i] = size
            cols.replica[i] = replica

    def batch_finished(self, deployment: int, batch: list[int], now: float) -> None:
        log = self.log
        hop, hops, routes, sample, finish = log.hop, log.hops, log.route, self.sample, log.finish_s
        for i in batch:
            k = hop[i]
            hops[k].finish_s[i] = now
            _, threshold, confidence = routes[i].stages[k]
            if confidence is not None and confidence[sample[i]] < threshold:
                k += 1
                hop[i] = k
                nxt = routes[i].stages[k][0]
                cols = hops[k]
                cols.deployment[i] = nxt.index
                cols.enqueue_s[i] = now
                if not nxt.submit(i, now):
                    self.drop(i, now, "queue_full")
            else:
                finish[i] = now

    def batch_failed(self, deployment: int, batch: list[int], now: float) -> None:
        """A replica crashed mid-batch: each request is retried on the deployment, or fails."""
        dep = self.deployments[deployment]
        retry = self._on_failure.get(deployment, "retry") == "retry"
        log = self.log
        for i in batch:
            log.retries[i] += 1
            if not retry:
                self.drop(i, now, "replica_failed")
                continue
            cols = log.hops[log.hop[i]]
            cols.start_s[i] = math.nan
            cols.batch_size[i] = 0
            cols.replica[i] = -1
            cols.enqueue_s[i] = now
            if not dep.submit(i, now):
                self.drop(i, now, "queue_full")

    # --- faults --------------------------------------------------------------------------------
    def _outage(self, dep: Deployment, replica: int, down_s: float):
        now = self.env.now
        dep.crash(replica, now)
        record = {"deployment": dep.name, "replica": replica, "crash_s": now, "recover_s": now + down_s}
        self.fault_log.append(record)
        yield self.env.timeout(down_s)
        dep.recover(replica, self.env.now)

    def _scheduled_fault(self, fault):
        yield self.env.timeout(fault.at_s)
        yield from self._outage(self._by_name[fault.deployment], fault.replica, fault.down_s)

    def _random_faults(self, fault, replica: int):
        rng = self._fault_rng
        while True:
            yield self.env.timeout(rng.exponential(fault.mttf_s))
            if self.env.now >= self.duration_s:
                return
            yield from self._outage(self._by_name[fault.deployment], replica, rng.exponential(fault.mttr_s))

    def _start_faults(self) -> None:
        for fault in self.scenario.faults:
            if fault.at_s is not None:
                self.env.process(self._scheduled_fault(fault))
            else:
                for replica in range(self._by_name[fault.deployment].config.replicas):
                    self.env.process(self._random_faults(fault, replica))

    # --- plans -------------------------------------------------------------------------------
    def _planner(self):
        interval = self.scenario.policy.plan_interval_s
        while self.env.now + interval < self.duration_s:
            yield self.env.timeout(interval)
            for action in self.policy.plan(self.view) or ():
                self.apply(action)

    def apply(self, action: PlanAction) -> None:
        dep = self.deployment(action.deployment)
        where = f"policy {self.policy.name!r} plan for {dep.name!r}"
        now = self.env.now
        check_plan_action(action, where, self.profiles[dep.name].max_batch_size if dep.variant else None)
        if action.replicas is not None:
            dep.set_replicas(action.replicas, now)
        if action.max_batch_size is not None or action.batch_wait_timeout_ms is not None:
            dep.set_batching(action.max_batch_size, action.batch_wait_timeout_ms, now)

    # --- running -------------------------------------------------------------------------------
    def _run_until(self, until_s: float) -> None:
        self.arrivals_seen = self.env.run_merged(self.arrival_times, self.arrivals_seen, self._arrive, until_s)

    def run(self, progress=None) -> RunResult:
        """Run until every arrival has finished or been dropped; ``progress`` gets sim-time updates."""
        self.log.ensure_hops(1)
        self._start_faults()
        if self.scenario.policy.plan_interval_s > 0 and type(self.policy).plan is not Policy.plan:
            self.env.process(self._planner())
        if progress is not None:
            steps = 50
            for k in range(1, steps + 1):
                self._run_until(self.duration_s * k / steps)
                progress(self.duration_s * k / steps)
        self._run_until(math.inf)
        end_s = max(self.env.now, self.duration_s)
        for i in range(self.log.n):
            if math.isnan(self.log.finish_s[i]):
                self.drop(i, end_s, "unfinished")
        frame = self.log.to_frame(list(self.deployment_names), [d.variant for d in self.deployments],
                                  self.predictions, self.predictions.sample_ids if self.predictions else None,
                                  self.scenario.warmup_s)
        stats = {d.name: d.stats(self.duration_s) for d in self.deployments}
        return RunResult(frame, stats, self.fault_log, self.policy.report())
