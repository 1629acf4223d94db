"""Output directories that appear whole or not at all, and never replace what is not ours.

A user points ``--out`` at a directory of their own. Every command that writes (``simulate run``,
``simulate sweep``, ``measure *``, ``bench/fidelity.py``, the analysis reports) therefore follows one
rule, implemented here once:

1. Before any work, the target is checked (``check_target``): a file, the current directory or
   one of its parents, the filesystem root or the home directory is refused; so is an existing
   directory that is not an output of ours (it holds none of our marker, ``bundle.json``,
   ``summary.json`` or ``sweep.json``), and an output of ours is replaced only with ``--force``.
2. The new output is built in a hidden staging directory beside the target
   (``.<name>.staging-<pid>-<random>``), which carries the marker file.
3. Only when it is complete is it swapped in: the old output is renamed aside, the staging
   directory renamed into place, then the old one deleted. A failure or Ctrl-C at any point before
   the swap removes the staging directory and leaves the old output untouched.
4. SIGTERM removes the staging directories of the process before it dies. A SIGKILL cannot be
   caught: the next run into the same place removes staging directories whose process is gone
   (and puts back an old output caught between the two renames), and says so on stderr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError

MARKER = ".servesim-output.json"   # written into every output directory we create
OURS = ("bundle.json", "summary.json", "sweep.json")  # what outputs written before the marker hold
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<what>staging|old)-(?P<pid>\d+)-[^/]*$")

_active: set[Path] = set()          # staging directories of this process, removed on SIGTERM
_lock = threading.Lock()
_handler_installed = False


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a directory one of our commands wrote (or an empty one)."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / MARKER).is_file() or any((path / name).is_file() for name in OURS):
        return True
    if (path / "runs.csv").is_file() and any(path.glob("seed-*/summary.json")):
        return True  # a multi-seed run output written before the marker existed
    return not any(path.iterdir())


def check_target(target: str | Path, *, force: bool, option: str = "--out") -> Path:
    """The output path, checked against the rules above; raises ``InputError`` naming it."""
    target = Path(target)
    where = str(target)
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(where, f"{option} is the current directory or one of its parents; "
                         "choose a new directory for the output")
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise InputError(where, f"{option} is the filesystem root or the home directory; choose a new directory")
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise InputError(where, f"{option} is an existing file, not an output directory; choose another path")
    for parent in resolved.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(where, f"cannot create it: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(where, f"cannot create it: {parent} is not writable")
            break
    if target.exists():
        if not is_ours(target):
            raise InputError(where, f"{option} exists and is not an output of ours (no {MARKER}, "
                             f"{', '.join(OURS)}); refusing to replace it; choose another path")
        if not force and any(target.iterdir()):
            raise InputError(where, "already exists; pass --force to replace it")
    return target


def sweep_leftovers(target: Path) -> list[str]:
    """Remove staging directories left beside ``target`` by killed processes; put back an old
    output caught between the swap's two renames. Returns what was done, one line each."""
    target = Path(target)
    parent = target.parent
    notes: list[str] = []
    if not parent.is_dir():
        return notes
    for entry in sorted(parent.iterdir()):
        match = _LEFTOVER.match(entry.name)
        if not match or match["name"] != target.name or not entry.is_dir() or _alive(int(match["pid"])):
            continue
        if match["what"] == "old" and not target.exists():
            os.replace(entry, target)
            notes.append(f"put back {target}, which a killed run had moved aside to {entry.name}")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            notes.append(f"removed {entry}, the unfinished output of a run that was killed")
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    return notes


@contextmanager
def atomic_output(target: str | Path, *, force: bool = False, kind: str = "run",
                  option: str = "--out") -> Iterator[Path]:
    """Yield a staging directory that becomes ``target`` only if the block completes."""
    target = check_target(target, force=force, option=option)
    sweep_leftovers(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-{os.getpid()}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary directory
    write_marker(staging, kind)
    _register(staging)
    try:
        yield staging
        _swap_in(staging, target)
    finally:
        _unregister(staging)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_marker(directory: Path, kind: str) -> None:
    """Mark ``directory`` as an output of ours (``kind``: run, bundle, sweep, fidelity, report)."""
    from . import provenance

    (Path(directory) / MARKER).write_text(json.dumps({"kind": kind, **provenance.info()}, sort_keys=True) + "\n")


def _swap_in(staging: Path, target: Path) -> None:
    old = None
    if target.exists():
        if not is_ours(target):  # it changed under us since the check
            raise InputError(str(target), "appeared meanwhile and is not an output of ours; not replaced")
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
        os.replace(target, old)  # onto the empty placeholder directory
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _register(staging: Path) -> None:
    global _handler_installed
    with _lock:
        _active.add(staging)
        if not _handler_installed and threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            if previous in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, _on_sigterm)
                _handler_installed = True


def _unregister(staging: Path) -> None:
    with _lock:
        _active.discard(staging)


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised in a subprocess by the tests
    """Remove this process's staging directories, then die of SIGTERM as if unhandled."""
    for staging in list(_active):
        shutil.rmtree(staging, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
