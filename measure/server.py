"""The real executor of a scenario (`measure serve`): the serving core, run on real replicas.

The core (``sim.core``) that the simulator drives decides here too; this module supplies the
wall clock and real work. The calling thread dispatches the workload (``sim.core.workload``, the
simulator's arrivals, deadlines and samples) at its scheduled times, a timer thread
(``measure.realtime.Timers``) fires the core's batching waits, plans and faults, and every
replica is a worker thread that runs the batches the core gives it on its own ``BatchRunner``
and reports each one's end, with the runner's confidences, which a cascade exits on. All of them
call the core under one lock, so a policy never sees ``route()`` and ``plan()`` at once and every
rule exists once. A replica a plan adds really starts: its worker builds and warms its runner,
then tells the core it is ready. Times are seconds since ``t0``; a latency counts from the
*scheduled* arrival; the output has the simulator's columns plus ``dispatch_lag_s``.
No torch and no SimPy: replicas run whatever callables they are given.

The request log is the simulator's ring (``sim.core.records``), live: it holds only the requests
in flight, and records what the runners answered and how late each arrival was dispatched. Every
``RETIRE_ROWS`` arrivals, before it waits for the next one, the dispatcher retires the oldest that
have ended (or, if the ring is full, makes room as the simulator does) under the lock, which turns
them into one table chunk; then, with the lock released, it streams the chunk to a Parquet spool
and the summary's tally, as ``sim.engine`` does. So a long run's memory does not grow with its
requests, and the lock is held for a few milliseconds at a time (about 1 us a row), not for one
chunk of the whole ring.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from policies.base import Policy
from sim.core.batcher import Replica
from sim.core.serving import ServingCore
from sim.core.workload import STREAMS_BEFORE_DEPLOYMENTS
from traces.distributions import ServiceDistribution
from traces.errors import InputError
from traces.profiles import LatencyProfile, PredictionTable
from traces.runoutput import RequestSpool, RequestTable
from traces.scenario import Scenario
from traces.summary import Tally

from .realtime import BatchRunner, Timers, set_timer_slack, wait_until, warm

__all__ = ["BatchRunner", "Server", "SleepRunner", "parametric_runners", "serve", "sleep_runner_factory",
           "wait_until"]

SWITCH_S = 2e-4     # GIL switch interval during a run, so spinning threads hand over quickly
STALL_S = 30.0      # after the last arrival: no completion for this long with no batch running
JOIN_S = 60.0       # how long a replica may take to finish its batch once the run is over
BLOCK = 8192        # unit variates per draw, as sim.service, so sleep runners replay its stream
RETIRE_ROWS = 4096  # requests retired at a time, ahead of need: their rows are built under the lock


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
    """A parametric replica: occupies its thread for one sampled service time, predicts nothing;
    its start-up takes the deployment's ``startup_s`` (a parametric service has nothing to load)."""

    def __init__(self, blocks: _UnitBlocks, startup_s: float = 0.0):
        self._blocks, self._startup_s = blocks, startup_s

    def warmup(self) -> None:
        """Nothing to initialise; skipping the draw keeps the service stream aligned with sim's."""

    def cold_start(self) -> None:
        """A replica added during the run: the deployment's start-up time, slept."""
        if self._startup_s > 0:
            wait_until(time.perf_counter() + self._startup_s)

    def run(self, sample_indices: list[int]) -> tuple[list, list[float]]:
        wait_until(time.perf_counter() + self._blocks.draw_s(len(sample_indices)))
        return [None] * len(sample_indices), [math.nan] * len(sample_indices)


def sleep_runner_factory(dist: ServiceDistribution, rng: np.random.Generator,
                         startup_s: float = 0.0) -> Callable[[], BatchRunner]:
    blocks = _UnitBlocks(dist, rng)
    return lambda: SleepRunner(blocks, startup_s)


def parametric_runners(scenario: Scenario, seed: int) -> dict[str, Callable[[], BatchRunner]]:
    """Sleep runners for the parametric deployments, on the service streams ``sim`` draws from;
    a replica added during the run sleeps the deployment's ``startup_s`` before it serves."""
    seqs = np.random.SeedSequence(seed).spawn(STREAMS_BEFORE_DEPLOYMENTS + 2 * len(scenario.deployments))
    return {d.name: sleep_runner_factory(d.service, np.random.default_rng(seqs[STREAMS_BEFORE_DEPLOYMENTS + 2 * k]),
                                         d.startup_s or 0.0)
            for k, d in enumerate(scenario.deployments) if d.service is not None}


