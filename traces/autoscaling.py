"""The ``[deployments.autoscaling]`` table: which autoscaler scales a deployment, and its settings.

Four published autoscalers, each with the key names and defaults of its source, so a user can copy
a setting from a Kubernetes manifest, a Ray Serve config or a Knative ConfigMap and get the same
behaviour (the decision rules live in ``sim.core.autoscalers``; ``docs/autoscaling.md`` maps every key
to its source)::

    [deployments.autoscaling]
    policy = "hpa"            # hpa | ray-serve | kpa | infaas
    min_replicas = 1
    max_replicas = 8
    target_average_value = 4  # the policy's own keys

Keys are spelled in this project's style (snake_case, units in the name: ``sync_period_s`` for
``--horizontal-pod-autoscaler-sync-period``, ``stable_window_s`` for Knative's ``stable-window``).
Every config knows ``tick_s``, how often its controller decides: the HPA sync period, Ray's metrics
interval, Knative's 2 s tick, INFaaS's 1 s arbiter loop.

Loading is strict, as for the rest of the scenario: an unknown policy or key, a wrong type, a value
out of the range its source accepts, or ``min_replicas > max_replicas`` raise ``InputError`` naming
``<where>.<key>``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, ClassVar

from .checks import integer, number, reject_unknown, text
from .errors import InputError
from .limits import Limits

POLICIES = ("hpa", "ray-serve", "kpa", "infaas")
COMMON_KEYS = ("policy", "min_replicas", "max_replicas")
DAY_S = 86_400.0  # no delay, window or period beyond a day: a slip, not a setting
HOUR_S = 3_600.0


@dataclass(frozen=True, kw_only=True)
class AutoscalingConfig:
    """Settings every autoscaler shares: the replica range it may choose from."""

    policy: ClassVar[str] = ""
    min_replicas: int = 1
    max_replicas: int

    @property
    def tick_s(self) -> float:
        """How often the controller decides (seconds)."""
        raise NotImplementedError

    def resolved(self) -> dict:
        """The fully resolved table, as written to ``config.json`` (unset optional keys left out)."""
        out: dict[str, Any] = {"policy": self.policy}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = [asdict(v) for v in value]
            out[f.name] = value
        return out


# --- Kubernetes HPA -------------------------------------------------------------------------------

HPA_METRICS = ("queue_length", "in_flight")
HPA_POLICY_TYPES = ("Pods", "Percent")
HPA_SELECT_POLICIES = ("Max", "Min", "Disabled")


@dataclass(frozen=True)
class HPAScalingPolicy:
    """One ``behavior.scaleUp/scaleDown.policies`` entry: change by ``value`` pods (``Pods``) or
    ``value`` percent (``Percent``) per ``period_s`` (Kubernetes ``periodSeconds``)."""

    type: str
    value: int
    period_s: float


DEFAULT_SCALE_UP_POLICIES = (HPAScalingPolicy("Pods", 4, 15.0), HPAScalingPolicy("Percent", 100, 15.0))
DEFAULT_SCALE_DOWN_POLICIES = (HPAScalingPolicy("Percent", 100, 15.0),)


@dataclass(frozen=True, kw_only=True)
class HPAConfig(AutoscalingConfig):
    """Kubernetes HorizontalPodAutoscaler (autoscaling/v2) with an AverageValue target on one metric.

    Defaults are the controller's (``--horizontal-pod-autoscaler-sync-period`` 15 s, ``-tolerance``
    0.1, ``-downscale-stabilization`` 5 min) and the API's default ``behavior``; ``target_average_value``
    has no default in Kubernetes either.
    """

    policy: ClassVar[str] = "hpa"
    metric: str = "queue_length"
    tenant: str | None = None  # with [[tenants]]: the metric counts only this tenant's requests
    target_average_value: float
    tolerance: float = 0.1
    sync_period_s: float = 15.0
    scale_up_stabilization_window_s: float = 0.0
    scale_up_select_policy: str = "Max"
    scale_up_policies: tuple[HPAScalingPolicy, ...] = DEFAULT_SCALE_UP_POLICIES
    scale_down_stabilization_window_s: float = 300.0
    scale_down_select_policy: str = "Max"
    scale_down_policies: tuple[HPAScalingPolicy, ...] = DEFAULT_SCALE_DOWN_POLICIES

    @property
    def tick_s(self) -> float:
        return self.sync_period_s


# --- Ray Serve ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RayServeConfig(AutoscalingConfig):
    """Ray Serve ``AutoscalingConfig`` (``python/ray/serve/config.py``), its defaults."""

    policy: ClassVar[str] = "ray-serve"
    target_ongoing_requests: float = 2.0
    metrics_interval_s: float = 10.0
    look_back_period_s: float = 30.0
    smoothing_factor: float = 1.0
    upscaling_factor: float | None = None
    downscaling_factor: float | None = None
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None

    @property
    def tick_s(self) -> float:
        return self.metrics_interval_s

    def get_upscaling_factor(self) -> float:
        return self.upscaling_factor or self.smoothing_factor

    def get_downscaling_factor(self) -> float:
        return self.downscaling_factor or self.smoothing_factor


# --- Knative KPA ----------------------------------------------------------------------------------

KPA_TICK_S = 2.0  # knative.dev/serving pkg/autoscaler/scaling/multiscaler.go: tickInterval


@dataclass(frozen=True, kw_only=True)
class KPAConfig(AutoscalingConfig):
    """Knative Pod Autoscaler, concurrency metric; defaults of the ``config-autoscaler`` ConfigMap."""

    policy: ClassVar[str] = "kpa"
    container_concurrency_target: float = 100.0   # container-concurrency-target-default (annotation: target)
    target_utilization_percentage: float = 70.0   # container-concurrency-target-percentage
    stable_window_s: float = 60.0                 # stable-window
    panic_window_percentage: float = 10.0         # panic-window-percentage
    panic_threshold_percentage: float = 200.0     # panic-threshold-percentage
    max_scale_up_rate: float = 1000.0             # max-scale-up-rate
    max_scale_down_rate: float = 2.0              # max-scale-down-rate
    scale_down_delay_s: float = 0.0               # scale-down-delay

    @property
    def tick_s(self) -> float:
        return KPA_TICK_S

    @property
    def target_value(self) -> float:
        """Concurrency per pod the autoscaler aims at: the target times the utilisation."""
        return self.container_concurrency_target * self.target_utilization_percentage / 100.0

    @property
    def panic_window_s(self) -> float:
        return self.stable_window_s * self.panic_window_percentage / 100.0

    @property
    def panic_threshold(self) -> float:
        return self.panic_threshold_percentage / 100.0


# --- INFaaS ---------------------------------------------------------------------------------------

INFAAS_TICK_S = 1.0  # src/worker/autoscaler.cc: AutoscalerArbiter sleep_interval = 1000 ms
INFAAS_HARDWARE = ("gpu", "cpu")
INFAAS_SCALE_DOWN_DELAY = {"gpu": 20, "cpu": 10}  # GPU_SCALE_DOWN_DELAY, CPU_SCALE_DOWN_DELAY


@dataclass(frozen=True, kw_only=True)
class InfaasConfig(AutoscalingConfig):
    """INFaaS's per-variant autoscaler (``src/worker/autoscaler.cc``), its constants as keys."""

    policy: ClassVar[str] = "infaas"
    hardware: str = "gpu"
    scale_down_delay: int | None = None   # scale-down signals to exceed; None: 20 on gpu, 10 on cpu
    load_latency_ms: float = 0.0          # the variant's load latency (gpu headroom term)
    load_heuristic: float = 0.0002        # loadHeuristic
    cpu_heuristic: float = 0.05           # cpuHueristic [sic]

    def __post_init__(self):
        if self.scale_down_delay is None:
            object.__setattr__(self, "scale_down_delay", INFAAS_SCALE_DOWN_DELAY[self.hardware])

    @property
    def tick_s(self) -> float:
        return INFAAS_TICK_S


