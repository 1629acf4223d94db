"""Which directories are outputs of ours, of what kind, and which files in them we wrote.

``traces.outputs`` replaces an output only when it is ours, of the kind the command writes, and
holds nothing a user added; this module answers those three questions. Every output we write
carries a marker file, ``.servesim-output.json``: its kind (run, bundle, sweep, fidelity), where it
came from (``traces.provenance``) and, once complete, the list of files it holds. Outputs written
before the marker existed are recognised by their own files (a ``summary.json``, ``bundle.json`` or
``sweep.json`` with our keys) and taken as a whole. Outputs may nest (a fidelity bench's output
holds run outputs): each answers for its own files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

MARKER = ".servesim-output.json"   # written into every output directory we create
OURS = ("bundle.json", "summary.json", "sweep.json")  # what outputs written before the marker hold
SCRATCH = ("staging", "old", "parts", "spool")  # the hidden directories (or files) we keep beside a target
_LEFTOVER = re.compile(rf"^\.(?P<name>.+)\.(?P<what>{'|'.join(SCRATCH)})-(?P<pid>\d+)-[^/]*$")


def is_ours(path: Path) -> bool:
    """Whether ``path`` is a directory one of our commands wrote (or an empty one)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return output_kind(path) is not None or not any(path.iterdir())


def read_marker(path: Path) -> dict | None:
    """The marker of the output at ``path`` (kind, provenance, entries), None if it has none."""
    try:
        marker = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def _json_with(path: Path, keys: tuple[str, ...]) -> bool:
    """``path`` is a JSON object with every one of ``keys`` (how our files were told apart before
    the marker: a user's ``summary.json`` of their own is not ours)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and all(k in value for k in keys)


_LEGACY = (("bundle.json", "bundle", ("name", "command")), ("sweep.json", "sweep", ("sweep", "runs")),
           ("summary.json", "run", ("requests", "hit_rate")))


def output_kind(path: Path) -> str | None:
    """The kind of output of ours at ``path`` (run, bundle, sweep, fidelity...): its marker's, or
    for an output written before the marker existed, the one its files show; None otherwise."""
    path = Path(path)
    if not path.is_dir():
        return None
    marker = read_marker(path)
    if marker is not None:
        return marker["kind"]
    for name, kind, keys in _LEGACY:
        if _json_with(path / name, keys):
            return kind
    if (path / "runs.csv").is_file() and any(_json_with(p, _LEGACY[2][2]) for p in path.glob("seed-*/summary.json")):
        return "run"  # a multi-seed run output written before the marker existed
    return None


def inventory(directory: Path) -> list[str]:
    """Every file below ``directory`` (relative, POSIX) that its marker lists: all but the marker,
    our leftovers of killed runs, and subdirectories that are outputs of their own (with lists of
    their own, e.g. the runs a fidelity bench writes into its output)."""
    directory = Path(directory)
    files: list[str] = []

    def walk(folder: Path, prefix: str) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.name == MARKER or _LEFTOVER.match(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                if not (entry / MARKER).is_file():
                    walk(entry, f"{prefix}{entry.name}/")
            else:
                files.append(prefix + entry.name)

    walk(directory, "")
    return files


def _marked_subdirectories(directory: Path):
    """The outputs of ours nested in ``directory`` (not below another nested one)."""
    for entry in sorted(Path(directory).iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not _LEFTOVER.match(entry.name):
            if (entry / MARKER).is_file():
                yield entry
            else:
                yield from _marked_subdirectories(entry)


def foreign_entry(path: Path) -> str | None:
    """The first file inside the output at ``path`` that no command of ours wrote, if any.

    A marker that lists its output's files says exactly which; a sweep, which grows run by run,
    may hold only its own files and run directories that are outputs of ours themselves;
    an output from before the marker has no list and is taken as a whole."""
    path = Path(path)
    marker = read_marker(path)
    if marker is None:
        return None
    if marker["kind"] == "sweep":
        for entry in sorted(path.iterdir()):
            if entry.name in (MARKER, "sweep.json", "results.parquet") or _LEFTOVER.match(entry.name):
                continue
            if entry.name != "runs" or not entry.is_dir():
                return entry.name
            for run in sorted(entry.iterdir()):
                if _LEFTOVER.match(run.name):
                    continue
                if not run.is_dir() or read_marker(run) is None:
                    return f"runs/{run.name}"
                inner = foreign_entry(run)
                if inner is not None:
                    return f"runs/{run.name}/{inner}"
        return None
    listed = marker.get("entries")
    if not isinstance(listed, list):
        return None
    listed = set(listed)
    stray = next((rel for rel in inventory(path) if rel not in listed), None)
    if stray is not None:
        return stray
    for nested in _marked_subdirectories(path):
        inner = foreign_entry(nested)
        if inner is not None:
            return f"{nested.relative_to(path).as_posix()}/{inner}"
    return None


def write_marker(directory: Path, kind: str, entries: list[str] | None = None) -> None:
    """Mark ``directory`` as an output of ours (``kind``: run, bundle, sweep, fidelity, report),
    listing the files it holds (``entries``) once it is complete."""
    from . import provenance

    marker = {"kind": kind, **provenance.info()}
    if entries is not None:
        marker["entries"] = entries
    (Path(directory) / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