class _Worker:
    """The thread of one replica: builds its runner if it has none, then runs the batches the core
    gives it, in order, and reports each one's end under the core's lock."""

    def __init__(self, server: "Server", replica: Replica, runner: BatchRunner | None):
        self.server, self.replica, self.runner = server, replica, runner
        self.jobs: deque[tuple[list[int], object]] = deque()
        self.wake = threading.Event()
        self.stopping = False
        dep = replica.batcher.owner
        self.thread = threading.Thread(target=self._loop, daemon=True, name=f"{dep.name}/{replica.index}")

    def _loop(self) -> None:
        server, replica = self.server, self.replica
        set_timer_slack(1)
        try:
            if self.runner is None:  # added during the run: its cold start, while the run goes on
                self.runner = server.factories[replica.batcher.owner.name]()
                warm(self.runner)
                cold = getattr(self.runner, "cold_start", None)
                if cold is not None:  # a runner with nothing real to load sleeps its start-up time
                    cold()
                with server.lock:
                    replica.batcher.owner.replica_ready(replica, server.now())
            core = server.core
            stage = core.stage_of[replica.batcher.owner.name]
            sample = core.stage_samples[stage]  # its stage's samples
            while True:
                self.wake.wait()
                self.wake.clear()
                while self.jobs and not self.stopping:
                    batch, ticket = self.jobs.popleft()
                    if ticket is not replica.ticket:
                        continue  # orphaned by a crash before it started
                    preds, confidences = self.runner.run([sample[i] for i in batch])
                    finish = server.now()
                    with server.lock:
                        replica.completed_at(ticket, finish, confidences)
                        server.keep_predictions(batch, preds, stage)
                if self.stopping:
                    return
        except BaseException as exc:  # reported by the dispatcher, which stops the run
            server.fail(exc)
        finally:
            close = getattr(self.runner, "close", None)
            if close is not None:  # a replica process ends with its thread
                close()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()


