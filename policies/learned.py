"""`learned`: a router trained with PPO on the simulator (``learn/``), run here with numpy alone.

One decision per request, at its arrival: the router picks one of the routes the planner
enumerates (``policies.options``: every deployment alone, and each faster-then-slower cascade at
each threshold of ``taus``), or rather one of those that are *valid* now; the others are masked:

- a route through a deployment with no replica able to serve (all down or still starting);
- a route predicted to be late: its stages' backlogs plus their batch-1 median service times
  (both stages for a cascade, its worst case) exceed the request's time left. When that masks
  every route, the fastest deployment alone stays valid, so there is always a choice.

Why mask on the backlog, not only on service alone: an untrained router spreads requests evenly
over the routes, which overloads the slow accurate models; every request sent there is then late,
and the router learns that they are bad at any load. Trained with the weaker mask, the SST-2
router collapsed onto the fast model alone (route entropy 0). The mask is a hard rule about time;
which feasible route is worth taking (accuracy, what its load does to later requests) is learned.

What the router sees (``Observer``, the same code in training and here; ``observation_names``): per
deployment, its waiting requests over its batch limit, its busy share, its replicas able to serve
(always all of them in training, which has no faults: an outage shows as a value the normaliser
clips, and the mask keeps the router off it), its last batch's service time, and the backlog those
make (waiting batches per replica plus the busy share, times that service time: a rough wait, so
the small network need not learn the product) and the slack it would leave (time left - backlog -
batch-1 median service); then the arrival rate over the last second, the request's time left, and
its estimated difficulty: the probability that the fastest deployment's variant is right on this
sample, from the cheap input features of the bundle's ``features`` table (``policies.difficulty``;
0.5 when the policy was trained without one). A request it expects to be hard can go straight to an
accurate model instead of through a cascade's first stage.

The trained network is a small MLP (tanh) saved as plain arrays (``PolicyArrays``, one ``.npz``)
with the observation normaliser's running mean and variance, so simulating needs no torch: a
decision is a few matrix-vector products. The policy acts greedily (the highest-scoring valid
route). It refuses a scenario whose deployments (names and variants) or routes differ from the
ones it was trained on.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from traces.errors import InputError

from .base import Policy, Route
from .options import cascade_pairs
from .registry import register

FORMAT = 1
PER_DEPLOYMENT = ("waiting_per_batch", "busy_share", "replicas", "last_service_ms", "backlog_ms", "slack_ms")
GLOBAL = ("arrival_rate_krps", "time_left_ms", "difficulty")


def observation_names(deployments: tuple[str, ...]) -> list[str]:
    """The observation's fields in order: per deployment (in the view's order), then global."""
    return [f"{d}.{name}" for d in deployments for name in PER_DEPLOYMENT] + list(GLOBAL)


@dataclass(frozen=True)
class RouteOption:
    """One action: a route and, for masking, its deployments' indices and its unloaded latency."""

    route: Route
    deployments: tuple[int, ...]
    alone_ms: float


def fastest_of(names, profile_of) -> str:
    """Of ``names``, the deployment with the lowest batch-1 median service time (the first, on a
    tie): the router's fallback, the one whose correctness the training reward's baseline uses, and
    the one whose variant the difficulty model is fitted for."""
    return min(names, key=lambda d: profile_of(d).percentile_ms(1, 50))


def fastest_deployment(view) -> str:
    """``fastest_of`` the view's deployments."""
    return fastest_of(view.deployments, view.latency_profile)


def route_options(view, taus) -> list[RouteOption]:
    """Every deployment alone (in the view's order), then each faster-then-slower cascade at each
    threshold (``policies.options``); the same list in training and at run time."""
    deps = list(view.deployments)
    index = {d: i for i, d in enumerate(deps)}
    alone = {d: view.latency_profile(d).percentile_ms(1, 50) for d in deps}
    options = [RouteOption(Route.single(d), (index[d],), alone[d]) for d in deps]
    table = view.predictions
    if table is not None:
        for fast, slow in cascade_pairs(deps, alone, lambda d: view.variant(d) in table.pred):
            options += [RouteOption(Route.cascade([fast, slow], [float(t)]), (index[fast], index[slow]),
                                    alone[fast] + alone[slow]) for t in taus]
    return options


