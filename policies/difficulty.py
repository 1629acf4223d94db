"""Query difficulty: the probability that the fast variant gets a request right, from its input alone.

A cascade sends every request to its fast variant and escalates those the fast variant is unsure
of: an escalated request pays for both models. If a router could tell, before any model runs,
that a request is hard, it would send it straight to the accurate variant and save the first
stage. The bundle's ``features`` table (``traces.features``: token count, subword share, pixel
statistics...) holds cheap input features of every evaluated sample; ``DifficultyModel`` is a
logistic regression on them,

    P(fast variant right | x) = sigmoid(w . (x - mean) / scale + b),

fitted by ``fit_difficulty`` on part of the samples (L2-penalised log-likelihood, L-BFGS-B from
``scipy.optimize.minimize`` with the analytic gradient) and judged on the rest by ``auc``: the
chance that a sample the fast variant gets right scores above one it gets wrong (0.5: the
features tell nothing). Features standardised with the training mean and spread make the
penalty treat each feature alike and the weights comparable.

numpy and scipy only, so a policy can use it in a simulation without the ``measure`` extra;
``to_arrays``/``from_arrays`` store it as plain arrays (an ``.npz``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import optimize, special, stats

from traces.errors import InputError
from traces.profiles import PredictionTable

DEFAULT_L2 = 1.0  # penalty on the squared weights (not the bias), in log-likelihood units
_FIELDS = ("mean", "scale", "weights", "bias")


@dataclass(frozen=True)
class DifficultyModel:
    """A fitted logistic model of the fast variant being right; ``mean``/``scale`` standardise the
    features (in ``feature_names`` order), ``weights``/``bias`` act on the standardised ones."""

    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def __post_init__(self) -> None:
        k = len(self.feature_names)
        for name in ("mean", "scale", "weights"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (k,) or not np.all(np.isfinite(value)):
                raise InputError(f"difficulty model {name}", f"must be {k} finite numbers, one per feature")
            object.__setattr__(self, name, value)
        if np.any(self.scale <= 0) or not np.isfinite(self.bias):
            raise InputError("difficulty model", "scale must be positive and bias finite")
        object.__setattr__(self, "bias", float(self.bias))

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The log-odds of the fast variant being right, per row of ``x`` [n, k] (or one row [k])."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != len(self.feature_names):
            raise InputError("features", f"need {len(self.feature_names)} columns {list(self.feature_names)}, "
                             f"got shape {x.shape}")
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def probability_fast_correct(self, x: np.ndarray) -> np.ndarray:
        """P(fast variant right) per row of ``x``: standardise, linear, sigmoid."""
        return special.expit(self.logit(x))

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Plain numpy arrays (``np.savez(path, **model.to_arrays("difficulty_"))``)."""
        out = {f"{prefix}feature_names": np.array(self.feature_names, dtype=np.str_)}
        out.update({f"{prefix}{name}": np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64))
                    for name in _FIELDS})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> "DifficultyModel":
        """Inverse of ``to_arrays`` (an ``np.load`` result will do)."""
        missing = [f"{prefix}{n}" for n in ("feature_names",) + _FIELDS if f"{prefix}{n}" not in arrays]
        if missing:
            raise InputError("difficulty model arrays", f"missing {missing}")
        bias = np.asarray(arrays[f"{prefix}bias"], dtype=np.float64).ravel()
        if bias.size != 1:
            raise InputError(f"{prefix}bias", f"must hold one number, got {bias.size}")
        return cls(tuple(str(n) for n in np.asarray(arrays[f"{prefix}feature_names"]).ravel()),
                   arrays[f"{prefix}mean"], arrays[f"{prefix}scale"], arrays[f"{prefix}weights"], float(bias[0]))


def _penalised_loss(theta: np.ndarray, z: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Negative log-likelihood of labels ``y`` (0/1) under logits z @ w + b, plus l2/2 |w|^2;
    and its gradient in (w, b)."""
    w, b = theta[:-1], theta[-1]
    logits = z @ w + b
    loss = np.sum(np.logaddexp(0.0, logits) - y * logits) + 0.5 * l2 * (w @ w)
    residual = special.expit(logits) - y
    return float(loss), np.append(z.T @ residual + l2 * w, residual.sum())


def fit_difficulty(table: PredictionTable, fast_variant: str, train: np.ndarray, *,
                   l2: float = DEFAULT_L2) -> DifficultyModel:
    """The logistic model of ``table.correct[fast_variant]`` on ``table.features``, fitted on the
    samples where ``train`` (bool, one per sample) is true."""
    if table.features is None or not table.feature_names:
        raise InputError("predictions", "have no per-sample features; the bundle needs a features table "
                         "(measure features PROFILE --bundle DIR adds one)")
    if fast_variant not in table.correct:
        raise InputError("fast variant", f"unknown variant {fast_variant!r}; expected one of {table.variants}")
    train = np.asarray(train)
    if train.dtype != bool or train.shape != (table.sample_ids.size,):
        raise InputError("train", f"must be a boolean mask of {table.sample_ids.size} samples, got "
                         f"{train.dtype} {train.shape}")
    if not l2 >= 0:
        raise InputError("l2", f"must be >= 0, got {l2}")
    x = table.features[train]
    y = table.correct[fast_variant][train].astype(np.float64)
    if y.size == 0 or y.min() == y.max():
        raise InputError(f"{fast_variant} on the training samples",
                         f"is right on {int(y.sum())} of {y.size}: a model of it needs both outcomes")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature stays 0 once standardised
    z = (x - mean) / scale
    start = np.zeros(z.shape[1] + 1)
    start[-1] = special.logit(y.mean())
    result = optimize.minimize(_penalised_loss, start, args=(z, y, l2), jac=True, method="L-BFGS-B")
    return DifficultyModel(tuple(table.feature_names), mean, scale, result.x[:-1], float(result.x[-1]))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting one
    half; the Mann-Whitney U of the positives over n_pos * n_neg. NaN without both classes."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    positive, negative = scores[labels], scores[~labels]
    if positive.size == 0 or negative.size == 0:
        return float("nan")
    u = stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return float(u / (positive.size * negative.size))


def split_samples(n: int, seed: int) -> np.ndarray:
    """A seeded half/half split of n samples: True for the training half (floor(n / 2) samples)."""
    train = np.zeros(int(n), dtype=bool)
    train[np.random.default_rng(seed).permutation(int(n))[: int(n) // 2]] = True
    return train