# --- parsing --------------------------------------------------------------------------------------


def _seconds(raw: dict, key: str, where: str, default: Any, *, low: float = 0.0, strict: bool = False,
             high: float = DAY_S) -> float:
    return number(raw, key, where, default=default, low=low, strict=strict, high=high)


def _optional(raw: dict, key: str, where: str, *, low: float, strict: bool, high: float) -> float | None:
    if key not in raw:
        return None
    return number(raw, key, where, low=low, strict=strict, high=high)


def _hpa_policies(raw: dict, key: str, where: str, default: tuple) -> tuple[HPAScalingPolicy, ...]:
    if key not in raw:
        return default
    name = f"{where}.{key}"
    items = raw[key]
    if not isinstance(items, list) or not items:
        raise InputError(name, f"must be a non-empty list of tables {{type, value, period_s}}, got {items!r}")
    out = []
    for i, item in enumerate(items):
        at = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise InputError(at, f"must be a table {{type, value, period_s}}, got {item!r}")
        reject_unknown(item, ("type", "value", "period_s"), at)
        out.append(HPAScalingPolicy(
            type=text(item, "type", at, choices=HPA_POLICY_TYPES),
            value=integer(item, "value", at, low=1),
            # Kubernetes validation: periodSeconds in (0, 1800]
            period_s=number(item, "period_s", at, low=0.0, strict=True, high=1800.0)))
    return tuple(out)


