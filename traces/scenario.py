"""The scenario file (TOML): one serving system and its traffic, shared by `simulate` and `measure serve`.

Loading is strict: unknown keys, wrong types and out-of-range values fail with one line naming the
file and key, or, for a value given with ``--set``, naming that ``--set`` (``Scenario.blame``).
Sizes beyond ``traces.limits`` are refused at load too. ``Scenario.resolved()`` is the fully
resolved form written as ``config.json``.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import arrivals as arrivals_mod
from . import limits as limits_mod
from .autoscaling import AutoscalingConfig, parse_autoscaling
from .checks import boolean, integer, number, read_utf8, reject_unknown, table, text
from .distributions import ServiceDistribution, service_from_config
from .errors import InputError
from .faults import FaultConfig, parse_faults
from .limits import Limits
from .stages import StageConfig, parse_stages
from .tenants import TenantArrivals, TenantConfig, deadline_classes, merged_requests, parse_tenants

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

QUEUE_DISCIPLINES = ("fifo", "edf", "priority", "priority-edf", "fair")
BALANCERS = ("shared", "round_robin", "least_loaded", "power_of_two")
TOP_KEYS = ("seed", "duration_s", "warmup_s", "bundle", "price_per_replica_hour", "arrivals",
            "requests", "tenants", "deployments", "stages", "policy", "faults", "limits")
DEPLOYMENT_KEYS = ("name", "variant", "service", "replicas", "max_batch_size", "batch_wait_timeout_ms",
                   "queue", "max_queue_size", "drop_expired", "balancer", "slow_spells",
                   "idle_classes", "service_order", "autoscaling", "startup_s", "bundle")
SERVICE_ORDERS = ("random", "timeline")


@dataclass(frozen=True)
class DeploymentConfig:
    """One deployment: replicas of one variant (or a parametric service) behind a dynamic batcher."""

    name: str
    variant: str | None = None
    service: ServiceDistribution | None = None
    replicas: int = 1
    max_batch_size: int = 1
    batch_wait_timeout_ms: float = 0.0
    queue: str = "fifo"
    max_queue_size: int = 0
    drop_expired: bool = True
    balancer: str = "shared"
    slow_spells: bool = True    # sample measured service times with the bundle's slow spells
    idle_classes: bool = True   # a batch after an idle spell draws from the bundle's runs timed after one
    service_order: str = "random"  # "timeline": replay the bundle's runs in time (see traces.served)
    autoscaling: AutoscalingConfig | None = None  # a controller that resizes it (traces.autoscaling)
    startup_s: float | None = None  # a new replica's cold start (default: the bundle's startup table, else 0)
    bundle: Path | None = None  # its own trace bundle (default: the scenario's)
    service_cfg: dict | None = field(default=None, compare=False)

    def resolved(self) -> dict:
        optional = ("variant", "service", "autoscaling", "startup_s", "bundle")
        out = {k: getattr(self, k) for k in DEPLOYMENT_KEYS if k not in optional}
        if self.variant is not None:
            out["variant"] = self.variant
        else:
            out["service"] = dict(self.service_cfg or {})
        if self.autoscaling is not None:
            out["autoscaling"] = self.autoscaling.resolved()
        if self.startup_s is not None:
            out["startup_s"] = self.startup_s
        if self.bundle is not None:
            out["bundle"] = str(Path(self.bundle).resolve())
        return out


@dataclass(frozen=True)
class RequestsConfig:
    """Request classes: each request draws its deadline from ``deadline_ms`` with ``weights``."""

    deadline_ms: tuple[float, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class PolicyConfig:
    name: str
    plan_interval_s: float
    params: dict


@dataclass(frozen=True)
class Scenario:
    seed: int
    duration_s: float
    warmup_s: float
    bundle: Path | None
    price_per_replica_hour: float
    arrivals: arrivals_mod.ArrivalProcess
    arrivals_cfg: dict
    requests: RequestsConfig
    deployments: tuple[DeploymentConfig, ...]
    policy: PolicyConfig
    source: Path | None = None
    faults: tuple[FaultConfig, ...] = ()
    limits: Limits = Limits()
    stages: tuple[StageConfig, ...] = ()  # a pipeline's stages, in order (traces.stages); () is one stage
    tenants: tuple[TenantConfig, ...] = ()  # [[tenants]] (traces.tenants); () is one anonymous tenant
    overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()  # --set keys as typed, with their canonical paths

    def deployment(self, name: str) -> DeploymentConfig:
        for dep in self.deployments:
            if dep.name == name:
                return dep
        raise KeyError(name)

    def resolved(self) -> dict:
        """Every setting, defaults included, as plain JSON-able data."""
        arrivals_cfg = dict(self.arrivals_cfg)
        if "path" in arrivals_cfg and self.source is not None:
            arrivals_cfg["path"] = str((self.source.parent / arrivals_cfg["path"]).resolve())
        return {
            "seed": self.seed,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "bundle": str(Path(self.bundle).resolve()) if self.bundle else None,
            "price_per_replica_hour": self.price_per_replica_hour,
            **({"tenants": [t.resolved(self.source.parent if self.source else None) for t in self.tenants]}
               if self.tenants else {"arrivals": arrivals_cfg}),
            "requests": {"deadline_ms": list(self.requests.deadline_ms), "weights": list(self.requests.weights)},
            "deployments": [d.resolved() for d in self.deployments],
            **({"stages": [s.resolved() for s in self.stages]} if self.stages else {}),
            "policy": {"name": self.policy.name, "plan_interval_s": self.policy.plan_interval_s,
                       **self.policy.params},
            "faults": [f.resolved() for f in self.faults],
            **({"limits": self.limits.resolved()} if self.limits.resolved() else {}),
            "source": str(self.source) if self.source else None,
        }

    def blame(self, exc: InputError) -> InputError:
        """The error as the user should read it: naming the ``--set`` that gave the bad value, else
        the scenario file for a scenario key; errors about other files (a bundle, a trace) as they are."""
        return blame(exc, self.source, self.overrides, keys_only=True)


_SCENARIO_KEY = re.compile(rf"^({'|'.join(TOP_KEYS)})(?:[.\[]|$)")


def _under(where: str, path: str) -> bool:
    """Whether key ``where`` is ``path``, inside it, or one of the tables that hold it."""
    return any(a == b or a.startswith(b + ".") or a.startswith(b + "[") for a, b in ((where, path), (path, where)))


def blame(exc: InputError, source: Path | None, overrides=(), *, keys_only: bool = False) -> InputError:
    """``exc`` naming its ``--set``, else prefixed with the scenario file (``keys_only``: only when
    it is about a scenario key)."""
    where = exc.where
    involved = getattr(exc, "keys", (where,))  # a limit names every key that makes the size
    for key, paths in reversed(overrides):  # the last --set of a key is the one that took effect
        if where and any(_under(k, p) for k in involved for p in paths):
            return InputError(f"--set {key}" if where in paths else f"--set {key}: {where}", exc.problem)
    if source is not None and (not keys_only or _SCENARIO_KEY.match(where) or not where):
        return InputError(f"{source}: {where}" if where else str(source), exc.problem)
    return exc


def read_toml(path: Path) -> dict:
    """A TOML file (scenario, sweep, profile) as a dict; missing, unreadable, not UTF-8 or invalid
    TOML is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "file not found" if not path.exists() else "not a file")
    try:
        return tomllib.loads(read_utf8(path))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path), f"invalid TOML ({exc})") from None


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, apply ``--set key=value`` overrides, and validate a scenario file."""
    path = Path(path)
    raw = read_toml(path)
    keys = tuple((key, _canonical(raw, key)) for key in (apply_override(raw, item) for item in overrides))
    try:
        scenario = scenario_from_dict(raw, base_dir=path.parent, source=path)
    except InputError as exc:
        raise blame(exc, path, keys) from None
    return replace(scenario, overrides=keys)


def _canonical(raw: dict, key: str) -> tuple[str, ...]:
    """The paths errors use for a --set key: list elements as ``[i]`` and, for named ones
    (deployments), as ``.name``, e.g. ``deployments.0.replicas`` -> ``deployments[0].replicas``
    and ``deployments.small.replicas``."""
    paths = [""]
    node: Any = raw
    for part in key.split("."):
        if isinstance(node, list):
            index = int(part) if part.isdigit() and int(part) < len(node) else next(
                (i for i, item in enumerate(node) if isinstance(item, dict) and item.get("name") == part), len(node))
            node = node[index] if index < len(node) else {}
            name = node.get("name") if isinstance(node, dict) else None
            paths = [p + f"[{index}]" for p in paths] + ([p + f".{name}" for p in paths] if isinstance(name, str) else [])
        else:
            paths = [f"{p}.{part}" if p else part for p in paths]
            node = node.get(part, {}) if isinstance(node, dict) else {}
    return tuple(dict.fromkeys(paths))


def parse_value(text_value: str) -> Any:
    """A TOML literal (number, bool, string, array, inline table), else the raw string."""
    try:
        return tomllib.loads(f"v = {text_value}")["v"]
    except tomllib.TOMLDecodeError:
        return text_value


def apply_override(raw: dict, item: str) -> str:
    """Apply ``--set key=value``, e.g. ``arrivals.rate_rps=300`` or ``deployments.small.replicas=2``;
    returns the key."""
    if "=" not in item:
        raise InputError(f"--set {item}", "expected key=value")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise InputError(f"--set {item}", "expected key=value with a dotted key like arrivals.rate_rps")
    set_path(raw, key, parse_value(value.strip()), where=f"--set {key}")
    return key


def set_path(raw: dict, key: str, value: Any, where: str | None = None) -> None:
    """Set a dotted key to a value (a table replaces the whole subtree).

    A list element is addressed by its index or, for deployments, by its name.
    """
    where = where or key
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, ".".join(parts[: depth + 1]))
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise InputError(where, f"'{'.'.join(parts[:depth + 1])}' is not a table")
    if isinstance(node, list):
        raise InputError(where, "cannot replace a list element; set one of its keys")
    node[parts[-1]] = copy.deepcopy(value)


def _list_item(items: list, part: str, where: str) -> Any:
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    for item in items:
        if isinstance(item, dict) and item.get("name") == part:
            return item
    raise InputError(f"--set {where}", "no such list element (give an index or a deployment name)")


def scenario_from_dict(raw: dict, base_dir: Path = Path("."), source: Path | None = None) -> Scenario:
    raw = copy.deepcopy(raw)
    reject_unknown(raw, TOP_KEYS, "")
    seed = integer(raw, "seed", "", default=1, low=0)
    duration_s = number(raw, "duration_s", "", low=0, strict=True)
    warmup_s = number(raw, "warmup_s", "", default=0.0, low=0)
    if warmup_s >= duration_s:
        raise InputError("warmup_s", f"must be smaller than duration_s ({duration_s:g}), got {warmup_s:g}")
    bundle = _path(text(raw, "bundle", ""), base_dir) if raw.get("bundle") is not None else None
    tenants: tuple[TenantConfig, ...] = ()
    if "tenants" in raw:
        if "arrivals" in raw:
            raise InputError("arrivals", "a scenario has either [arrivals] or [[tenants]] (each with its own arrivals)")
        given = _requests(table(raw, "requests", "")) if "requests" in raw else None
        tenants = parse_tenants(raw["tenants"], base_dir, (given.deadline_ms, given.weights) if given else None)
        arrivals_cfg, process = {}, TenantArrivals(tuple(t.arrivals for t in tenants))
        requests = RequestsConfig(*merged_requests(tenants, duration_s))
    else:
        arrivals_cfg = table(raw, "arrivals", "")
        process = arrivals_mod.from_config(arrivals_cfg, base_dir, where="arrivals")
        requests = _requests(table(raw, "requests", ""))
    deployments = _deployments(raw.get("deployments"), base_dir)
    names = {t.name for t in tenants}
    for d in deployments:
        tenant = getattr(d.autoscaling, "tenant", None)
        if tenant is not None and tenant not in names:
            raise InputError(f"deployments.{d.name}.autoscaling.tenant", f"unknown tenant {tenant!r}; "
                             + (f"tenants: {', '.join(sorted(names))}" if names else "the scenario has no [[tenants]]"))
    queued = next((d for d in deployments if d.queue in ("priority", "priority-edf", "fair")), None)
    if queued is not None and not tenants:
        raise InputError(f"deployments.{queued.name}.queue", f"{queued.queue!r} orders tenants' requests: it needs [[tenants]]")
    scenario = Scenario(
        seed=seed, duration_s=duration_s, warmup_s=warmup_s, bundle=bundle,
        price_per_replica_hour=number(raw, "price_per_replica_hour", "", default=1.0, low=0),
        arrivals=process, arrivals_cfg=arrivals_cfg, tenants=tenants,
        requests=requests,
        deployments=deployments, policy=_policy(table(raw, "policy", ""), base_dir), source=source,
        faults=parse_faults(raw.get("faults", []), deployments),
        stages=parse_stages(raw.get("stages"), [d.name for d in deployments]),
        limits=limits_mod.limits_from_config(table(raw, "limits", "", required=False)),
    )
    limits_mod.check_scenario(scenario)
    return scenario


def _path(value: str, base_dir: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def _requests(cfg: dict) -> RequestsConfig:
    reject_unknown(cfg, ("deadline_ms", "weights"), "requests")
    if cfg.get("deadline_ms") is None:
        raise InputError("requests.deadline_ms", "is required (a number of ms, or a list for request classes)")
    return RequestsConfig(*deadline_classes(cfg, "requests"))


def _deployments(items: Any, base_dir: Path) -> tuple[DeploymentConfig, ...]:
    if not isinstance(items, list) or not items:
        raise InputError("deployments", "at least one [[deployments]] table is required")
    out, names = [], set()
    for index, cfg in enumerate(items):
        where = f"deployments[{index}]"
        if not isinstance(cfg, dict):
            raise InputError(where, "must be a table")
        reject_unknown(cfg, DEPLOYMENT_KEYS, where)
        name = text(cfg, "name", where)
        if name in names:
            raise InputError(f"{where}.name", f"duplicate deployment name {name!r}")
        names.add(name)
        where = f"deployments.{name}"
        has_variant, has_service = "variant" in cfg, "service" in cfg
        if has_variant == has_service:
            raise InputError(where, "needs exactly one of 'variant' (measured) or 'service' (parametric)")
        service_cfg = cfg.get("service")
        out.append(DeploymentConfig(
            name=name,
            variant=text(cfg, "variant", where) if has_variant else None,
            service=service_from_config(service_cfg, f"{where}.service") if has_service else None,
            replicas=integer(cfg, "replicas", where, default=1, low=0),  # 0: held for a plan or an autoscaler to start
            max_batch_size=integer(cfg, "max_batch_size", where, default=1, low=1),
            batch_wait_timeout_ms=number(cfg, "batch_wait_timeout_ms", where, default=0.0, low=0),
            queue=text(cfg, "queue", where, default="fifo", choices=QUEUE_DISCIPLINES),
            max_queue_size=integer(cfg, "max_queue_size", where, default=0, low=0),
            drop_expired=boolean(cfg, "drop_expired", where, default=True),
            balancer=text(cfg, "balancer", where, default="shared", choices=BALANCERS),
            slow_spells=boolean(cfg, "slow_spells", where, default=True),
            idle_classes=boolean(cfg, "idle_classes", where, default=True),
            service_order=text(cfg, "service_order", where, default="random", choices=SERVICE_ORDERS),
            autoscaling=(parse_autoscaling(table(cfg, "autoscaling", where), f"{where}.autoscaling",
                                           max_replicas_limit=math.inf) if "autoscaling" in cfg else None),
            startup_s=number(cfg, "startup_s", where, low=0) if "startup_s" in cfg else None,
            bundle=_path(text(cfg, "bundle", where), base_dir) if "bundle" in cfg else None,
            service_cfg=service_cfg,
        ))
    return tuple(out)


def _policy(cfg: dict, base_dir: Path) -> PolicyConfig:
    """A policy's ``path`` parameter (a file it reads, e.g. a trained router) is relative to the scenario."""
    name = text(cfg, "name", "policy")
    interval = number(cfg, "plan_interval_s", "policy", default=0.0, low=0)
    params = {k: v for k, v in cfg.items() if k not in ("name", "plan_interval_s")}
    if isinstance(params.get("path"), str):
        params["path"] = str(_path(params["path"], base_dir))
    return PolicyConfig(name=name, plan_interval_s=interval, params=params)


_SEED_PART = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", re.ASCII)


def parse_seeds(text: str, limits: Limits = Limits()) -> list[int]:
    """``3``, ``1-5`` or ``1,4,9`` -> a list of seeds (plain decimal integers, at most
    ``limits.max_seeds`` of them)."""
    ranges = []
    for part in text.split(","):
        match = _SEED_PART.fullmatch(part)
        lo, hi = (int(match[1]), int(match[2] or match[1])) if match else (0, -1)
        if hi < lo:
            raise InputError("--seeds", f"expected a seed, a range like 1-5, or a list like 1,4,9 (non-negative "
                             f"integers); got {text!r}")
        ranges.append(range(lo, hi + 1))
    limits_mod.check_seeds(sum(len(r) for r in ranges), limits)
    seeds = [s for r in ranges for s in r]
    if len(set(seeds)) != len(seeds):
        raise InputError("--seeds", f"seeds must be distinct non-negative integers; got {text!r}")
    return seeds
