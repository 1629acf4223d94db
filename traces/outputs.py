"""Outputs that appear whole or not at all, and never replace what is not ours.

A user points ``--out`` at a directory of their own. Every command that writes (``simulate run``,
``simulate sweep``, ``measure *``, ``bench/fidelity.py``, the analysis reports) therefore follows one
rule, implemented here once:

1. Before any work, the target is checked (``check_target``): a file, the current directory or
   one of its parents, the filesystem root or the home directory is refused; so is an existing
   directory that is not an output of ours (it holds none of our marker, ``bundle.json``,
   ``summary.json`` or ``sweep.json`` with our keys). An output of ours is replaced only with
   ``--force`` and only by an output of the same kind (a run never replaces a trace bundle), or,
   for a command that resumes, taken up again when it is of the command's own kind; and only when
   it holds nothing we did not write: the marker lists every file the output had when it was
   swapped in, so a file a user added inside it is found and the output refused.
2. The new output is built in a hidden staging directory beside the target
   (``.<name>.staging-<pid>-<random>``), which carries the marker file.
3. Only when it is complete is it swapped in: the old output is renamed aside, the staging
   directory renamed into place, then the old one deleted. A failure or Ctrl-C at any point before
   the swap removes the staging directory and leaves the old output untouched.
4. SIGTERM removes the staging (and scratch) directories of the process before it dies. A SIGKILL
   cannot be caught: the next run into the same place removes those whose process is gone (and
   puts back an old output caught between the two renames), and says so on stderr.

A single-file output (a report) follows the same rule with ``atomic_file``: a file of ours starts
with a marker line the command chooses.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .ownership import (MARKER, OURS, SCRATCH, _LEFTOVER, foreign_entry, inventory, is_ours,  # noqa: F401
                        output_kind, read_marker, write_marker)

_active: set[Path] = set()          # staging directories and files of this process, removed on SIGTERM
_lock = threading.Lock()
_handler_installed = False
# a forked worker (a sweep's) must not remove its parent's staging directories when it is terminated
os.register_at_fork(after_in_child=_active.clear)
_swapping = 0                       # swaps under way: a SIGTERM waits until they are done
_deferred = False


def check_target(target: str | Path, *, force: bool, option: str = "--out", resume: str | None = None,
                 kind: str | None = None) -> Path:
    """The output path, checked against the rules above; raises ``InputError`` naming it.

    ``kind``: what the command writes (run, bundle, sweep, fidelity); an existing output of ours
    is replaced only by one of the same kind. ``resume``: the command takes up an existing output
    of this kind (e.g. ``"bundle"``), so one is accepted without ``force``.
    """
    target = Path(target)
    kind = kind or resume
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
    _check_parent(target)
    if target.exists() and any(target.iterdir()):
        found = output_kind(target)
        if found is None:
            raise InputError(where, f"{option} exists and is not an output of ours (no {MARKER}, "
                             f"{', '.join(OURS)}); refusing to replace it; choose another path")
        if kind is not None and found != kind:
            raise InputError(where, f"holds a {found} output of ours, which a {kind} output never replaces, "
                             "even with --force; choose another path")
        if not force and resume is None:
            raise InputError(where, "already exists; pass --force to replace it")
        foreign = foreign_entry(target)
        if foreign is not None:
            raise InputError(where, f"holds {foreign}, which no command of ours wrote; refusing to replace it "
                             "(move it out, or choose another path)")
    return target


def _check_parent(target: Path) -> None:
    """The nearest existing ancestor of ``target`` is a directory we may create entries in."""
    for parent in target.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(str(target), f"cannot create it: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(str(target), f"cannot create it: {parent} is not writable")
            return


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only or virtual filesystem that os.access did not reveal
        raise InputError(str(target), f"cannot create it: {exc.strerror or exc}") from None


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
        if not match or match["name"] != target.name or _alive(int(match["pid"])):
            continue
        if match["what"] == "old" and entry.is_dir() and not target.exists():
            os.replace(entry, target)
            notes.append(f"put back {target}, which a killed run had moved aside to {entry.name}")
        else:
            _remove(entry)
            notes.append(f"removed {entry}, the unfinished output of a run that was killed")
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    return notes


@contextmanager
def atomic_output(target: str | Path, *, force: bool = False, kind: str = "run",
                  option: str = "--out") -> Iterator[Path]:
    """Yield a staging directory that becomes ``target`` only if the block completes."""
    target = check_target(target, force=force, option=option, kind=kind)
    sweep_leftovers(target)
    _make_parent(target)
    with _scratch(target, "staging") as staging:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary directory
        write_marker(staging, kind)
        yield staging
        _swap_in(staging, target)


@contextmanager
def scratch_directory(target: str | Path, what: str = "parts") -> Iterator[Path]:
    """A hidden working directory beside ``target`` (``.<name>.<what>-<pid>-<random>``) for the
    pieces of an output under construction, e.g. the measurements of a ``measure --force`` run.
    It is removed when the block ends, however it ends, and on SIGTERM; one that a SIGKILL left
    is removed by the next ``sweep_leftovers`` of the same target."""
    target = Path(target)
    if what not in SCRATCH:
        raise ValueError(f"what must be one of {SCRATCH}, got {what!r}")
    _make_parent(target)
    with _scratch(target, what) as directory:
        yield directory


def check_file_target(target: str | Path, *, force: bool, marker_line: str, option: str = "--out") -> Path:
    """A single-file output path, checked: a file of ours starts with ``marker_line`` and is
    replaced only with ``force``; any other existing file, a directory or a bad parent is refused."""
    target = Path(target)
    where = str(target)
    if target.is_symlink() or target.is_dir():
        raise InputError(where, f"{option} is a directory or a link, not a file of ours; choose another path")
    _check_parent(target)
    if target.exists():
        if not _first_line_is(target, marker_line):
            raise InputError(where, f"{option} exists and was not written by us (its first line is not "
                             f"{marker_line!r}); refusing to replace it; choose another path")
        if not force:
            raise InputError(where, "already exists; pass --force to replace it")
    return target


@contextmanager
def atomic_file(target: str | Path, *, force: bool, marker_line: str, option: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (checked by ``check_file_target``) that replaces it
    (``os.replace``) when the block completes; the writer starts it with ``marker_line``."""
    target = check_file_target(target, force=force, marker_line=marker_line, option=option)
    sweep_leftovers(target)
    _make_parent(target)
    tmp = target.parent / f".{target.name}.staging-{os.getpid()}-{secrets.token_hex(4)}"
    _register(tmp)
    try:
        yield tmp
        if not _first_line_is(tmp, marker_line):
            raise RuntimeError(f"{tmp}: the writer did not start the file with its marker line")
        os.replace(tmp, target)
    finally:
        _unregister(tmp)
        if tmp.exists():
            tmp.unlink()


