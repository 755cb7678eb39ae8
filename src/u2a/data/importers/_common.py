"""Helpers shared by the dataset importers: output folder, seeded val splits, arrow reading,
embedded images, PyAV, and the ``dataset.json`` summary."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from u2a.data.manifest import SPLITS, write_manifest
from u2a.errors import DataError
from u2a.io import atomic_write_json, is_complete_dir

FORMAT = 1  # bump when an importer's output changes
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


# --------------------------------------------------------------------------- output folder


def check_out(out: str | os.PathLike, root: Path) -> Path:
    """The output folder; refuse one that exists and is not a finished u2a import (never overwrite
    user files), and one that is the source folder itself."""
    out = Path(out).expanduser().resolve()
    if out == root.resolve():
        raise DataError(f"--out {out} is the dataset's own folder; choose a new folder for the manifest")
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out} exists and is not a folder; choose another --out")
        if not is_complete_dir(out) and any(out.iterdir()):
            raise DataError(f"{out} exists and is not an imported dataset; choose another --out or remove it")
    return out


def check_root(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    return root.resolve()


# --------------------------------------------------------------------------- splits


def stratified_val(ids_by_class: Mapping[str, Sequence[str]], fraction: float, seed: int) -> set[str]:
    """The ids moved from train to val: within each class (ids sorted, then shuffled with
    ``random.Random(seed)``, classes in sorted order) ``round(fraction * n)`` ids, keeping at
    least one in train."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"val fraction must be in [0, 1), got {fraction}")
    rng = random.Random(seed)
    out: set[str] = set()
    for c in sorted(ids_by_class):
        ids = sorted(ids_by_class[c])
        rng.shuffle(ids)
        n_val = min(math.floor(len(ids) * fraction + 0.5), len(ids) - 1)
        out.update(ids[:max(n_val, 0)])
    return out


def carve_val(rows: dict[str, list[dict[str, Any]]], fraction: float, seed: int,
              key=lambda r: r["label"]) -> dict[str, Any]:
    """Move a seeded, stratified share of ``rows["train"]`` into ``rows["val"]`` (in place);
    returns the description saved in ``dataset.json``."""
    by_class: dict[str, list[str]] = {}
    for r in rows["train"]:
        by_class.setdefault(key(r), []).append(r["id"])
    chosen = stratified_val(by_class, fraction, seed)
    rows["val"] = [r for r in rows["train"] if r["id"] in chosen]
    rows["train"] = [r for r in rows["train"] if r["id"] not in chosen]
    return {"source": "train", "fraction": fraction, "seed": seed,
            "method": "stratified by label: per class, ids sorted, shuffled with random.Random(seed), "
                      "round(fraction * n) to val (at least one left in train)"}


# --------------------------------------------------------------------------- names, files


def safe_name(s: str) -> str:
    """A file-name-safe form of an id (letters, digits, ``.``, ``_``, ``-``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("._")
    return s or "x"


def image_suffix(data: bytes, where: str) -> str:
    """The file suffix of encoded image bytes (from their magic number, else PIL)."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
    except Exception as e:  # PIL raises many kinds
        raise DataError(f"{where}: the image bytes are not an image PIL can read ({type(e).__name__}: {e})") from None
    return {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}" if fmt else ".img")


def as_bytes(v: Any) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, dict) and "bytes" in v:  # a {"bytes", "path"} struct (Hugging Face datasets)
        return as_bytes(v["bytes"])
    raise TypeError(type(v).__name__)


def write_arrow_image(tmp: Path, split: str, name: str, img: Any, where: str) -> str | None:
    """Write an image held as encoded bytes in an arrow row to ``tmp/images/<split>/``; its path
    relative to the dataset folder, or None when the cell is empty."""
    try:
        data = as_bytes(img)
    except TypeError as e:
        raise DataError(f"{where}: column 'image': expected encoded image bytes, got {e}") from None
    if not data:
        return None
    rel = f"images/{split}/{name}{image_suffix(data, where)}"
    (tmp / rel).write_bytes(data)  # inside atomic_dir: the whole folder is atomic
    return rel


def find_image(base: Path, stem: str) -> Path | None:
    """``base/stem`` with the first image suffix that exists."""
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        p = base / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def file_ok(p: Path) -> bool:
    try:
        return p.is_file() and p.stat().st_size > 0
    except OSError:
        return False


