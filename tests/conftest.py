"""Shared fixtures: a tiny hand-made bundle and helpers to write scenario files."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from traces.bundle import TraceBundle

# ../shared beside the repository; SERVESIM_SHARED overrides it (bench/mutation.py sets it: mutmut runs
# the tests from its copy of the tree, mutants/, one level down, where ../shared is not beside them)
SHARED = Path(os.environ.get("SERVESIM_SHARED") or Path(__file__).resolve().parents[2] / "shared")


def load_bench(name: str) -> ModuleType:
    """A script of ``bench/`` (not a package) imported as module ``<name>_bench``, registered in
    ``sys.modules`` first (its dataclasses look their module up by name)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config, items):
    """Under mutmut, run a mutant's tests fastest first (by the durations mutmut recorded), so that a
    killed mutant is killed by its quickest failing test (mutmut stops at the first failure) rather
    than after the queueing-theory tests, which take minutes under its trampolines. Outside mutmut
    (no MUTANT_UNDER_TEST) the order is pytest's own."""
    stats = Path("mutmut-stats.json")   # mutmut runs the tests from mutants/, where it keeps this file
    if not os.environ.get("MUTANT_UNDER_TEST") or not stats.is_file():
        return
    try:
        seconds = json.loads(stats.read_text())["duration_by_test"]
    except (ValueError, KeyError, TypeError):
        return
    items.sort(key=lambda item: seconds.get(item.nodeid.removeprefix("mutants/"), 0.0))


# Two variants, four samples. "fast" is unsure on samples 2 and 3 and wrong on 3; "slow" is right
# everywhere. Latencies are constant per batch size so every completion time is exact.
FAST_MS = {1: 2.0, 2: 3.0, 4: 5.0}
SLOW_MS = {1: 10.0, 2: 16.0, 4: 28.0}
FAST_CONF = [0.95, 0.90, 0.60, 0.55]
FAST_CORRECT = [True, True, True, False]


def tiny_bundle_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    service = []
    for variant, table in (("fast/int8/cpu", FAST_MS), ("slow/fp32/cpu", SLOW_MS)):
        model, precision, device = variant.split("/")
        for b, ms in table.items():
            service += [(variant, model, precision, device, b, ms)] * 5
    service = pd.DataFrame(service, columns=["variant", "model", "precision", "device", "batch_size", "latency_ms"])
    preds = []
    for s in range(4):
        preds.append(("fast/int8/cpu", s, s % 2, (s % 2) if FAST_CORRECT[s] else 1 - s % 2, FAST_CONF[s], FAST_CORRECT[s]))
        preds.append(("slow/fp32/cpu", s, s % 2, s % 2, 0.99, True))
    predictions = pd.DataFrame(preds, columns=["variant", "sample_id", "label", "pred", "confidence", "correct"])
    return service, predictions


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    service, predictions = tiny_bundle_frames()
    bundle = TraceBundle(meta={"name": "tiny", "description": "hand-made test bundle", "units": {"latency": "ms"}},
                         service=service, predictions=predictions)
    return bundle.save(tmp_path / "tiny", fmt="csv")


# a measure profile's [latency] for the tiny zoo: one batch size, a few runs, timed in the process
QUICK_LATENCY = {"batch_sizes": [1], "warmup_runs": 1, "timed_runs": 3, "replica": "inline"}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Path:
    """A tiny trained digits zoo (cnn-small only), trained once per session on one thread: the
    measure tests read it and never write into it."""
    torch = pytest.importorskip("torch", reason="measure needs the 'measure' extra")
    from measure.data import DataConfig
    from measure.train import TrainConfig
    from measure.zoo import train_zoo

    path = tmp_path_factory.mktemp("zoo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_zoo("digits", path, DataConfig.tiny(), TrainConfig.tiny(), models=["cnn-small"], tiny=True)
    finally:
        torch.set_num_threads(threads)
    return path


def write_profile(path: Path, zoo_dir: Path, *, model: str = "cnn-small", precisions=("fp32",),
                  latency: dict | None = None, backends=None) -> Path:
    """A digits measure profile named "tiny" at ``path``: one model, its precisions (and backends),
    and ``latency`` as its [latency] table (none when None). Values are written as JSON, which TOML
    reads the same for strings, numbers and lists of them."""
    lines = ['name = "tiny"', f"zoo_dir = {json.dumps(str(zoo_dir))}", "[data]", 'task = "digits"']
    if latency is not None:
        lines += ["[latency]"] + [f"{key} = {json.dumps(value)}" for key, value in latency.items()]
    lines += ["[[variants]]", f"model = {json.dumps(model)}", f"precisions = {json.dumps(list(precisions))}"]
    if backends is not None:
        lines.append(f"backends = {json.dumps(list(backends))}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_scenario(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"../shared/data not present at {data}: real-trace tests need it")
    return data


def simulate(raw: dict, seed: int | None = None, base_dir: Path = Path(".")):
    """Run a scenario given as a dict in-process; returns (requests frame, summary)."""
    from sim.runner import prepare, run_once
    from traces.scenario import scenario_from_dict

    scenario = scenario_from_dict(raw, base_dir=base_dir)
    _, requests, summary = run_once(prepare(scenario), scenario.seed if seed is None else seed)
    return requests.to_pandas(), summary  # run_once streams the table to disk


def replay_arrivals(path: Path, arrival_s, duration_s: float) -> dict:
    """An ``[arrivals]`` table that replays exactly ``arrival_s`` (seconds in [0, duration_s)).

    Replayed timestamps count from the first one and the window must lie inside the trace, so a
    sentinel stamp sits one second before the window and one after it; with times that are exact
    binary fractions (0.25, 0.125, ...) every arrival comes back bit for bit.
    """
    stamps = [-1.0, *(float(t) for t in arrival_s), float(duration_s) + 1.0]
    pd.DataFrame({"t": stamps}).to_csv(path, index=False)
    return {"kind": "replay", "path": str(path), "start_s": 1.0, "length_s": float(duration_s)}


def visited(requests: pd.DataFrame, hop: int) -> pd.Series:
    """Whether each request reached hop ``hop``: its deployment is neither "" nor null."""
    column = f"hop{hop}_deployment"
    if column not in requests:
        return pd.Series(False, index=requests.index)
    return requests[column].map(lambda name: isinstance(name, str) and name != "").astype(bool)


class ScriptedExecutor:
    """The least an executor of the serving core does: a clock it is told to move, batches of 1 s
    each, no batching waits. Unit tests drive core pieces with it, outside any simulation."""

    def __init__(self):
        self.time_s, self.ends = 0.0, []

    def now(self):
        return self.time_s

    def call_at(self, time_s, callback):
        raise AssertionError("no batching wait in these tests")

    def start_batch(self, replica, batch, now):
        replica.ticket = ticket = object()
        self.ends.append((now + 1.0, replica, ticket))

    def start_replica(self, replica, now):
        return True

    def stop_replica(self, replica):
        pass

    def batching_changed(self, deployment, max_batch_size):
        pass

    def run(self, until_s):
        """Move the clock to ``until_s``, ending the batches due by then."""
        for end_s, replica, ticket in sorted(self.ends, key=lambda e: e[0]):
            if end_s <= until_s:
                self.ends.remove((end_s, replica, ticket))
                self.time_s = end_s
                replica.completed_at(ticket, end_s)
        self.time_s = until_s
