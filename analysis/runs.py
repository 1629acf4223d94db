"""Reading run outputs for analysis: one ``SeedRun`` per seed, and runs paired by seed.

``simulate run --seeds 1-3 --out DIR`` (and ``measure serve``) write ``DIR/seed-<n>/`` per seed,
each with ``config.json``, ``requests.parquet`` and ``summary.json`` (README "Run output"). An
analysis is handed either that directory or one ``seed-<n>/`` inside it, and wants the same thing
either way: the seeds, each with its scenario, its summary and its request table.

The request table is the large part (one row per arrival; millions in a long run), so a
``SeedRun`` reads it only when asked, and ``read_requests(columns)`` reads just the columns a
question needs. Summaries and configs are small and read at once, so a directory that is not a run
output is refused before any work, naming the file it lacks.

Two runs of the same scenario family on the same seed see the same arrivals, deadlines and samples;
their difference on that seed is *paired*, and ``pair_by_seed`` lines the seeds up (those in both).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from traces.errors import InputError
from traces.runoutput import FILES

_SEED_DIR = re.compile(r"^seed-(\d+)$")


@dataclass
class SeedRun:
    """One seed of a run output: its scenario (``config``), ``summary`` and, on demand, requests."""

    seed: int
    path: Path
    config: dict
    summary: dict
    _requests: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def requests(self) -> pd.DataFrame:
        """The whole request table, read on first use and kept."""
        if self._requests is None:
            self._requests = self.read_requests()
        return self._requests

    def column_names(self) -> list[str]:
        """The request table's columns (from the Parquet schema: nothing else is read)."""
        if self._requests is not None:
            return list(self._requests.columns)
        import pyarrow.parquet as pq

        path = self.path / "requests.parquet"
        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - any reader error is a bad file
            raise InputError(str(path), f"cannot read as Parquet: {exc}".splitlines()[0]) from None

    def read_requests(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Only ``columns`` of the request table (all when None); a missing one raises ``InputError``."""
        path = self.path / "requests.parquet"
        if columns is not None:
            names = set(self.column_names())
            missing = [c for c in columns if c not in names]
            if missing:
                raise InputError(str(path), f"has no column {', '.join(missing)}; expected a request table of "
                                 "`simulate run` (README \"Run output\")")
        if self._requests is not None:
            return self._requests if columns is None else self._requests[list(columns)]
        try:
            return pd.read_parquet(path, columns=None if columns is None else list(columns))
        except Exception as exc:  # noqa: BLE001 - any reader error is a bad file
            raise InputError(str(path), f"cannot read as Parquet: {exc}".splitlines()[0]) from None

    @property
    def label(self) -> str:
        return f"seed {self.seed}"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"cannot read as JSON: {exc}".splitlines()[0]) from None
    if not isinstance(value, dict):
        raise InputError(str(path), "expected a JSON object")
    return value


def read_seed(path: str | Path, seed: int | None = None) -> SeedRun:
    """One seed directory; ``seed`` defaults to the summary's, else the ``seed-<n>`` name."""
    path = Path(path)
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise InputError(str(path), f"not a run output: missing {', '.join(missing)}")
    summary = _read_json(path / "summary.json")
    if seed is None:
        match = _SEED_DIR.match(path.name)
        seed = summary.get("seed", int(match[1]) if match else None)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(str(path / "summary.json"), "has no integer 'seed' (and the directory is not seed-<n>)")
    return SeedRun(seed=seed, path=path, config=_read_json(path / "config.json"), summary=summary)


def read_run(path: str | Path) -> list[SeedRun]:
    """The seeds of a run output, in seed order: ``path`` is a run directory (``seed-<n>/`` inside)
    or one seed directory. ``InputError`` names what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(str(path), "not found or not a directory; expected a run output (`simulate run --out DIR`)")
    if any((path / name).exists() for name in FILES):
        return [read_seed(path)]
    seeds = sorted((int(m[1]), p) for p in path.iterdir() if p.is_dir() and (m := _SEED_DIR.match(p.name)))
    if not seeds:
        raise InputError(str(path), f"not a run output: no seed-<n>/ directories and no {', '.join(FILES)}")
    return [read_seed(p, seed) for seed, p in seeds]


def pair_by_seed(a: list[SeedRun], b: list[SeedRun], where: str) -> list[tuple[SeedRun, SeedRun]]:
    """The seeds both runs have, in order, as (a, b) pairs; ``InputError`` when they share none."""
    by_seed = {run.seed: run for run in b}
    pairs = [(run, by_seed[run.seed]) for run in a if run.seed in by_seed]
    if not pairs:
        raise InputError(where, f"the runs have no seed in common (seeds {[r.seed for r in a]} and "
                         f"{[r.seed for r in b]}); a paired comparison needs the same seeds")
    return pairs


def unpaired_note(a: Iterable[int], b: Iterable[int], names: tuple[str, str]) -> str:
    """A sentence naming the seeds only one side has (left out of a paired comparison), or ''.
    ``a`` and ``b`` are the two sides' seeds (e.g. ``[r.seed for r in runs]``)."""
    seeds_a, seeds_b = {int(s) for s in a}, {int(s) for s in b}
    parts = [f"only in {name}: {sorted(only)}" for name, only in zip(names, (seeds_a - seeds_b, seeds_b - seeds_a))
             if only]
    return f"Seeds left out of the pairing: {'; '.join(parts)}." if parts else ""


def add_out_arguments(parser, files: str) -> None:
    """``--out DIR`` (a report directory holding ``files``) and ``--force``."""
    parser.add_argument("--out", metavar="DIR", help=f"also write {files} into this directory (atomically; never "
                                                     "over a directory not written by us)")
    parser.add_argument("--force", action="store_true", help="replace an earlier report of ours at --out")


def check_out(args) -> None:
    """Refuse a bad ``--out`` before any work (``traces.outputs.check_target``)."""
    from traces.outputs import check_target

    if args.out:
        check_target(args.out, force=args.force, kind="report")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; ``|`` inside a cell is escaped."""
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])
