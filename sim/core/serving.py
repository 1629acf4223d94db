"""The serving core: arrivals flow through the policy's routes into deployments, hop by hop.

One ``ServingCore`` per run holds the live system: the workload and the request log
(``RunState``), the deployments with their batchers and replicas, the policy and its view. It
decides everything and waits for nothing: an executor (``sim.core.executor``) tells it when a
request arrives (``arrive``), and a batch's end reaches it through its replica, and it asks the
executor for timers and for batches to be run. So the simulator and the real server serve with
one set of rules: route resolution, cascade forward-or-finish, retries after a crash, faults on a
schedule or at random, plans applied every ``plan_interval_s``.

Request ``i``'s live state sits at slot ``i & log.mask`` of the log's ring columns
(``sim.core.records``); the mask only changes when an executor makes room before an arrival,
never inside these callbacks. The real server calls the core from several threads, one at a time
under its lock.
"""

from __future__ import annotations

import math

from policies.base import PlanAction, Policy, Reject, Request, Route, check_plan_action, check_route
from policies.view import LiveView
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable
from traces.scenario import Scenario
from traces.stages import stage_index

from .deployment import Deployment
from .executor import Executor
from .workload import RunState


class ResolvedRoute:
    """A route as the core uses it: (deployment, threshold, confidences or None) per hop."""

    __slots__ = ("label", "stages")

    def __init__(self, label: str, stages: tuple):
        self.label = label
        self.stages = stages


