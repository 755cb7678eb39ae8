"""The emoji dataset: Twitter (Twemoji) emoji images with their names, labelled by category.

Built from the npm package ``emoji-datasource-twitter`` (fetched with ``npm pack`` into
``data_dir()/npm/``; the archive's SHA-256 is checked against :data:`PINNED_SHA256` before use). Each emoji with a Twitter image becomes one sample:

- ``image``: the 64 px PNG composited onto a white background (RGB), ``images/<code>.png``;
- ``text``: the fields in ``text_fields`` (default ``name`` and ``short_names``), lower-cased,
  ``_`` and ``-`` replaced by spaces, duplicates dropped, joined with ``"; "``
  (``GRINNING FACE`` / ``grinning`` -> ``"grinning face; grinning"``);
- ``label``: the ``category`` (9 classes; the ``Component`` category - skin tones and hair
  styles - is dropped) or the ``subcategory``.

The split is a seeded, stratified 60/20/20 train/val/test split: within each class (ids sorted,
then shuffled with ``random.Random(seed)``) ``round(0.2 n)`` samples go to test, as many to val,
and the rest to train, so a class of 1 or 2 samples is all in train.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from u2a.data import npm
from u2a.data.manifest import SPLITS, write_manifest
from u2a.data.npm import npm_cache_dir  # noqa: F401 - part of this module's interface
from u2a.data.splits import FRACTIONS, grouped_split
from u2a.errors import DataError
from u2a.io import atomic_dir, atomic_write_json, is_complete_dir, sha256_file
from u2a.paths import data_dir

PACKAGE = "emoji-datasource-twitter"
DEFAULT_VERSION = "16.0.0"
LABEL_FIELDS = ("category", "subcategory")
DEFAULT_TEXT_FIELDS = ("name", "short_names")
DROPPED_CATEGORIES = ("Component",)
IMAGE_SIZE = 64
FORMAT = 1  # bump when the folder layout or the text/image recipe changes
#: SHA-256 of the ``npm pack`` archive of each version u2a was checked with
PINNED_SHA256 = {
    "16.0.0": "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
}


def check_archive(tgz: Path, version: str, fetched: bool = False) -> str:
    """Compare the archive's SHA-256 with the pinned one of ``version``; returns the hash
    (:func:`u2a.data.npm.check_archive`)."""
    return npm.check_archive(tgz, PACKAGE, version, PINNED_SHA256, fetched)


def fetch_package(version: str = DEFAULT_VERSION, cache: Path | None = None) -> Path:
    """The ``.tgz`` of ``emoji-datasource-twitter@version``, fetched with ``npm pack`` once; its
    SHA-256 is checked against the pinned one each time it is used (:func:`u2a.data.npm.fetch_npm`)."""
    return npm.fetch_npm(PACKAGE, version, PINNED_SHA256, cache)


def read_package(tgz: Path, progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """``emoji.json`` and the 64 px Twitter PNGs of the package, read in memory
    (:func:`u2a.data.npm.read_members`: nothing is extracted to disk)."""
    prefix = PurePosixPath("package/img/twitter/64")
    meta = PurePosixPath("package/emoji.json")
    files = npm.read_members(tgz, lambda n: n == meta or (n.parent == prefix and n.suffix == ".png"), progress)
    if meta not in files:
        raise DataError(f"{tgz}: no package/emoji.json in the archive")
    try:
        entries = json.loads(files.pop(meta))
    except json.JSONDecodeError as e:
        raise DataError(f"{tgz}: package/emoji.json: broken JSON ({e})") from None
    return entries, {name.name: data for name, data in files.items()}


def _norm(s: str) -> str:
    return " ".join(s.lower().replace("_", " ").replace("-", " ").split())


def emoji_text(entry: dict[str, Any], text_fields: Sequence[str]) -> str | None:
    """The text of an emoji: its ``text_fields``, normalized, de-duplicated, joined with ``"; "``."""
    parts: list[str] = []
    for f in text_fields:
        v = entry.get(f)
        for x in (v if isinstance(v, list) else [v]):
            if isinstance(x, str) and x.strip():
                parts.append(_norm(x))
    parts = list(dict.fromkeys(p for p in parts if p))
    return "; ".join(parts) or None


def to_rgb_png(data: bytes) -> bytes:
    """A PNG composited onto a white background, as an RGB PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        out = Image.alpha_composite(bg, im).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def stratified_split(ids_by_class: dict[str, list[str]], seed: int) -> dict[str, str]:
    """``{id: split}``: per class, ``round(0.2 n)`` to test and to val, the rest to train
    (:func:`u2a.data.splits.grouped_split` with one sample per group)."""
    return grouped_split({c: {sid: [sid] for sid in ids} for c, ids in ids_by_class.items()}, seed)


