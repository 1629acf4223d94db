"""The real executor of a scenario (`measure serve`): the simulator's serving model, run for real.

The same workload as ``sim`` (``traces.workload``) is dispatched at its scheduled wall-clock
times by the calling thread, which routes each arrival with the policy and enqueues it; every
replica is a worker thread that forms batches by the simulator's rule (``sim.batcher``: up to
``max_batch_size`` once that many wait or the oldest has waited the timeout, expired requests
dropped at batch formation) and runs them on its own ``BatchRunner``. Queues are ``sim.queues``,
the request log is ``sim.records``, so the output has exactly the simulator's columns, plus
``dispatch_lag_s``. Times are seconds since ``t0``; a latency counts from the *scheduled* arrival.
No torch and no SimPy: replicas run whatever callables they are given.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Callable, Protocol, Sequence

import numpy as np
import pandas as pd

from policies.base import PlanAction, Policy, Reject, Request, Route
from sim.queues import make_queue
from sim.records import RequestLog
from traces.distributions import ServiceDistribution
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable
from traces.scenario import DeploymentConfig, Scenario
from traces.workload import STREAMS_BEFORE_DEPLOYMENTS, make_workload

from .server_view import ServerView, make_balancer

SPIN_S = 3e-4       # time.sleep overshoots by ~0.1 ms: sleep until this close, then spin
SWITCH_S = 2e-4     # GIL switch interval during a run, so spinning threads hand over quickly
STALL_S = 30.0      # after the last arrival: no completion for this long with no batch running
BLOCK = 8192        # unit variates per draw, as sim.service, so sleep runners replay its stream


class BatchRunner(Protocol):
    """Runs one real batch. Called from a replica worker thread."""

    def run(self, sample_indices: list[int]) -> tuple[list, list[float]]: ...


def wait_until(target: float) -> None:
    """Sleep to ``SPIN_S`` before ``target`` (perf_counter time), then spin with the GIL released."""
    rest = target - time.perf_counter() - SPIN_S
    if rest > 0:
        time.sleep(rest)
    while time.perf_counter() < target:
        time.sleep(0)


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


def _warm(runner: BatchRunner) -> None:
    warm = getattr(runner, "warmup", None)
    warm() if warm is not None else runner.run([0])


class _Stages:
    """A resolved route: ``label`` for the log, and (deployment, threshold or None) per hop."""

    __slots__ = ("label", "stages")

    def __init__(self, label: str, stages: tuple):
        self.label, self.stages = label, stages


class _Replica:
    __slots__ = ("index", "runner", "busy", "retiring", "busy_s", "batches", "items")

    def __init__(self, index: int, runner: BatchRunner | None):
        self.index, self.runner = index, runner
        self.busy = self.retiring = False
        self.busy_s, self.batches, self.items = 0.0, 0, 0


class _Batcher:
    """One waiting line, its condition variable, and the worker threads of the replicas serving it."""

    def __init__(self, server: "Server", dep: "_Deployment"):
        cfg = dep.config
        self.server, self.dep = server, dep
        self.cond = threading.Condition()
        self.queue = make_queue(cfg.queue, server.deadlines_s)
        self.max_b, self.timeout_s = dep.max_batch_size, dep.batch_wait_timeout_ms / 1000.0
        self.max_queue_size, self.drop_expired = cfg.max_queue_size, cfg.drop_expired
        self.replicas: list[_Replica] = []
        self.busy = 0
        self.stopping = False

    def submit(self, request: int, now: float) -> bool:
        """Enqueue; False when full. Wakes a worker only when the batching rule may have changed."""
        with self.cond:
            queue = self.queue
            if self.max_queue_size and len(queue) >= self.max_queue_size:
                return False
            queue.push(request, now)
            n = len(queue)
            if n == 1 or n >= self.max_b or self.timeout_s <= 0:
                self.cond.notify()
        return True

    def _next(self, rep: _Replica) -> list[int] | float | None:
        """Under the lock: a batch, or a time to spin to (the timeout is near), or None (exit)."""
        queue, cond, clock = self.queue, self.cond, self.server.clock
        while not (rep.retiring or self.stopping):
            if not queue:
                cond.wait()
                continue
            now = clock()
            if len(queue) < self.max_b and self.timeout_s > 0:
                ready = queue.oldest_s() + self.timeout_s
                if now < ready:
                    if ready - now > SPIN_S:
                        cond.wait(ready - now - SPIN_S)
                        continue
                    return ready
            batch = self._take(now)
            if batch:
                rep.busy, self.busy = True, self.busy + 1
                if queue:
                    cond.notify()  # another idle replica may take the rest
                return batch
        return None

    def _take(self, now: float) -> list[int]:
        queue, n = self.queue, min(self.max_b, len(self.queue))
        if not self.drop_expired:
            return [queue.take() for _ in range(n)]
        deadlines, batch = self.server.deadlines_s, []
        while queue and len(batch) < self.max_b:
            request = queue.take()
            if deadlines[request] <= now:
                self.server.drop(request, now, "expired")
            else:
                batch.append(request)
        return batch

    def work(self, rep: _Replica) -> None:
        """A replica's thread: form batches by the rule, run them, report them, until told to stop."""
        server = self.server
        try:
            if rep.runner is None:  # added by a plan: built and warmed here, not in the dispatcher
                rep.runner = self.dep.factory()
                _warm(rep.runner)
            while True:
                with self.cond:
                    got = self._next(rep)
                if got is None:
                    return
                if got.__class__ is float:
                    t_abs, queue = got + server.t0, self.queue
                    while time.perf_counter() < t_abs and len(queue) < self.max_b:
                        time.sleep(0)
                    continue
                start = server.clock()
                server.batch_started(got, start, rep.index)
                preds, confidences = rep.runner.run([server.sample[i] for i in got])
                finish = server.clock()
                lo, hi = server.window_s
                overlap = min(finish, hi) - max(start, lo)
                if overlap > 0:
                    rep.busy_s += overlap
                if lo <= start < hi:
                    rep.batches += 1
                    rep.items += len(got)
                server.batch_finished(got, finish, preds, confidences)
                with self.cond:
                    rep.busy, self.busy = False, self.busy - 1
        except BaseException as exc:  # reported by the dispatcher, which stops the run
            server.fail(exc)

    def add(self, rep: _Replica) -> None:
        self.replicas.append(rep)
        threading.Thread(target=self.work, args=(rep,), daemon=True, name=f"{self.dep.name}/{rep.index}").start()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


