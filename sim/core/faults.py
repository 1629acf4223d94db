"""Replica crashes and recoveries, on the executor's timers.

A scheduled fault crashes one replica at ``at_s`` for ``down_s``; a random one crashes every
replica of its deployment again and again, with exponential times between crashes (mean
``mttf_s``) and outages (mean ``mttr_s``), drawn from the run's fault stream in the order the
crashes happen. No new crash starts after the run's duration. What a crash does to the batch in
service is the batcher's business (``sim.core.batcher``): its requests are retried or fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from traces.faults import FaultConfig

    from .serving import ServingCore


def schedule_faults(core: "ServingCore") -> None:
    for fault in core.scenario.faults:
        if fault.at_s is not None:
            Outage(core, fault, fault.replica).at(fault.at_s)
        else:
            for replica in range(core.deployment(fault.deployment).config.replicas):
                RandomFaults(core, fault, replica).next_crash(0.0)


class Outage:
    """One crash of one replica and its recovery ``down_s`` later."""

    def __init__(self, core: "ServingCore", fault: "FaultConfig", replica: int):
        self.core, self.fault, self.replica = core, fault, replica
        self.deployment = core.deployment(fault.deployment)
        self.down_s = fault.down_s

    def at(self, time_s: float) -> None:
        self.core.executor.call_at(time_s, self.crash)

    def crash(self, _event: object = None) -> None:
        now = self.core.executor.now()
        self.deployment.crash(self.replica, now)
        down_s = self.outage_s()
        self.core.fault_log.append({"deployment": self.deployment.name, "replica": self.replica, "crash_s": now,
                                    "recover_s": now + down_s})
        self.core.executor.call_at(now + down_s, self.recover)

    def outage_s(self) -> float:
        return self.down_s

    def recover(self, _event: object = None) -> None:
        self.deployment.recover(self.replica, self.core.executor.now())


class RandomFaults(Outage):
    """Crash, recover, crash again: exponential up times and outages from the fault stream."""

    def next_crash(self, now: float) -> None:
        at = now + self.core.work.fault_rng.exponential(self.fault.mttf_s)
        self.core.executor.call_at(at, self._maybe_crash)

    def _maybe_crash(self, _event: object = None) -> None:
        if self.core.executor.now() >= self.core.duration_s:
            return
        self.crash()

    def outage_s(self) -> float:
        return self.core.work.fault_rng.exponential(self.fault.mttr_s)

    def recover(self, _event: object = None) -> None:
        super().recover()
        self.next_crash(self.core.executor.now())
