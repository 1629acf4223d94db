"""Pipeline stages: every request passes through every stage, in order.

A scenario with ``[[stages]]`` is a pipeline (a detector then a classifier, speech-to-text then
sentiment): each stage lists the deployments that may serve it, and a policy's route picks one of
them per stage (or a confidence cascade of several). Every deployment belongs to exactly one
stage; a deployment may name its own ``bundle``, so stages may serve models of different tasks,
but the measured deployments of one stage share one bundle (a stage's cascade compares the same
samples). Without ``[[stages]]`` a scenario is one stage holding every deployment, as it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .checks import reject_unknown, text
from .errors import InputError

STAGE_KEYS = ("name", "deployments")


@dataclass(frozen=True)
class StageConfig:
    name: str
    deployments: tuple[str, ...]

    def resolved(self) -> dict:
        return {"name": self.name, "deployments": list(self.deployments)}


def parse_stages(items: Any, deployments: Sequence[str]) -> tuple[StageConfig, ...]:
    """The ``[[stages]]`` tables, checked against the deployment names (empty when absent)."""
    if items is None:
        return ()
    if not isinstance(items, list) or not items:
        raise InputError("stages", "must be a non-empty list of [[stages]] tables")
    out, names, owner = [], set(), {}
    for index, cfg in enumerate(items):
        where = f"stages[{index}]"
        if not isinstance(cfg, dict):
            raise InputError(where, "must be a table")
        reject_unknown(cfg, STAGE_KEYS, where)
        name = text(cfg, "name", where)
        if name in names:
            raise InputError(f"{where}.name", f"duplicate stage name {name!r}")
        names.add(name)
        where = f"stages.{name}"
        members = cfg.get("deployments")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise InputError(f"{where}.deployments", "must be a non-empty list of deployment names")
        for member in members:
            if member not in deployments:
                raise InputError(f"{where}.deployments", f"unknown deployment {member!r}; deployments: "
                                 f"{', '.join(deployments)}")
            if member in owner:
                raise InputError(f"{where}.deployments", f"deployment {member!r} is already in stage "
                                 f"{owner[member]!r}; each deployment serves one stage")
            owner[member] = name
        out.append(StageConfig(name, tuple(members)))
    missing = [d for d in deployments if d not in owner]
    if missing:
        raise InputError("stages", f"deployment {missing[0]!r} is in no stage; with [[stages]], every deployment "
                         "belongs to one")
    return tuple(out)


def stage_index(stages: Sequence[StageConfig], deployments: Sequence[str]) -> dict[str, int]:
    """Deployment name -> its stage's index (every deployment in stage 0 without stages)."""
    if not stages:
        return {d: 0 for d in deployments}
    return {member: k for k, stage in enumerate(stages) for member in stage.deployments}
