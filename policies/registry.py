"""Policies by name. ``@register`` adds a class; ``create`` builds one from a scenario's [policy] table.

``create`` is the one gate every policy's parameters pass: unknown and missing names, and each
value against its ``__init__`` annotation (``policies.params``), so no policy re-checks types.
A policy that wraps another (``degrade``, ``aimd-batching``) builds it with ``create_inner``, which
names the inner policy's parameters ``policy.inner_params.<key>`` in its errors.
"""

from __future__ import annotations

import inspect
import typing
from contextlib import contextmanager
from typing import Iterator

from traces.errors import InputError

from .base import Policy
from .params import check

_REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty 'name'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"policy name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, where: str = "policy.name") -> type[Policy]:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InputError(where, f"unknown policy {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def _initialisers(cls: type) -> list:
    """The ``__init__``s whose parameters a policy takes: its own, and while one passes
    ``**params`` on to its base (a variant of a policy with a few parameters of its own), the
    next one up the MRO."""
    chain = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        chain.append(init)
        kinds = {p.kind for p in inspect.signature(init).parameters.values()}
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            break
    return chain


def parameters(name: str) -> dict[str, object]:
    """A policy's parameters and their defaults (``inspect.Parameter.empty`` when required)."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    found: dict[str, object] = {}
    for init in _initialisers(get(name)):
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind in kinds:
                found.setdefault(p.name, p.default)
    return found


def annotations(name: str) -> dict[str, object]:
    """A policy's parameter annotations, resolved (its module may use ``from __future__ import annotations``)."""
    hints: dict[str, object] = {}
    for init in reversed(_initialisers(get(name))):
        hints.update(typing.get_type_hints(init, include_extras=True))
    return {key: hints[key] for key in parameters(name) if key in hints}


def create(name: str, params: dict) -> Policy:
    cls = get(name)
    accepted = parameters(name)
    hints = annotations(name)
    for key, value in params.items():
        if key not in accepted:
            allowed = ", ".join(sorted(accepted)) or "none"
            raise InputError(f"policy.{key}", f"unknown parameter for policy {name!r}; allowed: {allowed}")
        if key in hints:
            check(value, hints[key], f"policy.{key}")
    for key, default in accepted.items():
        if default is inspect.Parameter.empty and key not in params:
            raise InputError(f"policy.{key}", f"is required by policy {name!r}")
    return cls(**params)


@contextmanager
def inner_errors() -> Iterator[None]:
    """Rename a wrapped policy's ``policy[.<key>]`` errors to ``policy.inner_params[.<key>]``."""
    try:
        yield
    except InputError as exc:
        where = exc.where
        if where == "policy" or where.startswith("policy."):
            raise InputError("policy.inner_params" + where[len("policy"):], exc.problem) from None
        raise


def create_inner(outer: str, inner: str, params: dict | None) -> Policy:
    """The policy a wrapper named ``outer`` delegates to: ``inner`` built from ``params``."""
    if inner == outer:
        raise InputError("policy.inner", f"{outer} cannot wrap itself")
    get(inner, "policy.inner")
    with inner_errors():
        return create(inner, params or {})
