"""The missing-modality tables against MAP's protocol (Lee et al., "Multimodal Prompting with Missing
Modalities for Visual Recognition", CVPR 2023) as docs/data.md writes it out."""

from __future__ import annotations

import json
import random

import pytest

from u2a.data.missing import MissingSpec, build_tables, load_or_build_tables, table_key

SPLITS = ("train", "val", "test")


def reference_tables(sizes, specs, pair=("text", "image"), both_ratio=0.5, seed=0):
    """The algorithm text, followed literally: Python's `random` seeded once, splits in the order
    train, val, test; per split table = N zeros, idx = random.sample(range(N), int(N * eta));
    type text -> 1, type image -> 2; type both -> 1, then random.sample(idx, int(len(idx) * both_ratio)) -> 2."""
    state = random.getstate()
    try:
        random.seed(seed)
        out = {}
        for split in SPLITS:
            if split not in sizes:
                continue
            n = sizes[split]
            eta, kind = specs[split]
            table = [0] * n
            idx = random.sample(range(n), int(n * eta))
            if kind == pair[0]:
                for i in idx:
                    table[i] = 1
            elif kind == pair[1]:
                for i in idx:
                    table[i] = 2
            else:  # both
                for i in idx:
                    table[i] = 1
                for i in random.sample(idx, int(len(idx) * both_ratio)):
                    table[i] = 2
            out[split] = table
        return out
    finally:
        random.setstate(state)


CASES = [
    (0, {"train": 50, "val": 11, "test": 23}, {"train": (0.7, "both"), "val": (0.7, "both"), "test": (0.7, "both")}),
    (1, {"train": 40, "val": 9, "test": 31}, {"train": (0.7, "text"), "val": (0.3, "image"), "test": (0.7, "both")}),
    (7, {"train": 13, "val": 5, "test": 100}, {"train": (0.0, "both"), "val": (0.0, "both"), "test": (0.9, "text")}),
    (3, {"train": 64, "val": 16, "test": 17}, {"train": (0.7, "image"), "val": (1.0, "both"), "test": (0.5, "image")}),
    (42, {"test": 37}, {"test": (0.7, "both")}),
]


@pytest.mark.parametrize("seed,sizes,specs", CASES)
def test_build_tables_follows_the_algorithm_exactly(seed, sizes, specs):
    got = build_tables(sizes, {s: MissingSpec(*specs[s]) for s in sizes}, ("text", "image"), 0.5, seed)
    assert got == reference_tables(sizes, specs, seed=seed)


def test_exact_indices_small_case():
    """A hand-checkable case: the indices are exactly those random.sample picks after random.seed(0)."""
    random.seed(0)
    idx_train = random.sample(range(10), 7)
    two = random.sample(idx_train, 3)
    idx_test = random.sample(range(4), 2)
    want_train = [0] * 10
    for i in idx_train:
        want_train[i] = 1
    for i in two:
        want_train[i] = 2
    want_test = [0] * 4
    for i in idx_test:
        want_test[i] = 2
    got = build_tables({"train": 10, "test": 4}, {"train": MissingSpec(0.7, "both"), "test": MissingSpec(0.5, "image")}, seed=0)
    assert got == {"train": want_train, "test": want_test}


def test_build_tables_does_not_touch_the_global_random_state():
    random.seed(123)
    before = random.random()
    random.seed(123)
    build_tables({"test": 50}, {"test": MissingSpec(0.7, "both")}, seed=5)
    assert random.random() == before


def test_other_pair_order_and_both_ratio():
    sizes = {"train": 30, "val": 10, "test": 20}
    specs = {"train": (0.6, "audio"), "val": (0.5, "video"), "test": (0.8, "both")}
    got = build_tables(sizes, {s: MissingSpec(*v) for s, v in specs.items()}, ("audio", "video"), 0.25, 9)
    assert got == reference_tables(sizes, specs, ("audio", "video"), 0.25, 9)
    assert got["test"].count(2) == int(16 * 0.25) and got["test"].count(1) == 16 - 4


@pytest.mark.parametrize("n", [100, 1000, 2608])
def test_seventy_percent_both_is_35_35_30(n):
    t = build_tables({"test": n}, {"test": MissingSpec(0.7, "both")}, seed=0)["test"]
    n_missing = int(n * 0.7)
    assert t.count(0) == n - n_missing
    assert t.count(2) == int(n_missing * 0.5)
    assert t.count(1) == n_missing - int(n_missing * 0.5)
    if n == 1000:
        assert (t.count(1), t.count(2), t.count(0)) == (350, 350, 300)
    assert abs(t.count(1) / n - 0.35) <= 1 / n + 1e-9 and abs(t.count(2) / n - 0.35) <= 1 / n + 1e-9


def test_single_types_use_one_code():
    t = build_tables({"test": 200}, {"test": MissingSpec(0.7, "text")}, seed=0)["test"]
    assert set(t) == {0, 1} and t.count(1) == 140
    t = build_tables({"test": 200}, {"test": MissingSpec(0.3, "image")}, seed=0)["test"]
    assert set(t) == {0, 2} and t.count(2) == 60


