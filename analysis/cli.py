"""`analyse`: statistics, Pareto fronts, failure analysis, comparisons, theory and figures of runs.

Each subcommand lives in its own module of ``analysis`` and is imported only when it is called (so
``analyse stats`` never loads matplotlib). A subcommand module provides:

- ``HELP``: one line, what it does (lower case, no full stop);
- ``EXAMPLES``: the text that ends its ``--help``;
- ``add_arguments(parser)``: its arguments;
- ``run(args) -> int``: the work; bad input raises ``traces.errors.InputError`` (one line, exit 2).

Bad input -> one line on stderr, exit status 2, no traceback, nothing written.
"""

from __future__ import annotations

import importlib
import sys

from traces.cli import CommandLine, run_command

# subcommand -> module of ``analysis`` that implements it, in the order ``analyse --help`` lists them
SUBCOMMANDS = {
    "stats": "analysis.protocol_cli",
    "pareto": "analysis.pareto_cli",
    "compare": "analysis.compare",
    "misses": "analysis.misses",
    "theory": "analysis.theory",
    "ablation": "analysis.ablation",
    "figures": "analysis.figures_cli",
}

EXAMPLES = """examples:
  analyse stats runs/study/results.parquet --protocol analysis/protocol.toml
  analyse compare runs/demo runs/demo-099
  analyse misses runs/demo/seed-1
  analyse figures runs/study --out docs/figures
"""


def _load(name: str):
    return importlib.import_module(SUBCOMMANDS[name])


def build() -> CommandLine:
    modules = {}
    for name in SUBCOMMANDS:
        try:
            modules[name] = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name != SUBCOMMANDS[name]:
                raise
    examples = {"analyse": EXAMPLES, **{name: module.EXAMPLES for name, module in modules.items()}}
    cli = CommandLine("analyse", __doc__.splitlines()[0].split(": ", 1)[1].capitalize(), examples)
    for name, module in modules.items():
        parser = cli.command(name, module.HELP)
        module.add_arguments(parser)
        parser.set_defaults(_run=module.run)
    return cli


def main(argv: list[str] | None = None) -> int:
    args = build().parser.parse_args(argv)
    return run_command(lambda: args._run(args))


if __name__ == "__main__":
    sys.exit(main())