class _Deployment:
    """The replicas of one deployment behind one shared batcher, or one batcher each with a balancer."""

    def __init__(self, server: "Server", index: int, config: DeploymentConfig,
                 factory: Callable[[], BatchRunner], balance_rng: np.random.Generator):
        self.server, self.index, self.config, self.factory = server, index, config, factory
        self.name, self.variant = config.name, config.variant
        self.max_batch_size, self.batch_wait_timeout_ms = config.max_batch_size, config.batch_wait_timeout_ms
        self._balancer = make_balancer(config.balancer, balance_rng)
        self._lock = threading.Lock()  # the balancer's state and the batcher list
        self.batchers: list[_Batcher] = [] if self._balancer else [_Batcher(server, self)]
        self.all_batchers = list(self.batchers)
        self.replicas = 0
        self._replica_s = self._since_s = 0.0
        self._ids = 0

    def submit(self, request: int, now: float) -> bool:
        if self._balancer is None:
            return self.batchers[0].submit(request, now)
        with self._lock:
            return self._balancer(self.batchers).submit(request, now)

    @property
    def queue_length(self) -> int:
        return sum(len(b.queue) for b in self.batchers)

    @property
    def busy_replicas(self) -> int:
        return sum(b.busy for b in self.batchers)

    def new_replica(self, runner: BatchRunner | None) -> _Replica:
        self._ids += 1
        return _Replica(self._ids - 1, runner)

    def start(self, runners: list[BatchRunner]) -> None:
        for runner in runners:
            if self._balancer is not None:
                self.batchers.append(_Batcher(self.server, self))
                self.all_batchers.append(self.batchers[-1])
            self.batchers[-1].add(self.new_replica(runner))
        self.replicas = len(runners)

    def set_batching(self, max_batch_size: int | None, timeout_ms: float | None) -> None:
        if max_batch_size is not None:
            self.max_batch_size = max_batch_size
        if timeout_ms is not None:
            self.batch_wait_timeout_ms = timeout_ms
        for b in self.batchers:
            with b.cond:
                b.max_b, b.timeout_s = self.max_batch_size, self.batch_wait_timeout_ms / 1000.0
                b.cond.notify_all()

    def set_replicas(self, count: int, now: float) -> None:
        """New replicas start at once; idle ones are removed first, busy ones after their batch."""
        self._account(now)
        with self._lock:
            if self._balancer is None:
                batcher = self.batchers[0]
                with batcher.cond:
                    active = [r for r in batcher.replicas if not r.retiring]
                    for _ in range(count - len(active)):
                        batcher.add(self.new_replica(None))
                    victims = sorted(active, key=lambda r: r.busy)[:max(0, len(active) - count)]
                    for replica in victims:
                        replica.retiring = True
                    batcher.cond.notify_all()
                orphans: list[int] = []
            else:
                while len(self.batchers) < count:
                    self.batchers.append(_Batcher(self.server, self))
                    self.all_batchers.append(self.batchers[-1])
                    self.batchers[-1].add(self.new_replica(None))
                orphans = []
                while len(self.batchers) > count:
                    batcher = self.batchers.pop()
                    with batcher.cond:
                        orphans.extend(batcher.queue.drain())
                        for replica in batcher.replicas:
                            replica.retiring = True
                        batcher.cond.notify_all()
        self.replicas = count
        for request in orphans:
            if not self.submit(request, now):
                self.server.drop(request, now, "queue_full")

    def _account(self, now: float) -> None:
        lo, hi = self.server.window_s
        overlap = min(now, hi) - max(self._since_s, lo)
        if overlap > 0:
            self._replica_s += self.replicas * overlap
        self._since_s = now

    def stats(self, end_s: float) -> dict:
        """Busy fraction, replica-seconds and batches inside the measurement window (as sim's)."""
        self._account(max(end_s, self._since_s))
        reps = [r for b in self.all_batchers for r in b.replicas]
        busy_s, batches, items = (sum(r.busy_s for r in reps), sum(r.batches for r in reps),
                                  sum(r.items for r in reps))
        return {"replica_seconds": self._replica_s, "busy_seconds": busy_s,
                "utilization": busy_s / self._replica_s if self._replica_s > 0 else 0.0,
                "batches": batches, "mean_batch_size": items / batches if batches else 0.0}


