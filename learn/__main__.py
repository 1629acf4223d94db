"""``python -m learn train SCENARIO.toml [SCENARIO.toml ...] --out POLICY.npz``: train a router."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from traces.cli import run_command
from traces.errors import InputError

from .config import TrainConfig


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m learn", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a routing policy with MaskablePPO and save it as .npz",
                       epilog="example: python -m learn train examples/learned/digits-train.toml "
                              "--out examples/learned/digits.npz")
    defaults = TrainConfig(scenarios=("-",))
    p.add_argument("scenarios", nargs="+", help="scenario files with the same deployments (one stage, no tenants)")
    p.add_argument("--out", required=True, type=Path, help="the trained policy, FILE.npz (never overwritten)")
    p.add_argument("--steps", type=int, default=defaults.steps, help="routing decisions to train on")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--envs", type=int, default=defaults.envs, help="environments stepped together")
    p.add_argument("--load-scales", type=_floats, default=defaults.load_scales,
                   help="each scenario's arrival rates times each of these (default 0.5,1,1.5)")
    p.add_argument("--episode-s", type=float, default=defaults.episode_s, help="simulated seconds per episode")
    p.add_argument("--taus", type=_floats, default=defaults.taus, help="cascade thresholds the router may choose")
    p.add_argument("--hidden", type=_ints, default=defaults.hidden, help="hidden layer widths")
    p.add_argument("--cost-per-replica-s", type=float, default=defaults.cost_per_replica_s,
                   help="reward lost per replica-second a request uses (on-time correct earns 1)")
    p.add_argument("--rollout-steps", type=int, default=defaults.rollout_steps, help="per environment, between updates")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--gamma", type=float, default=defaults.gamma, help="discount per decision")
    p.add_argument("--gae-lambda", type=float, default=defaults.gae_lambda)
    p.add_argument("--no-difficulty", action="store_true", help="do not estimate difficulty from input features")
    return top


def _train(args) -> int:
    from .train import train

    for name in args.scenarios:
        if not Path(name).is_file():
            raise InputError(name, "scenario file not found")
    config = TrainConfig(scenarios=tuple(args.scenarios), load_scales=args.load_scales, episode_s=args.episode_s,
                         steps=args.steps, seed=args.seed, envs=args.envs, taus=args.taus, hidden=args.hidden,
                         cost_per_replica_s=args.cost_per_replica_s, rollout_steps=args.rollout_steps,
                         batch_size=args.batch_size, gamma=args.gamma, gae_lambda=args.gae_lambda,
                         difficulty=not args.no_difficulty)
    try:
        import gymnasium  # noqa: F401
        import sb3_contrib  # noqa: F401
    except ImportError as exc:
        raise InputError("python -m learn",
                         f"needs the rl extra ({exc.name} is missing): pip install -e '.[rl]'") from None
    train(config, args.out, log=lambda line: print(line, flush=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command(lambda: _train(args))


if __name__ == "__main__":
    sys.exit(main())
