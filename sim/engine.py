"""The simulated executor: the serving core on SimPy's clock, with sampled service times.

The core (``sim.core``) decides; this module supplies what it asks for. A timer is a SimPy
timeout; a batch is a timeout of one service time drawn for its deployment (``sim.service``: the
bundle's measured latencies, or a parametric distribution), whose end calls the replica back.

Arrivals are not SimPy events. An open-loop workload's arrival times are known in advance, so
the run loop merges them with SimPy's event queue: it asks ``env.peek()`` for the next event and
either hands the core the next arrival (at its own time, without moving SimPy's clock) or lets
SimPy ``step()`` that event. That halves the events per request, using SimPy's public API only.
Because SimPy's clock may then lag behind the instant the core works at, every timeout is aimed
at an absolute time: its delay is the target less ``env.now``, nudged by an ulp where float
rounding would land it elsewhere, so an event fires exactly when the core asked.

Every random stream (arrivals, deadlines, samples, each deployment's service times, balancers,
faults) is spawned from the scenario seed, so the same seed gives the same bytes out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import simpy
from simpy.events import Timeout

from policies.base import Policy
from traces.bundle import TraceBundle
from traces.profiles import LatencyProfile, PredictionTable
from traces.runoutput import RequestSpool, RequestTable
from traces.scenario import Scenario
from traces.startup import StartupProfile
from traces.summary import Tally

from .core.batcher import Replica
from .core.serving import ServingCore
from .core.workload import STREAMS_BEFORE_DEPLOYMENTS
from .service import MeasuredSampler, ParametricSampler, TimelineSampler


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


def startup_rngs(seed: int, deployments: int) -> list[np.random.Generator]:
    """One stream per deployment for its start-up times, spawned after every stream of the
    workload (``sim.core.workload``), so adding them changed no other draw."""
    seqs = np.random.SeedSequence(seed).spawn(STREAMS_BEFORE_DEPLOYMENTS + 3 * deployments)
    return [np.random.default_rng(s) for s in seqs[STREAMS_BEFORE_DEPLOYMENTS + 2 * deployments:]]


def _startup_draw(config, bundle: TraceBundle | None, rng: np.random.Generator) -> Callable[[], float]:
    """A new replica's start-up time: ``startup_s`` if set, else a draw from the bundle's
    ``startup`` table for the variant, else 0 (no table: replicas are ready at once)."""
    if config.startup_s is not None:
        return lambda: config.startup_s
    if config.variant is not None and bundle is not None and len(bundle.startup):
        try:
            profile = StartupProfile.from_bundle(bundle, config.variant)
        except KeyError:
            return lambda: 0.0
        return lambda: profile.draw_s(rng)
    return lambda: 0.0


class Simulation:
    """One simulated run of a scenario: the executor of a ``ServingCore`` on a SimPy environment."""

    def __init__(self, scenario: Scenario, policy: Policy, *, bundle: TraceBundle | None = None,
                 profiles: dict[str, LatencyProfile], predictions: PredictionTable | None, seed: int,
                 stage_predictions: tuple = (), bundles: dict | None = None):
        """``stage_predictions``: a pipeline's table per stage; ``bundles``: each deployment's
        bundle (default ``bundle`` for all), where a new replica's start-up time is drawn from."""
        self.env = simpy.Environment()
        self.time_s = 0.0  # the instant the core works at: an arrival's time, or the event's
        self.next_event_s = math.inf  # when SimPy's next event is due
        self.running = False  # replicas started before the run serve at once
        self.samplers: list = []
        self.core = core = ServingCore(scenario, policy, self, profiles=profiles, predictions=predictions, seed=seed,
                                       stage_predictions=stage_predictions)
        for index, config in enumerate(scenario.deployments):
            service_rng = core.work.deployment_rngs[index][0]
            sampler = (ParametricSampler(config.service, config.max_batch_size, service_rng) if config.service
                       else MeasuredSampler(profiles[config.name], config.max_batch_size, service_rng))
            if config.service is None and profiles[config.name].timeline:
                sampler = TimelineSampler(profiles[config.name].timeline, sampler)
            self.samplers.append(sampler)
        for dep in core.deployments:  # a plan may have grown the batch before the run (in setup)
            if dep.max_batch_size > dep.config.max_batch_size:
                self.batching_changed(dep.index, dep.max_batch_size)
        bundles = bundles or {}
        self.startups = [_startup_draw(config, bundles.get(config.name, bundle), rng) for config, rng in
                         zip(scenario.deployments, startup_rngs(seed, len(scenario.deployments)))]

    @property
    def view(self):
        return self.core.view

    # --- the Executor the core runs on -------------------------------------------------------
    def now(self) -> float:
        return self.time_s

    def _delay(self, time_s: float) -> float:
        """The delay that makes a timeout created now fire at ``time_s``: exactly, unless float
        rounding of SimPy's ``now + delay`` (a tie) skips that value; then at the next float after it."""
        base = self.env.now
        delay = time_s - base
        if base + delay != time_s:
            up = base + delay < time_s
            for _ in range(4):
                delay = math.nextafter(delay, math.inf if up else -math.inf)
                if base + delay == time_s:
                    return delay
                if (base + delay > time_s) == up:  # stepped over it: unreachable
                    return delay if up else math.nextafter(delay, math.inf)
            while base + delay < time_s:
                delay = math.nextafter(delay, math.inf)
        return delay

    def _timeout(self, time_s: float) -> Timeout:
        delay = self._delay(time_s)
        event = Timeout(self.env, delay)
        at = self.env.now + delay
        if at < self.next_event_s:  # the run loop's record of SimPy's next event, kept without a peek
            self.next_event_s = at
        return event

    def call_at(self, time_s: float, callback: Callable[[object], None]) -> None:
        self._timeout(max(time_s, self.time_s)).callbacks.append(callback)

    def start_batch(self, replica: Replica, batch: list[int], now: float) -> None:
        end_s = now + self.samplers[replica.batcher.deployment].draw_s(len(batch), now, now - replica.free_s)
        base = self.env.now
        delay = end_s - base  # _timeout inlined: this is the hottest place an event is made
        if base + delay != end_s:
            delay = self._delay(end_s)
        event = replica.ticket = Timeout(self.env, delay)
        event.callbacks.append(replica.completed_at)
        if end_s < self.next_event_s:
            self.next_event_s = base + delay

    def start_replica(self, replica: Replica, now: float) -> bool:
        """Replicas there at the start serve at once; one added later after its start-up time."""
        startup_s = self.startups[replica.batcher.deployment]() if self.running else 0.0
        if startup_s <= 0:
            return True
        dep = replica.batcher.owner
        self.call_at(now + startup_s, lambda _event: dep.replica_ready(replica, self.time_s))
        return False

    def stop_replica(self, replica: Replica) -> None:
        pass

    def batching_changed(self, deployment: int, max_batch_size: int) -> None:
        if self.samplers:
            self.samplers[deployment].ensure_batch(max_batch_size)

    # --- running -------------------------------------------------------------------------------
    def _run_until(self, until_s: float) -> None:
        """Events and arrivals up to ``until_s`` in time order (at the same instant the event goes
        first, so a replica freed at t serves an arrival at t), in segments that end where the
        log's ring is full: then room is made for the arrival that needs it."""
        core = self.core
        log, times, n = core.log, core.arrival_times, core.log.n
        peek, step, arrive = self.env.peek, self.env.step, core.arrive
        self.next_event_s = peek()
        i = core.arrivals_seen
        while True:
            if i >= log.limit:
                log.make_room(i)
            stop = min(log.limit, n)
            bound = until_s if stop >= n else min(until_s, times[stop])  # no event past a blocked arrival
            submit = core.fixed_segment(i, stop) if i < stop else None
            while True:
                t_arrival = times[i] if i < stop else math.inf
                t_event = self.next_event_s
                if t_arrival < t_event:
                    if t_arrival > bound:
                        break
                    self.time_s = t_arrival
                    i += 1
                    if submit is None:
                        arrive(i - 1, t_arrival)
                    elif not submit(i - 1, t_arrival):
                        core.drop(i - 1, t_arrival, "queue_full")
                elif t_event <= bound and t_event != math.inf:
                    self.time_s = t_event
                    core.arrivals_seen = i
                    step()
                    self.next_event_s = peek()
                else:
                    break
            core.arrivals_seen = i
            if stop >= n or until_s < times[stop]:
                if until_s != math.inf and until_s > self.time_s:
                    self.time_s = until_s
                return

    def run(self, progress: Callable[[float], None] | None = None, spool_dir: str | None = None) -> RunResult:
        """Run until every arrival has finished or been dropped; ``progress`` gets sim-time updates.

        Requests stream to a Parquet spool (in ``spool_dir``, default the temporary directory) and
        the summary's tally as they retire, so memory stays flat in the number of requests."""
        core = self.core
        log = core.log
        spool, tally = RequestSpool(log.context.arrow_types(), spool_dir), Tally(keep_values=False)
        log.sinks = [spool.write, tally.add]
        log.ensure_hops(1)
        self.running = True
        core.start()
        if progress is not None:
            steps = 50
            for k in range(1, steps + 1):
                self._run_until(core.duration_s * k / steps)
                progress(core.duration_s * k / steps)
        self._run_until(math.inf)
        log.end_unfinished(max(self.time_s, core.duration_s))
        log.retire_all()
        requests = spool.close(log.empty_chunk())
        return RunResult(requests, core.deployment_stats(core.duration_s), core.fault_log, core.policy.report(),
                         tally, core.route_hops)
