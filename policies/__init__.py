"""Serving policies: one small interface (`base`), a registry, one module per policy."""

from . import aimd, autotuner, degrade, extremes, infaas, ipa, learned, planner, static  # noqa: F401  (they register)
from .base import Hop, PlanAction, Policy, Reject, Request, Route, SystemView
from .registry import create, get, names, register

__all__ = ["Hop", "PlanAction", "Policy", "Reject", "Request", "Route", "SystemView",
           "create", "get", "names", "register"]
