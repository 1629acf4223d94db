"""Where a sweep's runs execute: local worker processes, or tasks on Ray (``sim.cluster``).

Both report the same way: an ``InputError`` raised by a run reaches the driver as that
``InputError`` (it pickles; Ray's ``RayTaskError`` wrapper is taken off), so the user sees one clean
line. Local workers share the driver's filesystem and write their run directories themselves; they
die with the driver, even when it is killed with SIGKILL (``die_with_parent``), instead of running
on as orphans. On Ray nothing of the driver's filesystem is assumed: the runs' inputs and the
project's code are shipped, and each run comes back to the driver, which writes it.

In a Ray worker (``run_batch``, a task of a few runs): the inputs come as ``Shipment``s (a bundle's
tables or a trace, as bytes, fetched once per node into a content-addressed copy), the scenario
runs on those copies, the seeds of a grid point share one prepared scenario, and each run goes back
as a ``RunResult`` with the driver's paths in place of the copies'.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

from traces.errors import InputError
from traces.progress import Progress


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


class Executor:
    """Runs tasks on local processes or Ray, showing progress (``traces.progress``) if asked:
    a bar on a terminal, a line every ~10 s elsewhere."""

    def __init__(self, kind: str, workers: int | None, address: str | None, progress: bool, *,
                 connect_timeout_s: float | None = None, log: Callable[[str], None] = _stderr):
        self.kind, self.workers, self.address, self.progress = kind, workers, address, progress
        self.connect_timeout_s, self.log = connect_timeout_s, log

    def session(self, needed: bool = True) -> ContextManager[Any]:
        """Where a sweep will run, made ready before anything is written: on Ray, connected (a bad
        address, a refused connection are one line here), for as long as the block lasts."""
        if self.kind != "ray" or not needed:
            return contextlib.nullcontext()
        from .cluster import connected

        return connected(self.address, self.workers, self.connect_timeout_s)

    def __call__(self, run: Callable[[Any, str], Any], tasks: list, runs_dir: str) -> None:
        """``run(task, runs_dir)`` for every task in local processes; on Ray, each run computed on the
        cluster and written here. The first ``InputError`` raised is raised here."""
        if not tasks:
            return
        shown = Progress(len(tasks), "sweep", "runs") if self.progress else None
        advance = (lambda: None) if shown is None else shown.advance
        try:
            if self.kind == "ray":
                from .cluster import run_on_ray

                run_on_ray(tasks, Path(runs_dir), address=self.address, cpus=self.workers,
                           timeout_s=self.connect_timeout_s, advance=advance, log=self.log)
            else:
                _run_local(run, tasks, runs_dir, self.workers or os.cpu_count() or 1, advance)
        finally:
            if shown is not None:
                shown.close()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process (SIGTERM) when the driver dies, even of SIGKILL.

    Linux: the kernel signals it (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread polls the parent."""
    if sys.platform.startswith("linux"):
        try:
            ok = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        except (OSError, AttributeError):
            ok = False
        if ok:
            if os.getppid() != parent_pid:  # the driver died before the request took effect
                os.kill(os.getpid(), signal.SIGTERM)
            return
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="die-with-parent", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _run_local(run: Callable[[Any, str], Any], tasks: list, runs_dir: str, workers: int,
               advance: Callable[[], None]) -> None:
    if workers <= 1 or len(tasks) == 1:
        for task in tasks:
            run(task, runs_dir)
            advance()
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=die_with_parent,
                               initargs=(os.getpid(),))
    try:
        for future in as_completed([pool.submit(run, task, runs_dir) for task in tasks]):
            future.result()  # an InputError raised in the worker is raised here, unchanged
            advance()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error: drop what has not started


# --- a sweep's runs in a Ray worker (sent there by sim.cluster) ----------------------------------

PREPARED_KEPT = 4  # prepared scenarios a worker process keeps for the next runs


@dataclass(frozen=True)
class Shipment:
    """One input of the runs, as bytes: a trace file, or a bundle directory's files."""

    name: str                               # the file's or the directory's name
    files: tuple[tuple[str, bytes], ...]    # (file name, contents); a single file ships itself
    directory: bool

    @classmethod
    def read(cls, path: str) -> "Shipment":
        from traces.tables import find_table

        source = Path(path)
        if not source.is_dir():
            return cls(source.name, ((source.name, source.read_bytes()),), False)
        parts = [source / "bundle.json"]
        for stem in ("service", "predictions", "startup"):  # what traces.bundle.TraceBundle.load reads
            with contextlib.suppress(InputError):
                parts.append(find_table(source, stem))
        return cls(source.name, tuple((p.name, p.read_bytes()) for p in parts if p.is_file()), True)

    @property
    def digest(self) -> str:
        hasher = hashlib.sha256(f"{self.name}\0{self.directory}".encode())
        for name, data in self.files:
            hasher.update(f"\0{name}\0{len(data)}\0".encode())
            hasher.update(data)
        return hasher.hexdigest()


