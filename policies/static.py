"""`static`: every request takes the same route, one deployment or a fixed confidence cascade.

The baseline every other policy is compared with, and the way to replay a configuration chosen
offline. With ``deployment`` it serves everything there; with ``cascade = [a, b, ...]`` and
``thresholds`` (or one ``threshold`` for a two-stage cascade) a request leaves stage i when the
stage's confidence is at least its threshold. With neither, a scenario's single deployment is used.
In a pipeline (``[[stages]]``), ``pipeline = [one deployment per stage]`` is the route.
"""

from __future__ import annotations

from traces.errors import InputError

from .base import Policy, Route, repeated_deployment
from .params import Fraction
from .registry import register


@register
class StaticPolicy(Policy):
    name = "static"

    def __init__(self, deployment: str | None = None, cascade: list[str] | None = None,
                 threshold: Fraction | None = None, thresholds: list[Fraction] | None = None,
                 pipeline: list[str] | None = None):
        self.deployment = deployment
        self.cascade = cascade
        self.pipeline = pipeline
        self.thresholds = thresholds if thresholds is not None else ([threshold] if threshold is not None else None)
        self._route: Route | None = None

    def setup(self, view):
        known = view.deployments
        given = [k for k in ("deployment", "cascade", "pipeline") if getattr(self, k) is not None]
        if len(given) > 1:
            raise InputError("policy", f"give one of 'deployment', 'cascade' or 'pipeline', not {' and '.join(given)}")
        if self.pipeline is not None:
            self._route = _pipeline(self.pipeline, view.stages)
            return
        if len(view.stages) > 1:
            raise InputError("policy.pipeline", f"is required in a pipeline: one deployment per stage "
                             f"({', '.join(name for name, _ in view.stages)})")
        if self.cascade is None:
            name = self.deployment
            if name is None:
                if len(known) != 1:
                    raise InputError("policy.deployment", f"is required when there are several deployments ({', '.join(known)})")
                name = known[0]
            _check_known(name, known, "policy.deployment")
            self._route = Route.single(name)
            return
        if not isinstance(self.cascade, list) or len(self.cascade) < 2:
            raise InputError("policy.cascade", "must list at least two deployments")
        for name in self.cascade:
            _check_known(name, known, "policy.cascade")
        twice = repeated_deployment(self.cascade)
        if twice is not None:
            raise InputError("policy.cascade", f"lists deployment {twice!r} twice; each stage must be a different deployment")
        if self.thresholds is None or len(self.thresholds) != len(self.cascade) - 1:
            raise InputError("policy.thresholds", f"a cascade of {len(self.cascade)} needs "
                             f"{len(self.cascade) - 1} threshold(s) in [0, 1]")
        for t in self.thresholds:
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
                raise InputError("policy.thresholds", f"each threshold must be in [0, 1], got {t!r}")
        self._route = Route.cascade(self.cascade, self.thresholds)

    def route(self, request, view):
        return self._route

    def fixed_route(self):
        return self._route


def _check_known(name: object, known: tuple[str, ...], where: str) -> None:
    if name not in known:
        raise InputError(where, f"unknown deployment {name!r}; deployments: {', '.join(known)}")


def _pipeline(pipeline: object, stages) -> Route:
    """``pipeline = [one deployment per stage, in stage order]``."""
    if not isinstance(pipeline, list) or len(pipeline) != len(stages):
        raise InputError("policy.pipeline", f"must list one deployment per stage, in order "
                         f"({', '.join(name for name, _ in stages)}), got {pipeline!r}")
    for name, (stage, members) in zip(pipeline, stages):
        if name not in members:
            raise InputError("policy.pipeline", f"{name!r} does not serve stage {stage!r}; its deployments: "
                             f"{', '.join(members)}")
    return Route.pipeline([Route.single(name) for name in pipeline])
