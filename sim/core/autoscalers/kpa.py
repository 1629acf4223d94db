"""Knative Pod Autoscaler (KPA), concurrency metric: stable and panic windows.

Source: knative/serving ``pkg/autoscaler/scaling/autoscaler.go`` (``newAutoscaler``, ``Scale``), the
defaults of ``config/core/configmaps/autoscaler.yaml`` and their ranges in
``pkg/autoscaler/config/config.go``; the tick is ``tickInterval`` (2 s) of ``multiscaler.go``. Documented
at https://knative.dev/docs/serving/autoscaling/kpa-specific/ .

Each 2 s tick, with ``ready = max(1, ready pods)`` and ``target = container_concurrency_target x
target_utilization_percentage / 100`` (100 x 70% = 70):

1. ``stable`` and ``panic``: the deployment's concurrency (queued plus in service) averaged over the
   stable window (60 s) and the panic window (``panic_window_percentage`` of it: 6 s).
2. ``dspc = ceil(stable / target)``, ``dppc = ceil(panic / target)``, each kept within
   ``[floor(ready / max_scale_down_rate), ceil(max_scale_up_rate x ready)]``.
3. Panic starts when ``dppc / ready >= panic_threshold_percentage / 100`` and is extended by every
   tick still over it; it ends on the first tick under it more than one stable window after the last
   tick over it.
4. Stable mode wants the stable count. In panic the count is the larger of the two, and never falls:
   it is the highest count wanted since panic began.
5. ``scale_down_delay_s > 0``: the count is the highest wanted within that delay.
6. Clamped to [min_replicas, max_replicas] (the revision's min-scale and max-scale).

As in Knative, an autoscaler that first sees more than one ready pod starts in panic at that count
(it has no history, and must not scale down on it). Each tick's snapshot is one sample of the window
averages (Knative averages per-second reports of the pods' concurrency).
"""

from __future__ import annotations

import math

from traces.autoscaling import KPAConfig

from .base import Autoscaler, Observation, TimeWindow


class KPA(Autoscaler[KPAConfig]):
    def __init__(self, config: KPAConfig):
        super().__init__(config)
        self._concurrency = TimeWindow(config.stable_window_s)
        self._delay = TimeWindow(config.scale_down_delay_s) if config.scale_down_delay_s > 0 else None
        self.panic_time_s: float | None = None
        self.max_panic_pods = 0
        self._started = False

    @property
    def panicking(self) -> bool:
        return self.panic_time_s is not None

    def desired(self, obs: Observation) -> int:
        cfg, now = self.config, obs.time_s
        if not self._started:
            self._started = True
            if obs.ready_replicas > 1:
                self.panic_time_s, self.max_panic_pods = now, obs.ready_replicas
        self._concurrency.add(now, obs.ongoing_requests)
        stable_samples = self._concurrency.values(now)
        panic_samples = self._concurrency.values(now, cfg.panic_window_s)
        stable = sum(stable_samples) / len(stable_samples)
        panic = sum(panic_samples) / len(panic_samples)

        ready = max(1.0, float(obs.ready_replicas))
        max_scale_up = math.ceil(cfg.max_scale_up_rate * ready)
        max_scale_down = math.floor(ready / cfg.max_scale_down_rate)
        dspc = math.ceil(stable / cfg.target_value)
        dppc = math.ceil(panic / cfg.target_value)
        desired_stable = int(min(max(dspc, max_scale_down), max_scale_up))
        desired_panic = int(min(max(dppc, max_scale_down), max_scale_up))

        over_threshold = dppc / ready >= cfg.panic_threshold
        if over_threshold:
            self.panic_time_s = now
        elif self.panicking and now > self.panic_time_s + cfg.stable_window_s:
            self.panic_time_s, self.max_panic_pods = None, 0

        desired = desired_stable
        if self.panicking:
            desired = max(desired, desired_panic)
            self.max_panic_pods = max(self.max_panic_pods, desired)
            desired = self.max_panic_pods
        if self._delay is not None:
            self._delay.add(now, desired)
            desired = int(max(self._delay.values(now)))
        return self.clamp(desired)