class Observer:
    """The observation and the action mask of one routing decision (module docstring)."""

    def __init__(self, view, options: list[RouteOption], difficulty: np.ndarray | None):
        """``difficulty``: per sample of the view's prediction table, the estimated probability
        that the fastest deployment is right (None: 0.5 for every request)."""
        self.names = tuple(view.deployments)
        self.options = options
        self.difficulty = difficulty
        self.alone_ms = np.array([o.alone_ms for o in options])
        self.uses = np.zeros((len(self.names), len(options)))  # deployment x option: 1 where it serves
        for k, option in enumerate(options):
            self.uses[list(option.deployments), k] = 1.0
        self.batch = [view.max_batch_size(d) for d in self.names]
        self.default_ms = [o.alone_ms for o in options[:len(self.names)]]  # the singles come first
        self.fallback = self.names.index(fastest_deployment(view))

    def observe(self, request, view) -> tuple[np.ndarray, np.ndarray]:
        values: list[float] = []
        down = []
        needed = []  # per deployment: backlog plus batch-1 median service, ms
        left_ms = request.deadline_ms - (view.now_s - request.arrival_s) * 1000.0
        for d, name in enumerate(self.names):
            waiting, busy, able = view.load(name)
            last = view.last_service_ms(name)
            if last != last:
                last = self.default_ms[d]
            queued = waiting / self.batch[d]
            share = busy / able if able else 1.0
            backlog = (queued / max(able, 1) + share) * last
            need = backlog + self.default_ms[d]
            values += (queued, share, float(able), last, backlog, left_ms - need)
            needed.append(need if able else 1e18)  # no replica: never fits (not inf: 0 x inf is NaN)
        hard = 0.5 if self.difficulty is None else self.difficulty[request.sample_index]
        values += (view.arrival_rate_rps(1.0) / 1000.0, left_ms, hard)
        mask = np.array(needed) @ self.uses <= left_ms
        if not mask.any():
            mask[self.fallback] = True
        return np.array(values), mask


