"""Sweeps on Ray: a private loopback instance or a cluster someone already runs, assuming nothing
about the workers' filesystem.

A Ray worker may sit on another machine, in another working directory, without this checkout.
So the driver resolves every path before it submits work, and a run takes nothing from the
driver's filesystem:

- the project's code travels in Ray's runtime environment (a ``working_dir`` holding ``sim``,
  ``policies`` and ``traces``), so the nodes need Ray and the project's dependencies, not the
  repository;
- the files runs read (each bundle's tables, each replayed trace) are put into Ray's object store
  once per sweep as bytes (a ``Shipment``); a worker writes each one it needs into a
  content-addressed directory of its node's temporary directory once, and runs the scenario
  with its paths pointed there;
- a task returns each run's config, summary and ``requests.parquet`` bytes; the driver writes the
  run directory into its own ``--out`` exactly as a local worker would (the worker's paths mapped
  back to the driver's, the driver's provenance), so ``results.parquet`` is byte-identical.

Runs are batched (the seeds of a grid point share one prepared scenario in a worker), a few tasks
per CPU, so a warm cluster adds little per run. Every failure reaches the user as one line: an
address nothing listens on, a connection the cluster refuses (authentication), a cluster that
does not answer within ``--connect-timeout``, a lost node (Ray retries its tasks elsewhere, the
loss is reported; a cluster left without CPUs ends the sweep), an error inside a task (its own
``InputError``, unwrapped). Ctrl-C ends the sweep's Ray job, and its outstanding tasks with it:
the driver leaves as a killed one would, not through Ray's shutdown (``sim.leaving`` says why);
finished runs are on disk, so rerunning the sweep resumes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from traces.errors import InputError

from . import leaving
from .workers import Shipment, run_batch

CONNECT_TIMEOUT_S = 30.0     # the default of --connect-timeout
RETRIES = 3                  # Ray's retries of a task whose worker or node died
TASKS_PER_CPU = 4            # batches: enough tasks to balance the load, few enough to amortise each
MAX_RUNS_PER_TASK = 8
WATCH_EVERY_S = 2.0          # how often the driver looks at the cluster while it waits
NO_CPU_GRACE_S = 30.0        # how long a cluster may have no CPU before the sweep gives up
LOOPBACK = ("127.0.0.1", "localhost", "::1")
REFUSED = ("Unauthenticated", "InvalidAuthToken", "AuthenticationError")  # what Ray logs when refused


# --- connecting -------------------------------------------------------------------------------

def import_ray(*, loopback: bool):
    """Import Ray; for a loopback cluster in its single-machine mode, where a node's address is
    127.0.0.1 (Ray would otherwise swap 127.0.0.1 for the machine's address; it reads the switch
    once, at import: where Ray was imported before, that choice stands)."""
    switch = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    if not loopback or "ray" in sys.modules:
        import ray
        return ray
    before = os.environ.get(switch)
    os.environ[switch] = "0"
    try:
        import ray
    finally:
        if before is None:
            del os.environ[switch]
        else:
            os.environ[switch] = before
    return ray


def host_port(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--address {address}", "expected host:port (the address `ray status` prints on "
                         "the cluster's head), ray://host:port, or auto (a cluster running on this machine)")
    return host.strip("[]"), int(port)


def running_here() -> str:
    """The address ``auto`` stands for, as Ray finds it: ``RAY_ADDRESS``, else the cluster last
    started on this machine (``ray start --head`` writes it down). Resolved here, not by Ray, so
    that its host decides how Ray is imported (``import_ray``) and the address is probed first."""
    address = os.environ.get("RAY_ADDRESS", "")
    if address in ("", "auto"):
        root = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else
                                                None) or "/tmp"
        with contextlib.suppress(OSError):
            address = (Path(root) / "ray" / "ray_current_cluster").read_text().strip()
    if address in ("", "auto"):
        raise InputError("--address auto", "no Ray cluster runs on this machine to join (RAY_ADDRESS is unset and "
                         "none was started with `ray start --head`); give its address, or omit --address for a "
                         "private instance")
    host_port(address)
    return address


def _probe(address: str, where: str, timeout_s: float) -> None:
    """Fail fast, in one line, where nothing listens at ``address`` (Ray would retry for minutes)."""
    host, port = host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except ConnectionRefusedError:
        raise InputError(where, "nothing listens there (connection refused); is the cluster up? "
                         "`ray status` on its head prints the address to give") from None
    except socket.timeout:
        raise InputError(where, f"no answer within {timeout_s:g} s (--connect-timeout)") from None
    except OSError as exc:
        raise InputError(where, f"cannot be reached ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """Ray's own chatter while it connects (its C++ core writes to file descriptor 2), kept aside
    and handed to the caller to read: what matters of it becomes one line."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: os.pread(sink.fileno(), 1 << 20, 0).decode(errors="replace")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _init(ray, options: dict, where: str, timeout_s: float) -> None:
    """``ray.init(**options)``, or one line saying why not. Joining a cluster runs in a thread given
    ``timeout_s`` and left behind after it (Ray's own waits are minutes; a refused token shows in its
    log within a second). A private instance starts in the calling thread: the processes Ray
    starts die with the thread that started them (PR_SET_PDEATHSIG)."""
    outcome: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(**options)
            outcome["error"] = None
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    with _stderr_captured() as said:
        if options.get("address") == "local":
            init()
        else:
            thread = threading.Thread(target=init, name="ray-connect", daemon=True)
            thread.start()
            deadline = time.monotonic() + timeout_s
            while thread.is_alive() and time.monotonic() < deadline and not any(m in said() for m in REFUSED):
                thread.join(0.1)
        log = said()
    error = outcome.get("error", TimeoutError())
    if error is None:
        return
    if isinstance(error, KeyboardInterrupt):
        raise error
    if any(m in log or m in repr(error) for m in REFUSED):
        raise InputError(where, "the cluster refused the connection (authentication): give the cluster's token "
                         "with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH")
    if isinstance(error, TimeoutError):
        raise InputError(where, f"no Ray cluster answered within {timeout_s:g} s (--connect-timeout); is it a Ray "
                         "head's address (`ray status` on the head prints it)?")
    raise InputError(where, f"cannot connect ({type(error).__name__}: {_first_line(error)})")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def project_code() -> Iterator[dict]:
    """Ray's runtime environment for the workers: the project's packages (``sim``, ``policies``,
    ``traces``), copied into a temporary directory that Ray uploads as the job's ``working_dir``
    while ``ray.init`` runs (a node downloads it once per version of the code). A ``working_dir``
    also keeps Ray from putting the driver's own directory first on the workers' ``sys.path``, where
    a checkout at the same path would shadow the code sent."""
    import policies
    import sim
    import traces

    with tempfile.TemporaryDirectory(prefix="servesim-code-") as code:
        for package in (sim, policies, traces):
            source = Path(package.__file__).resolve().parent
            shutil.copytree(source, Path(code) / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        yield {"working_dir": code}


@contextlib.contextmanager
def connected(address: str | None, cpus: int | None, timeout_s: float | None = None) -> Iterator[Any]:
    """Ray, connected: to ``address`` (``auto``: a cluster running on this machine), or to a private,
    loopback-only instance of ``cpus`` CPUs started here (never RAY_ADDRESS or a running cluster).
    One Ray connection per process: where one is open already, it is used as it is."""
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    where = "--executor ray" if address is None else f"--address {address}"
    if address == "auto":
        address = running_here()
        where = f"--address auto ({address})"
    try:
        ray = import_ray(loopback=address is None or host_port(address)[0] in LOOPBACK)
    except ImportError:
        raise InputError("--executor ray", "needs the optional extra: pip install 'servesim[dist]'") from None
    if _connection_open():
        yield ray
        return
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    temp_dir = None
    if address is None:
        # its sockets in a short temporary directory of its own (Unix socket paths are short)
        temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp" if os.path.isdir("/tmp") else None)
        options.update(address="local", _node_ip_address="127.0.0.1", _temp_dir=temp_dir, num_cpus=cpus)
    else:
        _probe(address, where, timeout_s)
        options["address"] = address
    left = False  # Ctrl-C under the command line: the process ends as a killed driver's (sim/leaving.py)
    try:
        with project_code() as code:
            _init(ray, {**options, "runtime_env": code}, where, timeout_s)
        try:
            yield ray
        except KeyboardInterrupt:
            left = leaving.abandon(temp_dir)
            raise
    finally:
        if not left:
            with contextlib.suppress(Exception):
                ray.shutdown()
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)


