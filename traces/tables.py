"""Reading and checking the tabular files of the contracts (Parquet or CSV), row by row.

Errors name the file, the column and the 1-based data row, so a user can open the file and fix it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

TABLE_SUFFIXES = (".parquet", ".csv")


def find_table(directory: Path, stem: str) -> Path:
    """The table ``stem.parquet`` or ``stem.csv`` inside directory."""
    for suffix in TABLE_SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(str(directory), f"missing table '{stem}.parquet' or '{stem}.csv'")


def read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except UnicodeDecodeError as exc:
        from .checks import utf8_problem

        raise InputError(str(path), utf8_problem(exc)) from None
    except Exception as exc:  # pyarrow and the csv parser raise many types for one cause
        raise InputError(str(path), f"cannot be read as a table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(str(path), f"missing column(s) {missing}; expected {list(required)}, found {list(frame.columns)}")
    return frame


def plain(value) -> str:
    """A cell as the user wrote it: numpy scalars unwrapped, strings quoted."""
    value = value.item() if hasattr(value, "item") else value
    return repr(value)


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


def check_numeric(frame: pd.DataFrame, path: Path, column: str, *, low: float, low_inclusive: bool,
                  high: float | None = None, integer: bool = False, missing_ok: bool = False) -> np.ndarray:
    """The column as float64, or an InputError naming the first offending row (``missing_ok``:
    empty cells are allowed and come back as NaN)."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    below = values < low if low_inclusive else values <= low
    bad = ~np.isfinite(values) | below
    if missing_ok:
        bad &= ~raw.isna().to_numpy()
    if high is not None:
        bad |= values > high
    if integer:
        bad |= np.isfinite(values) & (values != np.round(values))
    row = _first_bad(bad)
    if row is not None:
        op = ">=" if low_inclusive else ">"
        span = f"{op} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        kind = "an integer" if integer else "a finite number"
        raise InputError(f"{path} row {row + 1}", f"{column} must be {kind} {span}, got {plain(frame[column].iloc[row])}")
    return values


_TRUTH = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}


def check_boolean(frame: pd.DataFrame, path: Path, column: str) -> np.ndarray:
    raw = frame[column]
    if raw.dtype == bool:
        return raw.to_numpy()
    mapped = raw.astype(str).str.strip().str.lower().map(_TRUTH)
    row = _first_bad(mapped.isna().to_numpy())
    if row is not None:
        raise InputError(f"{path} row {row + 1}", f"{column} must be true/false or 1/0, got {plain(raw.iloc[row])}")
    return mapped.to_numpy(dtype=bool)


def check_text(frame: pd.DataFrame, path: Path, column: str) -> None:
    values = frame[column]
    bad = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    row = _first_bad(bad)
    if row is not None:
        raise InputError(f"{path} row {row + 1}", f"{column} must be a non-empty string")
