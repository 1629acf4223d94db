"""Seeded training of zoo models, with optional soft-target knowledge distillation.

Same seed, same data, same thread count -> the same weights, so a zoo can be rebuilt exactly.
Text batches are bucketed by length and trimmed to their longest sample: padding is masked, so
the logits do not change, but training costs a fraction of full-length batches on a 2-core CPU.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import TaskData
from .models import architecture, family

BUCKET_BATCHES = 50  # text: sort this many batches' worth of samples by length, then batch them


@dataclass
class TrainConfig:
    """Hyperparameters. Dict fields are looked up by model name, its architecture (``bert-2`` for
    ``bert-2-kd``), its family (cnn, mobilenet, resnet, bert), then the input kind (image, tokens).
    """

    seed: int = 0
    epochs: dict[str, int] = field(default_factory=lambda: {
        "cnn": 60, "mobilenet": 15, "resnet": 10, "bert-2": 4, "bert": 3, "image": 20, "tokens": 3})
    lr: dict[str, float] = field(default_factory=lambda: {
        "cnn": 3e-2, "mobilenet": 3e-3, "resnet": 2e-3, "bert-2": 1e-3, "bert-4": 5e-4, "bert-6": 3e-4,
        "image": 3e-3, "tokens": 5e-4})
    batch_size: dict[str, int] = field(default_factory=lambda: {"image": 64, "tokens": 64})
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    warmup: float = 0.1             # fraction of steps with linearly rising learning rate
    augment_shift: float = 0.0      # images: random translation of up to this many pixels (0 = off)
    kd_temperature: float = 4.0
    kd_alpha: float = 0.5           # weight of the soft-target term
    threads: int = 2
    eval_each_epoch: bool = False   # record eval accuracy after every epoch (costs one eval pass each)

    @classmethod
    def tiny(cls, **overrides) -> "TrainConfig":
        """A few epochs on one thread (tiny models gain nothing from more, and suffer most from a busy CPU)."""
        base = {"epochs": {"image": 8, "tokens": 3}, "lr": {"image": 1e-2, "tokens": 3e-3},
                "batch_size": {"image": 32, "tokens": 32}, "threads": 1}
        return cls(**{**base, **overrides})

    def lookup(self, table: str, name: str | None, kind: str):
        values = getattr(self, table)
        keys = ([name, architecture(name), family(name)] if name else []) + [kind]
        for key in keys:
            if key in values:
                return values[key]
        raise KeyError(f"TrainConfig.{table} has no entry for {name or kind!r}")

    def resolved(self, name: str | None, kind: str, *, distilled: bool) -> dict:
        """The hyperparameters one model actually trains with (recorded in the zoo)."""
        out = {k: self.lookup(k, name, kind) for k in ("epochs", "lr", "batch_size")}
        out.update(seed=self.seed, weight_decay=self.weight_decay, grad_clip=self.grad_clip, warmup=self.warmup,
                   threads=self.threads)
        if kind == "image":
            out["augment_shift"] = self.augment_shift
        if distilled:
            out.update(kd_temperature=self.kd_temperature, kd_alpha=self.kd_alpha)
        return out

    def to_json(self) -> dict:
        return asdict(self)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _trim(x: torch.Tensor) -> torch.Tensor:
    """Token batch cut to its longest sample (right padding with id 0)."""
    if x.dtype != torch.int64 or x.dim() != 2:
        return x
    length = int((x != 0).sum(dim=1).max().clamp(min=1))
    return x[:, :length]


def _epoch_batches(data: TaskData, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    n = data.x_train.shape[0]
    perm = torch.randperm(n, generator=gen)
    if data.input_kind == "tokens":  # bucket by length, then shuffle the batches
        lengths = (data.x_train != 0).sum(dim=1)
        chunk = batch_size * BUCKET_BATCHES
        perm = torch.cat([c[torch.argsort(lengths[c], stable=True)] for c in perm.split(chunk)])
    batches = list(perm.split(batch_size))
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def _shift(x: torch.Tensor, max_shift: float, gen: torch.Generator) -> torch.Tensor:
    """Random sub-pixel translation of each image (zeros enter at the border)."""
    b, _, h, w = x.shape
    offsets = (torch.rand(b, 2, generator=gen) * 2 - 1) * max_shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = offsets[:, 0] * 2 / w
    theta[:, 1, 2] = offsets[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
            alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)."""
    soft = F.kl_div(F.log_softmax(student / temperature, dim=1), F.log_softmax(teacher / temperature, dim=1),
                    log_target=True, reduction="batchmean")
    return alpha * temperature ** 2 * soft + (1 - alpha) * F.cross_entropy(student, labels)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Eval-mode logits for many inputs, in batches; text is run length-sorted, each batch trimmed."""
    was_training = model.training
    model.eval()
    order = torch.arange(x.shape[0])
    if x.dtype == torch.int64 and x.dim() == 2:
        order = torch.argsort((x != 0).sum(dim=1), stable=True)
    out = torch.empty(0)
    for start in range(0, x.shape[0], batch_size):
        idx = order[start:start + batch_size]
        logits = model(_trim(x[idx])).float()
        if out.numel() == 0:
            out = torch.empty(x.shape[0], logits.shape[1])
        out[idx] = logits
    model.train(was_training)
    return out


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict_logits(model, x).argmax(dim=1) == y).float().mean())


def _lr_factor(step: int, total: int, warmup: float) -> float:
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_model(model: nn.Module, data: TaskData, cfg: TrainConfig, *, teacher: nn.Module | None = None,
                progress: bool = False, name: str | None = None) -> dict:
    """Train in place (AdamW, warmup + cosine), distilling from ``teacher`` when one is given.

    ``name`` (default: the ``zoo_name`` that build_model sets) selects the per-family hyperparameters.
    Returns eval accuracy, wall-clock training seconds and epochs.
    """
    name = name or getattr(model, "zoo_name", None)
    hp = cfg.resolved(name, data.input_kind, distilled=teacher is not None)
    start = time.perf_counter()
    with _threads(cfg.threads):
        seed_everything(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        augment = data.input_kind == "image" and hp.get("augment_shift", 0) > 0
        soft_targets = None
        if teacher is not None:
            teacher.eval()
            if not augment:  # fixed inputs: the teacher's logits are computed once
                soft_targets = predict_logits(teacher, data.x_train)
        decay = [p for p in model.parameters() if p.dim() > 1]
        no_decay = [p for p in model.parameters() if p.dim() <= 1]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=hp["lr"])
        n = data.x_train.shape[0]
        steps_per_epoch = math.ceil(n / hp["batch_size"])
        total = hp["epochs"] * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total, cfg.warmup))
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, desc=f"train {name or type(model).__name__}", unit="step", leave=False)
        history: list[dict] = []
        model.train()
        for epoch in range(hp["epochs"]):
            total_loss, batches = 0.0, 0
            for idx in _epoch_batches(data, hp["batch_size"], gen):
                x, y = _trim(data.x_train[idx]), data.y_train[idx]
                if augment:
                    x = _shift(x, hp["augment_shift"], gen)
                logits = model(x)
                if teacher is None:
                    loss = F.cross_entropy(logits, y)
                else:
                    if soft_targets is not None:
                        target = soft_targets[idx]
                    else:
                        with torch.no_grad():
                            target = teacher(x).float()
                    loss = kd_loss(logits, target, y, cfg.kd_temperature, cfg.kd_alpha)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                total_loss, batches = total_loss + loss.item(), batches + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            history.append({"epoch": epoch + 1, "train_loss": round(total_loss / max(1, batches), 5)})
            if cfg.eval_each_epoch:
                history[-1]["eval_accuracy"] = accuracy(model, data.x_eval, data.y_eval)
                model.train()
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - start
        model.eval()
        eval_acc = accuracy(model, data.x_eval, data.y_eval)
    return {"eval_accuracy": eval_acc, "train_seconds": round(seconds, 3), "epochs": hp["epochs"], "history": history}