def _parse_hpa(raw: dict, where: str, common: dict) -> HPAConfig:
    return HPAConfig(
        **common,
        metric=text(raw, "metric", where, default="queue_length", choices=HPA_METRICS),
        tenant=text(raw, "tenant", where) if "tenant" in raw else None,
        target_average_value=number(raw, "target_average_value", where, low=0.0, strict=True, high=1e9),
        tolerance=number(raw, "tolerance", where, default=0.1, low=0.0, high=1.0),
        sync_period_s=_seconds(raw, "sync_period_s", where, 15.0, strict=True, high=HOUR_S),
        # Kubernetes validation: stabilizationWindowSeconds in [0, 3600]
        scale_up_stabilization_window_s=_seconds(raw, "scale_up_stabilization_window_s", where, 0.0, high=HOUR_S),
        scale_up_select_policy=text(raw, "scale_up_select_policy", where, default="Max",
                                    choices=HPA_SELECT_POLICIES),
        scale_up_policies=_hpa_policies(raw, "scale_up_policies", where, DEFAULT_SCALE_UP_POLICIES),
        scale_down_stabilization_window_s=_seconds(raw, "scale_down_stabilization_window_s", where, 300.0,
                                                   high=HOUR_S),
        scale_down_select_policy=text(raw, "scale_down_select_policy", where, default="Max",
                                      choices=HPA_SELECT_POLICIES),
        scale_down_policies=_hpa_policies(raw, "scale_down_policies", where, DEFAULT_SCALE_DOWN_POLICIES),
    )


def _parse_ray(raw: dict, where: str, common: dict) -> RayServeConfig:
    factor = dict(low=0.0, strict=True, high=100.0)
    return RayServeConfig(
        **common,
        target_ongoing_requests=number(raw, "target_ongoing_requests", where, default=2.0, low=0.0, strict=True,
                                       high=1e9),
        metrics_interval_s=_seconds(raw, "metrics_interval_s", where, 10.0, strict=True, high=HOUR_S),
        look_back_period_s=_seconds(raw, "look_back_period_s", where, 30.0, strict=True),
        smoothing_factor=number(raw, "smoothing_factor", where, default=1.0, **factor),
        upscaling_factor=_optional(raw, "upscaling_factor", where, **factor),
        downscaling_factor=_optional(raw, "downscaling_factor", where, **factor),
        upscale_delay_s=_seconds(raw, "upscale_delay_s", where, 30.0),
        downscale_delay_s=_seconds(raw, "downscale_delay_s", where, 600.0),
        downscale_to_zero_delay_s=_optional(raw, "downscale_to_zero_delay_s", where, low=0.0, strict=False,
                                            high=DAY_S),
    )


