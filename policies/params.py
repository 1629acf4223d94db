"""Policy parameters checked against the types their ``__init__`` declares.

A scenario's [policy] table is user input: TOML hands over strings, numbers, booleans, lists and
tables, and a value of the wrong kind would otherwise fail deep inside a run with a traceback (or
run on, comparing ``"high"`` with a number). ``registry.create`` checks each given value against
the annotation of the parameter it binds to, so every policy gets the same one-line error without
checking code of its own; a policy keeps only its range checks.

Rules: ``float`` takes an int or a float but not a bool, a string or NaN; ``int`` takes neither a
bool nor a float; ``bool`` only true/false; ``list[X]`` a list whose every item is an X; ``dict``
a table; ``X | None`` also None. A number annotated ``Annotated[float, Range(...)]`` (the aliases
below) must also lie in that range, so a percentile of 150 is refused before it reaches numpy.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated

from traces.errors import InputError


@dataclass(frozen=True)
class Range:
    """Bounds of a number parameter; an open end excludes its bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


Percentile = Annotated[float, Range(0, 100)]
Fraction = Annotated[float, Range(0, 1)]
Positive = Annotated[float, Range(0, low_open=True)]
NonNegative = Annotated[float, Range(0)]
Count = Annotated[int, Range(0)]

_NAMES: dict[object, tuple[str, str]] = {  # type -> (one, many)
    float: ("a number", "numbers"),
    int: ("an integer", "integers"),
    str: ("a string", "strings"),
    bool: ("true or false", "booleans"),
    dict: ("a table", "tables"),
}


def _union_args(hint: object) -> tuple | None:
    origin = typing.get_origin(hint)
    return typing.get_args(hint) if origin is typing.Union or origin is types.UnionType else None


def matches(value: object, hint: object) -> bool:
    """Whether ``value`` is acceptable for a parameter annotated ``hint`` (rules in the module docstring)."""
    options = _union_args(hint)
    if options is not None:
        return any(matches(value, option) for option in options)
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        return matches(value, base) and all(value in r for r in extras if isinstance(r, Range))
    if hint is type(None):
        return value is None
    if hint is typing.Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if hint is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin is list:
        return isinstance(value, list) and (not args or all(matches(item, args[0]) for item in value))
    if origin is dict:
        return isinstance(value, dict) and (not args or all(matches(k, args[0]) and matches(v, args[1])
                                                              for k, v in value.items()))
    raise TypeError(f"policy parameter annotation {hint!r} is not supported by policies.params")


def describe(hint: object, many: bool = False) -> str:
    """What a parameter annotated ``hint`` must be, in words: 'a number', 'a list of strings'."""
    options = _union_args(hint)
    if options is not None:
        words = [describe(option, many) for option in options if option is not type(None)]
        return " or ".join(words) if words else "none"
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        return " ".join([describe(base, many)] + [str(r) for r in extras if isinstance(r, Range)])
    if hint in _NAMES:
        return _NAMES[hint][1 if many else 0]
    origin, args = typing.get_origin(hint) or hint, typing.get_args(hint)
    if origin is list:
        return ("lists" if many else "a list") + (f" of {describe(args[0], True)}" if args else "")
    if origin is dict:
        return describe(dict, many)
    if hint is typing.Any:
        return "anything"
    raise TypeError(f"policy parameter annotation {hint!r} is not supported by policies.params")


def check(value: object, hint: object, where: str) -> None:
    """Raise ``InputError(where, "must be <type>, got <value>")`` unless ``value`` fits ``hint``."""
    if not matches(value, hint):
        raise InputError(where, f"must be {describe(hint)}, got {value!r}")
