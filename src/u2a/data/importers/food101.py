"""UPMC Food-101 (101 classes, image + recipe-page title) into a u2a manifest folder.

Three on-disk layouts are read (``layout="auto"`` picks the one found in ``root``):

- ``arrow``: MAP's ``food101_{train,val,test}.arrow`` (columns ``image`` = encoded image bytes,
  ``text`` = a list holding one title, ``label`` = int, ``image_id``, ``split``), with the class
  names from ``class_idx.json`` beside them when present, else Food-101's own class list
  (:data:`FOOD101_CLASSES`). Where an ``image_id`` carries a class name (``apple_pie_123.jpg``) it
  must be the name the label index gives. The images are written out under ``out/images/<split>/``.
- ``mmbt``: MMBT's ``train.jsonl``, ``dev.jsonl`` (read as val), ``test.jsonl``, one JSON object
  per line with ``img`` (image path relative to ``root``), ``label`` (class name) and ``text``.
- ``raw``: ``images/{train,test}/<class>/<file>.jpg`` with ``texts/{train,test}_titles.csv``
  (file name, text, class; a header row is detected and then used).

A layout without a val split (raw; mmbt without ``dev.jsonl``; arrow without the val file) gets
a seeded, stratified val split taken out of train: ``val_fraction`` (default 6846/67988, MAP's
61,142/6,846 proportions) of each class, saved with its seed in ``dataset.json``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from u2a.data.importers._common import (
    arrow_batches,
    carve_val,
    check_out,
    check_root,
    clean_text,
    csv_rows,
    file_ok,
    header_col,
    read_json,
    safe_name,
    sniff_header,
    write_arrow_image,
    write_dataset,
)
from u2a.data.manifest import as_classes
from u2a.errors import DataError
from u2a.io import atomic_dir

LAYOUTS = ("auto", "arrow", "mmbt", "raw")
NUM_CLASSES = 101
#: The 101 classes of Food-101 (ETH Zurich; UPMC Food-101 uses the same), in the order of the
#: original release's ``meta/classes.txt``: alphabetical, ``_`` before letters.
FOOD101_CLASSES = (
    "apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad",
    "beignets", "bibimbap", "bread_pudding", "breakfast_burrito", "bruschetta", "caesar_salad",
    "cannoli", "caprese_salad", "carrot_cake", "ceviche", "cheese_plate", "cheesecake",
    "chicken_curry", "chicken_quesadilla", "chicken_wings", "chocolate_cake", "chocolate_mousse",
    "churros", "clam_chowder", "club_sandwich", "crab_cakes", "creme_brulee", "croque_madame",
    "cup_cakes", "deviled_eggs", "donuts", "dumplings", "edamame", "eggs_benedict", "escargots",
    "falafel", "filet_mignon", "fish_and_chips", "foie_gras", "french_fries", "french_onion_soup",
    "french_toast", "fried_calamari", "fried_rice", "frozen_yogurt", "garlic_bread", "gnocchi",
    "greek_salad", "grilled_cheese_sandwich", "grilled_salmon", "guacamole", "gyoza", "hamburger",
    "hot_and_sour_soup", "hot_dog", "huevos_rancheros", "hummus", "ice_cream", "lasagna",
    "lobster_bisque", "lobster_roll_sandwich", "macaroni_and_cheese", "macarons", "miso_soup",
    "mussels", "nachos", "omelette", "onion_rings", "oysters", "pad_thai", "paella", "pancakes",
    "panna_cotta", "peking_duck", "pho", "pizza", "pork_chop", "poutine", "prime_rib",
    "pulled_pork_sandwich", "ramen", "ravioli", "red_velvet_cake", "risotto", "samosa", "sashimi",
    "scallops", "seaweed_salad", "shrimp_and_grits", "spaghetti_bolognese", "spaghetti_carbonara",
    "spring_rolls", "steak", "strawberry_shortcake", "sushi", "tacos", "takoyaki", "tiramisu",
    "tuna_tartare", "waffles",
)
#: MAP's val share of the original train split: 6,846 of 61,142 + 6,846
VAL_FRACTION = 6846 / (61142 + 6846)
MODALITIES = {"image": "image", "text": "text"}

ARROW_LAYOUT = ("MAP's arrow files food101_{train,val,test}.arrow with columns image (encoded bytes), "
                "text (list holding one title), label (int), image_id, split; class_idx.json beside them "
                "(optional: else Food-101's own class list)")
MMBT_LAYOUT = ("MMBT's train.jsonl, dev.jsonl, test.jsonl: one JSON object per line with img (image path "
               "relative to the folder), label (class name) and text")
RAW_LAYOUT = ("images/{train,test}/<class>/<file>.jpg and texts/{train,test}_titles.csv "
              "(columns: file name, text, class)")
LAYOUT_HELP = {"arrow": ARROW_LAYOUT, "mmbt": MMBT_LAYOUT, "raw": RAW_LAYOUT}

FILE_COLS = ("file", "filename", "file_name", "image", "img", "image_name", "image_id", "name", "path")
TEXT_COLS = ("text", "title", "caption")
CLASS_COLS = ("class", "label", "category", "class_name")


def detect_layout(root: Path) -> str:
    if any((root / f"food101_{s}.arrow").is_file() for s in ("train", "val", "dev", "test")):
        return "arrow"
    if any((root / f"{s}.jsonl").is_file() for s in ("train", "dev", "test")):
        return "mmbt"
    if (root / "images").is_dir() or (root / "texts").is_dir():
        return "raw"
    raise DataError(f"{root}: no Food-101 layout found; expected one of:\n"
                    + "\n".join(f"  {k}: {v}" for k, v in LAYOUT_HELP.items()))


def import_food101(
    root: str | os.PathLike,
    out: str | os.PathLike,
    layout: str = "auto",
    *,
    seed: int = 0,
    val_fraction: float | None = None,
    skip_missing: bool = False,
    classes: Sequence[str] | str | None = None,
    progress: bool = False,
) -> Path:
    """Import UPMC Food-101 from ``root`` into the manifest folder ``out`` (returned).

    ``skip_missing``: leave out (and count) samples whose image file is missing instead of
    raising a DataError. ``classes``: fix the class list (a list, a file or a comma list).
    """
    root = check_root(root)
    if layout not in LAYOUTS:
        raise DataError(f"food101: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(root)
    frac = VAL_FRACTION if val_fraction is None else float(val_fraction)
    out = check_out(out, root)
    cls = as_classes(classes)
    skipped: Counter[str] = Counter()
    with atomic_dir(out) as tmp:
        class_names: dict[str, Any] = {}
        if layout == "arrow":
            rows, cls, files, class_names = _read_arrow(root, tmp, cls, skipped, progress)
        elif layout == "mmbt":
            rows, cls, files = _read_mmbt(root, cls, skip_missing, skipped)
        else:
            rows, cls, files = _read_raw(root, cls, skip_missing, skipped)
        split_info: dict[str, Any] = {s: {"source": files.get(s)} for s in rows if files.get(s)}
        if not rows.get("val") and frac > 0 and rows.get("train"):
            split_info["val"] = carve_val(rows, frac, seed)
        _check_labels(rows, cls)
        write_dataset(tmp, "food101", rows, cls, MODALITIES, {
            "source": {"dataset": "UPMC Food-101", "root": str(root), "layout": layout,
                       "layout_description": LAYOUT_HELP[layout], "files": files},
            "options": {"seed": seed, "val_fraction": frac, "skip_missing": skip_missing},
            "splits": split_info,
            "label": "class name (single-label, 101 classes)",
            "image": ("written from the arrow files under images/" if layout == "arrow"
                      else "absolute paths to the source images"),
            "text": "the recipe page title",
            **({"class_names": class_names} if class_names else {}),
        }, {"skipped": dict(skipped)})
    return out


def _check_labels(rows: dict[str, list[dict[str, Any]]], classes: list[str]) -> None:
    known = set(classes)
    for s, rs in rows.items():
        for r in rs:
            if r["label"] not in known:  # the readers check with file:line; this is a last guard
                raise DataError(f"food101 {s}: sample {r['id']!r}: unknown class {r['label']!r}")


class _Ids:
    """Unique sample ids over all splits: a repeated name gets its split as a prefix (counted)."""

    def __init__(self, skipped: Counter[str]):
        self.seen: set[str] = set()
        self.skipped = skipped

    def __call__(self, name: str, split: str) -> str:
        sid = name
        if sid in self.seen:
            sid = f"{split}-{name}"
            self.skipped["renamed_duplicate_ids (not skipped)"] += 1
            n = 2
            while sid in self.seen:
                sid, n = f"{split}-{name}-{n}", n + 1
        self.seen.add(sid)
        return sid


# --------------------------------------------------------------------------- arrow


def _class_idx(root: Path) -> list[str] | None:
    p = root / "class_idx.json"
    if not p.is_file():
        return None
    what = "class_idx.json: {class name: index} (or a list of names in index order)"
    obj = read_json(p, what)
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
        return list(obj)
    if isinstance(obj, dict):
        if all(isinstance(v, int) for v in obj.values()):
            pairs = {v: k for k, v in obj.items()}
        elif all(str(k).isdigit() and isinstance(v, str) for k, v in obj.items()):
            pairs = {int(k): v for k, v in obj.items()}
        else:
            raise DataError(f"{p}: expected {what}")
        if sorted(pairs) != list(range(len(obj))):
            raise DataError(f"{p}: the indices are not 0..{len(obj) - 1} without gaps; expected {what}")
        return [pairs[i] for i in range(len(obj))]
    raise DataError(f"{p}: expected {what}")


def _norm_class(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def _class_in_id(image_id: Any, known: dict[str, str]) -> str | None:
    """The class an image id names (``apple_pie_123.jpg`` -> ``apple_pie``): the longest known name
    (normalized: lower case, ``_`` for spaces) that the id's stem is or starts with, then ``_``."""
    if image_id in (None, ""):
        return None
    stem = _norm_class(Path(str(image_id)).stem)
    best = known.get(stem)
    for i, ch in enumerate(stem):
        if ch == "_" and stem[:i] in known and (best is None or i > len(_norm_class(best))):
            best = known[stem[:i]]
    return best


