"""Where an output came from: the servesim version and, in a git checkout, the commit.

Every output directory records it (``config.json`` and the output marker), so a number can be
traced to the code that produced it. The git lookup runs once per process.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def version() -> str | None:
    """The installed servesim's version (None when run from a tree that was never installed)."""
    try:
        return metadata.version("servesim")
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def info() -> dict:
    """``{"version": ..., "git_commit": sha or None, "git_dirty": bool or None}``."""
    commit, dirty = None, None
    if (REPO_ROOT / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip() or None
            status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10, check=True).stdout
            dirty = bool(status.strip())
        except (OSError, subprocess.SubprocessError):
            commit, dirty = None, None
    return {"version": version(), "git_commit": commit, "git_dirty": dirty}
