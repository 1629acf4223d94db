"""Timing and evaluating every variant of a profile, resumably, into a trace bundle.

Each finished piece of work (one variant's latencies at one batch size, one variant's predictions,
one variant's failure, the evaluation samples' input features) is written at once as a small file
in a hidden folder beside the bundle, so an interrupted run resumes where it stopped. ``assemble``
merges the pieces with what the bundle already holds and replaces the bundle atomically; nothing
measured is ever dropped.

A fresh start (``measure --force``) deletes nothing first: it measures into a scratch folder of its
own (``traces.outputs.scratch_directory``), ignoring the bundle's rows and the resumable pieces, and
only once the new bundle has replaced the old one are the old pieces dropped.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from traces.bundle import PREDICTION_COLUMNS, SERVICE_COLUMNS, TraceBundle
from traces.errors import InputError

from .profile import Profile, VariantSpec
from .replicas import ProcessRunner, RunnerRecipe, replica_cpus
from .variants import ModelRunner, VariantUnsupported, load_variant

EVAL_BATCH = 64


class PartStore:
    @staticmethod
    def dir_for(out: Path) -> Path:
        return out.parent / f".{out.name}.parts"

    def __init__(self, out: Path, directory: Path | None = None):
        """The pieces of the bundle ``out``: beside it, or (``directory``, a fresh start) in that
        folder, ignoring what the bundle already holds."""
        self.out = out
        self.fresh = directory is not None
        self.dir = Path(directory) if directory is not None else self.dir_for(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._done: set[str] = {p.stem for p in self.dir.iterdir() if p.suffix in (".parquet", ".json")}
        if not self.fresh and (out / "bundle.json").is_file():
            bundle = TraceBundle.load(out)
            for (variant, b), _ in bundle.service.groupby(["variant", "batch_size"]):
                self._done.add(self.latency_key(variant, int(b)))
            for variant in bundle.predicted_variants:
                self._done.add(self.accuracy_key(variant))
            for failure in bundle.meta.get("failed", []):
                self._done.add(self.failure_key(failure["variant"]))

    @staticmethod
    def latency_key(variant: str, batch_size: int) -> str:
        return f"service__{variant.replace('/', '__')}__b{batch_size}"

    @staticmethod
    def accuracy_key(variant: str) -> str:
        return f"predictions__{variant.replace('/', '__')}"

    FEATURES_KEY = "features__eval"  # the evaluation samples' input features (``measure.features``)

    @staticmethod
    def failure_key(variant: str) -> str:
        return f"failed__{variant.replace('/', '__')}"

    def has(self, key: str) -> bool:
        return key in self._done

    def write(self, key: str, frame: pd.DataFrame | None = None, record: dict | None = None) -> None:
        path = self.dir / (f"{key}.parquet" if frame is not None else f"{key}.json")
        tmp = path.with_suffix(path.suffix + ".tmp")
        if frame is not None:
            frame.to_parquet(tmp, index=False)
        else:
            tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
        self._done.add(key)

    def read(self, prefix: str) -> list:
        out = []
        for path in sorted(self.dir.glob(f"{prefix}__*")):
            out.append(pd.read_parquet(path) if path.suffix == ".parquet" else json.loads(path.read_text()))
        return out


def hardware() -> dict:
    info = {"machine": platform.machine(), "cores": os.cpu_count(), "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        info["memory_gb"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def software() -> dict:
    import torchvision
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__, "pandas": pd.__version__}


def _rng(profile: Profile, variant: str, batch_size: int) -> np.random.Generator:
    return np.random.default_rng([profile.seed, zlib.crc32(variant.encode()), batch_size])


def time_batches(runner: ModelRunner | ProcessRunner, profile: Profile, spec: VariantSpec, sizes: list[int],
                 n_samples: int) -> dict[int, pd.DataFrame]:
    """Warm-up runs, then timed runs of ``runner.run`` on random samples, one row per timed run.

    The batch sizes are timed in interleaved rounds (one run of each size per round), so that a
    slow spell of the machine (another tenant, a frequency change) spreads over every size instead
    of bending one size's numbers: timed one size after another, a MobileNetV2-int8 profile here
    once put batch 2 at 11.6 ms between 4.5 ms (batch 1) and 6.5 ms (batch 3). Each (variant,
    size) keeps its own seeded sample draws; a size stops after ``max_seconds_per_config`` of its
    own timed runs, once it has ``min_timed_runs`` per idle gap (so that a slow variant's largest
    sizes, seconds a batch, still get a distribution, not three points). Each row keeps when its run started (``started_at_s``, Unix
    time), from which the simulator measures how long slow spells last (``traces.profiles``).
    With several ``idle_gaps_ms``, each run is timed once per gap, after sleeping that long; the
    row's ``idle_ms`` names its gap.
    """
    cfg = profile.latency
    draws = {}
    for b in sizes:
        rng = _rng(profile, spec.id, b)
        draws[b] = [rng.integers(0, n_samples, b).tolist() for _ in range(cfg.warmup_runs + cfg.timed_runs)]
    for k in range(cfg.warmup_runs):
        for b in sizes:
            runner.run(draws[b][k])
    rows: dict[int, list[tuple[float, float, float]]] = {b: [] for b in sizes}  # (latency_ms, started_at_s, idle_ms)
    spent = dict.fromkeys(sizes, 0.0)
    epoch = time.time() - time.perf_counter()  # perf_counter precision, Unix time origin
    floor = cfg.min_timed_runs * len(cfg.idle_gaps_ms)   # runs a size gets whatever the time cap
    for k in range(cfg.warmup_runs, cfg.warmup_runs + cfg.timed_runs):
        active = [b for b in sizes if spent[b] <= cfg.max_seconds_per_config or len(rows[b]) < floor]
        if not active:
            break
        for b in active:
            for gap_ms in cfg.idle_gaps_ms:
                if gap_ms > 0:
                    time.sleep(gap_ms / 1000.0)
                elif len(cfg.idle_gaps_ms) > 1:  # back to back means after a run, not after the last gap
                    runner.run(draws[b][k])
                t0 = time.perf_counter()
                runner.run(draws[b][k])
                elapsed = time.perf_counter() - t0
                rows[b].append((elapsed * 1000.0, epoch + t0, gap_ms))
                spent[b] += elapsed
    frames = {}
    for b, values in rows.items():
        n = len(values)
        latency_ms, started_at_s, idle_ms = zip(*values) if n else ((), (), ())
        frames[b] = pd.DataFrame({"variant": [spec.id] * n, "model": [spec.model] * n, "precision": [spec.precision] * n,
                                  "device": [spec.device] * n, "batch_size": [b] * n, "latency_ms": list(latency_ms),
                                  "threads": [profile.threads] * n, "pruning": [spec.pruning] * n,
                                  "started_at_s": list(started_at_s), "idle_ms": list(idle_ms)})
    return frames


def evaluate_runner(runner: ModelRunner, spec: VariantSpec, labels: torch.Tensor, eval_ids: list[str]) -> pd.DataFrame:
    preds, confs = [], []
    for start in range(0, len(eval_ids), EVAL_BATCH):
        p, c = runner.run(list(range(start, min(start + EVAL_BATCH, len(eval_ids)))))
        preds += p
        confs += c
    labels = labels.tolist()
    return pd.DataFrame({"variant": spec.id, "sample_id": eval_ids, "label": labels, "pred": preds,
                         "confidence": np.clip(confs, 0.0, 1.0), "correct": [p == l for p, l in zip(preds, labels)]})


def _measure_variant(profile: Profile, spec: VariantSpec, keys: list[str], data, store: PartStore, bar) -> None:
    """Predictions from an in-process runner; timings through a replica process unless ``inline``."""
    inline = None
    if profile.latency.replica == "inline" or any(k.startswith("predictions") for k in keys):
        inline = ModelRunner(load_variant(profile.zoo_dir, profile.task, spec, data), data.x_eval, spec)
    for key in keys:
        if key.startswith("predictions"):
            store.write(key, evaluate_runner(inline, spec, data.y_eval, list(data.eval_ids)))
            if bar is not None:
                bar.advance(1)
    sizes = [int(key.rsplit("__b", 1)[1]) for key in keys if not key.startswith("predictions")]
    if not sizes:
        return
    timer = inline if profile.latency.replica == "inline" else ProcessRunner(
        RunnerRecipe(str(profile.zoo_dir), profile.task, spec.id, profile.threads, cpus=next(replica_cpus())))
    try:
        frames = time_batches(timer, profile, spec, sizes, len(data.eval_ids))
    finally:
        if isinstance(timer, ProcessRunner):
            timer.close()
    for b, frame in frames.items():
        store.write(store.latency_key(spec.id, b), frame)
    if bar is not None:
        bar.advance(len(sizes))


def measure(profile: Profile, out: Path, *, latency: bool, accuracy: bool, progress: bool = False,
            parts: Path | None = None) -> PartStore:
    """Measure every variant of the profile that the bundle (or its parts) does not have yet;
    ``parts``: start afresh, with the pieces in that folder (see ``PartStore``)."""
    from .zoo import load_zoo_task

    data = load_zoo_task(profile.zoo_dir, profile.task)  # a missing zoo fails before anything is written
    store = PartStore(out, parts)
    torch.set_num_threads(profile.threads)
    todo = []
    for spec in profile.variants:
        keys = [store.latency_key(spec.id, b) for b in profile.latency.batch_sizes] if latency else []
        keys += [store.accuracy_key(spec.id)] if accuracy else []
        if not store.has(store.failure_key(spec.id)) and not all(store.has(k) for k in keys):
            todo.append((spec, [k for k in keys if not store.has(k)]))
    if accuracy and not store.has(store.FEATURES_KEY):
        from .features import sample_features

        store.write(store.FEATURES_KEY, sample_features(data))
    from traces.progress import Progress

    bar = Progress(sum(len(k) for _, k in todo), profile.name, "config", bar=progress)  # off a terminal: a line per ~10 s
    for spec, keys in todo:
        try:
            _measure_variant(profile, spec, keys, data, store, bar)
        except (VariantUnsupported, RuntimeError, NotImplementedError, torch.OutOfMemoryError) as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            store.write(store.failure_key(spec.id), record={"variant": spec.id, "reason": reason})
            if bar is not None:
                bar.advance(len(keys))
    if bar is not None:
        bar.close()
    return store


REPO_ROOT = Path(__file__).resolve().parents[1]


def _portable(path: Path) -> str:
    """A path relative to the repository root when it lies inside it, so bundles travel with it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(Path(path).resolve())


