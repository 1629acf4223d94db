"""The simulation: arrivals flow through policies' routes into deployments' batchers and replicas.

One SimPy environment drives everything with events and callbacks: one event per arrival, one
timeout per batch, at most one batching timer per waiting line, and one periodic process for the
policy's plan. Request state lives in the ring columns of ``traces.records.RequestLog``, retired
to a Parquet spool and the summary's tally as requests end. Every random stream (arrivals,
deadlines, samples, each deployment's service times, balancers) is spawned from the scenario seed,
so the same seed gives the same bytes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.base import PlanAction, Policy, Reject, Request, Route, check_plan_action, check_route
from policies.view import LiveView
from traces.bundle import TraceBundle
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable
from traces.runoutput import RequestSpool, RequestTable
from traces.scenario import Scenario
from traces.summary import Tally
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
    requests: RequestTable           # the requests table, on disk (``to_pandas()`` to load it)
    deployments: dict[str, dict]
    faults: list[dict]
    policy: dict
    tally: Tally                     # the summary's accumulators over every request
    route_hops: dict[str, int]       # route label -> hops, of every route the policy gave

    def summary(self, scenario: Scenario) -> dict:
        return self.tally.summary(warmup_s=scenario.warmup_s, duration_s=scenario.duration_s,
                                  deployments=self.deployments, price_per_replica_hour=scenario.price_per_replica_hour,
                                  route_hops=self.route_hops, values_from=self.requests)


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
        log = self.log  # i < log.limit: _run_until makes room before the arrival that needs it
        now = self.env.now
        route = self.policy.route(Request(i, self.arrival_times[i], self.deadline_classes_ms[self.deadline_class[i]],
                                          self.sample[i]), self.view)
        resolved = self._routes.get(route) or self._resolve(route)
        if resolved.__class__ is Reject:
            self.drop(i, now, resolved.reason)
        else:
            j = i & log.mask
            log.route[j] = resolved
            first = resolved.stages[0][0]
            hop0 = log.hops[0]
            hop0.deployment[j] = first.index
            hop0.enqueue_s[j] = now
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
    # Request i's live state sits at slot i & log.mask of the log's ring columns (traces.records);
    # the mask only changes when an arrival makes room, never inside these callbacks.
    def drop(self, request: int, now: float, reason: str) -> None:
        log = self.log
        j = request & log.mask
        log.drop_reason[j] = reason
        log.finish_s[j] = now

    def batch_started(self, deployment: int, batch: list[int], now: float, replica: int) -> None:
        log = self.log
        hop, hops, size, mask = log.hop, log.hops, len(batch), log.mask
        for i in batch:
            j = i & mask
            cols = hops[hop[j]]
            cols.start_s[j] = now
            cols.batch_size[j] = size
            cols.replica[j] = replica

    def batch_finished(self, deployment: int, batch: list[int], now: float) -> None:
        log = self.log
        hop, hops, routes, sample, finish, mask = log.hop, log.hops, log.route, self.sample, log.finish_s, log.mask
        for i in batch:
            j = i & mask
            k = hop[j]
            hops[k].finish_s[j] = now
            _, threshold, confidence = routes[j].stages[k]
            if confidence is not None and confidence[sample[i]] < threshold:
                k += 1
                hop[j] = k
                nxt = routes[j].stages[k][0]
                cols = hops[k]
                cols.deployment[j] = nxt.index
                cols.enqueue_s[j] = now
                if not nxt.submit(i, now):
                    self.drop(i, now, "queue_full")
            else:
                finish[j] = now

    def batch_failed(self, deployment: int, batch: list[int], now: float) -> None:
        """A replica crashed mid-batch: each request is retried on the deployment, or fails."""
        dep = self.deployments[deployment]
        retry = self._on_failure.get(deployment, "retry") == "retry"
        log = self.log
        for i in batch:
            j = i & log.mask
            log.retries[j] += 1
            if not retry:
                self.drop(i, now, "replica_failed")
                continue
            cols = log.hops[log.hop[j]]
            cols.start_s[j] = math.nan
            cols.batch_size[j] = 0
            cols.replica[j] = -1
            cols.enqueue_s[j] = now
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
        """Events and arrivals up to ``until_s``, in segments that end where the log's ring is full:
        arrivals below its limit, and events up to the first arrival beyond it (at the same instant
        the event goes first, as everywhere), then room is made for that arrival."""
        log, times, n = self.log, self.arrival_times, self.log.n
        while True:
            seen = self.arrivals_seen
            if seen >= log.limit:
                log.make_room(seen)
            stop = log.limit
            if stop >= n:
                self.arrivals_seen = self.env.run_merged(times, seen, self._arrive, until_s)
                return
            bound = min(until_s, times[stop])
            self.arrivals_seen = self.env.run_merged(memoryview(times)[:stop], seen, self._arrive, bound)
            if until_s < times[stop]:
                return

    def run(self, progress=None, spool_dir: str | None = None) -> RunResult:
        """Run until every arrival has finished or been dropped; ``progress`` gets sim-time updates.

        Requests stream to a Parquet spool (in ``spool_dir``, default the temporary directory) and
        the summary's tally as they retire, so memory stays flat in the number of requests."""
        log = self.log
        spool, tally = RequestSpool(log.context.arrow_types(), spool_dir), Tally(keep_values=False)
        log.sinks = [spool.write, tally.add]
        log.ensure_hops(1)
        self._start_faults()
        if self.scenario.policy.plan_interval_s > 0 and type(self.policy).plan is not Policy.plan:
            self.env.process(self._planner())
        if progress is not None:
            steps = 50
            for k in range(1, steps + 1):
                self._run_until(self.duration_s * k / steps)
                progress(self.duration_s * k / steps)
        self._run_until(math.inf)
        log.end_unfinished(max(self.env.now, self.duration_s))
        log.retire_all()
        requests = spool.close(log.empty_chunk())
        stats = {d.name: d.stats(self.duration_s) for d in self.deployments}
        route_hops = {r.label: len(r.stages) for r in self._routes.values() if r.__class__ is not Reject}
        return RunResult(requests, stats, self.fault_log, self.policy.report(), tally, route_hops)
