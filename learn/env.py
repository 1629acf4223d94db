"""A Gymnasium environment over the simulator: one step is one routing decision.

Why one decision per request, not per interval: the router's choice is per request (which route
this request takes, given its time left and its difficulty), the simulator already asks the
policy once per arrival, and a per-interval action (a routing mix) would hide exactly the
per-request signals the router is meant to use. Episodes are one simulated run of a scenario
(its ``duration_s``), a few thousand decisions.

How the simulator is driven: the run goes on in a worker thread, exactly as ``simulate run`` would
run it, with a policy whose ``route`` hands the observation to ``step``'s caller and waits for
the action; the two threads alternate strictly (two semaphores), so a seed gives the same
episode every time. ``reset`` abandons a run in progress (its ``route`` raises and the thread ends).

Reward, per step: for every request that ended since the previous step, ``ontime_correct_reward``
if it finished on time (within its deadline) with a correct answer, minus ``cost_per_replica_s``
times the replica time it used (each hop's batch service time divided by the batch's size, its
share), minus a *baseline*: ``ontime_correct_reward`` if the fastest deployment's variant is right
on the request's sample (``RewardWeights.baseline``, on by default). The baseline depends only on
which sample arrived, never on a decision, so it shifts every policy's expected return by the same
amount and leaves the best policy unchanged; but it removes most of the reward's noise. Without
it, nearly every request earns 1 whatever the route (the fast variant is right on 96% of digits),
and the few points between a good and a poor route drown in it: an agent trained so settled on
the fast model alone. With it, a request earns 0 where the route changed nothing, +1 where an
accurate model rescued a sample the fast one gets wrong, and -1 where a late answer lost one it
gets right. An episode's return is the weighted count of on-time correct requests, minus the
weighted replica time they took, minus the baseline's count. Rewards are delayed by the requests'
latency, a few dozen decisions at most at the study's rates; PPO's discounting carries them back.

Observation, action and mask: ``policies.learned`` (``Observer``, ``route_options``), the very
code the trained policy runs with, so training and serving cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import threading
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from policies.base import Policy
from policies.learned import Observer, fastest_deployment, route_options
from sim.core.prepare import Prepared
from sim.engine import Simulation


@dataclass(frozen=True)
class RewardWeights:
    """``baseline``: subtract, per request, whether the fastest deployment's variant is right on
    its sample (module docstring)."""

    ontime_correct_reward: float = 1.0
    cost_per_replica_s: float = 0.0
    baseline: bool = True


class _Abandoned(Exception):
    """Raised inside the simulation thread when its episode is abandoned."""


class _AgentPolicy(Policy):
    """The simulator's policy during training: each ``route`` is the agent's action."""

    name = "learning"

    def __init__(self, env: "RoutingEnv"):
        self.env = env

    def setup(self, view):
        self.env._setup(view)

    def route(self, request, view):
        return self.env._decide(request, view)


class RoutingEnv(gym.Env):
    """Routing as a Gymnasium environment (module docstring). ``scenarios``: prepared scenarios
    with the same deployments; each episode draws one (e.g. the same system at several loads)."""

    metadata = {"render_modes": []}

    def __init__(self, scenarios: list[Prepared], taus, reward: RewardWeights = RewardWeights(),
                 difficulty: np.ndarray | None = None):
        if not scenarios:
            raise ValueError("RoutingEnv needs at least one scenario")
        self.scenarios, self.taus, self.weights, self.difficulty = scenarios, tuple(taus), reward, difficulty
        self._thread: threading.Thread | None = None
        # two locks used as binary semaphores (acquired = "not your turn"): a plain lock may be
        # released by the other thread, and costs far less than threading.Semaphore
        self._to_agent, self._to_sim = threading.Lock(), threading.Lock()
        self._to_agent.acquire()
        self._to_sim.acquire()
        probe = self._build(scenarios[0], seed=0)  # the spaces, from a system not yet running
        self.route_labels = [o.route.label for o in self._options]
        self.deployments = [(d, probe.view.variant(d)) for d in probe.view.deployments]
        n_obs = len(self._observer.observe(_Probe(), probe.view)[0])
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(n_obs,), dtype=np.float64)
        self.action_space = gym.spaces.Discrete(len(self._options))
        self._mask = np.ones(len(self._options), dtype=bool)

    # --- the simulation side ----------------------------------------------------------------
    def _build(self, prepared: Prepared, seed: int) -> Simulation:
        scenario = dataclasses.replace(prepared.scenario, seed=seed)
        sim = Simulation(scenario, _AgentPolicy(self), bundle=prepared.bundle, profiles=prepared.profiles,
                         predictions=prepared.predictions, seed=seed, stage_predictions=prepared.stage_predictions,
                         bundles=prepared.bundles)
        self._sim, self._log, self._table = sim, sim.core.log, prepared.predictions
        self._variants = [d.variant for d in scenario.deployments]
        return sim

    def _setup(self, view) -> None:
        self._options = route_options(view, self.taus)
        labels = [o.route.label for o in self._options]
        if getattr(self, "route_labels", labels) != labels:
            raise ValueError(f"an episode's scenario gives routes {labels}, the first gave {self.route_labels}")
        self._baseline = None
        if self.weights.baseline and view.predictions is not None:
            correct = view.predictions.correct.get(view.variant(fastest_deployment(view)))
            if correct is not None:
                self._baseline = self.weights.ontime_correct_reward * correct.astype(np.float64)
        self._observer = Observer(view, self._options, self.difficulty)

    def _decide(self, request, view):
        self._observation, self._mask = self._observer.observe(request, view)
        self._request = request
        self._to_agent.release()
        self._to_sim.acquire()
        if self._abandon:
            raise _Abandoned
        self._pending.append(request.id)
        return self._options[self._action].route

    def _run(self) -> None:
        log, retire = self._log, self._log.retire

        def collect_then_retire(upto: int) -> None:
            # rewards of requests that ended are read before the log frees their slots: mid-run
            # (a full ring, before an arrival is routed) and at the end (every request)
            self._tail_reward += self._collect()
            retire(upto)

        log.retire = collect_then_retire
        try:
            self._sim.run(spool_dir=self._spool)
        except _Abandoned:
            pass
        except BaseException as exc:  # noqa: BLE001  (re-raised in the agent's thread)
            self._error = exc
        finally:
            self._finished = True
            self._to_agent.release()

    # --- rewards --------------------------------------------------------------------------------
    def _outcome(self, i: int) -> float | None:
        """The reward of request ``i`` once it has ended, else None."""
        log = self._log
        j = i & log.mask
        finish = log.finish_s[j]
        if finish != finish:
            return None
        self._hit_correct = False
        work = self._sim.core
        value = -self._baseline[work.sample[i]] if self._baseline is not None else 0.0
        if log.drop_reason[j] is not None:
            return value
        hop = log.hop[j]
        used_s = 0.0
        for k in range(hop + 1):
            cols = log.hops[k]
            if cols.batch_size[j] > 0:
                used_s += (cols.finish_s[j] - cols.start_s[j]) / cols.batch_size[j]
        value -= self.weights.cost_per_replica_s * used_s
        latency_ms = (finish - work.arrival_times[i]) * 1000.0
        if latency_ms <= work.deadline_classes_ms[work.deadline_class[i]]:
            variant = self._variants[log.hops[hop].deployment[j]]
            if self._table.correct[variant][work.sample[i]]:
                value += self.weights.ontime_correct_reward
                self._hit_correct = True
        return value

    def _collect(self) -> float:
        total, still = 0.0, []
        for i in self._pending:
            value = self._outcome(i)
            if value is None:
                still.append(i)
            else:
                total += value
                self.episode_ontime_correct += self._hit_correct
                self.episode_ended += 1
        self._pending = still
        return total

    # --- the Gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """``options``: ``{"scenario": k, "episode_seed": s}`` pins the episode (both drawn from
        ``np_random`` otherwise): the simulation of scenario ``k`` with seed ``s``, as ``simulate
        run`` would run it."""
        super().reset(seed=seed)
        self.close()
        options = options or {}
        pick = int(self.np_random.integers(len(self.scenarios)))
        episode_seed = int(self.np_random.integers(2**31 - 1))
        prepared = self.scenarios[int(options.get("scenario", pick))]
        episode_seed = int(options.get("episode_seed", episode_seed))
        self._tmp = tempfile.TemporaryDirectory(prefix="routing-env-")
        self._spool = self._tmp.name
        self._abandon, self._finished, self._error = False, False, None
        self._pending: list[int] = []
        self._tail_reward = 0.0
        self.episode_ontime_correct = self.episode_ended = 0
        self._build(prepared, episode_seed)
        self._thread = threading.Thread(target=self._run, daemon=True, name="routing-env")
        self._thread.start()
        self._to_agent.acquire()
        self._raise()
        if self._finished:
            raise RuntimeError("the scenario has no arrivals to route")
        return self._observation.copy(), {"action_mask": self._mask.copy()}

    def step(self, action):
        if self._thread is None or self._finished:
            raise RuntimeError("step() before reset(), or after the episode ended")
        action = int(action)
        if not 0 <= action < len(self._options):
            raise ValueError(f"action {action} outside 0..{len(self._options) - 1}")
        self._action = action
        self._to_sim.release()
        self._to_agent.acquire()
        self._raise()
        reward = self._collect() + self._tail_reward
        self._tail_reward = 0.0
        info = {"action_mask": self._mask.copy()}
        if self._finished:
            self._thread.join()
            self._thread = None
            self._tmp.cleanup()
            info |= {"ontime_correct": int(self.episode_ontime_correct), "requests": int(self.episode_ended)}
            return self._observation.copy(), reward, True, False, info
        return self._observation.copy(), reward, False, False, info

    def action_masks(self) -> np.ndarray:
        """Valid actions of the current decision (sb3-contrib's MaskablePPO asks for them)."""
        return self._mask.copy()

    def close(self) -> None:
        if self._thread is not None:
            self._abandon = True
            self._to_sim.release()
            self._thread.join()
            self._to_agent.acquire(blocking=False)  # the ended thread's last signal, never waited for
            self._to_sim.acquire(blocking=False)  # our wake-up, if the thread had already ended (an error)
            self._thread = None
            self._tmp.cleanup()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


class _Probe:
    """A request at time 0 with a long deadline, to size the observation before any run."""

    id, arrival_s, deadline_ms, sample_index, tenant = 0, 0.0, math.inf, 0, None
