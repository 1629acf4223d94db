"""The autoscalers, by the policy names of ``[deployments.autoscaling]``: one class per published rule.

``make_autoscaler(config)`` builds the controller a parsed ``traces.autoscaling`` config names; the
core calls its ``desired(Observation)`` once every ``config.tick_s``. Each module cites its source.
"""

from __future__ import annotations

from traces.autoscaling import POLICIES, AutoscalingConfig

from .base import Autoscaler, Observation
from .hpa import HPA
from .infaas import Infaas
from .kpa import KPA
from .ray_serve import RayServe

AUTOSCALERS: dict[str, type[Autoscaler]] = {
    "hpa": HPA,
    "ray-serve": RayServe,
    "kpa": KPA,
    "infaas": Infaas,
}
assert tuple(AUTOSCALERS) == POLICIES, "traces.autoscaling.POLICIES and the registry must agree"


def make_autoscaler(config: AutoscalingConfig) -> Autoscaler:
    """A fresh controller (its own history) for one deployment."""
    try:
        cls = AUTOSCALERS[config.policy]
    except KeyError:
        raise ValueError(f"no autoscaler for policy {config.policy!r}; known: {', '.join(AUTOSCALERS)}") from None
    return cls(config)


__all__ = ["AUTOSCALERS", "Autoscaler", "Observation", "make_autoscaler", "HPA", "RayServe", "KPA", "Infaas"]
