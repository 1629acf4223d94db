"""Replica start-up (cold start) times: the bundle's optional ``startup`` table and what the simulator draws.

A replica that an autoscaler adds serves only once it has started: a fresh process has to start
Python, import torch and the model code, load the task's data and the checkpoint, build the variant
(pruning, precision) and run its first batches. ``measure startup`` times exactly that, as
``measure.replicas.ProcessRunner`` pays it (spawn to ready), several times per variant, into the
bundle's ``startup`` table (Parquet or CSV like the other tables), one row per timed start-up:

- ``variant`` (a variant id of the bundle's ``service`` table), ``startup_s`` (seconds, > 0);
- optional phases, seconds >= 0, empty where unknown, together at most ``startup_s``:
  ``spawn_s`` (the process up and Python started), ``import_s`` (torch and the model code
  imported), ``load_s`` (the task's data loaded), ``build_s`` (the checkpoint loaded and the
  variant built), ``warmup_s`` (the warm-up batches);
- optional ``started_at_s`` (when the start-up began, Unix seconds).

A bundle without the table loads as before (``TraceBundle.startup`` is then empty).
``StartupProfile`` is the empirical distribution of one variant's observed start-up times: a new
replica draws one of them, uniformly.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .outputs import atomic_output
from .ownership import MARKER
from .tables import check_numeric, check_text, plain, read_table

STARTUP_COLUMNS = ("variant", "startup_s")
PHASE_COLUMNS = ("spawn_s", "import_s", "load_s", "build_s", "warmup_s")
OPTIONAL_COLUMNS = PHASE_COLUMNS + ("started_at_s",)
_SUM_SLACK_S = 1e-6  # rounding of the phases against their total


def empty_startup() -> pd.DataFrame:
    """The table of a bundle that has none."""
    return pd.DataFrame({"variant": pd.Series([], dtype=object), "startup_s": pd.Series([], dtype=np.float64)})


def load_startup(path: Path, variants: list[str] | None = None) -> pd.DataFrame:
    """Read and validate a ``startup`` table; ``variants``: the bundle's variant ids, which every
    row must name. Errors name the file, the row and the column."""
    frame = read_table(path, STARTUP_COLUMNS)
    if frame.empty:
        raise InputError(str(path), "has no rows; expected one row per timed replica start-up "
                         "(remove the file if there are none)")
    check_text(frame, path, "variant")
    frame["variant"] = frame["variant"].astype(str)
    frame["startup_s"] = check_numeric(frame, path, "startup_s", low=0, low_inclusive=False)
    for column in OPTIONAL_COLUMNS:
        if column in frame.columns:
            frame[column] = check_numeric(frame, path, column, low=0, low_inclusive=True, missing_ok=True)
    phases = [c for c in PHASE_COLUMNS if c in frame.columns]
    if phases:
        total = frame[phases].fillna(0.0).sum(axis=1).to_numpy()
        over = total > frame["startup_s"].to_numpy() * (1 + 1e-9) + _SUM_SLACK_S
        if over.any():
            row = int(np.flatnonzero(over)[0])
            raise InputError(f"{path} row {row + 1}", f"the phases {phases} add up to {total[row]:g} s, more than "
                             f"startup_s {plain(frame['startup_s'].iloc[row])}; they must be parts of it")
    if variants is not None:
        known = frame["variant"].isin(set(variants)).to_numpy()
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            raise InputError(f"{path} row {row + 1}", f"variant {frame['variant'].iloc[row]!r} has no rows in the "
                             "bundle's service table; a start-up time belongs to a measured variant")
    return frame


def save_startup(path: str | Path, startup: pd.DataFrame, meta: dict) -> Path:
    """Give the bundle at ``path`` this ``startup`` table and ``bundle.json`` (``meta``), atomically.

    Every other file of the bundle is copied byte for byte (its measured tables stay exactly as
    they were); the new bundle is validated before it replaces the old one. The table is written
    in the format of the bundle's ``service`` table (Parquet or CSV)."""
    from .bundle import TraceBundle

    path = Path(path)
    suffix = ".csv" if (path / "service.csv").is_file() else ".parquet"
    replaced = {MARKER, "bundle.json", "startup.parquet", "startup.csv"}
    with atomic_output(path, force=True, kind="bundle") as staging:
        for entry in sorted(path.iterdir()):
            if entry.name in replaced:
                continue
            if entry.is_dir():
                shutil.copytree(entry, staging / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, staging / entry.name, follow_symlinks=False)
        (staging / "bundle.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if suffix == ".csv":
            startup.to_csv(staging / "startup.csv", index=False)
        else:
            startup.to_parquet(staging / "startup.parquet", index=False)
        TraceBundle.load(staging)  # a table that does not load never replaces the bundle
    return path


@dataclass(frozen=True)
class StartupProfile:
    """The observed start-up times (s) of one variant, sorted; a new replica draws one of them."""

    variant: str
    samples_s: np.ndarray

    def __post_init__(self) -> None:
        samples = np.sort(np.asarray(self.samples_s, dtype=np.float64))
        if samples.size == 0 or not np.all(np.isfinite(samples)) or samples[0] <= 0:
            raise ValueError(f"{self.variant}: a start-up profile needs positive, finite times")
        object.__setattr__(self, "samples_s", samples)

    @classmethod
    def from_bundle(cls, bundle, variant: str) -> "StartupProfile":
        """The variant's rows of ``bundle.startup``; ``KeyError`` when the bundle has none for it."""
        rows = bundle.startup.loc[bundle.startup["variant"] == variant, "startup_s"]
        if rows.empty:
            raise KeyError(f"{variant}: the bundle has no start-up times for it (measure startup records them)")
        return cls(variant, rows.to_numpy(dtype=np.float64))

    @property
    def mean_s(self) -> float:
        return float(self.samples_s.mean())

    @property
    def count(self) -> int:
        return int(self.samples_s.size)

    def draw_s(self, rng: np.random.Generator) -> float:
        """One observed start-up time, each equally likely (the empirical distribution)."""
        return float(self.samples_s[rng.integers(self.samples_s.size)])

    def percentile_s(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the observed times, inverted-CDF (an observed value)."""
        return float(np.percentile(self.samples_s, q, method="inverted_cdf"))