def _first_line_is(path: Path, line: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline().rstrip("\r\n") == line
    except OSError:
        return False


@contextmanager
def _scratch(target: Path, what: str) -> Iterator[Path]:
    try:
        directory = Path(tempfile.mkdtemp(prefix=f".{target.name}.{what}-{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        raise InputError(str(target), f"cannot create it: {exc.strerror or exc}") from None
    _register(directory)
    try:
        yield directory
    finally:
        _unregister(directory)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)


_TEMP_FILE = re.compile(r"^servesim-(?P<what>[a-z]+)-(?P<pid>\d+)-[^/]*$")


def temp_file(what: str, suffix: str, directory: str | Path | None = None) -> Path:
    """A new empty file in the temporary directory, ``servesim-<what>-<pid>-<random><suffix>``,
    removed on SIGTERM until ``release_temp_file``; the same files of killed processes are removed
    here, so a SIGKILL leaves them behind only until the next run."""
    directory = Path(directory or tempfile.gettempdir())
    for entry in directory.glob(f"servesim-{what}-*{suffix}"):
        match = _TEMP_FILE.match(entry.name)
        if match and not _alive(int(match["pid"])):
            _remove(entry)
    fd, name = tempfile.mkstemp(prefix=f"servesim-{what}-{os.getpid()}-", suffix=suffix, dir=directory)
    os.close(fd)
    path = Path(name)
    _register(path)
    return path


def release_temp_file(path: Path, *, remove: bool = True) -> None:
    """Forget a ``temp_file`` (and remove it, unless it now belongs to someone else)."""
    _unregister(Path(path))
    if remove:
        _remove(Path(path))


def _swap_in(staging: Path, target: Path) -> None:
    old = None
    if target.exists() and not is_ours(target):  # it changed under us since the check
        raise InputError(str(target), "appeared meanwhile and is not an output of ours; not replaced")
    kind = read_marker(staging)["kind"]
    if kind != "sweep":  # a sweep grows run by run after the swap: its runs carry their own lists
        write_marker(staging, kind, inventory(staging))
    with _sigterm_deferred():  # never stopped between the two renames, with the old output aside
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
            os.replace(target, old)  # onto the empty placeholder directory
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _sigterm_deferred() -> Iterator[None]:
    global _swapping, _deferred
    with _lock:
        _swapping += 1
    try:
        yield
    finally:
        with _lock:
            _swapping -= 1
            resend = _deferred and not _swapping
        if resend:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs again, now that the swap is done


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


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
    """Remove this process's staging directories, then die of SIGTERM as if unhandled (once any
    swap under way is done: ``_sigterm_deferred``)."""
    global _deferred
    if _swapping:
        _deferred = True
        return
    for staging in list(_active):
        _remove(staging)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