def _parse_kpa(raw: dict, where: str, common: dict) -> KPAConfig:
    # Ranges are Knative's own (pkg/autoscaler/config/config.go validate(), and the annotation
    # bounds of pkg/apis/autoscaling for the panic threshold).
    config = KPAConfig(
        **common,
        container_concurrency_target=number(raw, "container_concurrency_target", where, default=100.0, low=0.01,
                                            high=1e9),
        target_utilization_percentage=number(raw, "target_utilization_percentage", where, default=70.0, low=0.0,
                                             strict=True, high=100.0),
        stable_window_s=_seconds(raw, "stable_window_s", where, 60.0, low=6.0, high=HOUR_S),
        panic_window_percentage=number(raw, "panic_window_percentage", where, default=10.0, low=1.0, high=100.0),
        panic_threshold_percentage=number(raw, "panic_threshold_percentage", where, default=200.0, low=110.0,
                                          high=1000.0),
        max_scale_up_rate=number(raw, "max_scale_up_rate", where, default=1000.0, low=1.0, strict=True, high=1e6),
        max_scale_down_rate=number(raw, "max_scale_down_rate", where, default=2.0, low=1.0, strict=True, high=1e6),
        scale_down_delay_s=_seconds(raw, "scale_down_delay_s", where, 0.0, high=HOUR_S),
    )
    if config.target_value < 0.01:
        raise InputError(f"{where}.target_utilization_percentage",
                         f"with container_concurrency_target {config.container_concurrency_target:g} yields a "
                         f"target of {config.target_value:g} concurrent requests per pod; must be >= 0.01")
    return config


def _parse_infaas(raw: dict, where: str, common: dict) -> InfaasConfig:
    hardware = text(raw, "hardware", where, default="gpu", choices=INFAAS_HARDWARE)
    delay = integer(raw, "scale_down_delay", where, default=INFAAS_SCALE_DOWN_DELAY[hardware], low=0)
    if delay > 1_000_000:
        raise InputError(f"{where}.scale_down_delay", f"must be an integer <= 1000000, got {delay!r}")
    return InfaasConfig(
        **common,
        hardware=hardware,
        scale_down_delay=delay,
        load_latency_ms=number(raw, "load_latency_ms", where, default=0.0, low=0.0, high=DAY_S * 1000),
        load_heuristic=number(raw, "load_heuristic", where, default=0.0002, low=0.0, high=1.0),
        cpu_heuristic=number(raw, "cpu_heuristic", where, default=0.05, low=0.0, high=0.99),
    )


_CONFIGS: dict[str, tuple[type[AutoscalingConfig], Callable[[dict, str, dict], AutoscalingConfig]]] = {
    "hpa": (HPAConfig, _parse_hpa),
    "ray-serve": (RayServeConfig, _parse_ray),
    "kpa": (KPAConfig, _parse_kpa),
    "infaas": (InfaasConfig, _parse_infaas),
}


def policy_keys(policy: str) -> tuple[str, ...]:
    """The keys a ``[deployments.autoscaling]`` table of ``policy`` may hold."""
    cls = _CONFIGS[policy][0]
    return COMMON_KEYS + tuple(f.name for f in fields(cls) if f.name not in COMMON_KEYS)


def parse_autoscaling(raw: dict, where: str, *, max_replicas_limit: float = Limits.max_replicas) -> AutoscalingConfig:
    """Validate one ``[deployments.autoscaling]`` table (``where`` names it, e.g.
    ``scenario.toml: deployments.small.autoscaling``) into its policy's config.

    ``max_replicas_limit`` is the run's ``limits.max_replicas``, the one override for a bigger fleet.
    """
    if not isinstance(raw, dict):
        raise InputError(where, f"must be a table, got {raw!r}")
    policy = text(raw, "policy", where, choices=POLICIES)
    reject_unknown(raw, policy_keys(policy), where)
    min_replicas = integer(raw, "min_replicas", where, default=1, low=0)
    max_replicas = integer(raw, "max_replicas", where, low=1)
    if max_replicas > max_replicas_limit:
        raise InputError(f"{where}.max_replicas",
                         f"must be <= {max_replicas_limit:g} (raise limits.max_replicas for a bigger fleet), "
                         f"got {max_replicas}")
    if min_replicas > max_replicas:
        raise InputError(f"{where}.min_replicas", f"must be <= max_replicas ({max_replicas}), got {min_replicas}")
    common = {"min_replicas": min_replicas, "max_replicas": max_replicas}
    return _CONFIGS[policy][1](raw, where, common)
