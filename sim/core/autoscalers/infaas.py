"""INFaaS's model-level autoscaler for one variant (the "individual" scaler, no variant upgrade).

Source: stanford-mast/INFaaS ``src/worker/autoscaler.cc``: ``checkModvar`` (the rule),
``AutoscalerArbiter`` (decides every 1000 ms), ``setScaleRequest*`` (no request while the variant is
being scaled) and ``GpuAutoscalerDaemon`` / ``CpuAutoscalerDaemon`` (the scale-down backlog);
Romero et al., "INFaaS: Automated Model-less Inference Serving", USENIX ATC'21, section 4.

Each second, with ``n`` replicas, ``single`` = one replica's throughput at its batch
(``1000 / (slope x b + intercept) x b``, here ``Observation.throughput_rps_per_replica``), the
demand ``qps`` (the arrival rate: one input per request) and ``capacity = n x single``:

- headroom: on gpu ``delta = qps - capacity + load_heuristic x capacity x load_latency_ms``; on cpu
  ``delta = qps - capacity x (1 - cpu_heuristic)`` ("prevent CPU from scaling too fast");
- ``ceil(delta / single) > 0``: scale up by that many;
- else, ``qps <= max(0, (n - 1) x single)`` (one replica fewer would do): a scale-down signal.
  The daemon applies a signal (one replica off) only when the signals received since its last
  applied change exceed ``scale_down_delay`` (20 on gpu, 10 on cpu); every applied change, up or down,
  empties that backlog. A tick with neither leaves it as it is;
- while a replica is starting (``ready_replicas < replicas``) the variant is being scaled and no
  request is made.

Differences from INFaaS: a scale-up that would pass ``max_replicas`` is clamped to it (INFaaS refuses
it and, in its full scaler, upgrades to a faster variant instead, which is a routing decision outside
one deployment's autoscaler); at 0 replicas the same rule starts ``ceil(qps / single)`` replicas
(INFaaS loads a variant on a query's first request).
"""

from __future__ import annotations

import math

from traces.autoscaling import InfaasConfig

from .base import Autoscaler, Observation


class Infaas(Autoscaler[InfaasConfig]):
    def __init__(self, config: InfaasConfig):
        super().__init__(config)
        self.scale_down_backlog = 0

    def scale_count(self, obs: Observation) -> int:
        """INFaaS's request for this tick: +k replicas, -1 (a scale-down signal) or 0."""
        cfg, n = self.config, obs.replicas
        single = obs.throughput_rps_per_replica
        qps = obs.arrival_rate_rps
        if single <= 0:
            return 0
        capacity = n * single
        if cfg.hardware == "cpu":
            delta = qps - capacity * (1 - cfg.cpu_heuristic)
        else:
            delta = qps - capacity + cfg.load_heuristic * capacity * cfg.load_latency_ms
        plus = math.ceil(delta / single)
        if plus > 0:
            return plus
        if n > 0 and qps <= max(0.0, (n - 1) * single):
            return -1
        return 0

    def desired(self, obs: Observation) -> int:
        n = obs.replicas
        if obs.ready_replicas < n:
            return self.clamp(n)
        count = self.scale_count(obs)
        if count > 0:
            self.scale_down_backlog = 0
            return self.clamp(n + count)
        if count < 0:
            self.scale_down_backlog += 1
            if self.scale_down_backlog > self.config.scale_down_delay:
                self.scale_down_backlog = 0
                return self.clamp(n - 1)
        return self.clamp(n)