@dataclass
class PolicyArrays:
    """A trained router as plain arrays: the MLP's layers (hidden ones tanh), the observation
    normaliser, the difficulty model, and what it was trained on (``meta``: deployments with their
    variants, route labels, taus, observation names, the training config)."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    obs_mean: np.ndarray
    obs_var: np.ndarray
    obs_clip: float
    obs_epsilon: float
    meta: dict
    difficulty: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` atomically (a temporary file, then a rename); refuses to replace a file."""
        path = Path(path)
        if path.exists():
            raise InputError(str(path), "exists; the trained policy is not overwritten (choose another --out)")
        arrays = {f"w{k}": w for k, w in enumerate(self.weights)} | {f"b{k}": b for k, b in enumerate(self.biases)}
        arrays |= {"obs_mean": self.obs_mean, "obs_var": self.obs_var,
                   "obs_clip": np.array(self.obs_clip), "obs_epsilon": np.array(self.obs_epsilon),
                   "meta_json": np.array(json.dumps({"format": FORMAT, "layers": len(self.weights), **self.meta},
                                                    sort_keys=True))}
        arrays |= {f"difficulty_{k}": v for k, v in self.difficulty.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.link(tmp, path)  # fails if the file appeared meanwhile: nothing is replaced
        finally:
            os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PolicyArrays":
        path = Path(path)
        if not path.is_file():
            raise InputError("policy.path", f"trained policy {str(path)!r} not found (train one with "
                             "`python -m learn train SCENARIO.toml --out FILE.npz`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(str(arrays["meta_json"]))
            layers = int(meta["layers"])
            weights = [arrays[f"w{k}"].astype(np.float64) for k in range(layers)]
            biases = [arrays[f"b{k}"].astype(np.float64) for k in range(layers)]
            loaded = cls(weights, biases, arrays["obs_mean"].astype(np.float64), arrays["obs_var"].astype(np.float64),
                         float(arrays["obs_clip"]), float(arrays["obs_epsilon"]), meta,
                         {k[len("difficulty_"):]: v for k, v in arrays.items() if k.startswith("difficulty_")})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError("policy.path", f"{path} is not a trained policy file ({exc})") from None
        if meta.get("format") != FORMAT:
            raise InputError("policy.path", f"{path}: format {meta.get('format')!r}, expected {FORMAT}")
        missing = [k for k in ("deployments", "routes", "taus") if k not in meta]
        if missing:
            raise InputError("policy.path", f"{path}: not a trained router (no {', '.join(missing)} in its meta_json)")
        return loaded

    def __post_init__(self) -> None:
        self._scale = 1.0 / np.sqrt(self.obs_var + self.obs_epsilon)
        self._layers = list(zip(self.weights[:-1], self.biases[:-1]))

    def scores(self, observation: np.ndarray) -> np.ndarray:
        """The network's score of every route for one raw observation (normalised and clipped as
        in training)."""
        h = (observation - self.obs_mean) * self._scale
        np.clip(h, -self.obs_clip, self.obs_clip, out=h)
        for weight, bias in self._layers:
            h = np.tanh(weight @ h + bias)
        return self.weights[-1] @ h + self.biases[-1]


def sample_difficulty(view, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per sample of the view's prediction table, the difficulty model's probability that the
    fastest variant is right (None when the policy has no difficulty model)."""
    if not arrays:
        return None
    from .difficulty import DifficultyModel

    model = DifficultyModel.from_arrays(arrays)
    table = view.predictions
    features = getattr(table, "features", None) if table is not None else None
    if features is None:
        raise InputError("policy.path", "the policy estimates difficulty from input features, but the bundle has "
                         "no features table (add one with `measure features PROFILE --bundle DIR`)")
    names = tuple(getattr(table, "feature_names", ()))
    columns = [names.index(n) for n in model.feature_names if n in names]
    if len(columns) != len(model.feature_names):
        raise InputError("policy.path", f"the policy needs features {list(model.feature_names)}; the bundle has "
                         f"{list(names)}")
    return model.probability_fast_correct(features[:, columns])


@register
class Learned(Policy):
    name = "learned"

    def __init__(self, path: str):
        self.path = path

    def setup(self, view):
        self.arrays = arrays = PolicyArrays.load(self.path)
        meta = arrays.meta
        trained = {d["name"]: d["variant"] for d in meta["deployments"]}
        here = {d: view.variant(d) for d in view.deployments}
        if list(trained) != list(here) or trained != here:
            raise InputError("policy.path", f"trained on deployments {trained}, but the scenario has {here}")
        self.options = route_options(view, meta["taus"])
        labels = [o.route.label for o in self.options]
        if labels != meta["routes"]:
            raise InputError("policy.path", f"trained on routes {meta['routes']}, but this scenario gives {labels}")
        self.observer = Observer(view, self.options, sample_difficulty(view, arrays.difficulty))
        self._routes = [o.route for o in self.options]
        self.choices = [0] * len(self.options)

    def route(self, request, view):
        observation, mask = self.observer.observe(request, view)
        scores = self.arrays.scores(observation)
        scores[~mask] = -math.inf
        k = int(scores.argmax())
        self.choices[k] += 1
        return self._routes[k]

    def report(self) -> dict:
        """How often each route was chosen, and the choice distribution's entropy in bits."""
        return {"choices": {self._routes[k].label: int(c) for k, c in enumerate(self.choices) if c},
                "route_entropy_bits": entropy_bits(self.choices)}


def entropy_bits(counts) -> float:
    """Shannon entropy, in bits, of a distribution given by counts (0 for one outcome or none)."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    if not counts.size:
        return 0.0
    shares = counts / counts.sum()
    return float(-(shares * np.log2(shares)).sum()) + 0.0
