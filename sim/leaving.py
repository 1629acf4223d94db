"""Leaving a Ray connection on Ctrl-C: the process ends as a killed driver does, not through
Ray's shutdown.

Ray's graceful shutdown, run while a sweep's tasks are still in flight, races their replies: a
reply that lands after the shutdown has let go of its task trips a check in Ray's C++ core
(task_manager.cc, "Tried to complete task that was not pending"), which ends the process from
Ray's own thread with exit status 1. The user then sees a Ray stack trace instead of
``interrupted`` and exit status 130. ``python bench/ray_interrupt.py`` counts how often, on a
two-node loopback cluster, with Ctrl-C right after a killed sweep was resumed: 4 in 60
interrupts before this module, 1 in 200 since (docs/mutation.md). The one left comes in the
milliseconds between the interrupt and ``leave``.

So, under the command line (which runs its command ``armed``), Ctrl-C does not shut the
connection down: ``sim.cluster.connected`` leaves it open (``abandon``), the interrupt travels up
to the command line, which says ``interrupted``, and ``leave`` then ends the process at once
with the command's exit status, before Python's teardown or Ray's shutdown at exit can run. The
cluster sees its driver gone, as after a kill, and ends the job with its tasks; finished runs are
already on disk, so rerunning the sweep resumes. The processes of a private instance
(``--executor ray`` without ``--address``) die with the driver (PR_SET_PDEATHSIG); a small helper
process removes the instance's temporary directory once nothing uses it.

Elsewhere Ray is shut down in order, as before: after an error other than Ctrl-C, and after
Ctrl-C in a Python session that called ``run_sweep`` itself, which goes on and must not be left
holding a connection.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

_ARMED: list[bool] = []                 # not empty while the command line runs its command
_ABANDONED: dict[str, str | None] = {}  # filled once Ctrl-C left this process's Ray connection open

# run as its own process: waits until the driver and every other process naming the directory in
# its command line (a private instance's) are gone, at most a minute, then removes the directory
REMOVE_WHEN_GONE = """import os, shutil, sys, time
driver, path = int(sys.argv[1]), sys.argv[2]
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
def used():
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        try:
            if entry.name.isdigit() and entry.name != str(os.getpid()) and path.encode() in open(
                    entry.path + "/cmdline", "rb").read():
                return True
        except OSError:
            pass
    return False
deadline = time.monotonic() + 60
while (alive(driver) or used()) and time.monotonic() < deadline:
    time.sleep(0.2)
shutil.rmtree(path, ignore_errors=True)
"""


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """While the command line runs its command: Ctrl-C may leave Ray's connection to ``leave``."""
    _ARMED.append(True)
    try:
        yield
    finally:
        _ARMED.pop()


def abandon(temp_dir: str | None) -> bool:
    """Under ``armed``: leave the connection open for ``leave`` to end the process, and say so.
    ``temp_dir``: a private instance's directory, removed once its processes are gone."""
    if _ARMED:
        _ABANDONED["temp_dir"] = temp_dir
    return bool(_ARMED)


def abandoned() -> bool:
    """Whether Ctrl-C left this process's Ray connection open (``leave`` will end the process)."""
    return bool(_ABANDONED)


def leave(code: int) -> None:
    """Where Ctrl-C left this process's Ray connection open: flush what was said and end the
    process with ``code`` now, before Python's teardown reaches Ray. Otherwise, return."""
    if not abandoned():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    temp_dir = _ABANDONED["temp_dir"]
    if temp_dir is not None:
        with contextlib.suppress(OSError):
            subprocess.Popen([sys.executable, "-c", REMOVE_WHEN_GONE, str(os.getpid()), temp_dir],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    os._exit(code)
