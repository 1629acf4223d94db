"""The run output: a directory with ``config.json``, ``requests.parquet`` and ``summary.json``.

Written atomically (a staging directory renamed into place), never over an existing directory
unless asked; both executors, the simulator and the real server, write this same format, and
``config.json`` records the servesim version and git commit it came from (``traces.provenance``).

A simulated run streams its requests as they retire (``sim.core.records``) into a ``RequestSpool``,
a Parquet file in row groups in the temporary directory, so no run holds its table whole; the run
hands back the finished file as a ``RequestTable``, which ``write_into`` links (or copies) into the
output and which is removed once nothing refers to it. A chunk with more hop columns than the ones
before it (a longer route first seen late) starts a new part; ``close`` merges the parts a row group
at a time, earlier rows null in the new columns.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError
from .outputs import atomic_output, release_temp_file, temp_file

FILES = ("config.json", "requests.parquet", "summary.json")
_UMASK = os.umask(0o022)  # read once, at import (setting it back at once); os.umask is the only way to read it
os.umask(_UMASK)
ROW_GROUP_ROWS = 1 << 17


def _unlink(path: Path) -> None:
    release_temp_file(path)


def _writer(path, schema: pa.Schema) -> pq.ParquetWriter:
    """Dictionary encoding for the string columns only: the float columns' values are nearly all
    distinct, and trying a dictionary on them costs more than the rest of the writing."""
    strings = [f.name for f in schema if pa.types.is_string(f.type)]
    return pq.ParquetWriter(path, schema, use_dictionary=strings)


class RequestTable:
    """A finished ``requests.parquet`` in the temporary directory; removed when garbage-collected."""

    def __init__(self, path: Path, rows: int):
        self.path = Path(path)
        self.rows = rows
        self._cleanup = weakref.finalize(self, _unlink, self.path)

    def __len__(self) -> int:
        return self.rows

    def to_pandas(self) -> pd.DataFrame:
        return pd.read_parquet(self.path)

    def row_groups(self, columns):
        """Each row group's ``columns`` as a DataFrame, in order."""
        source = pq.ParquetFile(self.path)
        for group in range(source.num_row_groups):
            yield source.read_row_group(group, columns=list(columns)).to_pandas()

    def column(self, name: str) -> np.ndarray:
        return pq.read_table(self.path, columns=[name]).column(name).to_numpy(zero_copy_only=False)

    def save_as(self, target: Path) -> None:
        """Put the file at ``target``: a hard link where the filesystem allows, else a copy."""
        try:
            os.link(self.path, target)
        except OSError:
            shutil.copyfile(self.path, target)
        os.chmod(target, 0o666 & ~_UMASK)  # an ordinary output file, not the private mode of a temp file


_NAME_COLUMN = re.compile(r"hop\d+_(deployment|stage)|stage\d+_deployment")


