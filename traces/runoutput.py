"""The run output: a directory with ``config.json``, ``requests.parquet`` and ``summary.json``.

Written atomically (a staging directory renamed into place), never over an existing directory
unless asked; both executors, the simulator and the real server, write this same format.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import InputError
from .tables import atomic_directory

FILES = ("config.json", "requests.parquet", "summary.json")


def _clean(value: Any) -> Any:
    """JSON without NaN: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dump_json(value: Any) -> str:
    return json.dumps(_clean(value), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_into(directory: Path, config: dict, requests: pd.DataFrame, summary: dict) -> None:
    """Write the three files into an existing (staging) directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(dump_json(config))
    requests.to_parquet(directory / "requests.parquet", index=False)
    (directory / "summary.json").write_text(dump_json(summary))


def write_run(path: str | Path, config: dict, requests: pd.DataFrame, summary: dict, *, force: bool = False) -> Path:
    with atomic_directory(Path(path), force=force) as staging:
        write_into(staging, config, requests, summary)
    return Path(path)


def read_run(path: str | Path) -> tuple[dict, pd.DataFrame, dict]:
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise InputError(str(path), f"not a run output: missing {name}")
    config = json.loads((path / "config.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    return config, pd.read_parquet(path / "requests.parquet"), summary