# --- running ----------------------------------------------------------------------------------

def run_on_ray(tasks: list, runs_dir: Path, *, address: str | None, cpus: int | None, timeout_s: float | None,
               advance: Callable[[], None], log: Callable[[str], None]) -> None:
    """Run the sweep's ``tasks`` on Ray, each run written into ``runs_dir/<run id>`` here as it returns."""
    where = "--executor ray" if address is None else f"--address {address}"
    outlives_sweep = _connection_open()  # one opened before the sweep stays open after it
    with connected(address, cpus, timeout_s) as ray:
        from ray.exceptions import RayError, RayTaskError

        total = int(ray.cluster_resources().get("CPU", 0))
        if total < 1:
            raise InputError(where, "the cluster has no CPUs to run on")
        shipped = {path: (shipment.digest, ray.put(shipment))
                   for path, shipment in ((p, Shipment.read(p)) for p in sorted({p for t in tasks for p in t.inputs}))}
        remote = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(run_batch)
        pending = {remote.remote(batch, shipped): batch for batch in batches(tasks, total)}
        watch = _Watch(ray, where, log)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)  # Ctrl-C is seen between waits
                watch.check(sum(len(b) for b in pending.values()))
                if not ready:
                    continue
                batch = pending.pop(ready[0])
                try:
                    results = ray.get(ready[0])
                except RayTaskError as exc:
                    raise _task_failure(exc, where) from None
                except RayError as exc:
                    raise InputError(where, f"{len(batch)} runs failed on the cluster after {RETRIES} retries "
                                     f"({type(exc).__name__}: {_first_line(exc)}); finished runs are kept, rerun "
                                     "the sweep to resume") from None
                for result in results:
                    result.write(runs_dir / result.run_id)
                    advance()
            watch.check(0, now=True)  # a node lost since the last look is reported, however soon the sweep ended
        finally:
            # Ctrl-C or an error: the cluster stops working for this sweep. A connection the sweep
            # opened is next left (Ctrl-C at the command line, sim/leaving.py) or shut down; either
            # ends the job and its tasks with it. Cancelling them first would race their replies,
            # which Ray can abort the driver on ("Tried to complete task that was not pending").
            for ref in pending if outlives_sweep else ():
                with contextlib.suppress(Exception):
                    ray.cancel(ref)