def clean_text(v: Any) -> str | None:
    """A text field: None for a missing or blank text."""
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def sniff_header(first: Sequence[str], names: set[str]) -> bool:
    """Whether a CSV's first row is a header: one of its cells is a known column name."""
    return any(c.strip().lower() in names for c in first)


def header_col(header: Sequence[str], options: Sequence[str], where: str, what: str, expected: str,
               required: bool = True) -> int | None:
    """The index of the first of ``options`` in a header row (case-insensitive)."""
    low = [c.strip().lower() for c in header]
    for o in options:
        if o in low:
            return low.index(o)
    if required:
        raise DataError(f"{where}: the header has no {what} column (one of {', '.join(options)}); expected {expected}")
    return None


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(first line number, cells)`` for each CSV record (blank lines skipped)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        prev = 0
        try:
            for row in reader:
                start, prev = prev + 1, reader.line_num
                if row and any(c.strip() for c in row):
                    yield start, row
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: broken CSV ({e})") from None


# --------------------------------------------------------------------------- arrow


def pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.ipc
    except ImportError:
        raise DataError("reading arrow files needs pyarrow: pip install pyarrow") from None
    return pa


def arrow_batches(path: Path, required: Sequence[str], layout: str, chunk: int = 512) -> Iterator[dict[str, list[Any]]]:
    """The record batches of an arrow IPC file (``RecordBatchFileWriter``, as MAP writes them)
    or stream, each as ``{column: list of python values}``. A missing column is a DataError."""
    pa = pyarrow()
    try:
        source = pa.memory_map(str(path), "r")
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot open ({e})") from None
    try:
        try:
            reader = pa.ipc.open_file(source)
            schema = reader.schema
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid as e:
                raise DataError(f"{path}: not an arrow IPC file or stream ({e}); expected {layout}") from None
            schema = reader.schema
            batches = iter(reader)
        missing = [c for c in required if c not in schema.names]
        if missing:
            raise DataError(f"{path}: missing column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))} (it has {schema.names}); expected {layout}")
        try:
            for b in batches:
                for off in range(0, b.num_rows, chunk):  # a MAP file may be one huge batch
                    part = b.slice(off, chunk)
                    yield {name: part.column(i).to_pylist() for i, name in enumerate(part.schema.names)}
        except pa.ArrowException as e:
            raise DataError(f"{path}: broken arrow data ({e})") from None
    finally:
        source.close()


# --------------------------------------------------------------------------- PyAV


def pyav(what: str):
    try:
        import av
    except ImportError:
        raise DataError(f"{what} needs PyAV: pip install av") from None
    return av


# --------------------------------------------------------------------------- writing


def write_dataset(
    tmp: Path,
    name: str,
    rows: Mapping[str, list[dict[str, Any]]],
    classes: list[str],
    modalities: Mapping[str, str],
    info: dict[str, Any],
    counts_extra: Mapping[str, Any] | None = None,
) -> None:
    """``train/val/test.jsonl`` (only the non-empty splits), ``classes.json`` and ``dataset.json``."""
    per_split_class: dict[str, dict[str, int]] = {}
    missing: dict[str, dict[str, int]] = {}
    for s in SPLITS:
        rs = rows.get(s) or []
        if not rs:
            continue
        write_manifest(rs, tmp / f"{s}.jsonl")
        c = Counter(x for r in rs for x in (r["label"] if isinstance(r["label"], list) else [r["label"]]))
        per_split_class[s] = {k: c[k] for k in classes if c[k]}
        missing[s] = {m: sum(1 for r in rs if r.get(m) is None) for m in modalities}
    if not per_split_class:
        raise DataError(f"{name}: no samples to write")
    atomic_write_json(tmp / "classes.json", classes)
    counts = {
        "total": sum(len(rows.get(s) or []) for s in SPLITS),
        "per_split": {s: len(rows.get(s) or []) for s in SPLITS if rows.get(s)},
        "per_split_class": per_split_class,
        "missing_modality": missing,
        **dict(counts_extra or {}),
    }
    atomic_write_json(tmp / "dataset.json", {
        "format": FORMAT,
        "name": name,
        **info,
        "modalities": dict(modalities),
        "classes": classes,
        "counts": counts,
    })


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: broken JSON ({e}); expected {what}") from None