class RequestSpool:
    """Writes table chunks to Parquet row groups as a run retires them (see the module docstring).

    ``types``: Arrow types of object columns, fixed for every chunk."""

    def __init__(self, types: dict[str, pa.DataType] | None = None, directory: str | Path | None = None):
        self._types = dict(types or {})
        self._dir = directory
        self._parts: list[tuple[Path, pa.Schema, weakref.finalize]] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.rows = 0
        # Parquet encoding releases the GIL: row groups are written on a thread of their own while
        # the run goes on, one at a time and in order (so the bytes are the same as written inline)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="servesim-spool")
        self._pending: Future | None = None
        weakref.finalize(self, self._pool.shutdown, wait=False)

    def _wait(self) -> None:
        """Until the row group being written is on disk (its error, if any, raised here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _new_part(self, schema: pa.Schema) -> None:
        self._wait()
        if self._writer is not None:
            self._writer.close()
        path = temp_file("requests", ".parquet", self._dir)
        cleanup = weakref.finalize(self, _unlink, path)  # a run that fails leaves nothing behind
        self._parts.append((path, schema, cleanup))
        self._writer = _writer(path, schema)
        self._schema = schema

    def _schema_of(self, chunk) -> pa.Schema:
        if self._schema is not None and self._schema.names == list(chunk):
            return self._schema  # the columns of every chunk keep their types
        schema = pa.Schema.from_pandas(pd.DataFrame(chunk), preserve_index=False)
        for name, kind in self._types.items():
            index = schema.get_field_index(name)
            if index >= 0:
                schema = schema.set(index, pa.field(name, kind))
        for index, field in enumerate(schema):  # a hop's deployment names: text of one type, reached or not
            if _NAME_COLUMN.fullmatch(field.name):
                schema = schema.set(index, pa.field(field.name, pa.string()))
        return schema

    def write(self, chunk) -> None:
        """Append a chunk: a DataFrame, or a dict of column name -> array (numpy or pandas)."""
        schema = self._schema_of(chunk)
        if schema is not self._schema:
            self._new_part(schema)
        if isinstance(chunk, pd.DataFrame):
            table = pa.Table.from_pandas(chunk, schema=schema, preserve_index=False)
        else:
            n = len(next(iter(chunk.values())))
            table = pa.Table.from_arrays([pa.nulls(n) if f.type == pa.null() else
                                          pa.array(chunk[f.name], type=f.type, from_pandas=True) for f in schema],
                                         schema=schema)
        self._wait()
        self._pending = self._pool.submit(self._writer.write_table, table, row_group_size=ROW_GROUP_ROWS)
        self.rows += table.num_rows

    def close(self, empty) -> RequestTable:
        """The finished table; ``empty`` (a chunk of no rows) gives the columns if none came."""
        if self._writer is None:
            self.write(empty)
        self._wait()
        self._writer.close()
        self._pool.shutdown()
        path, schema, _ = self._parts[-1]
        if len(self._parts) > 1:
            path = self._merge(schema)
        table = RequestTable(path, self.rows)
        for part, _, cleanup in self._parts:
            if part == path:
                cleanup.detach()  # the table removes it now
            else:
                cleanup()
        return table

    def _merge(self, schema: pa.Schema) -> Path:
        name = temp_file("requests", ".parquet", self._dir)
        with _writer(name, schema) as writer:
            for part, _, _ in self._parts:
                source = pq.ParquetFile(part)
                for group in range(source.num_row_groups):
                    table = source.read_row_group(group)
                    columns = [table.column(f.name) if f.name in table.column_names
                               else pa.nulls(len(table), f.type) for f in schema]
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))
        return name


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


def provenance() -> dict:
    """``{"version", "git_commit", "dirty"}`` of the code that runs (commit and dirty null outside
    a git checkout); looked up once per process."""
    from .provenance import info

    found = info()
    return {"version": found["version"], "git_commit": found["git_commit"], "dirty": found["git_dirty"]}


def write_into(directory: Path, config: dict, requests: pd.DataFrame | RequestTable, summary: dict,
               timeline: pd.DataFrame | None = None) -> None:
    """Write the three files (and ``timeline.parquet``, when given) into an existing (staging)
    directory; ``config`` gains ``servesim``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(dump_json({**config, "servesim": provenance()}))
    if isinstance(requests, RequestTable):
        requests.save_as(directory / "requests.parquet")
    else:
        requests.to_parquet(directory / "requests.parquet", index=False)
    if timeline is not None:
        timeline.to_parquet(directory / "timeline.parquet", index=False)
    (directory / "summary.json").write_text(dump_json(summary))


def write_run(path: str | Path, config: dict, requests: pd.DataFrame | RequestTable, summary: dict, *,
              force: bool = False, timeline: pd.DataFrame | None = None) -> Path:
    with atomic_output(Path(path), force=force) as staging:
        write_into(staging, config, requests, summary, timeline)
    return Path(path)


def read_run(path: str | Path) -> tuple[dict, pd.DataFrame, dict]:
    path = Path(path)
    for name in FILES:
        if not (path / name).is_file():
            raise InputError(str(path), f"not a run output: missing {name}")
    config = json.loads((path / "config.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    return config, pd.read_parquet(path / "requests.parquet"), summary
