"""The one helper every typed config uses to reject impossible values with the key's name."""

from __future__ import annotations

from u2a.errors import ConfigError


def check(cond: bool, key: str, msg: str) -> None:
    """Raise ``ConfigError("key: msg")`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"{key}: {msg}")
