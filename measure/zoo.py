"""The offline model zoo: train each task's models once, record how, load them back exactly.

Layout: ``zoo_dir/<task>/<model>.pt`` (a state_dict), ``zoo_dir/<task>/zoo.json`` (per model: how
to rebuild it, its training config, teacher, accuracy, size, checkpoint hash; per task: the data
config and a fingerprint of the data), plus the sst2 tokenizer. Training is resumable: a model
whose checkpoint matches its recorded config is skipped, and teachers train before students.

    python -m measure.zoo --zoo-dir /path/to/zoo --tasks digits sst2
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from traces.errors import InputError

from .data import DEFAULT_SST2_DIR, DataConfig, TaskData, load_task
from .models import MODEL_NAMES, TEACHERS, build_model, count_parameters
from .train import TrainConfig, seed_everything, train_model

DEFAULT_MODELS = {"digits": ["cnn-small", "cnn-small-kd", "mobilenet_v2", "resnet18"],
                  "sst2": ["bert-2", "bert-2-kd", "bert-4", "bert-6"]}
TASK_KINDS = {"digits": "image", "sst2": "tokens", "cifar10": "image"}
INDEX = "zoo.json"
MODEL_META_KEYS = ("channels", "image_size", "vocab_size", "max_len", "pad_id")  # what build_model reads


def _check_task(task: str) -> str:
    if task not in TASK_KINDS:
        raise InputError("task", f"unknown task {task!r}; expected one of {', '.join(TASK_KINDS)}")
    return TASK_KINDS[task]


def _training_order(task: str, models: list[str] | None) -> list[str]:
    """The requested models (default: the task's zoo) with their teachers, teachers first."""
    kind = _check_task(task)
    names = list(models) if models else DEFAULT_MODELS.get(task, MODEL_NAMES[kind])
    order: list[str] = []

    def add(name: str) -> None:
        if name not in MODEL_NAMES[kind]:
            raise InputError("model", f"unknown model {name!r} for task {task}; expected one of "
                                      f"{', '.join(MODEL_NAMES[kind])}")
        if name in TEACHERS:
            add(TEACHERS[name])
        if name not in order:
            order.append(name)

    for name in names:
        add(name)
    return order


def _read_index(task_dir: Path) -> dict | None:
    path = task_dir / INDEX
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"cannot be read as JSON ({exc})") from None


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _write_index(task_dir: Path, index: dict) -> None:
    _write_atomic(task_dir / INDEX, lambda p: p.write_text(json.dumps(index, indent=1) + "\n"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_meta(data: TaskData) -> dict:
    return {k: data.meta[k] for k in MODEL_META_KEYS if k in data.meta}


def _spec(name: str, data: TaskData, train_cfg: TrainConfig, tiny: bool, teacher: dict | None) -> dict:
    """Everything that determines a model's weights; a recorded model is reused only if it matches."""
    return {"constructor": {"name": name, "num_classes": data.num_classes, "tiny": tiny, "meta": _model_meta(data)},
            "train_config": train_cfg.resolved(name, data.input_kind, distilled=teacher is not None),
            "teacher": None if teacher is None else teacher["constructor"]["name"],
            "teacher_sha256": None if teacher is None else teacher["sha256"]}


def _summary(record: dict, status: str) -> dict:
    keys = ("eval_accuracy", "train_seconds", "epochs", "params", "checkpoint_mb", "teacher")
    return {"status": status, **{k: record.get(k) for k in keys}}


def _is_current(task_dir: Path, record: dict | None, spec: dict) -> bool:
    if record is None or any(record.get(k) != v for k, v in spec.items()):
        return False
    path = task_dir / record["checkpoint"]
    return path.is_file() and _sha256(path) == record["sha256"]


def train_zoo(task: str, zoo_dir: Path, data_cfg: DataConfig, train_cfg: TrainConfig, *,
              models: list[str] | None = None, tiny: bool = False, progress: bool = False) -> dict:
    """Train the task's models (default: ``DEFAULT_MODELS[task]``) into ``zoo_dir/<task>/``.

    Models already trained with the same config are skipped (status ``skipped``), so an
    interrupted run resumes. Returns ``{"task", "zoo_dir", "models": {name: summary}}``.
    """
    names = _training_order(task, models)
    task_dir = Path(zoo_dir) / task
    task_dir.mkdir(parents=True, exist_ok=True)
    data = load_task(task, data_cfg, task_dir)
    fingerprint = data.fingerprint()
    index = _read_index(task_dir)
    if index is not None and index.get("models") and index.get("data_fingerprint") != fingerprint:
        raise InputError(str(task_dir / INDEX), "this zoo was built from different data (data config "
                                                f"{index.get('data_config')}); use another zoo_dir")
    if index is None or not index.get("models"):
        index = {"task": task, "input_kind": data.input_kind, "num_classes": data.num_classes, "models": {}}
    index.update(data_config=data_cfg.to_json(), data_fingerprint=fingerprint, meta=data.meta,
                 train_samples=int(data.x_train.shape[0]), eval_samples=len(data.eval_ids))
    results = {}
    for name in names:
        teacher_name = TEACHERS.get(name)
        teacher_record = index["models"].get(teacher_name) if teacher_name else None
        spec = _spec(name, data, train_cfg, tiny, teacher_record)
        record = index["models"].get(name)
        if _is_current(task_dir, record, spec):
            results[name] = _summary(record, "skipped")
            continue
        teacher = load_model(zoo_dir, task, teacher_name) if teacher_name else None
        seed_everything(train_cfg.seed)  # the initial weights depend on the seed only
        model = build_model(data.meta, name, data.num_classes, tiny=tiny)
        outcome = train_model(model, data, train_cfg, teacher=teacher, progress=progress, name=name)
        path = task_dir / f"{name}.pt"
        buffer = io.BytesIO()  # saved via a buffer: the archive's inner name, hence its bytes, are fixed
        torch.save(model.state_dict(), buffer)
        _write_atomic(path, lambda p: p.write_bytes(buffer.getvalue()))
        record = {**spec, **outcome, "params": count_parameters(model), "checkpoint": path.name,
                  "checkpoint_mb": round(path.stat().st_size / 2**20, 3), "sha256": _sha256(path),
                  "seeds": {"train": train_cfg.seed, "data": data_cfg.seed},
                  "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "software": {"torch": torch.__version__, "python": platform.python_version()}}
        index["models"][name] = record
        _write_index(task_dir, index)
        results[name] = _summary(record, "trained")
    _write_index(task_dir, index)
    return {"task": task, "zoo_dir": str(task_dir), "models": results}


def _task_index(zoo_dir: Path, task: str) -> tuple[Path, dict]:
    _check_task(task)
    task_dir = Path(zoo_dir) / task
    index = _read_index(task_dir)
    if index is None:
        raise InputError(str(task_dir / INDEX), "zoo index not found; train this task's zoo first")
    return task_dir, index


def load_model(zoo_dir: Path, task: str, model: str) -> nn.Module:
    """A trained zoo model in eval mode, FP32, on the CPU (the caller's RNG state is untouched)."""
    task_dir, index = _task_index(zoo_dir, task)
    record = index.get("models", {}).get(model)
    if record is None:
        have = ", ".join(index.get("models", {})) or "none"
        raise InputError(str(task_dir / INDEX), f"no trained model {model!r} (trained: {have})")
    path = task_dir / record["checkpoint"]
    if not path.is_file():
        raise InputError(str(path), f"checkpoint of {model!r} is missing; retrain with train_zoo")
    args = record["constructor"]
    with torch.random.fork_rng(devices=[]):
        net = build_model(args["meta"], model, args["num_classes"], tiny=args["tiny"])
    try:
        net.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    except Exception as exc:  # unpickling and shape mismatches raise many types for one cause
        raise InputError(str(path), f"cannot be loaded as {model!r} ({type(exc).__name__}: {exc})") from None
    return net.float().eval()


def load_zoo_task(zoo_dir: Path, task: str) -> TaskData:
    """The very data the zoo was trained and evaluated on (checked against its fingerprint)."""
    task_dir, index = _task_index(zoo_dir, task)
    cfg = DataConfig.from_json(index["data_config"])
    if task == "sst2" and not cfg.sst2_dir.is_dir() and DEFAULT_SST2_DIR.is_dir():
        cfg.sst2_dir = DEFAULT_SST2_DIR  # a zoo moved to another checkout: the fingerprint decides
    data = load_task(task, cfg, task_dir)
    if data.fingerprint() != index.get("data_fingerprint"):
        raise InputError(str(task_dir / INDEX), "the data loaded now differs from the data this zoo was built on")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m measure.zoo", description="Train the offline model zoo.")
    parser.add_argument("--zoo-dir", required=True, type=Path)
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--models", nargs="+", help="default: every model of the task's zoo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=DataConfig.max_train)
    parser.add_argument("--tiny", action="store_true", help="tiny models, data and epochs (a smoke test)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    data_cfg = DataConfig.tiny(seed=args.seed) if args.tiny else DataConfig(seed=args.seed, max_train=args.max_train)
    train_cfg = TrainConfig.tiny(seed=args.seed) if args.tiny else TrainConfig(seed=args.seed)
    start = time.perf_counter()
    try:
        for task in args.tasks:
            result = train_zoo(task, args.zoo_dir, data_cfg, train_cfg, models=args.models, tiny=args.tiny,
                               progress=args.progress)
            for name, info in result["models"].items():
                print(f"{task:7s} {name:13s} {info['status']:8s} params {info['params']:>9,d}  "
                      f"eval acc {info['eval_accuracy']:.4f}  train {info['train_seconds']:7.1f} s  "
                      f"{info['checkpoint_mb']:.2f} MB", flush=True)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
