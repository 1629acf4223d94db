"""Train the learned router with MaskablePPO on the routing environment, and export it as arrays.

PPO (sb3-contrib's ``MaskablePPO``: invalid routes get zero probability, so the agent never
spends samples on them) on ``learn.env.RoutingEnv``, with:

- observation and reward normalisation (``VecNormalize``): the observation's parts range from
  shares to milliseconds, and the return's scale depends on the load; the observation's running
  mean and variance are exported with the network, so the numpy policy sees what training saw;
- an entropy bonus that falls linearly from ``entropy_start`` to ``entropy_end``: a high bonus
  early keeps every valid route tried while the value estimates are poor (the Adaptive Router
  seed's PPO, without one, collapsed onto a single route), a low one late lets the policy commit;
- episodes drawn over every training scenario and load scale, so one policy sees light and heavy
  load (``learn.config.training_scenarios``).

The export (``export``) keeps the actor only: its hidden layers (tanh) and the action head, as
``policies.learned.PolicyArrays``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from policies.difficulty import auc, fit_difficulty, split_samples
from policies.learned import PolicyArrays, fastest_of, observation_names
from sim.runner import prepare
from traces.errors import InputError

from .config import TrainConfig, training_scenarios
from .env import RewardWeights, RoutingEnv


def difficulty_model(prepared, config: TrainConfig, log=print):
    """The difficulty model of the fastest deployment's variant, fitted on a seeded half of the
    samples (None when disabled or the bundle has no features); its held-out AUC is logged."""
    table = prepared.predictions
    if not config.difficulty or table is None or getattr(table, "features", None) is None:
        return None, {}
    by_name = {d.name: d for d in prepared.scenario.deployments}
    fastest = by_name[fastest_of(list(by_name), prepared.profiles.__getitem__)]
    train = split_samples(table.sample_ids.size, config.seed)
    model = fit_difficulty(table, fastest.variant, train)
    p = model.probability_fast_correct(table.features[:, [table.feature_names.index(n) for n in model.feature_names]])
    right = table.correct[fastest.variant]
    held_out = float(auc(p[~train], right[~train]))
    log(f"difficulty of {fastest.variant}: AUC {held_out:.3f} on the held-out half "
        f"({float(auc(p[train], right[train])):.3f} on the half it was fitted on)")
    return model, {"fast_variant": fastest.variant, "auc_held_out": held_out}


def make_model(config: TrainConfig, log=print):
    """The environments (normalised) and an untrained MaskablePPO, plus what the export needs."""
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    import torch

    prepared = [prepare(s) for s in training_scenarios(config)]
    model_d, difficulty_meta = difficulty_model(prepared[0], config, log)
    per_sample = None
    if model_d is not None:
        table = prepared[0].predictions
        columns = [table.feature_names.index(n) for n in model_d.feature_names]
        per_sample = model_d.probability_fast_correct(table.features[:, columns])
    weights = RewardWeights(config.ontime_correct_reward, config.cost_per_replica_s)
    envs = DummyVecEnv([lambda: RoutingEnv(prepared, config.taus, weights, per_sample) for _ in range(config.envs)])
    envs.seed(config.seed)
    normalised = VecNormalize(envs, norm_obs=True, norm_reward=True, gamma=config.gamma)
    torch.manual_seed(config.seed)
    torch.set_num_threads(1)  # a 64-wide MLP: threads cost more than they give
    model = MaskablePPO("MlpPolicy", normalised, learning_rate=config.learning_rate, n_steps=config.rollout_steps,
                        batch_size=config.batch_size, n_epochs=config.epochs, gamma=config.gamma,
                        gae_lambda=config.gae_lambda, ent_coef=config.entropy_start, seed=config.seed, device="cpu",
                        policy_kwargs={"net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)},
                                       "activation_fn": torch.nn.Tanh})
    # Progress is our own callback's line; SB3's default logger would also make an empty folder in the
    # system temp dir on every learn(), so the model gets a logger that writes nowhere.
    model.set_logger(Logger(folder=None, output_formats=[]))
    probe = envs.envs[0]
    return model, normalised, probe, model_d, difficulty_meta


def _callback(config: TrainConfig, log):
    from stable_baselines3.common.callbacks import BaseCallback

    class Schedule(BaseCallback):
        """Entropy bonus falling linearly; a progress line per rollout with the episodes' on-time
        correct share."""

        def _on_training_start(self) -> None:
            self.started, self.correct, self.ended = time.perf_counter(), 0, 0

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                if "ontime_correct" in info:
                    self.correct += info["ontime_correct"]
                    self.ended += info["requests"]
            return True

        def _on_rollout_end(self) -> None:
            done = min(self.num_timesteps / config.steps, 1.0)
            self.model.ent_coef = config.entropy_start + (config.entropy_end - config.entropy_start) * done
            share = f"{self.correct / self.ended:.4f}" if self.ended else "-"
            log(f"  {self.num_timesteps:>8d} decisions  {time.perf_counter() - self.started:6.0f} s  "
                f"on-time correct {share} (episodes since last line)  entropy bonus {self.model.ent_coef:.4f}")
            self.correct = self.ended = 0

    return Schedule()


def export(model, normalised, probe: RoutingEnv, config: TrainConfig, difficulty, difficulty_meta: dict,
           trained_s: float) -> PolicyArrays:
    """The actor as plain arrays (``policies.learned.PolicyArrays``)."""
    import torch

    linear = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    linear.append(model.policy.action_net)
    weights = [m.weight.detach().double().numpy().copy() for m in linear]
    biases = [m.bias.detach().double().numpy().copy() for m in linear]
    rms = normalised.obs_rms
    meta = {"deployments": [{"name": n, "variant": v} for n, v in probe.deployments], "routes": probe.route_labels,
            "taus": list(config.taus), "observation": observation_names(tuple(n for n, _ in probe.deployments)),
            "config": config.to_json(), "difficulty": difficulty_meta, "trained_s": round(trained_s, 1),
            "decisions": int(model.num_timesteps)}
    return PolicyArrays(weights, biases, rms.mean.astype(np.float64), rms.var.astype(np.float64),
                        float(normalised.clip_obs), float(normalised.epsilon), meta,
                        difficulty.to_arrays() if difficulty is not None else {})


def train(config: TrainConfig, out: Path, log=print) -> PolicyArrays:
    """Train, export and save to ``out`` (refused if it exists, before any training)."""
    if out.exists():
        raise InputError(str(out), "exists; the trained policy is not overwritten (choose another --out)")
    if out.suffix != ".npz":
        raise InputError(str(out), "the trained policy is saved as .npz: name the file FILE.npz")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(str(out.parent), "is not a directory")
    model, normalised, probe, difficulty, difficulty_meta = make_model(config, log)
    log(f"training on {len(config.scenarios)} scenario(s) x {len(config.load_scales)} load(s): "
        f"{len(probe.route_labels)} routes, {probe.observation_space.shape[0]} observations, {config.steps} decisions")
    started = time.perf_counter()
    model.learn(total_timesteps=config.steps, callback=_callback(config, log))
    arrays = export(model, normalised, probe, config, difficulty, difficulty_meta, time.perf_counter() - started)
    normalised.close()
    arrays.save(out)
    log(f"saved {out} ({out.stat().st_size / 1024:.0f} KiB) after {arrays.meta['trained_s']:.0f} s")
    return arrays
