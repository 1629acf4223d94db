"""One exception type for bad input, so every front end can turn it into one clear line.

The message names where the problem is (a file, a key, a row) and what was expected;
the CLIs print it as ``error: <message>`` and exit with status 2, with no traceback.
It pickles (``__reduce__``), so an error raised in a sweep worker process or a Ray task reaches
the driver as the same exception and the user as the same line.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a malformed file, key, value or path. The message is the whole story."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self):
        return type(self), (self.where, self.problem)