def _connection_open() -> bool:
    """Whether this process is connected to Ray already (Ray not imported: not connected)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def batches(tasks: list, cpus: int) -> list[list]:
    """Consecutive runs (the seeds of a grid point are neighbours) in a few tasks per CPU."""
    size = max(1, min(MAX_RUNS_PER_TASK, len(tasks) // (TASKS_PER_CPU * cpus)))
    return [tasks[i:i + size] for i in range(0, len(tasks), size)]


def _task_failure(exc, where: str) -> BaseException:
    """What a task's exception means to the user: its own one-line error, unwrapped."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, InputError):
        return InputError(cause.where, cause.problem)
    if isinstance(cause, ImportError):
        return InputError(where, f"a worker cannot import the project's dependencies ({cause}); every node needs "
                          "Ray and the project's dependencies installed (docs/sweeps.md)")
    return exc  # a bug: Ray's error, with the worker's traceback


class _Watch:
    """The cluster seen from the driver while it waits: lost nodes reported, no CPU left ends it."""

    def __init__(self, ray, where: str, log: Callable[[str], None]):
        self.ray, self.where, self.log = ray, where, log
        self.nodes = self._alive()
        self.no_cpu_since: float | None = None
        self.checked = time.monotonic()

    def _alive(self) -> dict[str, dict]:
        return {n["NodeID"]: n for n in self.ray.nodes() if n.get("Alive")}

    def check(self, unfinished: int, now: bool = False) -> None:
        """Look (at most every ``WATCH_EVERY_S``, or ``now``): report lost nodes; no CPU for too long
        ends the sweep."""
        if not now and time.monotonic() - self.checked < WATCH_EVERY_S:
            return
        self.checked = time.monotonic()
        alive = self._alive()
        for node in self.nodes.keys() - alive.keys():
            self.log(f"warning: lost node {node[:12]} ({self.nodes[node].get('NodeManagerAddress', '?')}) of the "
                     f"cluster; Ray retries its runs on the other nodes (up to {RETRIES} times)")
        self.nodes = alive
        if sum(n.get("Resources", {}).get("CPU", 0) for n in alive.values()) > 0:
            self.no_cpu_since = None
            return
        self.no_cpu_since = self.no_cpu_since or time.monotonic()
        if time.monotonic() - self.no_cpu_since > NO_CPU_GRACE_S:
            raise InputError(self.where, f"the cluster has had no CPU for {NO_CPU_GRACE_S:g} s (its nodes were "
                             f"lost); {unfinished} runs unfinished: rerun the sweep to resume")