class Server:
    """One run of a scenario on real threads; ``serve`` is the way to use it."""

    def __init__(self, scenario: Scenario, policy: Policy, runners: dict[str, Callable[[], BatchRunner]], *,
                 seed: int, labels: Sequence | None, profiles: dict[str, LatencyProfile],
                 predictions: PredictionTable | None):
        self.scenario, self.policy, self.profiles, self.labels = scenario, policy, profiles, labels
        self.predictions = predictions if predictions is not None and predictions.sample_ids.size else None
        work = make_workload(scenario, seed, self.predictions.sample_ids.size if self.predictions else 0)
        self.arrival_times: list[float] = work.arrival_s.tolist()
        self.arrivals_seen = 0
        self.log = RequestLog(work.arrival_s, work.deadline_ms, work.sample_index)
        self._deadline_ms = work.deadline_ms.tolist()
        self.sample: list[int] = work.sample_index.tolist()
        self.deadlines_s: list[float] = (work.arrival_s + work.deadline_ms / 1000.0).tolist()
        self.window_s = (scenario.warmup_s, scenario.duration_s)
        self.t0 = time.perf_counter()
        n = self.log.n
        self.pred: list = [None] * n
        self.lag = np.full(n, np.nan)
        self._done, self._done_lock, self._all_done = 0, threading.Lock(), threading.Event()
        self._error: BaseException | None = None
        self.deployments: list[_Deployment] = []
        for index, config in enumerate(scenario.deployments):
            if config.name not in runners:
                raise InputError(f"deployments.{config.name}", "no runner was given for this deployment")
            self.deployments.append(_Deployment(self, index, config, runners[config.name], work.deployment_rngs[index][1]))
        self._by_name = {d.name: d for d in self.deployments}
        self.deployment_names = tuple(self._by_name)
        self._routes: dict[object, _Stages | Reject] = {}
        self.view = ServerView(self)
        policy.setup(self.view)

    def clock(self) -> float:
        return time.perf_counter() - self.t0

    def deployment(self, name: str) -> _Deployment:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"policy {self.policy.name!r}", f"used unknown deployment {name!r}") from None

    def _resolve(self, route: object) -> _Stages | Reject:
        if isinstance(route, Reject):
            resolved: _Stages | Reject = route
        elif isinstance(route, Route) and route.hops:
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
        if action.max_batch_size is not None:
            limit = self.profiles[dep.name].max_batch_size if dep.variant else action.max_batch_size
            if not 1 <= action.max_batch_size <= limit:
                raise InputError(where, f"max_batch_size must be in 1..{limit} (the measured sizes), "
                                 f"got {action.max_batch_size}")
        if action.batch_wait_timeout_ms is not None and not action.batch_wait_timeout_ms >= 0:
            raise InputError(where, f"batch_wait_timeout_ms must be >= 0, got {action.batch_wait_timeout_ms}")
        if action.replicas is not None:
            if action.replicas < 1:
                raise InputError(where, f"replicas must be >= 1, got {action.replicas}")
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
        while plans and plans[0] <= until_s:
            wait_until(self.t0 + plans.pop(0))
            for action in self.policy.plan(self.view) or ():
                self.apply(action)

    # --- running ---------------------------------------------------------------------------
    def run(self, progress: bool = False) -> tuple[pd.DataFrame, dict]:
        self.log.ensure_hops(1)
        for dep in self.deployments:  # every replica built and warmed before the clock starts
            runners = [dep.factory() for _ in range(dep.config.replicas)]
            for runner in runners:
                _warm(runner)
            dep.start(runners)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_S)
        try:
            self.t0 = time.perf_counter()
            self._dispatch(progress)
            self._plan_until(self._plan_times_left, math.inf)
            self._drain()
        finally:
            for dep in self.deployments:
                for b in dep.all_batchers:
                    b.stop()
            sys.setswitchinterval(switch)
        if self._error is not None:
            raise self._error
        return self._results()

    def _dispatch(self, progress: bool) -> None:
        times, deadline_ms, sample, log, t0 = self.arrival_times, self._deadline_ms, self.sample, self.log, self.t0
        plans = self._plan_times_left = self._plan_times()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(times), unit="req", desc="serve", leave=False)
        hop0 = log.hops[0]
        for i, t in enumerate(times):
            if plans and plans[0] <= t:
                self._plan_until(plans, t)
            wait_until(t0 + t)
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
        pred_ids = self.predictions.sample_ids if self.predictions else None
        frame = self.log.to_frame(list(self.deployment_names), [d.variant for d in self.deployments], None,
                                  pred_ids, self.scenario.warmup_s)
        pred = np.empty(self.log.n, dtype=object)
        pred[:] = self.pred
        known = np.array([p is not None for p in self.pred]) & (self.labels is not None)
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
