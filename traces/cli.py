"""What every command-line front end does with errors: one line and exit status 2 for bad input
(``InputError``), 130 on Ctrl-C, never a traceback for either."""

from __future__ import annotations

import sys
from typing import Callable

from .errors import InputError


def run_command(call: Callable[[], int], *, interrupted: str = "interrupted") -> int:
    try:
        return call()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
