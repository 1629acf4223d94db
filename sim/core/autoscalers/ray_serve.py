"""Ray Serve's default autoscaling policy, ``replica_queue_length_autoscaling_policy``.

Source: ray-project/ray ``python/ray/serve/autoscaling_policy.py`` (``_core_replica_queue_length_policy``,
``_apply_scaling_factors``, ``_apply_bounds``, ``_apply_delay_logic``, ``_get_cold_start_scale_up_replicas``)
and ``python/ray/serve/config.py`` (``AutoscalingConfig`` and its defaults); the user's guide is
https://docs.ray.io/en/latest/serve/autoscaling-guide.html .

Each decision:

1. ``total`` = ongoing requests (queued plus in service) averaged over ``look_back_period_s``.
2. Cold start: with no running replica, any ongoing request asks for
   ``max(ceil(upscaling_factor), current target)``; none keeps the target.
3. ``error_ratio = total / (target_ongoing_requests x running)``, ``desired = running x error_ratio``.
4. Scaling factors act on the change: ``ceil(running + f x (desired - running))`` with
   ``f = upscaling_factor`` when growing, ``downscaling_factor`` otherwise (both default to
   ``smoothing_factor``); a shrink the factor rounds away still removes one replica.
5. Clamp to [min_replicas, max_replicas].
6. Delay: a decision above the current target increments a counter (reset if it was negative), one
   below decrements it (reset if positive), one equal resets it; the target moves only once the
   counter passes ``int(upscale_delay_s / tick)`` or ``-int(downscale_delay_s / tick)`` (from 1 to 0,
   ``downscale_to_zero_delay_s`` when set), and the counter restarts. Below the target, never under 1
   except from 1.

Difference from Ray: Ray decides every ``CONTROL_LOOP_INTERVAL_S`` (0.1 s) on metrics pushed every
``metrics_interval_s``; here the controller decides once per ``metrics_interval_s``, when its input
changes, and counts the delays in those ticks, so a decision is applied after the same time
(``upscale_delay_s``, rounded down to whole ticks) but on a coarser clock. The look-back average is
taken over the tick snapshots of the deployment's total, not per replica then summed.
"""

from __future__ import annotations

import math

from traces.autoscaling import RayServeConfig

from .base import Autoscaler, Observation, TimeWindow


class RayServe(Autoscaler[RayServeConfig]):
    def __init__(self, config: RayServeConfig):
        super().__init__(config)
        self._ongoing = TimeWindow(config.look_back_period_s)
        self.decision_counter = 0

    def desired(self, obs: Observation) -> int:
        cfg = self.config
        self._ongoing.add(obs.time_s, obs.ongoing_requests)
        samples = self._ongoing.values(obs.time_s)
        total = sum(samples) / len(samples)
        running, target = obs.ready_replicas, obs.replicas
        if running == 0:
            if total > 0:
                return self.clamp(max(math.ceil(1 * cfg.get_upscaling_factor()), target))
            return self.clamp(target)
        error_ratio = total / (cfg.target_ongoing_requests * running)
        desired = running * error_ratio
        scaled = self._apply_scaling_factors(desired, running)
        return self._apply_delay(self.clamp(scaled), target)

    def _apply_scaling_factors(self, desired: float, running: int) -> int:
        cfg = self.config
        delta = desired - running
        factor = cfg.get_upscaling_factor() if delta > 0 else cfg.get_downscaling_factor()
        scaled = math.ceil(running + factor * delta)
        if math.ceil(desired) < running and scaled == running:
            scaled -= 1
        return scaled

    def _apply_delay(self, desired: int, target: int) -> int:
        cfg, tick = self.config, self.config.tick_s
        decision = target
        if desired > target:
            self.decision_counter = max(self.decision_counter, 0) + 1
            if self.decision_counter > int(cfg.upscale_delay_s / tick):
                self.decision_counter = 0
                decision = desired
        elif desired < target:
            self.decision_counter = min(self.decision_counter, 0) - 1
            if target == 1 and cfg.downscale_to_zero_delay_s is not None:
                delay_s = cfg.downscale_to_zero_delay_s
            else:
                delay_s = cfg.downscale_delay_s
                if target != 1:
                    desired = max(1, desired)
            if self.decision_counter < -int(delay_s / tick):
                self.decision_counter = 0
                decision = desired
        else:
            self.decision_counter = 0
        return decision