class Server:
    """One real run of a scenario: the executor of a ``ServingCore``; ``serve`` is the way to use it."""

    def __init__(self, scenario: Scenario, policy: Policy, runners: dict[str, Callable[[], BatchRunner]], *,
                 seed: int, labels: Sequence | None, profiles: dict[str, LatencyProfile],
                 predictions: PredictionTable | None, stage_predictions: tuple = (), stage_labels: Sequence = ()):
        """``labels``: true labels in the first stage's sample order; ``stage_labels``: a
        pipeline's, per stage (the first included)."""
        for config in scenario.deployments:
            if config.name not in runners:
                raise InputError(f"deployments.{config.name}", "no runner was given for this deployment")
        self.factories, self.labels = runners, labels
        self.lock = threading.Lock()  # held by whoever calls the core
        self._error: BaseException | None = None
        self._failed = threading.Event()
        self.timers = Timers(self.lock, self.fail)
        self.t0 = time.perf_counter()
        self.running = False
        self.workers: list[_Worker] = []
        # a live log: it records each hop's confidence and each stage's answer as the runners gave them
        self.core = ServingCore(scenario, policy, self, profiles=profiles, predictions=predictions, seed=seed,
                                live_confidence=True, labels=labels, stage_labels=tuple(stage_labels),
                                stage_predictions=stage_predictions)
        self._retired: deque[dict] = deque()  # chunks the log retired under the lock, not yet streamed
        self._sinks: tuple = ()  # where they go: the run's spool and the tally
        self.tally = Tally(keep_values=False)
        self.requests: RequestTable | None = None  # the finished table, once run

    # --- the Executor the core runs on -------------------------------------------------------
    def now(self) -> float:
        return time.perf_counter() - self.t0

    def call_at(self, time_s: float, callback: Callable[[object], None]) -> None:
        self.timers.call_at(time_s, callback)

    def start_batch(self, replica: Replica, batch: list[int], now: float) -> None:
        ticket = replica.ticket = object()
        worker: _Worker = replica.handle
        worker.jobs.append((batch, ticket))
        worker.wake.set()

    def start_replica(self, replica: Replica, now: float) -> bool:
        """Before the clock starts, a replica is built and warmed here; after, by its own thread."""
        runner = None
        if not self.running:
            runner = self.factories[replica.batcher.owner.name]()
            warm(runner)
        worker = replica.handle = _Worker(self, replica, runner)
        self.workers.append(worker)
        if self.running:
            worker.thread.start()
        return runner is not None

    def stop_replica(self, replica: Replica) -> None:
        replica.handle.stop()

    def batching_changed(self, deployment: int, max_batch_size: int) -> None:
        pass

    # --- what replicas report ----------------------------------------------------------------
    def keep_predictions(self, batch: list[int], preds: list, stage: int) -> None:
        """Under the lock, after the core saw the batch end: into the log, the answers of the
        requests that left the stage here (they ended, or went on to the next stage)."""
        log, core = self.core.log, self.core
        names, stage_of, mask, answers = core.deployment_names, core.stage_of, log.mask, log.answers[stage]
        for position, i in enumerate(batch):
            j = i & mask
            if log.drop_reason[j] is not None:
                continue
            if math.isnan(log.finish_s[j]):
                now_at = log.hops[log.hop[j]].deployment[j]
                if stage_of[names[now_at]] == stage:
                    continue  # a cascade's next hop in this stage answers instead
            answers[j] = preds[position]

    def fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._failed.set()

    # --- running ---------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None, spool_dir=None) -> RequestTable:
        """Serve the scenario; returns the requests table, on disk (in ``spool_dir``, default the
        temporary directory; ``to_pandas()`` loads it). ``summary()`` then gives the summary."""
        core, log = self.core, self.core.log
        spool = RequestSpool(log.context.arrow_types(), spool_dir)
        log.sinks = [self._retired.append]  # streamed by the dispatcher once it lets go of the lock
        self._sinks = (spool.write, self.tally.add)
        log.ensure_hops(1)
        log.empty_chunk()  # the first chunk's imports and set-up, before the clock starts
        switch, slack = sys.getswitchinterval(), None
        try:
            slack = set_timer_slack(1)
            sys.setswitchinterval(SWITCH_S)
            self.running = True
            for worker in list(self.workers):
                worker.thread.start()
            self.t0 = time.perf_counter()
            self.timers.start(self.t0)
            with self.lock:
                core.start()
            self._dispatch(progress)
            self._drain()
        finally:
            self.timers.stop()
            for worker in self.workers:
                worker.stop()
            for worker in self.workers:
                worker.thread.join(JOIN_S)
            sys.setswitchinterval(switch)
            if slack is not None:
                set_timer_slack(slack)
        if self._error is not None:
            raise self._error
        log.retire_all()
        self._stream()
        self.requests = spool.close(log.empty_chunk())
        return self.requests

    def _stream(self) -> None:
        """Hand the chunks the log retired to the spool and the tally, in order, outside the lock."""
        while self._retired:
            chunk = self._retired.popleft()
            for sink in self._sinks:
                sink(chunk)

    def summary(self) -> dict:
        """The run's summary (``traces.summary``) after ``run``: its counts from the tally, the
        latency and wait distributions read back from the written table."""
        core, scenario = self.core, self.core.scenario
        return self.tally.summary(warmup_s=scenario.warmup_s, duration_s=scenario.duration_s,
                                  deployments=core.deployment_stats(scenario.duration_s),
                                  price_per_replica_hour=scenario.price_per_replica_hour,
                                  route_hops=core.route_hops, values_from=self.requests)

    def _dispatch(self, progress: Callable[[float], None] | None) -> None:
        """Each arrival at its scheduled time, its room in the log made before its wait;
        ``progress`` gets the schedule's time about once a second."""
        core, log = self.core, self.core.log
        times, t0, arrive = core.arrival_times, self.t0, core.arrive
        reported, due = 0.0, min(RETIRE_ROWS, log.limit)
        for i, t in enumerate(times):
            if i >= due:  # only this thread retires, so only it moves the limit
                with self.lock:
                    if i >= log.limit:
                        log.make_room(i)  # retire what has ended, or grow
                    else:
                        log.retire(log.ended_prefix(min(i, log.retired + RETIRE_ROWS)))
                self._stream()
                # next when RETIRE_ROWS more may have ended, not at every arrival behind a slow one
                due = min(log.limit, max(log.retired + RETIRE_ROWS, i + RETIRE_ROWS // 8))
            wait_until(t0 + t, self._failed)
            if self._error is not None:
                break
            with self.lock:
                now = time.perf_counter() - t0
                log.dispatch_lag_s[i & log.mask] = now - t
                arrive(i, now)
            if progress is not None and t - reported >= 1.0:
                reported = t
                progress(t)

    def _drain(self) -> None:
        """Wait until every request finished or was dropped; give up only on a stall."""
        last, since = -1, time.perf_counter()
        core = self.core
        while self._error is None:
            with self.lock:
                left = core.log.open_count(core.arrivals_seen)
                busy = any(d.busy_replicas for d in self.core.deployments)
            if not left:
                break
            if left != last or busy:
                last, since = left, time.perf_counter()
            elif time.perf_counter() - since > STALL_S:
                break
            self._failed.wait(0.05)
        if self._error is None:  # then every request has arrived
            with self.lock:
                core.log.end_unfinished(max(self.now(), core.duration_s))


def serve(scenario: Scenario, policy: Policy, runners: dict[str, Callable[[], BatchRunner]], *, seed: int,
          labels: Sequence | None, profiles: dict[str, LatencyProfile], predictions: PredictionTable | None,
          progress: Callable[[float], None] | None = None) -> tuple[pd.DataFrame, dict]:
    """Serve ``scenario`` for real; returns (the requests table as sim's + ``dispatch_lag_s``, loaded,
    and the deployment stats)."""
    server = Server(scenario, policy, runners, seed=seed, labels=labels, profiles=profiles, predictions=predictions)
    requests = server.run(progress)
    return requests.to_pandas(), server.core.deployment_stats(scenario.duration_s)