def default_folder(version: str, label_field: str, text_fields: Sequence[str], seed: int) -> Path:
    name = f"emoji-{version}-{label_field}-seed{seed}"
    if tuple(text_fields) != DEFAULT_TEXT_FIELDS:
        name += "-text-" + "+".join(text_fields)
    return data_dir() / name


def _params(version: str, label_field: str, text_fields: Sequence[str], seed: int) -> dict[str, Any]:
    return {"format": FORMAT, "version": version, "label_field": label_field,
            "text_fields": list(text_fields), "seed": seed}


def _matches(folder: Path, params: dict[str, Any]) -> bool:
    if not is_complete_dir(folder):
        return False
    try:
        info = json.loads((folder / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return {k: info.get(k) for k in params} == params


def prepare_emoji(
    version: str = DEFAULT_VERSION,
    label_field: str = "category",
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Build (or reuse) the emoji dataset folder and return it.

    The folder holds ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (fields id, label, image,
    text), ``images/``, ``classes.json`` and ``dataset.json`` (source, options and counts). It is
    ``out`` if given, else ``data_dir()/emoji-<version>-<label_field>-seed<seed>``; it is built
    under a temporary name and renamed when complete, and reused when complete with the same
    options (unless ``force``).
    """
    from tqdm import tqdm

    if label_field not in LABEL_FIELDS:
        raise DataError(f"label field {label_field!r}: expected one of {', '.join(LABEL_FIELDS)}")
    text_fields = tuple(f.strip() for f in text_fields if f.strip())
    if not text_fields:
        raise DataError("no text field given")
    if label_field in text_fields:
        raise DataError(f"the label field {label_field!r} cannot also be a text field")
    params = _params(version, label_field, text_fields, seed)
    folder = Path(out).expanduser() if out is not None else default_folder(version, label_field, text_fields, seed)
    if not force and _matches(folder, params):
        return folder
    if folder.exists() and not is_complete_dir(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder} exists and is not a prepared dataset; choose another --out or remove it")

    tgz = fetch_package(version)
    sha256 = sha256_file(tgz)
    entries, pngs = read_package(tgz, progress=progress)
    fields_seen = set().union(*(e.keys() for e in entries)) if entries else set()
    for f in text_fields:
        if f not in fields_seen:
            raise DataError(f"text field {f!r} is not a field of {PACKAGE}'s emoji.json")

    dropped = Counter()
    rows: list[dict[str, Any]] = []
    for e in sorted(entries, key=lambda e: (e.get("sort_order", 0), e.get("unified", ""))):
        if e.get("category") in DROPPED_CATEGORIES:
            dropped["category " + e["category"]] += 1
            continue
        img = e.get("image")
        if not e.get("has_img_twitter") or not img or img not in pngs:
            dropped["no twitter image"] += 1
            continue
        label = e.get(label_field)
        text = emoji_text(e, text_fields)
        if not label or not text:
            dropped["no label or text"] += 1
            continue
        sid = Path(img).stem.lower()
        rows.append({"id": sid, "label": label, "image": f"images/{sid}.png", "text": text, "_png": img})
    if not rows:
        raise DataError(f"{tgz}: no emoji with a Twitter image")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{tgz}: duplicate image names in emoji.json")

    by_class: dict[str, list[str]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r["id"])
    split_of = stratified_split(by_class, seed)
    classes = sorted(by_class)

    with atomic_dir(folder) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it 0700; a dataset folder is readable like any other
        (tmp / "images").mkdir()
        for r in tqdm(rows, desc="emoji images", unit=" img", disable=not progress):
            (tmp / r["image"]).write_bytes(to_rgb_png(pngs[r.pop("_png")]))
        per_split = {s: [r for r in rows if split_of[r["id"]] == s] for s in SPLITS}
        for s, rs in per_split.items():
            write_manifest(rs, tmp / f"{s}.jsonl")
        atomic_write_json(tmp / "classes.json", classes)
        counts = {
            "total": len(rows),
            "per_split": {s: len(rs) for s, rs in per_split.items()},
            "per_class": {c: len(by_class[c]) for c in classes},
            "per_split_class": {s: dict(sorted(Counter(r["label"] for r in rs).items()))
                                for s, rs in per_split.items()},
            "entries_in_package": len(entries),
            "dropped": dict(dropped),
        }
        atomic_write_json(tmp / "dataset.json", {
            **params,
            "name": "emoji",
            "source": {"package": PACKAGE, "version": version, "registry": "npm", "file": tgz.name,
                       "sha256": sha256},
            "label": label_field,
            "modalities": {"image": "image", "text": "text"},
            "image": f"{IMAGE_SIZE} px Twitter PNG composited onto white, RGB",
            "text": "text fields lower-cased, '_' and '-' as spaces, duplicates dropped, joined with '; '",
            "split": {"fractions": FRACTIONS, "method": "stratified by label, random.Random(seed)"},
            "classes": classes,
            "counts": counts,
        })
    return folder
