"""What a training run is: its settings (``TrainConfig``, saved inside the trained policy) and the
scenarios it trains on (each scenario file at each load scale)."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

from traces.errors import InputError
from traces.scenario import Scenario, read_toml, scenario_from_dict

ROUTE_TAUS = (0.7, 0.8, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``python -m learn train`` (defaults: the shipped policies' run)."""

    scenarios: tuple[str, ...]
    load_scales: tuple[float, ...] = (0.5, 1.0, 1.5)
    episode_s: float = 10.0             # each episode simulates this long (the scenarios' own warm-up kept)
    steps: int = 300_000                # routing decisions to train on, over all environments
    seed: int = 0
    envs: int = 4                       # environments stepped together (one rollout batch)
    taus: tuple[float, ...] = ROUTE_TAUS
    hidden: tuple[int, ...] = (64, 64)
    ontime_correct_reward: float = 1.0
    cost_per_replica_s: float = 0.0     # reward lost per replica-second a request uses
    learning_rate: float = 3e-4
    rollout_steps: int = 1024           # per environment, between updates
    batch_size: int = 512
    epochs: int = 5
    gamma: float = 0.97                 # a request's reward comes a few decisions after it, its queue's effect later
    gae_lambda: float = 0.95
    entropy_start: float = 0.05         # the entropy bonus falls linearly from start to end
    entropy_end: float = 0.002
    difficulty: bool = True             # estimate difficulty when the bundle has a features table

    def __post_init__(self):
        checks = [("steps", self.steps >= 1), ("envs", self.envs >= 1), ("episode_s", self.episode_s > 0),
                  ("load_scales", bool(self.load_scales) and all(s > 0 for s in self.load_scales)),
                  ("taus", bool(self.taus) and all(0 <= t <= 1 for t in self.taus)),
                  ("hidden", bool(self.hidden) and all(h >= 1 for h in self.hidden)),
                  ("cost_per_replica_s", self.cost_per_replica_s >= 0),
                  ("rollout_steps", self.rollout_steps >= 2), ("batch_size", self.batch_size >= 2),
                  ("gamma", 0 < self.gamma <= 1), ("gae_lambda", 0 <= self.gae_lambda <= 1),
                  ("entropy_start", self.entropy_start >= 0), ("entropy_end", self.entropy_end >= 0)]
        checks += [("learning_rate", self.learning_rate > 0), ("epochs", self.epochs >= 1)]
        flags = {"steps", "envs", "episode_s", "load_scales", "taus", "hidden", "cost_per_replica_s",
                 "rollout_steps", "batch_size", "gamma", "gae_lambda"}  # the ones `python -m learn train` takes
        for name, ok in checks:
            if not ok:
                where = f"--{name.replace('_', '-')}" if name in flags else f"TrainConfig.{name}"
                raise InputError(where, f"out of range: {getattr(self, name)!r}")

    def to_json(self) -> dict:
        return asdict(self)


def scaled_arrivals(arrivals: dict, factor: float, where: str) -> dict:
    """The scenario's ``[arrivals]`` with every rate times ``factor``."""
    out = copy.deepcopy(arrivals)
    kind = out.get("kind")
    key = {"poisson": "rate_rps", "bursty": "rates_rps", "piecewise": "rates_rps", "replay": "rate_scale"}.get(kind)
    if key is None:
        raise InputError(f"{where}: arrivals.kind",
                         f"cannot scale {kind!r} arrivals (poisson, bursty, piecewise, replay)")
    try:
        if kind == "poisson":
            out[key] = float(out[key]) * factor
        elif kind == "replay":
            out[key] = float(out.get(key, 1.0)) * factor
        else:
            out[key] = [float(r) * factor for r in out[key]]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{where}: arrivals.{key}", f"a number (a list of numbers for {kind}) is required, "
                         f"got {out.get(key)!r}") from None
    return out


def training_scenarios(config: TrainConfig) -> list[Scenario]:
    """Each scenario file at each load scale, each run for ``episode_s``; all must share their deployments."""
    out: list[Scenario] = []
    for name in config.scenarios:
        path = Path(name)
        raw = read_toml(path)
        if "tenants" in raw or "stages" in raw:
            raise InputError(str(path), "the routing environment serves one stage without tenants")
        for factor in config.load_scales:
            scaled = {**raw, "arrivals": scaled_arrivals(raw.get("arrivals", {}), factor, str(path)),
                      "duration_s": config.episode_s,
                      "warmup_s": min(float(raw.get("warmup_s", 0.0)), config.episode_s / 2)}
            out.append(scenario_from_dict(scaled, base_dir=path.parent, source=path))
    shapes = {(str(s.bundle), tuple((d.name, d.variant) for d in s.deployments)) for s in out}
    if len(shapes) > 1:
        raise InputError(config.scenarios[-1],
                         "every training scenario must have the same bundle and deployments (names and variants)")
    return out

