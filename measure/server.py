"""The real executor of a scenario (`measure serve`): the simulator's serving model, run for real.

The same workload as ``sim`` (``traces.workload``) is dispatched at its scheduled wall-clock
times by the calling thread, which routes each arrival with the policy and enqueues it; every
replica is a worker thread that forms batches by the simulator's rule (``sim.batcher``: up to
``max_batch_size`` once that many wait or the oldest has waited the timeout, expired requests
dropped at batch formation) and runs them on its own ``BatchRunner``. Queues are ``traces.queues``,
the request log is ``traces.records``, so the output has exactly the simulator's columns, plus
``dispatch_lag_s``. Times are seconds since ``t0``; a latency counts from the *scheduled* arrival.
No torch and no SimPy: replicas run whatever callables they are given.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from policies.base import PlanAction, Policy, Reject, Request, Route, check_plan_action, check_route
from policies.view import LiveView
from traces.distributions import ServiceDistribution
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable
from traces.scenario import Scenario
from traces.workload import STREAMS_BEFORE_DEPLOYMENTS, RunState

from .server_view import BatchRunner, Deployment, set_timer_slack, wait_until, warm

__all__ = ["BatchRunner", "SleepRunner", "parametric_runners", "serve", "sleep_runner_factory", "wait_until"]

SWITCH_S = 2e-4     # GIL switch interval during a run, so spinning threads hand over quickly
STALL_S = 30.0      # after the last arrival: no completion for this long with no batch running
JOIN_S = 60.0       # how long a replica may take to finish its batch once the run is over
BLOCK = 8192        # unit variates per draw, as sim.service, so sleep runners replay its stream


class _UnitBlocks:
    """Service times of one parametric deployment, shared by its replicas, in the simulator's order."""

    def __init__(self, dist: ServiceDistribution, rng: np.random.Generator):
        self.dist, self._rng, self._lock = dist, rng, threading.Lock()
        self._unit: list[float] = []
        self._k = BLOCK

    def draw_s(self, batch_size: int) -> float:
        with self._lock:
            if self._k == BLOCK:
                self._unit, self._k = self.dist.unit_draws(self._rng, BLOCK).tolist(), 0
            unit = self._unit[self._k]
            self._k += 1
        return unit * self.dist.batch_mean_ms(batch_size) / 1000.0


class SleepRunner:
    """A parametric replica: occupies its thread for one sampled service time, predicts nothing."""

    def __init__(self, blocks: _UnitBlocks):
        self._blocks = blocks

    def warmup(self) -> None:
        """Nothing to initialise; skipping the draw keeps the service stream aligned with sim's."""

    def run(self, sample_indices: list[int]) -> tuple[list, list[float]]:
        wait_until(time.perf_counter() + self._blocks.draw_s(len(sample_indices)))
        return [None] * len(sample_indices), [math.nan] * len(sample_indices)


def sleep_runner_factory(dist: ServiceDistribution, rng: np.random.Generator) -> Callable[[], BatchRunner]:
    blocks = _UnitBlocks(dist, rng)
    return lambda: SleepRunner(blocks)


def parametric_runners(scenario: Scenario, seed: int) -> dict[str, Callable[[], BatchRunner]]:
    """Sleep runners for the parametric deployments, on the service streams ``sim`` draws from."""
    seqs = np.random.SeedSequence(seed).spawn(STREAMS_BEFORE_DEPLOYMENTS + 2 * len(scenario.deployments))
    return {d.name: sleep_runner_factory(d.service, np.random.default_rng(seqs[STREAMS_BEFORE_DEPLOYMENTS + 2 * k]))
            for k, d in enumerate(scenario.deployments) if d.service is not None}


class _Stages:
    """A resolved route: ``label`` for the log, and (deployment, threshold or None) per hop."""

    __slots__ = ("label", "stages")

    def __init__(self, label: str, stages: tuple):
        self.label, self.stages = label, stages


