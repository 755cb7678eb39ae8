"""Importers: the layouts users actually have of the paper's datasets -> a u2a manifest folder.

Each ``import_<name>(root, out, layout=..., **options)`` reads the dataset under ``root`` and
writes ``out/`` with ``train.jsonl``, ``val.jsonl``, ``test.jsonl``, ``classes.json`` and
``dataset.json`` (source layout, options, seeds of the splits u2a made, counts), so that
:func:`u2a.data.load_splits` reads it as is. See ``docs/datasets.md``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from u2a.data.importers.audiovisual import (
    import_audiovisual,
    import_ave,
    import_cremad,
    import_kinetics_sounds,
)
from u2a.data.importers.food101 import import_food101
from u2a.data.importers.mmimdb import GENRES, import_mmimdb
from u2a.errors import DataError

IMPORTERS = {
    "food101": import_food101,
    "mmimdb": import_mmimdb,
    "cremad": import_cremad,
    "kinetics_sounds": import_kinetics_sounds,
    "ave": import_ave,
}


def import_dataset(name: str, root: str | os.PathLike, out: str | os.PathLike, layout: str = "auto",
                   **options: Any) -> Path:
    """``IMPORTERS[name](root, out, layout, **options)``."""
    if name not in IMPORTERS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(IMPORTERS)}")
    return IMPORTERS[name](root, out, layout, **options)


__all__ = ["GENRES", "IMPORTERS", "import_audiovisual", "import_ave", "import_cremad", "import_dataset",
           "import_food101", "import_kinetics_sounds", "import_mmimdb"]
