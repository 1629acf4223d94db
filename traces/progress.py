"""Whether to draw progress bars: on a terminal yes, in CI or when piped never."""

from __future__ import annotations

import os
import sys


def show_progress() -> bool:
    """Progress bars on a terminal, never in CI or when output is piped."""
    return sys.stderr.isatty() and not os.environ.get("CI")
