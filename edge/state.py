"""Where the device keeps its state: head versions, TensorRT engine caches, counters.

The state directory is, in order: an explicit ``--state-dir``, ``$EDGETUNE_STATE_DIR``,
``$XDG_STATE_HOME/edgetune``, else ``~/.local/state/edgetune``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

STATE_DIR_ENV = "EDGETUNE_STATE_DIR"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The state directory when no flag names one (not created here)."""
    env = os.environ if environ is None else environ
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV]).expanduser()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]).expanduser() / "edgetune"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "edgetune"


def resolve_state_dir(explicit: str | os.PathLike[str] | None = None,
                      environ: Mapping[str, str] | None = None) -> Path:
    """``explicit`` if given, else :func:`default_state_dir`."""
    return Path(explicit).expanduser() if explicit else default_state_dir(environ)