def _read_arrow(root: Path, tmp: Path, cls: list[str] | None, skipped: Counter[str], progress: bool):
    from tqdm import tqdm

    if cls is not None:
        names, source = list(cls), "the class list given (--classes)"
    elif (found := _class_idx(root)) is not None:
        names, source = found, f"{root / 'class_idx.json'}"
    else:
        names, source = list(FOOD101_CLASSES), "Food-101's class list (no class_idx.json)"
    known = {_norm_class(n): n for n in names}
    files: dict[str, str] = {}
    for s, cands in (("train", ["train"]), ("val", ["val", "dev"]), ("test", ["test"])):
        for c in cands:
            if (root / f"food101_{c}.arrow").is_file():
                files[s] = f"food101_{c}.arrow"
                break
    for s in ("train", "test"):
        if s not in files:
            raise DataError(f"{root / f'food101_{s}.arrow'}: file not found; expected {ARROW_LAYOUT}")
    ids = _Ids(skipped)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    checked = 0
    for split, fname in files.items():
        path = root / fname
        (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
        row_no = 0
        bar = tqdm(desc=f"food101 {split}", unit=" img", disable=not progress)
        for batch in arrow_batches(path, ("image", "text", "label", "image_id"), ARROW_LAYOUT):
            for img, text, label, image_id in zip(batch["image"], batch["text"], batch["label"], batch["image_id"]):
                row_no += 1
                where = f"{path}: row {row_no}"
                if label is None or isinstance(label, bool) or not isinstance(label, int) or label < 0:
                    raise DataError(f"{where}: column 'label': expected a class index (int >= 0), got {label!r}")
                if label >= len(names):
                    hint = ("; put class_idx.json (class name -> index) beside the arrow files"
                            if cls is None and source.startswith("Food-101") else "")
                    raise DataError(f"{where}: column 'label': class index {label} is out of range for "
                                    f"{source} ({len(names)} names){hint}")
                named = _class_in_id(image_id, known)
                if named is not None:
                    if named != names[label]:
                        raise DataError(
                            f"{where}: image_id {image_id!r} names class {named!r}, but label {label} is "
                            f"{names[label]!r} in {source}: the class list does not match the arrow files "
                            "(give the class_idx.json these files were made with, or --classes in index order)")
                    checked += 1
                if isinstance(text, (list, tuple)):
                    text = next((t for t in text if isinstance(t, str) and t.strip()), None)
                elif text is not None and not isinstance(text, str):
                    raise DataError(f"{where}: column 'text': expected a list holding one title, got {type(text).__name__}")
                name = Path(str(image_id)).stem if image_id not in (None, "") else f"{split}_{row_no}"
                sid = ids(safe_name(name), split)
                rel = write_arrow_image(tmp, split, safe_name(sid), img, where)
                rows[split].append({"id": sid, "label": names[label], "image": rel, "text": clean_text(text)})
                bar.update()
        bar.close()
        if row_no == 0:
            raise DataError(f"{path}: no rows")
    class_names = {"source": source, "rows_checked_against_image_id": checked,
                   "rows": sum(len(r) for r in rows.values())}
    return rows, list(names), files, class_names


# --------------------------------------------------------------------------- MMBT jsonl


def _read_mmbt(root: Path, cls: list[str] | None, skip_missing: bool, skipped: Counter[str]):
    files: dict[str, str] = {}
    for s, cands in (("train", ["train"]), ("val", ["dev", "val"]), ("test", ["test"])):
        for c in cands:
            if (root / f"{c}.jsonl").is_file():
                files[s] = f"{c}.jsonl"
                break
    for s in ("train", "test"):
        if s not in files:
            raise DataError(f"{root / f'{s}.jsonl'}: file not found; expected {MMBT_LAYOUT}")
    ids = _Ids(skipped)
    rows: dict[str, list[dict[str, Any]]] = {}
    where_of: dict[tuple[str, str], str] = {}
    for split, fname in files.items():
        path = root / fname
        rows[split] = []
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: broken JSON ({e}); expected {MMBT_LAYOUT}") from None
                if not isinstance(d, dict):
                    raise DataError(f"{where}: not a JSON object; expected {MMBT_LAYOUT}")
                for k in ("img", "label", "text"):
                    if k not in d:
                        raise DataError(f"{where}: missing key '{k}'; expected {MMBT_LAYOUT}")
                img = d["img"]
                if not isinstance(img, str) or not img.strip():
                    raise DataError(f"{where}: key 'img': expected an image path, got {img!r}")
                label = str(d["label"]).strip()
                if not label:
                    raise DataError(f"{where}: key 'label': empty class name")
                p = Path(img).expanduser()
                p = p if p.is_absolute() else root / p
                if not file_ok(p):
                    if skip_missing:
                        skipped["missing image"] += 1
                        continue
                    raise DataError(f"{where}: image file not found (or empty): {p} "
                                    f"(key 'img' is relative to {root}); pass skip_missing to leave such samples out")
                sid = ids(safe_name(str(d.get("id") or Path(img).stem)), split)
                where_of[(split, sid)] = where
                rows[split].append({"id": sid, "label": label, "image": str(p.resolve()),
                                    "text": clean_text(d["text"])})
    classes = cls or sorted({r["label"] for r in rows["train"]})
    known = set(classes)
    for split, rs in rows.items():
        for r in rs:
            if r["label"] not in known:
                src = "the class list" if cls else "the labels of the train split"
                raise DataError(f"{where_of[(split, r['id'])]}: key 'label': unknown class {r['label']!r} (not in {src})")
    return rows, classes, files


# --------------------------------------------------------------------------- raw


def _read_raw(root: Path, cls: list[str] | None, skip_missing: bool, skipped: Counter[str]):
    for rel in ("images/train", "images/test"):
        if not (root / rel).is_dir():
            raise DataError(f"{root / rel}: folder not found; expected {RAW_LAYOUT}")
    for rel in ("texts/train_titles.csv", "texts/test_titles.csv"):
        if not (root / rel).is_file():
            raise DataError(f"{root / rel}: file not found; expected {RAW_LAYOUT}")
    classes = cls or sorted(p.name for p in (root / "images/train").iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root / 'images/train'}: no class folders; expected {RAW_LAYOUT}")
    known = set(classes)
    ids = _Ids(skipped)
    rows: dict[str, list[dict[str, Any]]] = {}
    files = {}
    header_names = set(FILE_COLS + TEXT_COLS + CLASS_COLS)
    for split in ("train", "test"):
        path = root / f"texts/{split}_titles.csv"
        files[split] = f"texts/{split}_titles.csv"
        rows[split] = []
        cols = (0, 1, 2)
        header = None
        for n, row in csv_rows(path):
            if header is None:
                header = sniff_header(row, header_names) and row[-1].strip() not in known
                if header:
                    exp = "columns: file name, text, class"
                    cols = (header_col(row, FILE_COLS, f"{path}:{n}", "file name", exp),
                            header_col(row, TEXT_COLS, f"{path}:{n}", "text", exp),
                            header_col(row, CLASS_COLS, f"{path}:{n}", "class", exp))
                    continue
            where = f"{path}:{n}"
            if header:
                if len(row) <= max(cols):
                    raise DataError(f"{where}: {len(row)} cells, the header names {max(cols) + 1}")
                fname, text, label = row[cols[0]], row[cols[1]], row[cols[2]]
            else:
                if len(row) < 3:
                    raise DataError(f"{where}: {len(row)} cell{'s' if len(row) != 1 else ''}; expected 3 "
                                    f"(file name, text, class) in {RAW_LAYOUT}")
                # an unquoted title with commas: the file is first, the class last
                fname, text, label = row[0], ",".join(row[1:-1]), row[-1]
            fname, label = fname.strip(), label.strip()
            if not fname:
                raise DataError(f"{where}: column 1 (file name) is empty")
            if label not in known:
                src = "the class list" if cls else f"the class folders of {root / 'images/train'}"
                raise DataError(f"{where}: column 3 (class): unknown class {label!r} (not in {src})")
            p = root / "images" / split / label / fname
            if not file_ok(p):
                if skip_missing:
                    skipped["missing image"] += 1
                    continue
                raise DataError(f"{where}: image file not found (or empty): {p}; expected {RAW_LAYOUT} "
                                f"(or pass skip_missing to leave such samples out)")
            sid = ids(safe_name(Path(fname).stem), split)
            rows[split].append({"id": sid, "label": label, "image": str(p.resolve()), "text": clean_text(text)})
        if not rows[split]:
            raise DataError(f"{path}: no samples")
    return rows, classes, files
