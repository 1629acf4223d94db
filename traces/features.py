"""Cheap per-sample input features: the bundle's optional ``features`` table.

A cascade runs every request through its fast variant first and escalates only the unsure ones;
a request that is hard to begin with pays the fast stage for nothing. Some difficulty shows in the
input itself, before any model runs: a review full of words the tokenizer does not know, a faint
or off-centre digit. ``measure accuracy`` records a few such cheap features per evaluated sample
(``measure.features`` says which, and why), and ``policies.difficulty`` learns from them the
probability that the fast variant is right.

The table (Parquet or CSV, like the bundle's other tables) has one row per evaluated sample:

- ``sample_id``: a non-empty string, unique, one of the bundle's prediction sample ids (when the
  bundle has predictions);
- one or more feature columns, named like identifiers (``token_count``, ``ink_share``), each a
  finite number in every row.

A bundle without the table loads as before (``TraceBundle.features`` is then empty). Loading
validates every row; an error names the file, the row and the column.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .tables import TABLE_SUFFIXES, check_numeric, check_text, read_table

FEATURES_STEM = "features"
ID_COLUMN = "sample_id"


def empty_features() -> pd.DataFrame:
    """The table of a bundle that has none."""
    return pd.DataFrame({ID_COLUMN: pd.Series([], dtype=object)})


def feature_names(frame: pd.DataFrame) -> tuple[str, ...]:
    """The feature columns of a table, in its order (every column but ``sample_id``)."""
    return tuple(str(c) for c in frame.columns if c != ID_COLUMN)


def check_features(frame: pd.DataFrame, where: Path | str, sample_ids=None) -> pd.DataFrame:
    """A validated copy of a features table: ids as strings, features as float64. ``sample_ids``:
    the bundle's prediction sample ids, which every row must name (None or empty: no check)."""
    where = Path(where)
    frame = frame.copy()
    if ID_COLUMN not in frame.columns:
        raise InputError(str(where), f"missing column {ID_COLUMN!r}; found {list(frame.columns)}")
    names = feature_names(frame)
    if not names:
        raise InputError(str(where), "has no feature column; expected sample_id and one or more numeric columns")
    odd = [n for n in names if not n.isidentifier()]
    if odd:
        raise InputError(str(where), f"feature column name(s) {odd} are not identifiers (letters, digits, _)")
    if frame.empty:
        raise InputError(str(where), "has no rows; expected one row per evaluated sample "
                         "(remove the file if there are none)")
    check_text(frame, where, ID_COLUMN)
    frame[ID_COLUMN] = frame[ID_COLUMN].astype(str)
    duplicated = frame.duplicated(ID_COLUMN).to_numpy()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise InputError(f"{where} row {row + 1}", f"duplicate sample_id {frame[ID_COLUMN].iloc[row]!r}")
    for name in names:
        frame[name] = check_numeric(frame, where, name, low=-np.inf, low_inclusive=False)
    if sample_ids is not None and len(sample_ids):
        known = frame[ID_COLUMN].isin({str(s) for s in sample_ids}).to_numpy()
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            raise InputError(f"{where} row {row + 1}", f"sample_id {frame[ID_COLUMN].iloc[row]!r} has no prediction "
                             "in the bundle; features describe evaluated samples")
    return frame.reset_index(drop=True)


def load_features(path: Path, sample_ids=None) -> pd.DataFrame:
    """Read and validate a ``features`` table (see ``check_features``)."""
    return check_features(read_table(path, (ID_COLUMN,)), path, sample_ids)


def feature_matrix(frame: pd.DataFrame, sample_ids, where: str) -> np.ndarray:
    """The features of ``sample_ids``, in that order, as float64 [n_samples, k]; an InputError
    (naming ``where``) when one of them has no row."""
    indexed = frame.set_index(frame[ID_COLUMN].astype(str))
    wanted = pd.Index([str(s) for s in sample_ids])
    missing = wanted.difference(indexed.index)
    if len(missing):
        raise InputError(where, f"the features table has no row for sample_id {missing[0]!r} "
                         f"({len(missing)} sample(s) missing); every evaluated sample needs one")
    return indexed.loc[wanted, list(feature_names(frame))].to_numpy(dtype=np.float64).reshape(len(wanted), -1)


def add_features(bundle_dir: str | Path, frame: pd.DataFrame) -> Path:
    """Give the bundle at ``bundle_dir`` this ``features`` table, validated against its predictions.

    Writes one new file (in the format of the bundle's ``service`` table) through a temporary
    file in the same directory; never replaces a features table that is already there."""
    from .bundle import TraceBundle

    bundle_dir = Path(bundle_dir)
    bundle = TraceBundle.load(bundle_dir)
    candidates = [bundle_dir / f"{FEATURES_STEM}{suffix}" for suffix in TABLE_SUFFIXES]
    existing = [path for path in candidates if path.exists()]
    if existing:
        raise InputError(str(existing[0]), "the bundle already has a features table; it is left as it is "
                         "(remove it first to compute it again)")
    suffix = ".csv" if (bundle_dir / "service.csv").is_file() else ".parquet"
    target = bundle_dir / f"{FEATURES_STEM}{suffix}"
    frame = check_features(frame, target, bundle.predictions["sample_id"].to_numpy())
    tmp = bundle_dir / f".{target.name}.tmp-{os.getpid()}"
    try:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        try:
            os.link(tmp, target)  # atomic, and fails rather than replace a file that appeared meanwhile
        except FileExistsError:
            raise InputError(str(target), "appeared while it was being written; it is left as it is") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
