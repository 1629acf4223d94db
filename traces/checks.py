"""Typed reads of config tables (parsed TOML) and of text files, failing with one line that names
the key or the file."""

from __future__ import annotations

import math
from typing import Any, Iterable

from .errors import InputError

_MISSING = object()
NEWLINE = b"\n"


def reject_unknown(cfg: dict, allowed: Iterable[str], where: str) -> None:
    allowed = sorted(allowed)
    for key in cfg:
        if key not in allowed:
            raise InputError(f"{where}.{key}" if where else key, f"unknown key; allowed: {', '.join(allowed)}")


def number(cfg: dict, key: str, where: str, *, default: Any = _MISSING, low: float | None = None,
           strict: bool = False, high: float | None = None) -> float:
    """A finite number; ``low`` is a lower bound (exclusive when ``strict``)."""
    value = cfg.get(key, default)
    name = f"{where}.{key}" if where else key
    if value is _MISSING:
        raise InputError(name, "is required")
    return as_number(value, name, low=low, strict=strict, high=high)


def as_number(value: Any, name: str, *, low: float | None = None, strict: bool = False,
              high: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if strict else '>='} {low:g}")
        if high is not None:
            bounds.append(f"<= {high:g}")
        raise InputError(name, f"must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, got {value!r}")
    return float(value)


def integer(cfg: dict, key: str, where: str, *, default: Any = _MISSING, low: int | None = None) -> int:
    value = cfg.get(key, default)
    name = f"{where}.{key}" if where else key
    if value is _MISSING:
        raise InputError(name, "is required")
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        raise InputError(name, f"must be an integer{f' >= {low}' if low is not None else ''}, got {value!r}")
    return int(value)


def boolean(cfg: dict, key: str, where: str, *, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise InputError(f"{where}.{key}" if where else key, f"must be true or false, got {value!r}")
    return value


def text(cfg: dict, key: str, where: str, *, default: Any = _MISSING, choices: Iterable[str] | None = None) -> str:
    value = cfg.get(key, default)
    name = f"{where}.{key}" if where else key
    if value is _MISSING:
        raise InputError(name, "is required")
    if not isinstance(value, str) or not value:
        raise InputError(name, f"must be a non-empty string, got {value!r}")
    if choices is not None and value not in choices:
        raise InputError(name, f"must be one of {', '.join(sorted(choices))}; got {value!r}")
    return value


def table(cfg: dict, key: str, where: str, *, required: bool = True) -> dict:
    value = cfg.get(key, _MISSING)
    name = f"{where}.{key}" if where else key
    if value is _MISSING:
        if required:
            raise InputError(name, "is required (a table)")
        return {}
    if not isinstance(value, dict):
        raise InputError(name, f"must be a table, got {value!r}")
    return value


def utf8_problem(exc: UnicodeDecodeError, *, whole_file: bool = False) -> str:
    """The one-line reason for a file that is not UTF-8 text (``whole_file``: ``exc`` decoded the
    whole file, so the line is known; a parser's error covers only a chunk of it)."""
    line = f" on line {exc.object.count(NEWLINE, 0, exc.start) + 1}" if whole_file else ""
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}{line}); save it as UTF-8"


def read_utf8(path) -> str:
    """A text file's content, or an InputError naming the file: missing, unreadable or not UTF-8."""
    from pathlib import Path

    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), utf8_problem(exc, whole_file=True)) from None
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot be read ({exc.strerror or exc})") from None
