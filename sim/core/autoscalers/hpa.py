"""Kubernetes HorizontalPodAutoscaler (autoscaling/v2), one AverageValue metric.

Source: kubernetes/kubernetes ``pkg/controller/podautoscaler/horizontal.go`` (``reconcileAutoscaler``,
``stabilizeRecommendationWithBehaviors``, ``convertDesiredReplicasWithBehaviorRate``,
``calculateScaleUpLimitWithScalingRules``, ``calculateScaleDownLimitWithBehaviors``, ``storeScaleEvent``)
and ``replica_calculator.go`` (``GetExternalPerPodMetricReplicas``); the rules as documented at
https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ .

Each sync period:

1. Outside [min, max] the count is clamped first ("Current number of replicas above/below ...").
2. Proposal: ``ratio = metric / (target_average_value x replicas)``; if ``|1 - ratio| > tolerance``
   the proposal is ``ceil(metric / target_average_value)``, else the current count. The metric is the
   deployment's queue length (or in-flight requests), read as an External metric with an AverageValue
   target: the queue sits outside the pods, as a broker's queue does for Kubernetes.
3. Stabilisation: a proposal at or above the current count takes the *lowest* recommendation of the
   scale-up window (0 s: none), one below takes the *highest* of the scale-down window (300 s); every
   proposal is recorded, and so is the count the controller first saw (``recordInitialRecommendation``),
   so nothing scales down in the first window.
4. Rate: a scale-up may reach, per policy, ``start + value`` pods (Pods) or ``ceil(start x (1 + value/100))``
   (Percent), where ``start`` is the count at the start of the policy's period (current minus what was
   added in the last ``period_s`` plus what was removed); ``Max`` takes the most permissive policy, ``Min``
   the least, ``Disabled`` none. Scale-down alike with ``start - value`` and ``int(start x (1 - value/100))``.

Differences from a cluster: one tolerance for both directions (the controller flag; the per-direction
``tolerance`` of KEP-4951 is not modelled); the metric is read at the tick itself, with no metrics-server
delay; the HPA's "scaling disabled at 0 replicas" does not apply (a sim deployment at 0 has min_replicas 0).
"""

from __future__ import annotations

import math

from traces.autoscaling import HPAConfig, HPAScalingPolicy

from .base import Autoscaler, Observation, TimeWindow


class HPA(Autoscaler[HPAConfig]):
    def __init__(self, config: HPAConfig):
        super().__init__(config)
        horizon = max(config.scale_up_stabilization_window_s, config.scale_down_stabilization_window_s)
        self._recommendations = TimeWindow(horizon)
        longest_up = max(p.period_s for p in config.scale_up_policies)
        longest_down = max(p.period_s for p in config.scale_down_policies)
        self._up_events = TimeWindow(max(longest_up, longest_down))    # replicas added, by time
        self._down_events = TimeWindow(max(longest_up, longest_down))  # replicas removed, by time
        self._seen = False

    def desired(self, obs: Observation) -> int:
        cfg, now, current = self.config, obs.time_s, obs.replicas
        if not self._seen:
            self._recommendations.add(now, current)
            self._seen = True
        if current > cfg.max_replicas:
            desired = cfg.max_replicas
        elif current < cfg.min_replicas:
            desired = cfg.min_replicas
        else:
            proposal = self.proposal(obs)
            stabilized = self._stabilize(now, current, proposal)
            desired = self._limit_rate(now, current, stabilized)
        if desired > current:
            self._up_events.add(now, desired - current)
        elif desired < current:
            self._down_events.add(now, current - desired)
        return desired

    def proposal(self, obs: Observation) -> int:
        """The metric's replica count before stabilisation and rate limits."""
        cfg = self.config
        usage = float(obs.queue_length if cfg.metric == "queue_length" else obs.in_flight)
        if obs.replicas == 0:
            return math.ceil(usage / cfg.target_average_value) if usage > 0 else 0
        ratio = usage / (cfg.target_average_value * obs.replicas)
        if abs(1.0 - ratio) > cfg.tolerance:
            return math.ceil(usage / cfg.target_average_value)
        return obs.replicas

    def _stabilize(self, now: float, current: int, proposal: int) -> int:
        cfg = self.config
        if proposal >= current:
            window, better = cfg.scale_up_stabilization_window_s, min
        else:
            window, better = cfg.scale_down_stabilization_window_s, max
        recommendation = proposal
        for past in self._recommendations.values(now, window):
            recommendation = better(int(past), recommendation)
        self._recommendations.add(now, proposal)
        return recommendation

    def _limit_rate(self, now: float, current: int, desired: int) -> int:
        cfg = self.config
        if desired > current:
            limit = max(self._scale_up_limit(now, current), current)
            return min(desired, cfg.max_replicas, limit)
        if desired < current:
            limit = min(self._scale_down_limit(now, current), current)
            return max(desired, cfg.min_replicas, limit)
        return desired

    def _period_start(self, now: float, current: int, policy: HPAScalingPolicy) -> int:
        added = sum(self._up_events.values(now, policy.period_s))
        removed = sum(self._down_events.values(now, policy.period_s))
        return int(current - added + removed)

    def _scale_up_limit(self, now: float, current: int) -> int:
        select = self.config.scale_up_select_policy
        if select == "Disabled":
            return current
        proposals = []
        for policy in self.config.scale_up_policies:
            start = self._period_start(now, current, policy)
            if policy.type == "Pods":
                proposals.append(start + policy.value)
            else:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
        return min(proposals) if select == "Min" else max(proposals)

    def _scale_down_limit(self, now: float, current: int) -> int:
        select = self.config.scale_down_select_policy
        if select == "Disabled":
            return current
        proposals = []
        for policy in self.config.scale_down_policies:
            start = self._period_start(now, current, policy)
            if policy.type == "Pods":
                proposals.append(start - policy.value)
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        # "Min" is the smallest change, hence the highest floor; "Max" the largest change, the lowest floor
        return max(proposals) if select == "Min" else min(proposals)
