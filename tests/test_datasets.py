"""ManifestDataset and build_datasets: missing tables on top of the data, limits, class checks."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from u2a.config import build_run_config
from u2a.data.datasets import ManifestDataset, build_datasets, data_report
from u2a.data.manifest import load_manifest
from u2a.data.missing import build_tables
from u2a.errors import ConfigError

CLASSES = ["a", "b", "c"]


def write_data(root, n_per_split=(30, 10, 10), missing_image=()):
    img = root / "x.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(img)
    k = 0
    for split, n in zip(("train", "val", "test"), n_per_split):
        rows = []
        for i in range(n):
            sid = f"{split}{i}"
            rows.append({"id": sid, "label": CLASSES[i % 3], "image": None if sid in missing_image else "x.png",
                         "text": f"sample {k}"})
            k += 1
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def run_cfg(root, **missing):
    return build_run_config({
        "name": "t",
        "model": {"modalities": [{"name": "image", "encoder": "x"}, {"name": "text", "encoder": "y"}], "num_classes": 3},
        "data": {"manifest": str(root), "missing": missing},
    })


def test_missing_tables_are_applied_and_stored_with_the_run(tmp_path):
    root = write_data(tmp_path)
    cfg = run_cfg(root, train={"ratio": 0.7, "type": "both"}, test={"ratio": 0.5, "type": "text"})
    ds = build_datasets(cfg, tmp_path / "run")
    tables = build_tables({"train": 30, "val": 10, "test": 10},
                          {"train": _spec(0.7, "both"), "test": _spec(0.5, "text")}, ("text", "image"))
    for split in ("train", "val", "test"):
        for i, code in enumerate(tables[split]):
            fields = ds[split][i]["fields"]
            assert (fields["text"] is None) == (code == 1)
            assert (fields["image"] is None) == (code == 2)
    assert Counter(tables["train"]) == {0: 9, 1: 11, 2: 10}
    assert len(list((tmp_path / "run" / "missing").glob("*.json"))) == 1
    assert cfg.model.classes == CLASSES
    assert data_report(ds)["sizes"] == {"train": 30, "val": 10, "test": 10}


def _spec(ratio, type_):
    from u2a.data.missing import MissingSpec

    return MissingSpec(ratio, type_)


def test_table_never_removes_a_samples_only_modality(tmp_path):
    root = write_data(tmp_path, missing_image={"test0", "test1"})
    man = load_manifest(root / "test.jsonl")
    ds = ManifestDataset(man, ["image", "text"], table=[1] * 10, pair=("text", "image"))
    assert ds[0]["fields"]["text"] == "sample 40"  # kept: the image is already missing
    assert ds[0]["fields"]["image"] is None
    assert ds[2]["fields"]["text"] is None


def test_limit_takes_a_seeded_subset_of_every_class(tmp_path):
    root = write_data(tmp_path, n_per_split=(90, 30, 30))
    cfg = run_cfg(root)
    cfg.data.limit = 12
    a = build_datasets(cfg)
    b = build_datasets(cfg)
    assert [s.id for s in a["train"].samples] == [s.id for s in b["train"].samples]
    assert len(a["train"]) == 12 and len(a["val"]) == 12
    assert len({s.label for s in a["train"].samples}) == 3


def test_class_count_and_task_must_match_the_data(tmp_path):
    root = write_data(tmp_path)
    cfg = run_cfg(root)
    cfg.model.num_classes = 4
    cfg.model.classes = None
    with pytest.raises(ConfigError, match="model.num_classes.*3 classes"):
        build_datasets(cfg)


def test_unknown_modality_field_is_named(tmp_path):
    root = write_data(tmp_path)
    man = load_manifest(root / "test.jsonl")
    with pytest.raises(Exception, match="audio"):
        ManifestDataset(man, ["image", "audio"])


def test_a_class_without_training_samples_is_warned_about_with_where_it_is_used(tmp_path):
    """A misspelt label in val ('Flagz') used to become a class of its own, silently."""
    import json

    from u2a.data.datasets import _warn_classes_without_training_samples
    from u2a.data.manifest import load_splits
    from u2a.errors import U2AWarning

    rows = {"train": [("t1", "Flags"), ("t2", "Food")], "val": [("v1", "Flagz"), ("v2", "Food")]}
    for split, items in rows.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": i, "label": lab, "text": f"text {i}"}) + "\n" for i, lab in items))
    splits = load_splits(tmp_path, {"text": "text"})
    with pytest.warns(U2AWarning, match=r"1 of 3 classes have no training sample .*'Flagz'; used at .*val.jsonl:1"):
        _warn_classes_without_training_samples(splits)
