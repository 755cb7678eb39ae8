"""The emoji dataset, prepared for real from the npm package emoji-datasource-twitter@16.0.0."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from u2a.errors import DataError

pytestmark = pytest.mark.integration

VERSION = "16.0.0"
CATEGORIES = ["Activities", "Animals & Nature", "Flags", "Food & Drink", "Objects", "People & Body",
              "Smileys & Emotion", "Symbols", "Travel & Places"]


@pytest.fixture(scope="module")
def tgz() -> Path:
    """The package .tgz in the u2a cache (fetched with npm pack once); skip if it cannot be had."""
    from u2a.data.emoji import PACKAGE, fetch_package, npm_cache_dir

    cached = npm_cache_dir() / f"{PACKAGE}-{VERSION}.tgz"
    if not cached.is_file() and shutil.which("npm") is None:
        pytest.skip("npm is not installed and the emoji-datasource-twitter package is not in the u2a cache")
    try:
        return fetch_package(VERSION)
    except DataError as e:
        pytest.skip(f"cannot fetch {PACKAGE}@{VERSION} with npm (offline?): {e}")


@pytest.fixture(scope="module")
def built(tgz, tmp_path_factory) -> Path:
    from u2a.data.emoji import prepare_emoji

    return prepare_emoji(version=VERSION, seed=0, out=tmp_path_factory.mktemp("emoji") / "ds", progress=False)


def _rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_counts_and_classes(built):
    from u2a.data import load_splits

    info = json.loads((built / "dataset.json").read_text())
    from u2a.data.emoji import PINNED_SHA256

    assert info["source"] == {"package": "emoji-datasource-twitter", "version": VERSION, "registry": "npm",
                              "file": f"emoji-datasource-twitter-{VERSION}.tgz", "sha256": PINNED_SHA256[VERSION]}
    assert info["label_field"] == "category" and info["seed"] == 0
    assert info["text_fields"] == ["name", "short_names"]
    counts = info["counts"]
    assert counts["total"] == 1906
    assert counts["dropped"] == {"category Component": 5}
    assert counts["per_split"] == {"train": 1142, "val": 382, "test": 382}
    assert json.loads((built / "classes.json").read_text()) == CATEGORIES
    splits = load_splits(built)  # checks every image and text
    assert {s: len(m) for s, m in splits.items()} == counts["per_split"]
    assert all(m.classes == CATEGORIES and not m.skipped for m in splits.values())
    assert len({s.id for m in splits.values() for s in m.samples}) == 1906


def test_stratified(built):
    total = Counter()
    per = {}
    for split in ("train", "val", "test"):
        per[split] = Counter(r["label"] for r in _rows(built, split))
        total.update(per[split])
    assert sorted(total) == CATEGORIES
    for c in CATEGORIES:
        for split, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs(per[split][c] - frac * total[c]) <= 1, (split, c)


def test_samples(built):
    rows = {r["id"]: r for r in _rows(built, "train") + _rows(built, "val") + _rows(built, "test")}
    grin = rows["1f600"]
    assert grin["text"] == "grinning face; grinning"
    assert grin["label"] == "Smileys & Emotion" and grin["image"] == "images/1f600.png"
    with Image.open(built / grin["image"]) as im:
        assert im.mode == "RGB" and im.size == (64, 64)
        assert im.getpixel((0, 0)) == (255, 255, 255)  # transparent corner -> white
    assert all(r["text"] and r["text"] == r["text"].lower() for r in rows.values())


def test_deterministic_and_seeded(built, tmp_path):
    from u2a.data.emoji import prepare_emoji

    again = prepare_emoji(version=VERSION, seed=0, out=tmp_path / "again", progress=False)
    other = prepare_emoji(version=VERSION, seed=1, out=tmp_path / "other", progress=False)
    for split in ("train", "val", "test"):
        assert (again / f"{split}.jsonl").read_bytes() == (built / f"{split}.jsonl").read_bytes()
    assert (other / "test.jsonl").read_bytes() != (built / "test.jsonl").read_bytes()
    assert json.loads((other / "dataset.json").read_text())["counts"]["per_split"]["test"] == 382
    # a complete folder with the same options is reused, not rebuilt
    marker = again / "train.jsonl"
    mtime = marker.stat().st_mtime_ns
    assert prepare_emoji(version=VERSION, seed=0, out=again, progress=False) == again
    assert marker.stat().st_mtime_ns == mtime


def test_subcategory_labels(tgz, tmp_path):
    from u2a.data.emoji import prepare_emoji

    folder = prepare_emoji(version=VERSION, label_field="subcategory", out=tmp_path / "sub", progress=False)
    info = json.loads((folder / "dataset.json").read_text())
    assert info["counts"]["total"] == 1906
    assert len(info["classes"]) > 50
    assert sum(info["counts"]["per_split"].values()) == 1906


def test_refuses_to_overwrite_a_foreign_folder(tgz, tmp_path):
    from u2a.data.emoji import prepare_emoji

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a prepared dataset"):
        prepare_emoji(version=VERSION, out=tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cli(tgz, tmp_path, capsys):
    import argparse

    import u2a.commands.data as data_cmd

    parser = argparse.ArgumentParser(prog="u2a")
    data_cmd.register(parser.add_subparsers(dest="command"), argparse.HelpFormatter)
    args = parser.parse_args(["data", "prepare", "emoji", "--seed", "3", "--out", str(tmp_path / "cli"), "-q"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "1906 samples (train 1142, val 382, test 382), 9 classes" in out
    assert str(tmp_path / "cli") in out
    args = parser.parse_args(["data", "check", str(tmp_path / "cli")])
    assert args.func(args) == 0


def test_cached_archive_matches_the_pinned_hash(tgz):
    """The archive npm gave (cached in the u2a cache) is the one u2a pins."""
    from u2a.data.emoji import PINNED_SHA256, check_archive
    from u2a.io import sha256_file

    assert sha256_file(tgz) == PINNED_SHA256[VERSION]
    assert check_archive(tgz, VERSION) == PINNED_SHA256[VERSION]