class ServingCore(RunState):
    """The live system of one run (module docstring); ``executor`` runs it."""

    def __init__(self, scenario: Scenario, policy: Policy, executor: Executor, *,
                 profiles: dict[str, LatencyProfile], predictions: PredictionTable | None, seed: int,
                 live_confidence: bool = False, labels=None, stage_labels: tuple = (), stage_predictions: tuple = ()):
        """``live_confidence``: cascades exit on the confidences the executor reports with each
        batch (the real server's runners), not on the prediction table's, and the log records its
        runners' answers, checked against ``stage_labels`` (``sim.core.workload.RunState``)."""
        self.scenario = scenario
        self.policy = policy
        self.executor = executor
        self.duration_s = scenario.duration_s
        self.profiles = profiles
        RunState.__init__(self, scenario, seed, predictions, live_confidence=live_confidence, labels=labels,
                          stage_labels=stage_labels, stage_predictions=stage_predictions)
        self.stages = tuple((s.name, s.deployments) for s in scenario.stages) or (
            ("", tuple(d.name for d in scenario.deployments)),)  # the view's stages: one without [[stages]]
        self.stage_of = stage_index(scenario.stages, [d.name for d in scenario.deployments])
        self.live_confidence = live_confidence
        window = (scenario.warmup_s, scenario.duration_s)
        if scenario.tenants:  # what the tenants' queues order by (sim.core.tenancy)
            from .admission import QueueTenancy

            self.queue_tenancy = QueueTenancy.of(self.tenant, scenario.tenants)
        self.deployments: list[Deployment] = [
            Deployment(executor, self, index, config, self.deadlines_s, window, self.work.deployment_rngs[index][1])
            for index, config in enumerate(scenario.deployments)]
        self._by_name = {d.name: d for d in self.deployments}
        self.deployment_names = tuple(self._by_name)
        self._on_failure = {self._by_name[f.deployment].index: f.on_failure for f in scenario.faults}
        self.fault_log: list[dict] = []
        self.timeline: list[tuple] = []  # rows of timeline.parquet (sim.core.scaling)
        self._routes: dict[object, ResolvedRoute | Reject] = {}  # Route and Reject hash by identity
        self.view = LiveView(self, executor.now)
        policy.setup(self.view)
        self._fixed = policy.fixed_route()
        self._fixed_resolved: ResolvedRoute | Reject | None = None  # resolved at the first arrival
        if self._fixed is not None:
            self.arrive = self._arrive_fixed
        self.admission = None
        if scenario.tenants:  # admission first (sim.core.admission); the policy sees each request's tenant
            from .admission import Admission

            self.admission = Admission(self, scenario.tenants)
            self.arrive = self.admission.wrap(self._arrive_fixed if self._fixed is not None else self._arrive_tenant)
            if self.admission.counted:
                self.drop, self.batch_finished = self._drop_counted, self._finished_counted

    def deployment(self, name: str) -> Deployment:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"policy {self.policy.name!r}", f"used unknown deployment {name!r}") from None

    # --- arrivals and routing ---------------------------------------------------------------
    def arrive(self, i: int, now: float) -> None:
        """Request ``i`` arrives at ``now``: the policy routes it to its first hop, or rejects it."""
        self.arrivals_seen = i + 1
        route = self.policy.route(Request(i, self.arrival_times[i], self.deadline_classes_ms[self.deadline_class[i]],
                                          self.sample[i]), self.view)
        self._admit(i, now, self._routes.get(route) or self.resolve(route))

    def _arrive_tenant(self, i: int, now: float) -> None:
        """``arrive`` in a scenario with tenants: the policy also sees whose request it is."""
        self.arrivals_seen = i + 1
        route = self.policy.route(Request(i, self.arrival_times[i], self.deadline_classes_ms[self.deadline_class[i]],
                                          self.sample[i], self.tenant_names[self.tenant[i]]), self.view)
        self._admit(i, now, self._routes.get(route) or self.resolve(route))

    def _arrive_fixed(self, i: int, now: float) -> None:
        """``arrive`` for a policy with a fixed route: no per-request call to the policy."""
        self.arrivals_seen = i + 1
        self._admit(i, now, self._fixed_route())

    def _fixed_route(self) -> "ResolvedRoute | Reject":
        """The fixed route, resolved at its first use (an arrival, or a segment of them)."""
        if self._fixed_resolved is None:
            self._fixed_resolved = self._routes.get(self._fixed) or self.resolve(self._fixed)
        return self._fixed_resolved

    def fixed_segment(self, lo: int, hi: int):
        """Admit arrivals ``lo`` to ``hi`` ahead, when every one takes the same route and nothing
        stands before its first queue (no tenants' admission): their route, first deployment and
        enqueue time (the arrival time) are written at once, and the first hop's ``submit`` is
        returned for the executor to call at each arrival (a False is a full queue: ``drop``).
        None: arrivals go through ``arrive`` one at a time."""
        if self._fixed is None or self.admission is not None:
            return None
        resolved = self._fixed_route()
        if resolved.__class__ is Reject:
            return None
        first = resolved.stages[0][0]
        self.log.admit_stretch(lo, hi, resolved, first.index, self.arrival_times)
        return first.submit

    def _admit(self, i: int, now: float, resolved: "ResolvedRoute | Reject") -> None:
        """Request ``i`` joins its route's first hop, or is dropped (a rejection, a full queue)."""
        if resolved.__class__ is Reject:
            self.drop(i, now, resolved.reason)
            return
        log = self.log  # i < log.limit: the executor makes room before the arrival that needs it
        j = i & log.mask
        log.route[j] = resolved
        first = resolved.stages[0][0]
        hop0 = log.hops[0]
        hop0.deployment[j] = first.index
        hop0.enqueue_s[j] = now
        if not first.submit(i, now):
            self.drop(i, now, "queue_full")

    def resolve(self, route: object) -> ResolvedRoute | Reject:
        """Check a route the policy gave for the first time, and remember what it resolves to: per
        hop (deployment, threshold, its variant's confidences or None, where a request that leaves
        the hop's stage goes next (None: it ends), the stage's samples)."""
        if isinstance(route, Reject):
            resolved: ResolvedRoute | Reject = route
        elif isinstance(route, Route) and route.hops:
            check_route(route, self.policy.name)
            deps = [self.deployment(hop.deployment) for hop in route.hops]
            stage = [self.stage_of[dep.name] for dep in deps]
            self._check_stages(route, stage)
            stages = []
            for k, (hop, dep) in enumerate(zip(route.hops, deps)):
                leaves = k + 1 == len(deps) or stage[k + 1] != stage[k]  # the stage's last hop
                threshold = None if leaves else hop.threshold
                confidence = None
                if threshold is not None and not self.live_confidence:
                    table = self.stage_predictions[stage[k]]
                    if table is None or dep.variant not in table.confidence:
                        raise InputError(f"policy {self.policy.name!r}", f"cascade threshold at deployment "
                                         f"{dep.name!r} needs per-sample predictions for its variant in the bundle")
                    confidence = table.confidence[dep.variant].tolist()
                exit_to = next((m for m in range(k + 1, len(deps)) if stage[m] != stage[k]), None)
                stages.append((dep, threshold, confidence, exit_to, self.stage_samples[stage[k]]))
            self.log.ensure_hops(len(stages))
            resolved = ResolvedRoute(route.label, tuple(stages))
        else:
            raise InputError(f"policy {self.policy.name!r}", f"route() must return a non-empty Route or a Reject, got {route!r}")
        self._routes[route] = resolved
        return resolved

    def _check_stages(self, route: Route, stage: list[int]) -> None:
        """A pipeline's route visits every stage once, in order (a stage may cascade)."""
        expected = 0
        for k, s in enumerate(stage):
            if s == expected + 1 and k > 0:
                expected = s
            elif s != expected:
                break
        else:
            if expected == len(self.stages) - 1:
                return
        names = [self.stages[s][0] for s in stage]
        raise InputError(f"policy {self.policy.name!r}", f"route {route.label} visits stages {' > '.join(names)}; "
                         f"a route must pass through every stage in order: {' > '.join(n for n, _ in self.stages)}")

    @property
    def route_hops(self) -> dict[str, int]:
        """Route label -> hops, of every route the policy gave."""
        return {r.label: len(r.stages) for r in self._routes.values() if r.__class__ is not Reject}

    # --- the BatchSink the batchers report to -----------------------------------------------
    def drop(self, request: int, now: float, reason: str) -> None:
        log = self.log
        j = request & log.mask
        log.drop_reason[j] = reason
        log.finish_s[j] = now

    def _drop_counted(self, request: int, now: float, reason: str) -> None:
        """``drop`` when a tenant has a quota: the request's place is freed."""
        ServingCore.drop(self, request, now, reason)
        self.admission.ended(request, now, reason)

    def _finished_counted(self, deployment: int, batch: list[int], now: float,
                          confidences: list[float] | None = None) -> None:
        """``batch_finished`` when a tenant has a quota: requests that ended free their places."""
        ServingCore.batch_finished(self, deployment, batch, now, confidences)
        log = self.log
        for i in batch:
            j = i & log.mask
            if log.finish_s[j] == now and log.drop_reason[j] is None:
                self.admission.ended(i, now, None)

    def batch_started(self, deployment: int, batch: list[int], now: float, replica: int) -> None:
        log = self.log
        hop, hops, size, mask = log.hop, log.hops, len(batch), log.mask
        for i in batch:
            j = i & mask
            cols = hops[hop[j]]
            cols.start_s[j] = now
            cols.batch_size[j] = size
            cols.replica[j] = replica

    def batch_finished(self, deployment: int, batch: list[int], now: float,
                       confidences: list[float] | None = None) -> None:
        """A request below its hop's threshold goes on to the next hop (a cascade exits at
        ``confidence >= threshold``); the others end here. ``confidences``: the runner's, per
        request (the real server); None: the prediction table's."""
        if confidences is not None:
            self._finished_live(batch, now, confidences)
            return
        log = self.log
        hop, hops, routes, finish, mask = log.hop, log.hops, log.route, log.finish_s, log.mask
        for i in batch:
            j = i & mask
            k = hop[j]
            hops[k].finish_s[j] = now
            _, threshold, confidence, exit_to, samples = routes[j].stages[k]
            if confidence is not None and confidence[samples[i]] < threshold:
                self._forward(i, j, k + 1, now)
            elif exit_to is not None:  # on to the pipeline's next stage
                self._forward(i, j, exit_to, now)
            else:
                finish[j] = now

    def _finished_live(self, batch: list[int], now: float, confidences: list[float]) -> None:
        log = self.log
        hop, hops, routes, mask = log.hop, log.hops, log.route, log.mask
        for position, i in enumerate(batch):
            j = i & mask
            k = hop[j]
            cols = hops[k]
            cols.finish_s[j] = now
            confidence = cols.confidence[j] = confidences[position]
            _, threshold, _, exit_to, _ = routes[j].stages[k]
            if threshold is not None and confidence < threshold:
                self._forward(i, j, k + 1, now)
            elif exit_to is not None:
                self._forward(i, j, exit_to, now)
            else:
                log.finish_s[j] = now

    def _forward(self, i: int, j: int, k: int, now: float) -> None:
        """Request ``i`` (slot ``j``) goes on to hop ``k`` of its route."""
        log = self.log
        log.hop[j] = k
        nxt = log.route[j].stages[k][0]
        cols = log.hops[k]
        cols.deployment[j] = nxt.index
        cols.enqueue_s[j] = now
        if not nxt.submit(i, now):
            self.drop(i, now, "queue_full")

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

    # --- faults and plans, on the executor's timers ---------------------------------------------
    def start(self) -> None:
        """Set the timers of faults and plans; the executor calls it once, as its clock starts."""
        from .faults import schedule_faults
        from .scaling import Watch

        schedule_faults(self)
        for dep in self.deployments:
            Watch(self, dep).start()
        interval = self.scenario.policy.plan_interval_s
        self._plan_due_s = interval  # plans keep to their grid, however late a real timer fires
        if interval > 0 and type(self.policy).plan is not Policy.plan and interval < self.duration_s:
            self.executor.call_at(interval, self._plan_tick)

    def _plan_tick(self, _event: object = None) -> None:
        now = self.executor.now()
        for action in self.policy.plan(self.view) or ():
            self.apply(action, now)
        self._plan_due_s += self.scenario.policy.plan_interval_s
        if self._plan_due_s < self.duration_s:
            self.executor.call_at(self._plan_due_s, self._plan_tick)

    def apply(self, action: PlanAction, now: float) -> None:
        dep = self.deployment(action.deployment)
        where = f"policy {self.policy.name!r} plan for {dep.name!r}"
        check_plan_action(action, where, self.profiles[dep.name].max_batch_size if dep.variant else None)
        if action.replicas is not None:
            dep.set_replicas(action.replicas, now)
        if action.max_batch_size is not None or action.batch_wait_timeout_ms is not None:
            dep.set_batching(action.max_batch_size, action.batch_wait_timeout_ms, now)

    def deployment_stats(self, end_s: float) -> dict[str, dict]:
        return {d.name: d.stats(end_s) for d in self.deployments}