@dataclass(frozen=True)
class RunResult:
    """What a task sends back for one run; the driver writes it (``write``)."""

    run_id: str
    config: dict
    summary: dict
    requests: bytes     # requests.parquet
    rows: int
    timeline: bytes | None = None  # timeline.parquet (None for the bounds)

    def write(self, directory: Path) -> None:
        """The run output at ``directory``, as a local worker writes it (``write_run``: atomic, with
        this process's provenance)."""
        from traces.outputs import temp_file
        from traces.runoutput import RequestTable, write_run

        import io

        import pandas as pd

        path = temp_file("requests", ".parquet")
        path.write_bytes(self.requests)
        timeline = pd.read_parquet(io.BytesIO(self.timeline)) if self.timeline is not None else None
        write_run(directory, self.config, RequestTable(path, self.rows), self.summary, force=True, timeline=timeline)


_PREPARED: OrderedDict[str, Any] = OrderedDict()   # this worker process's prepared scenarios
_LOCAL: dict[str, str] = {}                        # shipment digest -> its copy on this node


def run_batch(tasks: list, shipped: dict[str, tuple[str, Any]], fetch: Callable[[Any], Shipment] | None = None
              ) -> list[RunResult]:
    """A Ray task: the runs of ``tasks`` on this node's copies of their inputs; ``shipped`` maps each
    input's path on the driver to (its digest, the object holding its ``Shipment``), which
    ``fetch`` (default ``ray.get``) brings here where this node has no copy yet."""
    from traces.runoutput import RequestTable

    from .sweep import compute

    if fetch is None:
        import ray

        fetch = ray.get
    local = {path: _local_copy(*shipped[path], fetch) for path in dict.fromkeys(p for t in tasks for p in t.inputs)}
    back = {copy: path for path, copy in local.items()}
    results = []
    for task in tasks:
        raw = _swap(task.raw, local, exact=True)
        key = json.dumps(raw, sort_keys=True, default=str)
        try:
            config, requests, summary, timeline = compute(dataclasses.replace(task, raw=raw), prepare=_prepared(key))
        except InputError as exc:
            raise InputError(_swap(exc.where, back), _swap(exc.problem, back)) from None
        data = requests.path.read_bytes() if isinstance(requests, RequestTable) else _parquet_bytes(requests)
        results.append(RunResult(task.run_id, _swap(config, back), _swap(summary, back), data, len(requests),
                                 _parquet_bytes(timeline) if timeline is not None else None))
    return results


def _prepared(key: str) -> Callable:
    """``prepare``, remembered for the next runs of the same scenario (the other seeds of a point)."""
    from .runner import prepare

    def prepare_once(scenario):
        if key not in _PREPARED:
            _PREPARED[key] = prepare(scenario)
            while len(_PREPARED) > PREPARED_KEPT:
                _PREPARED.popitem(last=False)
        _PREPARED.move_to_end(key)
        return _PREPARED[key]
    return prepare_once


def _local_copy(digest: str, ref, fetch: Callable[[Any], Shipment]) -> str:
    """This node's copy of a shipment, written once (atomically) under its content digest."""
    if digest in _LOCAL and Path(_LOCAL[digest]).exists():
        return _LOCAL[digest]
    root = Path(tempfile.gettempdir()) / f"servesim-inputs-{os.getuid()}"
    home = root / digest
    if not home.is_dir():
        shipment = fetch(ref)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
        target = staging / shipment.name if shipment.directory else staging
        target.mkdir(exist_ok=True)
        for name, data in shipment.files:
            (target / name).write_bytes(data)
        try:
            os.replace(staging, home)
        except OSError:  # another worker of this node was first
            shutil.rmtree(staging, ignore_errors=True)
    names = [p.name for p in home.iterdir()]
    _LOCAL[digest] = str(home / names[0])
    return _LOCAL[digest]


def _swap(value, mapping: dict[str, str], *, exact: bool = False):
    """``value`` with the strings of ``mapping`` replaced: whole values (``exact``) or within text."""
    if isinstance(value, dict):
        return {k: _swap(v, mapping, exact=exact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_swap(v, mapping, exact=exact) for v in value)
    if not isinstance(value, str):
        return value
    if exact:
        return mapping.get(value, value)
    for old, new in mapping.items():
        value = value.replace(old, new)
    return value


def _parquet_bytes(frame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
