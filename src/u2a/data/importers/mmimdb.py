"""MM-IMDb (23 genres, multi-label; movie poster + plot) into a u2a manifest folder.

Layouts (``layout="auto"`` picks the one found in ``root``):

- ``raw``: ``split.json`` (keys ``train``/``dev``/``test`` -> lists of movie ids) with
  ``dataset/<id>.json`` (fields ``plot`` (list of strings), ``genres``, ...) and
  ``dataset/<id>.jpeg``.
- ``arrow``: MAP's ``mmimdb_{train,dev,test}.arrow`` (columns ``image``, ``plots`` (list),
  ``label`` (23-dim multi-hot in :data:`GENRES` order), ``genres``, ``image_id``, ``split``);
  the posters are written out under ``out/images/<split>/``.

u2a makes ONE sample per movie: the missing status of a modality belongs to the movie, and a
movie that appeared once per plot would be counted several times (and, with simulated missing
text, could lose its text in one copy and keep it in another). ``plots`` picks the text:
``"first"`` (default: IMDb's first plot summary, the main one, and what fits best into the
256-token budget), ``"longest"`` or ``"join"`` (all plots joined with a blank line). MAP instead
treats every plot as its own sample. Genres outside the 23 are dropped (counted); a movie left
without a genre is skipped (counted). ``dev`` is read as the val split.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from u2a.data.importers._common import (
    arrow_batches,
    check_out,
    check_root,
    clean_text,
    file_ok,
    find_image,
    read_json,
    safe_name,
    write_arrow_image,
    write_dataset,
)
from u2a.errors import DataError
from u2a.io import atomic_dir

LAYOUTS = ("auto", "raw", "arrow")
PLOTS = ("first", "longest", "join")
#: MAP's fixed genre order (the order of the multi-hot ``label`` in its arrow files)
GENRES = ["Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
          "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
          "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir"]
MODALITIES = {"image": "image", "text": "text"}

RAW_LAYOUT = ("split.json (keys train/dev/test -> lists of movie ids) with dataset/<id>.json "
              "(fields plot: list of strings, genres: list) and dataset/<id>.jpeg")
ARROW_LAYOUT = ("MAP's arrow files mmimdb_{train,dev,test}.arrow with columns image (encoded bytes), "
                "plots (list of strings), label (23-dim multi-hot), genres, image_id, split")
LAYOUT_HELP = {"raw": RAW_LAYOUT, "arrow": ARROW_LAYOUT}
SPLIT_KEYS = {"train": ("train",), "val": ("dev", "val", "valid", "validation"), "test": ("test",)}


def detect_layout(root: Path) -> str:
    if any((root / f"mmimdb_{s}.arrow").is_file() for s in ("train", "dev", "val", "test")):
        return "arrow"
    if (root / "split.json").is_file() or (root / "dataset").is_dir():
        return "raw"
    raise DataError(f"{root}: no MM-IMDb layout found; expected one of:\n"
                    + "\n".join(f"  {k}: {v}" for k, v in LAYOUT_HELP.items()))


def choose_plot(plots: Any, mode: str) -> str | None:
    """The text of a movie from its plots (``first``, ``longest`` or ``join``); None if it has none."""
    if isinstance(plots, str):
        plots = [plots]
    texts = [t.strip() for t in (plots or []) if isinstance(t, str) and t.strip()]
    if not texts:
        return None
    if mode == "first":
        return texts[0]
    if mode == "longest":
        return max(texts, key=len)  # the first of the longest on ties
    return "\n\n".join(texts)


def import_mmimdb(
    root: str | os.PathLike,
    out: str | os.PathLike,
    layout: str = "auto",
    *,
    plots: str = "first",
    skip_missing: bool = False,
    progress: bool = False,
) -> Path:
    """Import MM-IMDb from ``root`` into the manifest folder ``out`` (returned).

    ``skip_missing``: leave out (and count) movies whose json or poster file is missing instead
    of raising a DataError.
    """
    root = check_root(root)
    if layout not in LAYOUTS:
        raise DataError(f"mmimdb: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if plots not in PLOTS:
        raise DataError(f"mmimdb: plots={plots!r}; expected one of {', '.join(PLOTS)}")
    if layout == "auto":
        layout = detect_layout(root)
    out = check_out(out, root)
    counts: dict[str, Counter[str]] = {"skipped": Counter(), "dropped_genres": Counter(),
                                       "plots_per_movie": Counter(), "no_plot_text_missing": Counter()}
    with atomic_dir(out) as tmp:
        if layout == "raw":
            rows, files = _read_raw(root, plots, skip_missing, counts)
        else:
            rows, files = _read_arrow(root, tmp, plots, counts, progress)
        for s in ("train", "test"):
            if not rows.get(s):
                raise DataError(f"mmimdb: no {s} samples left in {files.get(s, root)}")
        write_dataset(tmp, "mmimdb", rows, list(GENRES), MODALITIES, {
            "source": {"dataset": "MM-IMDb", "root": str(root), "layout": layout,
                       "layout_description": LAYOUT_HELP[layout], "files": files},
            "options": {"plots": plots, "skip_missing": skip_missing},
            "splits": {s: {"source": files.get(s)} for s in rows},
            "label": "genres (multi-label, MAP's fixed order of 23 genres; others dropped)",
            "convention": "one sample per movie (MAP: one sample per plot); text = plots "
                          + {"first": "[0]", "longest": "the longest", "join": "joined with a blank line"}[plots],
            "image": ("written from the arrow files under images/" if layout == "arrow"
                      else "absolute paths to the source posters"),
        }, {k: dict(sorted(v.items())) for k, v in counts.items()})
    return out


def _genres(raw: Any, counts: dict[str, Counter[str]]) -> list[str]:
    names = [raw] if isinstance(raw, str) else list(raw or [])
    keep = []
    for g in names:
        g = str(g).strip()
        if g in GENRES:
            keep.append(g)
        elif g:
            counts["dropped_genres"][g] += 1
    return [g for g in GENRES if g in keep]  # in the fixed order, without repeats


def _read_raw(root: Path, plots: str, skip_missing: bool, counts: dict[str, Counter[str]]):
    split_path = root / "split.json"
    splits = read_json(split_path, RAW_LAYOUT)
    if not isinstance(splits, dict):
        raise DataError(f"{split_path}: expected a JSON object with keys train, dev, test; {RAW_LAYOUT}")
    data = root / "dataset"
    if not data.is_dir():
        raise DataError(f"{data}: folder not found; expected {RAW_LAYOUT}")
    rows: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, str] = {}
    seen: dict[str, str] = {}
    keys_of: dict[str, str] = {}
    for split, keys in SPLIT_KEYS.items():  # check the whole split.json before reading any movie
        key = next((k for k in keys if k in splits), None)
        if key is None:
            if split == "val":
                continue
            raise DataError(f"{split_path}: missing key '{split}'; expected {RAW_LAYOUT}")
        if not isinstance(splits[key], list):
            raise DataError(f"{split_path}: key '{key}': expected a list of movie ids")
        keys_of[split] = key
    for split, key in keys_of.items():
        ids = splits[key]
        files[split] = f"split.json[{key}]"
        rows[split] = []
        for i, mid in enumerate(ids):
            mid = str(mid).strip()
            where = f"{split_path}: key '{key}', item {i + 1} (movie {mid!r})"
            if mid in seen:
                raise DataError(f"{where}: movie listed twice (also in {seen[mid]})")
            seen[mid] = key
            jpath = data / f"{mid}.json"
            img = data / f"{mid}.jpeg"
            if not file_ok(img):
                img = find_image(data, mid) or img
            missing = [p for p in (jpath, img) if not file_ok(p)]
            if missing:
                if skip_missing:
                    counts["skipped"]["missing file"] += 1
                    continue
                raise DataError(f"{where}: file not found (or empty): {', '.join(map(str, missing))}; "
                                f"expected {RAW_LAYOUT} (or pass skip_missing to leave such movies out)")
            meta = read_json(jpath, "a movie's json with fields plot (list of strings) and genres")
            if not isinstance(meta, dict):
                raise DataError(f"{jpath}: expected a JSON object with fields plot and genres")
            if "genres" not in meta:
                raise DataError(f"{jpath}: missing field 'genres'; expected {RAW_LAYOUT}")
            genres = _genres(meta["genres"], counts)
            if not genres:
                counts["skipped"]["no genre among the 23"] += 1
                continue
            plot = meta.get("plot")
            counts["plots_per_movie"][str(len(plot) if isinstance(plot, list) else int(bool(plot)))] += 1
            text = choose_plot(plot, plots)
            if text is None:
                counts["no_plot_text_missing"][split] += 1
            rows[split].append({"id": safe_name(mid), "label": genres, "image": str(img.resolve()),
                                "text": text})
    return rows, files


def _read_arrow(root: Path, tmp: Path, plots: str, counts: dict[str, Counter[str]], progress: bool):
    from tqdm import tqdm

    files: dict[str, str] = {}
    for split, cands in SPLIT_KEYS.items():
        for c in cands:
            if (root / f"mmimdb_{c}.arrow").is_file():
                files[split] = f"mmimdb_{c}.arrow"
                break
    for s in ("train", "test"):
        if s not in files:
            raise DataError(f"{root / f'mmimdb_{s}.arrow'}: file not found; expected {ARROW_LAYOUT}")
    rows: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for split, fname in files.items():
        path = root / fname
        rows[split] = []
        (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
        n = 0
        bar = tqdm(desc=f"mmimdb {split}", unit=" img", disable=not progress)
        for batch in arrow_batches(path, ("image", "plots", "label", "image_id"), ARROW_LAYOUT):
            for img, pl, label, image_id in zip(batch["image"], batch["plots"], batch["label"], batch["image_id"]):
                n += 1
                bar.update()
                where = f"{path}: row {n}"
                if not isinstance(label, (list, tuple)) or len(label) != len(GENRES):
                    raise DataError(f"{where}: column 'label': expected a {len(GENRES)}-dim multi-hot list "
                                    f"in MAP's genre order, got {label!r}"[:400])
                genres = [g for g, v in zip(GENRES, label) if v]
                if not genres:
                    counts["skipped"]["no genre among the 23"] += 1
                    continue
                mid = safe_name(Path(str(image_id)).stem) if image_id not in (None, "") else f"{split}_{n}"
                if mid in seen:
                    raise DataError(f"{where}: column 'image_id': movie {mid!r} appears twice")
                seen.add(mid)
                text = choose_plot(pl, plots)
                rel = write_arrow_image(tmp, split, mid, img, where)
                if rel is None and text is None:
                    counts["skipped"]["no image and no plot"] += 1
                    continue
                counts["plots_per_movie"][str(len(pl) if isinstance(pl, list) else int(bool(pl)))] += 1
                if text is None:
                    counts["no_plot_text_missing"][split] += 1
                rows[split].append({"id": mid, "label": genres, "image": rel, "text": clean_text(text)})
        bar.close()
        if n == 0:
            raise DataError(f"{path}: no rows")
    return rows, files
