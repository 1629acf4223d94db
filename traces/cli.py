"""What every command-line front end does with errors: one line and exit status 2 for bad input
(``InputError``) and for what the machine refuses (a full disk, a read-only or forbidden place),
130 on Ctrl-C, never a traceback for any of them; and a reader that stops early
(``simulate list | head -1``) ends the command quietly instead of with a ``BrokenPipeError``."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable

from .errors import InputError

BROKEN_PIPE = 141  # what a shell reports for a command killed by SIGPIPE (128 + 13)
# what the machine, not the code, says no to: a full disk or quota, a read-only or forbidden place
_ENVIRONMENT = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def version_text(prog: str) -> str:
    """``<prog> (servesim <version>)`` for ``--version``; the version of the installed package."""
    from .provenance import version  # the package version alone: no git lookup on every start

    return f"{prog} (servesim {version() or 'unknown (not installed)'})"


class CommandLine:
    """A front end's parser with ``--version``, examples under every ``--help``, and subcommands."""

    def __init__(self, prog: str, description: str, examples: dict[str, str]):
        self.examples = examples
        self.parser = argparse.ArgumentParser(prog=prog, description=description, epilog=examples[prog],
                                              formatter_class=argparse.RawDescriptionHelpFormatter)
        self.parser.add_argument("--version", action="version", version=version_text(prog))
        self.sub = self.parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(self, name: str, help: str) -> argparse.ArgumentParser:
        """A subcommand whose ``--help`` ends with ``examples[name]``."""
        return self.sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                                   epilog=self.examples[name], formatter_class=argparse.RawDescriptionHelpFormatter)


def run_command(call: Callable[[], int], *, interrupted: str = "interrupted") -> int:
    try:
        code = call()
        sys.stdout.flush()  # a closed pipe shows up here, while it can still be handled
        return code
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            _discard_stdout()  # the reader has gone
            return BROKEN_PIPE
        if exc.errno not in _ENVIRONMENT:
            raise
        if exc.filename is None:  # printing failed (stdout on a full disk): the rest goes nowhere
            _discard_stdout()
        print(f"error: {exc.filename or 'standard output'}: {exc.strerror}", file=sys.stderr)
        return 2


def _discard_stdout() -> None:
    """What is left to print goes nowhere, also at interpreter exit (no second error there)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