def zoo_summary(zoo_dir: Path, task: str) -> dict:
    """The zoo's own record of its models (accuracy, size, training), kept in bundle.json."""
    path = zoo_dir / task / "zoo.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def assemble(profile: Profile, out: Path, command: str, parts: Path | None = None) -> TraceBundle:
    """Merge the bundle's rows with the new parts; write it atomically; drop the parts.

    ``parts`` (a fresh start): the bundle is made of those pieces alone, and replaces the old one
    (whose resumable pieces are dropped after the swap)."""
    store = PartStore(out, parts)
    old = TraceBundle.load(out) if not store.fresh and (out / "bundle.json").is_file() else None
    service = [old.service] if old is not None else []
    predictions = [old.predictions] if old is not None and len(old.predictions) else []
    service += store.read("service")
    predictions += store.read("predictions")
    failed = (old.meta.get("failed", []) if old is not None else []) + store.read("failed")
    if not service:
        raise InputError(str(out), "nothing was measured: every variant failed (see the reasons above)")
    meta = dict(old.meta) if old is not None else {}
    commands = meta.get("commands", [])
    meta.update({
        "name": profile.name, "description": profile.description, "task": profile.task,
        "hardware": hardware(), "software": software(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "units": {"latency": "ms", "confidence": "max softmax probability"},
        "command": command, "commands": commands + [command], "profile": profile.raw,
        "zoo": zoo_summary(profile.zoo_dir, profile.task), "zoo_dir": _portable(profile.zoo_dir), "threads": profile.threads,
        "timed_in": "replica process" if profile.latency.replica == "process" else "measuring process", "failed": failed,
    })
    service_frame = pd.concat(service, ignore_index=True).sort_values(["variant", "batch_size"], kind="stable")
    pred_frame = (pd.concat(predictions, ignore_index=True) if predictions
                  else pd.DataFrame({c: [] for c in PREDICTION_COLUMNS}))
    if "idle_ms" in service_frame:  # rows timed before idle classes existed ran back to back
        service_frame["idle_ms"] = service_frame["idle_ms"].fillna(0.0)
    for column, default in (("threads", profile.threads), ("pruning", "none")):
        if column not in service_frame:
            service_frame[column] = default
        service_frame[column] = service_frame[column].fillna(default)
    extra = ["threads", "pruning"] + [c for c in ("started_at_s", "idle_ms") if c in service_frame]
    bundle = TraceBundle(meta=meta, service=service_frame[list(SERVICE_COLUMNS) + extra],
                         predictions=pred_frame)
    if old is not None:  # resumed: its start-up times (``measure startup``) stay
        bundle.startup = old.startup
    features = [old.features] if old is not None and len(old.features) else store.read("features")
    if features and len(pred_frame):  # the bundle's own table wins; new ones only with predictions
        bundle.features = features[0]
    bundle.save(out, force=True)
    shutil.rmtree(store.dir, ignore_errors=True)
    if store.fresh:  # the pieces of an earlier interrupted run: superseded by the new bundle
        shutil.rmtree(PartStore.dir_for(out), ignore_errors=True)
    return TraceBundle.load(out)
