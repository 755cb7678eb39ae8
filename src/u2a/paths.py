"""Where u2a keeps what it builds: converted encoders, prepared datasets.

The cache root is ``$U2A_CACHE`` when set, else ``$XDG_CACHE_HOME/u2a``, else ``~/.cache/u2a``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("U2A_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "u2a"


def models_dir() -> Path:
    return cache_dir() / "models"


def data_dir() -> Path:
    return cache_dir() / "data"
