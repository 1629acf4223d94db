"""`analyse`: statistics, Pareto fronts, failure analysis, comparisons, theory and figures of runs.

Each subcommand lives in its own module of ``analysis``, imported only when it is called (so
``analyse stats`` never loads matplotlib, and ``analyse --help`` loads none of them); its one-line
help is in ``SUBCOMMANDS``. The module provides:

- ``EXAMPLES``: the text that ends its ``--help``;
- ``add_arguments(parser)``: its arguments;
- ``run(args) -> int``: the work; bad input raises ``traces.errors.InputError`` (one line, exit 2).

Bad input -> one line on stderr, exit status 2, no traceback, nothing written.
"""

from __future__ import annotations

import importlib
import sys

from traces.cli import CommandLine, run_command

# subcommand -> (module of ``analysis`` that implements it, its one-line help), in the order
# ``analyse --help`` lists them. Only the module of the subcommand called is imported.
SUBCOMMANDS = {
    "stats": ("analysis.protocol_cli",
              "paired tests of a sweep's policies under a pre-declared protocol, holm-corrected per family"),
    "pareto": ("analysis.pareto_cli", "pareto fronts, hypervolumes and dominance ratios of a sweep's grid points"),
    "compare": ("analysis.compare", "two runs paired by seed: each metric's means and paired difference"),
    "misses": ("analysis.misses", "every deadline miss of a run by its cause (fault, rejected, expired, queued, served)"),
    "theory": ("analysis.theory", "queueing theory beside the simulated waits per deployment; competitive ratios"),
    "ablation": ("analysis.ablation", "effects of one-factor-at-a-time variations against their base, paired by seed"),
    "figures": ("analysis.figures_cli", "figures of a sweep (fronts, baselines, sensitivities, effects, cdfs) or a run"),
}

EXAMPLES = """examples:
  analyse stats runs/study/results.parquet --protocol analysis/protocol.toml
  analyse pareto runs/study/results.parquet --objectives ontime_accuracy:max,latency_ms.p99:min
  analyse compare runs/demo runs/demo-300
  analyse misses runs/demo
  analyse figures runs/study --out figures
"""


def build(argv: list[str]) -> CommandLine:
    """The parser; only the subcommand named in ``argv`` (if any) has its module imported."""
    called = next((a for a in argv if not a.startswith("-")), None)
    module = importlib.import_module(SUBCOMMANDS[called][0]) if called in SUBCOMMANDS else None
    examples = {"analyse": EXAMPLES, **({called: module.EXAMPLES} if module else {})}
    cli = CommandLine("analyse", __doc__.splitlines()[0].split(": ", 1)[1].capitalize(), examples)
    for name, (_, help) in SUBCOMMANDS.items():
        if name != called:
            cli.sub.add_parser(name, help=help)
            continue
        parser = cli.command(name, help)
        module.add_arguments(parser)
        parser.set_defaults(_run=module.run)
    return cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build(argv).parser.parse_args(argv)
    return run_command(lambda: args._run(args))


if __name__ == "__main__":
    sys.exit(main())