class Server(RunState):
    """One run of a scenario on real threads; ``serve`` is the way to use it."""

    def __init__(self, scenario: Scenario, policy: Policy, runners: dict[str, Callable[[], BatchRunner]], *,
                 seed: int, labels: Sequence | None, profiles: dict[str, LatencyProfile],
                 predictions: PredictionTable | None):
        self.scenario, self.policy, self.profiles, self.labels = scenario, policy, profiles, labels
        # the log holds every request (slot == id: threads write it without a lock) and records
        # each hop's confidence as the runner gave it
        RunState.__init__(self, scenario, seed, predictions, whole_log=True, live_confidence=True, labels=labels)
        work = self.work
        self.window_s = (scenario.warmup_s, scenario.duration_s)
        self.t0 = time.perf_counter()
        n = self.log.n
        self.pred: list = [None] * n
        self.lag = np.full(n, np.nan)
        self._done, self._done_lock, self._all_done = 0, threading.Lock(), threading.Event()
        if n == 0:
            self._all_done.set()
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self.deployments: list[Deployment] = []
        for index, config in enumerate(scenario.deployments):
            if config.name not in runners:
                raise InputError(f"deployments.{config.name}", "no runner was given for this deployment")
            self.deployments.append(Deployment(self, index, config, runners[config.name], work.deployment_rngs[index][1]))
        self._by_name = {d.name: d for d in self.deployments}
        self.deployment_names = tuple(self._by_name)
        self._routes: dict[object, _Stages | Reject] = {}
        self.view = LiveView(self, self.clock)
        policy.setup(self.view)

    def clock(self) -> float:
        return time.perf_counter() - self.t0

    def deployment(self, name: str) -> Deployment:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"policy {self.policy.name!r}", f"used unknown deployment {name!r}") from None

    def _resolve(self, route: object) -> _Stages | Reject:
        if isinstance(route, Reject):
            resolved: _Stages | Reject = route
        elif isinstance(route, Route) and route.hops:
            check_route(route, self.policy.name)
            last = len(route.hops) - 1
            stages = tuple((self.deployment(h.deployment), h.threshold if k < last else None)
                           for k, h in enumerate(route.hops))
            self.log.ensure_hops(len(stages))
            resolved = _Stages(route.label, stages)
        else:
            raise InputError(f"policy {self.policy.name!r}", f"route() must return a non-empty Route or a Reject, got {route!r}")
        self._routes[route] = resolved
        return resolved

    # --- what replicas and the dispatcher report -------------------------------------------
    def _count(self, k: int) -> None:
        with self._done_lock:
            self._done += k
            if self._done >= self.log.n:
                self._all_done.set()

    def fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._failed.set()
        self._all_done.set()

    def drop(self, request: int, now: float, reason: str) -> None:
        self.log.drop_reason[request] = reason
        self.log.finish_s[request] = now
        self._count(1)

    def batch_started(self, batch: list[int], now: float, replica: int) -> None:
        hop, hops, size = self.log.hop, self.log.hops, len(batch)
        for i in batch:
            cols = hops[hop[i]]
            cols.start_s[i], cols.batch_size[i], cols.replica[i] = now, size, replica

    def batch_finished(self, batch: list[int], now: float, preds: list, confidences: list[float]) -> None:
        """Forward a request below its hop's threshold (on the runner's real confidence), else end it."""
        log = self.log
        hop, hops, routes, ended = log.hop, log.hops, log.route, 0
        for j, i in enumerate(batch):
            k = hop[i]
            hops[k].finish_s[i] = now
            hops[k].confidence[i] = confidences[j]
            threshold = routes[i].stages[k][1]
            if threshold is not None and confidences[j] < threshold:
                k += 1
                hop[i] = k
                nxt = routes[i].stages[k][0]
                hops[k].deployment[i], hops[k].enqueue_s[i] = nxt.index, now
                if not nxt.submit(i, now):
                    self.drop(i, now, "queue_full")
            else:
                log.finish_s[i] = now
                self.pred[i] = preds[j]
                ended += 1
        self._count(ended)

    # --- plans -----------------------------------------------------------------------------
    def apply(self, action: PlanAction) -> None:
        dep = self.deployment(action.deployment)
        where = f"policy {self.policy.name!r} plan for {dep.name!r}"
        check_plan_action(action, where, self.profiles[dep.name].max_batch_size if dep.variant else None)
        if action.replicas is not None:
            dep.set_replicas(action.replicas, self.clock())
        if action.max_batch_size is not None or action.batch_wait_timeout_ms is not None:
            dep.set_batching(action.max_batch_size, action.batch_wait_timeout_ms)

    def _plan_times(self) -> list[float]:
        interval, times, t = self.scenario.policy.plan_interval_s, [], 0.0
        if interval > 0 and type(self.policy).plan is not Policy.plan:
            while t + interval < self.scenario.duration_s:
                t += interval
                times.append(t)
        return times

    def _plan_until(self, plans: list[float], until_s: float) -> None:
        """Plans run in the dispatcher thread, so a policy never sees route() and plan() at once."""
        while plans and plans[0] <= until_s and self._error is None:
            wait_until(self.t0 + plans.pop(0), self._failed)
            for action in self.policy.plan(self.view) or ():
                self.apply(action)

    # --- running ---------------------------------------------------------------------------
    def run(self, progress: bool = False) -> tuple[pd.DataFrame, dict]:
        self.log.ensure_hops(1)
        switch, slack = sys.getswitchinterval(), None
        try:
            for dep in self.deployments:  # every replica built and warmed before the clock starts
                runners = [dep.factory() for _ in range(dep.config.replicas)]
                for runner in runners:
                    warm(runner)
                dep.start(runners)
            slack = set_timer_slack(1)
            sys.setswitchinterval(SWITCH_S)
            self.t0 = time.perf_counter()
            plans = self._plan_times()
            self._dispatch(plans, progress)
            self._plan_until(plans, math.inf)
            self._drain()
        finally:
            batchers = [b for dep in self.deployments for b in dep.all_batchers]
            for b in batchers:
                b.stop()
            for b in batchers:
                b.join(JOIN_S)
            sys.setswitchinterval(switch)
            if slack is not None:
                set_timer_slack(slack)
        if self._error is not None:
            raise self._error
        return self._results()

    def _dispatch(self, plans: list[float], progress: bool) -> None:
        times, deadline_ms, sample, log, t0 = self.arrival_times, self.deadline_ms, self.sample, self.log, self.t0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(times), unit="req", desc="serve", leave=False)
        hop0 = log.hops[0]
        for i, t in enumerate(times):
            if plans and plans[0] <= t:
                self._plan_until(plans, t)
            wait_until(t0 + t, self._failed)
            if self._error is not None:
                break
            now = time.perf_counter() - t0
            self.lag[i] = now - t
            self.arrivals_seen = i + 1
            route = self.policy.route(Request(i, t, deadline_ms[i], sample[i]), self.view)
            resolved = self._routes.get(route) or self._resolve(route)
            if resolved.__class__ is Reject:
                self.drop(i, now, resolved.reason)
            else:
                log.route[i] = resolved
                first = resolved.stages[0][0]
                hop0.deployment[i], hop0.enqueue_s[i] = first.index, now
                if not first.submit(i, now):
                    self.drop(i, now, "queue_full")
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()

    def _drain(self) -> None:
        """Wait until every request finished or was dropped; give up only on a stall."""
        last, since = -1, time.perf_counter()
        while not self._all_done.wait(0.05) and self._error is None:
            busy = any(d.busy_replicas for d in self.deployments)
            if self._done != last or busy:
                last, since = self._done, time.perf_counter()
            elif time.perf_counter() - since > STALL_S:
                break
        end_s = max(self.clock(), self.scenario.duration_s)
        for i in range(self.log.n):
            if math.isnan(self.log.finish_s[i]):
                self.drop(i, end_s, "unfinished")

    def _results(self) -> tuple[pd.DataFrame, dict]:
        frame = self.log.to_frame()
        pred = np.empty(self.log.n, dtype=object)
        for i, p in enumerate(self.pred):  # element-wise: a prediction may itself be a sequence
            pred[i] = p
        known = np.array([p is not None for p in self.pred], dtype=bool) & (self.labels is not None)
        correct = np.zeros(self.log.n, dtype=bool)
        if self.labels is not None:
            for i in np.flatnonzero(known):
                correct[i] = bool(pred[i] == self.labels[self.sample[i]])
        frame["pred"] = pred
        frame["correct"] = pd.arrays.BooleanArray(correct, ~known)
        frame["dispatch_lag_s"] = self.lag
        return frame, {d.name: d.stats(self.scenario.duration_s) for d in self.deployments}


def serve(scenario: Scenario, policy: Policy, runners: dict[str, Callable[[], BatchRunner]], *, seed: int,
          labels: Sequence | None, profiles: dict[str, LatencyProfile], predictions: PredictionTable | None,
          progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Serve ``scenario`` for real; returns (requests frame as sim's + ``dispatch_lag_s``, deployment stats)."""
    return Server(scenario, policy, runners, seed=seed, labels=labels, profiles=profiles,
                  predictions=predictions).run(progress)
