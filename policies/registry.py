"""Policies by name. ``@register`` adds a class; ``create`` builds one from a scenario's [policy] table."""

from __future__ import annotations

import inspect

from traces.errors import InputError

from .base import Policy

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


def get(name: str) -> type[Policy]:
    if name not in _REGISTRY:
        raise InputError("policy.name", f"unknown policy {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def parameters(name: str) -> dict[str, object]:
    """A policy's parameters and their defaults (``inspect.Parameter.empty`` when required)."""
    signature = inspect.signature(get(name).__init__)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name: p.default for p in list(signature.parameters.values())[1:] if p.kind in kinds}


def create(name: str, params: dict) -> Policy:
    cls = get(name)
    accepted = parameters(name)
    for key in params:
        if key not in accepted:
            allowed = ", ".join(sorted(accepted)) or "none"
            raise InputError(f"policy.{key}", f"unknown parameter for policy {name!r}; allowed: {allowed}")
    for key, default in accepted.items():
        if default is inspect.Parameter.empty and key not in params:
            raise InputError(f"policy.{key}", f"is required by policy {name!r}")
    return cls(**params)
