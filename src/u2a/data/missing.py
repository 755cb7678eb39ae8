"""Missing-modality tables, compatible with the "missing-aware prompts" (MAP) protocol.

MAP: Y.-L. Lee, Y.-H. Tsai, W.-C. Chiu, C.-Y. Lee, "Multimodal Prompting with Missing Modalities
for Visual Recognition", CVPR 2023; U2A (M. K. Reza et al., "U2A: Unified Unimodal Adaptation for
Robust and Efficient Multimodal Learning", arXiv 2501.17823) evaluates with the same tables. The
protocol is written out in docs/data.md ("Missing-modality tables").

For two modalities a table holds one code per sample: 0 = complete, 1 = the first modality of
the pair is missing, 2 = the second is missing. MAP's pair is (text, image): code 1 = text
missing, code 2 = image missing. The algorithm, per split over its N rows, with Python's
``random`` seeded once before the splits are built in the order train, val, test::

    table = [0] * N
    idx = random.sample(range(N), int(N * ratio))
    type "text" (first):  table[idx] = 1
    type "image" (second): table[idx] = 2
    type "both": table[idx] = 1, then random.sample(idx, int(len(idx) * both_ratio)) -> 2

So eta = 0.7 "both" gives 35% text missing, 35% image missing, 30% complete, and no sample loses
every modality. A table depends on every parameter of every split built before it, so it is keyed
by all of them (:func:`table_key`), stored with the run and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

from u2a.errors import ConfigError, DataError
from u2a.io import atomic_write_json

SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class MissingSpec:
    """How one split loses modalities: ``ratio`` (eta) of its samples, of ``type`` = the name of
    the modality that goes missing, or "both" (either one, ``both_ratio`` of them the second)."""

    ratio: float = 0.0
    type: str = "both"

    def check(self, key: str, pair: Sequence[str]) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise ConfigError(f"{key}.ratio: must be in [0, 1], got {self.ratio}")
        if self.type not in (*pair, "both"):
            raise ConfigError(f"{key}.type: must be one of {[*pair, 'both']}, got {self.type!r}")


def build_tables(
    sizes: Mapping[str, int],
    specs: Mapping[str, MissingSpec],
    pair: Sequence[str] = ("text", "image"),
    both_ratio: float = 0.5,
    seed: int = 0,
) -> dict[str, list[int]]:
    """The tables of every split in ``sizes`` (built in the order train, val, test, sharing one
    seeded ``random``). ``pair`` names the modalities of codes 1 and 2."""
    if len(pair) != 2:
        raise ConfigError(f"missing tables need exactly two modalities, got {list(pair)}")
    rng = random.Random(seed)
    tables: dict[str, list[int]] = {}
    for split in SPLIT_ORDER:
        if split not in sizes:
            continue
        n = int(sizes[split])
        spec = specs.get(split, MissingSpec())
        spec.check(f"data.missing.{split}", pair)
        table = [0] * n
        idx = rng.sample(range(n), int(n * spec.ratio))
        if spec.type == "both":
            for i in idx:
                table[i] = 1
            for i in rng.sample(idx, int(len(idx) * both_ratio)):
                table[i] = 2
        else:
            code = 1 if spec.type == pair[0] else 2
            for i in idx:
                table[i] = code
        tables[split] = table
    unknown = set(sizes) - set(SPLIT_ORDER)
    if unknown:
        raise DataError(f"unknown split(s) {sorted(unknown)}; splits are {list(SPLIT_ORDER)}")
    return tables


def table_key(sizes: Mapping[str, int], specs: Mapping[str, MissingSpec], pair: Sequence[str], both_ratio: float, seed: int) -> str:
    """A name that holds every parameter defining the tables (unlike MAP's cache file names)."""
    params = {
        "sizes": {s: int(sizes[s]) for s in SPLIT_ORDER if s in sizes},
        "specs": {s: asdict(specs.get(s, MissingSpec())) for s in SPLIT_ORDER if s in sizes},
        "pair": list(pair),
        "both_ratio": both_ratio,
        "seed": seed,
    }
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    parts = [f"{s}-{specs.get(s, MissingSpec()).type}{specs.get(s, MissingSpec()).ratio:g}" for s in params["sizes"]]
    return f"missing_{'_'.join(parts)}_both{both_ratio:g}_seed{seed}_{digest}"


def load_or_build_tables(
    folder: str | Path,
    sizes: Mapping[str, int],
    specs: Mapping[str, MissingSpec],
    pair: Sequence[str] = ("text", "image"),
    both_ratio: float = 0.5,
    seed: int = 0,
    write: bool = True,
) -> dict[str, list[int]]:
    """Read the tables from ``folder`` if a file with their key exists, else build (and, when
    ``write``, save them atomically: in distributed runs only rank 0 writes)."""
    path = Path(folder) / f"{table_key(sizes, specs, pair, both_ratio, seed)}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            tables = {k: list(map(int, v)) for k, v in data["tables"].items()}
            if all(len(tables[s]) == n for s, n in sizes.items()):
                return tables
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # a damaged file is rebuilt below
    tables = build_tables(sizes, specs, pair, both_ratio, seed)
    if write:
        meta = {
            "pair": list(pair), "both_ratio": both_ratio, "seed": seed,
            "specs": {s: asdict(specs.get(s, MissingSpec())) for s in tables},
            "codes": {"0": "complete", "1": f"{pair[0]} missing", "2": f"{pair[1]} missing"},
            "tables": tables,
        }
        atomic_write_json(path, meta, indent=None)
    return tables


def apply_code(code: int, pair: Sequence[str]) -> str | None:
    """The modality that a table code removes (None for 0)."""
    return None if code == 0 else pair[code - 1]


def drop_table(n: int, ratio: float, what: str, modalities: Sequence[str], seed: int = 0) -> list[tuple[str, ...]]:
    """Test-time tables for three or more modalities (MAP's tables are defined for two): per
    sample, the modalities it loses. ``int(n * ratio)`` samples, drawn with ``random.Random``
    seeded by ``seed``, ``ratio`` and ``what``, lose ``what`` (a modality name) or, with
    ``what="mixed"``, a non-empty proper subset of the modalities drawn uniformly (so no sample
    loses every modality); the others keep everything."""
    mods = list(modalities)
    if what != "mixed" and what not in mods:
        raise ConfigError(f"missing type must be 'mixed' or one of {mods}, got {what!r}")
    rng = random.Random(f"drop-table-{seed}-{ratio!r}-{what}")
    table: list[tuple[str, ...]] = [()] * n
    subsets = [tuple(m for j, m in enumerate(mods) if mask >> j & 1) for mask in range(1, 2 ** len(mods) - 1)]
    for i in rng.sample(range(n), int(n * ratio)):
        table[i] = (what,) if what != "mixed" else subsets[rng.randrange(len(subsets))]
    return table
