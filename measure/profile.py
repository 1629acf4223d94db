"""The measurement profile (TOML): which variants to build, time and evaluate, and how.

```toml
name = "digits-cpu"
description = "digits classifiers on this CPU"
zoo_dir = "zoo"                  # trained checkpoints (relative to this file)
device = "cpu"                   # cpu | cuda
threads = 1                      # torch intra-op threads while timing and serving
seed = 0

[data]
task = "digits"                  # digits | sst2 | cifar10
# max_train, max_eval, sst2_dir, cifar10_dir

[latency]
batch_sizes = [1, 2, 4, 8, 16, 32]
warmup_runs = 5
timed_runs = 30
max_seconds_per_config = 20.0    # stop timing one (variant, batch) after this long of timed runs,
min_timed_runs = 20              # but not before this many (default: 20, or timed_runs if fewer)
replica = "process"              # time through a server replica process (as `measure serve`) | "inline"
idle_gaps_ms = [0.0]             # also time each run after the replica sat idle this long (see below)

[[variants]]
model = "resnet18"
precisions = ["fp32", "int8"]    # fp32 | bf16 | fp16 (CUDA) | int8
pruning = ["none", "l1", "channel"]
backends = ["eager", "onnxruntime"]  # eager | torchscript | onnxruntime (default ["eager"])
```
A variant id is ``model[-pruning]/precision/device[/backend]``, e.g. ``resnet18-channel/int8/cpu``
or ``resnet18/int8/cpu/onnxruntime``: the backend is a fourth part unless it is ``eager`` (plain
PyTorch), so eager ids, and every bundle measured before backends existed, keep three parts.

``idle_gaps_ms``: a batch that follows an idle spell runs slower than one that follows another
batch (on this VM a small CNN's batch of 1 took 0.39 ms back to back, 0.55 ms after 1 ms idle and
0.99 ms after 10 ms; MobileNetV2-int8 4.3 ms up to 2 ms idle, 5.0-5.4 ms after 5-10 ms). Each gap
listed is timed as its own class (column ``idle_ms``); the simulator then serves each batch from
the two classes around its replica's actual idle time, so a lightly loaded server is as slow as
it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from traces.checks import integer, number, reject_unknown, table, text
from traces.errors import InputError
from traces.scenario import read_toml

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PRUNING = ("none", "l1", "channel")
DEVICES = ("cpu", "cuda")
TASKS = ("digits", "sst2", "cifar10")
BACKENDS = ("eager", "torchscript", "onnxruntime")   # how it runs: measure/backends.py


@dataclass(frozen=True)
class VariantSpec:
    model: str
    precision: str
    pruning: str
    device: str
    backend: str = "eager"

    @property
    def id(self) -> str:
        base = self.model if self.pruning == "none" else f"{self.model}-{self.pruning}"
        tail = "" if self.backend == "eager" else f"/{self.backend}"
        return f"{base}/{self.precision}/{self.device}{tail}"

    @classmethod
    def parse(cls, variant_id: str) -> "VariantSpec":
        """Inverse of ``id``; pruning suffixes are the known ones; an eager id has no fourth part."""
        parts = variant_id.split("/")
        backend = "eager"
        if len(parts) == 4:
            backend = parts.pop()
            if backend not in BACKENDS[1:]:
                raise InputError("variant", f"{variant_id!r}: the fourth part is a backend, one of "
                                 f"{', '.join(BACKENDS[1:])} (an eager variant's id has three parts)")
        if len(parts) != 3 or parts[1] not in PRECISIONS or parts[2] not in DEVICES:
            raise InputError("variant", f"{variant_id!r} is not model[-pruning]/precision/device[/backend]")
        model, pruning = parts[0], "none"
        for suffix in PRUNING[1:]:
            if model.endswith(f"-{suffix}"):
                model, pruning = model[: -len(suffix) - 1], suffix
        return cls(model, parts[1], pruning, parts[2], backend)


REPLICA_MODES = ("process", "inline")


@dataclass(frozen=True)
class LatencyConfig:
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    warmup_runs: int = 5
    timed_runs: int = 30
    max_seconds_per_config: float = 20.0
    replica: str = "process"
    idle_gaps_ms: tuple[float, ...] = (0.0,)
    min_timed_runs: int = 20  # per idle gap: the time cap never stops a size below this many


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    zoo_dir: Path
    device: str
    threads: int
    seed: int
    task: str
    data: dict
    train: dict
    latency: LatencyConfig
    variants: tuple[VariantSpec, ...]
    source: Path | None = None
    raw: dict = field(default_factory=dict, compare=False)


def _gaps(lat: dict) -> tuple[float, ...]:
    gaps = lat.get("idle_gaps_ms", [0.0])
    if (not isinstance(gaps, list) or not gaps
            or any(isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g < 1e4 for g in gaps)
            or gaps != sorted(set(gaps)) or gaps[0] != 0):
        raise InputError("latency.idle_gaps_ms", "must be increasing numbers of milliseconds starting with 0 (back to "
                         f"back), each below 10000, got {gaps!r}")
    return tuple(float(g) for g in gaps)


def _list(cfg: dict, key: str, where: str, choices: tuple[str, ...] | None, default: list) -> list:
    value = cfg.get(key, default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}.{key}", f"must be a non-empty list, got {value!r}")
    for item in value:
        if choices is not None and item not in choices:
            raise InputError(f"{where}.{key}", f"must contain only {', '.join(choices)}; got {item!r}")
    return value


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    raw = read_toml(path)
    try:
        return profile_from_dict(raw, path.parent, source=path)
    except InputError as exc:
        raise InputError(f"{path}: {exc.where}", exc.problem) from None


def profile_from_dict(raw: dict, base_dir: Path = Path("."), source: Path | None = None) -> Profile:
    reject_unknown(raw, ("name", "description", "zoo_dir", "device", "threads", "seed", "data", "train",
                         "latency", "variants"), "")
    data = table(raw, "data", "")
    task = text(data, "task", "data", choices=TASKS)
    reject_unknown(data, ("task", "max_train", "max_eval", "sst2_dir", "cifar10_dir"), "data")
    for key in ("max_train", "max_eval"):
        if key in data:
            integer(data, key, "data", low=1)
    for key in ("sst2_dir", "cifar10_dir"):
        if key in data:
            data = {**data, key: str((base_dir / text(data, key, "data")).resolve())}
    lat = table(raw, "latency", "", required=False)
    reject_unknown(lat, ("batch_sizes", "warmup_runs", "timed_runs", "min_timed_runs", "max_seconds_per_config",
                        "replica", "idle_gaps_ms"), "latency")
    sizes = lat.get("batch_sizes", list(LatencyConfig.batch_sizes))
    if (not isinstance(sizes, list) or not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes)
            or sizes != sorted(set(sizes))):
        raise InputError("latency.batch_sizes", f"must be increasing positive integers, got {sizes!r}")
    timed_runs = integer(lat, "timed_runs", "latency", default=30, low=3)
    min_timed_runs = integer(lat, "min_timed_runs", "latency", default=min(20, timed_runs), low=3)
    if min_timed_runs > timed_runs:
        raise InputError("latency.min_timed_runs", f"must be at most timed_runs ({timed_runs}), got {min_timed_runs}")
    latency = LatencyConfig(tuple(sizes), integer(lat, "warmup_runs", "latency", default=5, low=0), timed_runs,
                            number(lat, "max_seconds_per_config", "latency", default=20.0, low=0, strict=True),
                            text(lat, "replica", "latency", default="process", choices=REPLICA_MODES),
                            _gaps(lat), min_timed_runs)
    device = text(raw, "device", "", default="cpu", choices=DEVICES)
    items = raw.get("variants")
    if not isinstance(items, list) or not items:
        raise InputError("variants", "at least one [[variants]] table is required")
    variants: list[VariantSpec] = []
    for index, item in enumerate(items):
        where = f"variants[{index}]"
        if not isinstance(item, dict):
            raise InputError(where, "must be a table")
        reject_unknown(item, ("model", "precisions", "pruning", "backends"), where)
        model = text(item, "model", where)
        backends = _list(item, "backends", where, BACKENDS, ["eager"])
        for pruning in _list(item, "pruning", where, PRUNING, ["none"]):
            for precision in _list(item, "precisions", where, PRECISIONS, ["fp32"]):
                for backend in backends:
                    spec = VariantSpec(model, precision, pruning, device, backend)
                    if spec not in variants:
                        variants.append(spec)
    train = table(raw, "train", "", required=False)
    return Profile(
        name=text(raw, "name", ""), description=str(raw.get("description", "")),
        zoo_dir=(base_dir / text(raw, "zoo_dir", "", default="zoo")).resolve(), device=device,
        threads=integer(raw, "threads", "", default=1, low=1), seed=integer(raw, "seed", "", default=0, low=0),
        task=task, data=data, train=train, latency=latency, variants=tuple(variants), source=source, raw=raw)