BASE = dict(sizes={"train": 20, "val": 5, "test": 8}, specs={"train": MissingSpec(0.7, "both"), "val": MissingSpec(0.7, "both"), "test": MissingSpec(0.7, "both")},
            pair=("text", "image"), both_ratio=0.5, seed=0)


def _key(**kw):
    p = {**BASE, **kw}
    return table_key(p["sizes"], p["specs"], p["pair"], p["both_ratio"], p["seed"])


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"both_ratio": 0.25},
    {"pair": ("image", "text")},
    {"sizes": {"train": 21, "val": 5, "test": 8}},
    {"sizes": {"train": 20, "val": 6, "test": 8}},
    {"sizes": {"train": 20, "val": 5, "test": 9}},
    {"specs": {**BASE["specs"], "train": MissingSpec(0.6, "both")}},
    {"specs": {**BASE["specs"], "val": MissingSpec(0.7, "text")}},
    {"specs": {**BASE["specs"], "test": MissingSpec(0.7, "image")}},
    {"specs": {**BASE["specs"], "test": MissingSpec(0.5, "both")}},
])
def test_key_changes_with_every_parameter(change):
    assert _key(**change) != _key()
    assert _key() == _key()  # and is stable


def test_load_or_build_writes_atomically_and_rereads(tmp_path, monkeypatch):
    import u2a.data.missing as missing

    calls = []
    real_write = missing.atomic_write_json

    def spy(path, data, **kw):
        calls.append(path)
        return real_write(path, data, **kw)

    monkeypatch.setattr(missing, "atomic_write_json", spy)
    p = BASE
    t1 = load_or_build_tables(tmp_path, p["sizes"], p["specs"], p["pair"], p["both_ratio"], p["seed"])
    path = tmp_path / f"{_key()}.json"
    assert calls == [path] and path.is_file()
    assert not [f for f in tmp_path.iterdir() if f != path]  # no temporary file left behind
    saved = json.loads(path.read_text())
    assert saved["tables"] == t1 and saved["seed"] == 0 and saved["both_ratio"] == 0.5
    assert t1 == reference_tables(p["sizes"], {s: (v.ratio, v.type) for s, v in p["specs"].items()})

    # the file is re-read, not rebuilt: doctor it and the doctored table comes back
    saved["tables"]["test"] = [2] * 8
    path.write_text(json.dumps(saved))
    t2 = load_or_build_tables(tmp_path, p["sizes"], p["specs"], p["pair"], p["both_ratio"], p["seed"])
    assert t2["test"] == [2] * 8 and len(calls) == 1

    # a damaged file is rebuilt
    path.write_text("{not json")
    t3 = load_or_build_tables(tmp_path, p["sizes"], p["specs"], p["pair"], p["both_ratio"], p["seed"])
    assert t3 == t1 and len(calls) == 2


def test_write_uses_a_temporary_file_then_replace(tmp_path, monkeypatch):
    """u2a.io.atomic_write_json: a crash while writing leaves the old file (or none), never half a file."""
    import os

    import u2a.io as uio

    target = tmp_path / "x.json"
    uio.atomic_write_json(target, {"a": 1})
    real_replace = os.replace

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        uio.atomic_write_json(target, {"a": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    assert json.loads(target.read_text()) == {"a": 1}
    assert list(tmp_path.iterdir()) == [target]  # the temporary file is gone too


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"both_ratio": 0.3}, {"specs": {**BASE["specs"], "test": MissingSpec(0.5, "both")}},
])
def test_stale_file_with_other_parameters_is_never_reused(tmp_path, change):
    p = BASE
    load_or_build_tables(tmp_path, p["sizes"], p["specs"], p["pair"], p["both_ratio"], p["seed"])
    # make the stored tables obviously wrong; a lookup with other parameters must not see them
    for f in tmp_path.glob("*.json"):
        d = json.loads(f.read_text())
        d["tables"] = {s: [1] * len(v) for s, v in d["tables"].items()}
        f.write_text(json.dumps(d))
    q = {**p, **change}
    got = load_or_build_tables(tmp_path, q["sizes"], q["specs"], q["pair"], q["both_ratio"], q["seed"])
    want = reference_tables(q["sizes"], {s: (v.ratio, v.type) for s, v in q["specs"].items()}, q["pair"], q["both_ratio"], q["seed"])
    assert got == want
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_stale_file_with_other_sizes_is_rebuilt(tmp_path):
    """Even a file under the right name whose tables have the wrong length is not used."""
    p = BASE
    path = tmp_path / f"{_key()}.json"
    path.write_text(json.dumps({"tables": {"train": [0] * 3, "val": [0] * 5, "test": [0] * 8}}))
    got = load_or_build_tables(tmp_path, p["sizes"], p["specs"], p["pair"], p["both_ratio"], p["seed"])
    assert got == reference_tables(p["sizes"], {s: (v.ratio, v.type) for s, v in p["specs"].items()})
