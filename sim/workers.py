"""Where a sweep's runs execute: local worker processes, or tasks on a Ray cluster.

Both report the same way: an ``InputError`` raised by a run reaches the driver as that
``InputError`` (it pickles; Ray's ``RayTaskError`` wrapper is taken off), so the user sees one clean
line. Local workers die with the driver, even when it is killed with SIGKILL (``die_with_parent``),
instead of running on as orphans. Without an address, Ray runs on a private instance of its own
(``address="local"``, loopback only, its own temporary directory), so it can neither attach to nor
be blocked by another Ray instance on the machine.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from traces.errors import InputError
from traces.progress import Progress


class Executor:
    """Runs tasks on local processes or Ray, showing progress (``traces.progress``) if asked:
    a bar on a terminal, a line every ~10 s elsewhere."""

    def __init__(self, kind: str, workers: int | None, address: str | None, progress: bool):
        self.kind, self.workers, self.address, self.progress = kind, workers, address, progress

    def __call__(self, run: Callable[[Any, str], Any], tasks: list, runs_dir: str) -> None:
        """``run(task, runs_dir)`` for every task; the first ``InputError`` raised is raised here."""
        if not tasks:
            return
        shown = Progress(len(tasks), "sweep", "runs") if self.progress else None
        advance = (lambda: None) if shown is None else shown.advance
        try:
            if self.kind == "ray":
                _run_ray(run, tasks, runs_dir, self.address, self.workers, advance)
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


def _run_ray(run: Callable[[Any, str], Any], tasks: list, runs_dir: str, address: str | None,
             workers: int | None, advance: Callable[[], None]) -> None:
    try:
        ray = _import_ray(loopback=address is None)
        from ray.exceptions import RayTaskError
    except ImportError:
        raise InputError("--executor ray", "needs the optional extra: pip install 'servesim[dist]'") from None
    started = not ray.is_initialized()
    temp_dir = None
    if started:
        options = {"include_dashboard": False, "log_to_driver": False,
                   "runtime_env": {"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}}}
        if address is None:
            # a private instance: never joins RAY_ADDRESS or a cluster already running on the machine,
            # keeps its sockets in a short temporary directory of its own (Unix socket paths are short)
            temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp" if os.path.isdir("/tmp") else None)
            options.update(address="local", _node_ip_address="127.0.0.1", _temp_dir=temp_dir,
                           num_cpus=workers)
        else:
            options["address"] = address
        ray.init(**options)
    remote = ray.remote(run)
    pending = {remote.remote(task, runs_dir) for task in tasks}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            pending.discard(ready[0])
            try:
                ray.get(ready[0])
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, InputError):
                    raise InputError(cause.where, cause.problem) from None
                raise
            advance()
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode, on 127.0.0.1


def _import_ray(*, loopback: bool):
    """Import Ray; for a private instance (``loopback``) in its single-machine mode, where its node
    address is 127.0.0.1 (Ray reads the switch once, at import: where Ray was imported before,
    the instance is still private, on the machine's own address)."""
    if not loopback or "ray" in sys.modules:
        import ray
        return ray
    before = os.environ.get(LOOPBACK_ONLY)
    os.environ[LOOPBACK_ONLY] = "0"
    try:
        import ray
    finally:
        if before is None:
            del os.environ[LOOPBACK_ONLY]
        else:
            os.environ[LOOPBACK_ONLY] = before
    return ray
