"""The dataset importers (``u2a.data.importers``, ``u2a data import``): tiny fixtures written in
each on-disk layout, imported, and read back with ``load_splits``; every bad input is a DataError
that names the file, line or column."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from u2a.data import load_splits
from u2a.data.importers import GENRES, import_ave, import_cremad, import_food101, import_kinetics_sounds, import_mmimdb
from u2a.data.importers.food101 import FOOD101_CLASSES, VAL_FRACTION
from u2a.data.importers.mmimdb import choose_plot
from u2a.errors import DataError

FOOD = ["apple_pie", "pizza", "sushi"]
COLORS = {"apple_pie": (200, 150, 50), "pizza": (220, 40, 30), "sushi": (240, 240, 240)}


# --------------------------------------------------------------------------- fixture helpers


def write_image(path: Path, color=(10, 120, 200), fmt: str | None = None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, format=fmt)
    return path


def image_bytes(color=(10, 120, 200), fmt: str = "JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format=fmt)
    return buf.getvalue()


def write_wav(path: Path, seconds: float = 0.1, sr: int = 16000, freq: float = 440.0) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def write_frames(folder: Path, n: int = 2) -> Path:
    for i in range(1, n + 1):
        write_image(folder / f"frame_{i:04d}.jpg", (20 * i, 50, 90))
    return folder


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def ids(manifest) -> list[str]:
    return [s.id for s in manifest.samples]


# --------------------------------------------------------------------------- Food-101: raw


def food_raw(root: Path, n_train: int = 10, n_test: int = 2, header: bool = False) -> Path:
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for c in FOOD:
            for i in range(n):
                name = f"{c}_{split}_{i}.jpg"
                write_image(root / "images" / split / c / name, COLORS[c])
                rows.append([name, f"best {c.replace('_', ' ')} recipe, number {i}", c])
        (root / "texts").mkdir(parents=True, exist_ok=True)
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="") as f:
            w = csv.writer(f)
            if header:
                w.writerow(["image", "title", "label"])
            w.writerows(rows)
    return root


def test_food101_raw_layout(tmp_path):
    root = food_raw(tmp_path / "food")
    out = import_food101(root, tmp_path / "out")
    splits = load_splits(out)
    assert set(splits) == {"train", "val", "test"}
    n_val = round(10 * VAL_FRACTION)  # per class
    assert len(splits["val"]) == 3 * n_val and len(splits["train"]) == 3 * (10 - n_val)
    assert len(splits["test"]) == 6
    assert splits["train"].classes == FOOD and not splits["train"].multilabel
    s = splits["test"].samples[0]
    assert s.label == "apple_pie" and s.fields["text"] == "best apple pie recipe, number 0"  # quoted comma kept
    assert Path(splits["test"].resolve(s, "image")).is_file()
    info = json.loads((out / "dataset.json").read_text())
    assert info["source"]["layout"] == "raw"
    assert info["splits"]["val"]["seed"] == 0 and info["splits"]["val"]["fraction"] == pytest.approx(0.1007, abs=1e-4)
    assert info["counts"]["per_split"] == {"train": 27, "val": 3, "test": 6}
    assert json.loads((out / "classes.json").read_text()) == FOOD


def test_food101_val_split_is_seeded(tmp_path):
    root = food_raw(tmp_path / "food")
    a = import_food101(root, tmp_path / "a", seed=3)
    b = import_food101(root, tmp_path / "b", seed=3)
    c = import_food101(root, tmp_path / "c", seed=4)
    assert (a / "val.jsonl").read_bytes() == (b / "val.jsonl").read_bytes()
    assert (a / "train.jsonl").read_bytes() == (b / "train.jsonl").read_bytes()
    assert {r["id"] for r in lines_of(a / "val.jsonl")} != {r["id"] for r in lines_of(c / "val.jsonl")}
    # stratified: one per class at this size
    assert sorted(r["label"] for r in lines_of(a / "val.jsonl")) == FOOD
    d = import_food101(root, tmp_path / "d", val_fraction=0.3)
    assert len(lines_of(d / "val.jsonl")) == 9
    e = import_food101(root, tmp_path / "e", val_fraction=0)
    assert not (e / "val.jsonl").exists()
    # importing again over a finished import replaces it
    import_food101(root, tmp_path / "a", seed=4)
    assert (a / "val.jsonl").read_bytes() == (c / "val.jsonl").read_bytes()


def test_food101_raw_header_and_skip_missing(tmp_path):
    root = food_raw(tmp_path / "food", header=True)
    (root / "images/test/pizza/pizza_test_1.jpg").unlink()
    with pytest.raises(DataError) as e:
        import_food101(root, tmp_path / "out")
    msg = str(e.value)
    # header on line 1, apple_pie rows 2-3, pizza rows 4-5: pizza_test_1 is line 5
    assert "test_titles.csv:5" in msg and "pizza_test_1.jpg" in msg
    out = import_food101(root, tmp_path / "out", skip_missing=True)
    assert len(load_splits(out)["test"]) == 5
    assert json.loads((out / "dataset.json").read_text())["counts"]["skipped"] == {"missing image": 1}


def test_food101_raw_bad_inputs(tmp_path):
    root = food_raw(tmp_path / "food")
    (root / "texts/test_titles.csv").rename(root / "texts/test.csv")
    with pytest.raises(DataError, match=r"texts/test_titles\.csv: file not found; expected images/"):
        import_food101(root, tmp_path / "out")
    (root / "texts/test.csv").rename(root / "texts/test_titles.csv")
    with open(root / "texts/test_titles.csv", "a") as f:
        f.write("x.jpg,a title,ramen\n")
    with pytest.raises(DataError, match=r"test_titles\.csv:7: column 3 \(class\): unknown class 'ramen'"):
        import_food101(root, tmp_path / "out")
    with open(root / "texts/train_titles.csv", "a") as f:
        f.write("only-one-cell\n")
    with pytest.raises(DataError, match=r"train_titles\.csv:31: 1 cell; expected 3"):
        import_food101(root, tmp_path / "out")
    with pytest.raises(DataError, match="no Food-101 layout found"):
        import_food101(tmp_path / "food/images/train/pizza", tmp_path / "out")
    with pytest.raises(DataError, match="dataset folder not found"):
        import_food101(tmp_path / "nope", tmp_path / "out")
    # an existing folder that is not an import is never overwritten
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not an imported dataset"):
        import_food101(food_raw(tmp_path / "food2"), tmp_path / "mine")
    assert (tmp_path / "mine/notes.txt").read_text() == "keep"


# --------------------------------------------------------------------------- Food-101: MMBT jsonl


def food_mmbt(root: Path) -> Path:
    for split, n in (("train", 4), ("dev", 1), ("test", 2)):
        rows = []
        for c in FOOD:
            for i in range(n):
                rel = f"images/{split}/{c}/{c}_{split}_{i}.jpg"
                write_image(root / rel, COLORS[c])
                rows.append({"label": c, "img": rel, "text": f"{c} {i}"})
        jsonl(root / f"{split}.jsonl", rows)
    return root


def test_food101_mmbt_layout(tmp_path):
    root = food_mmbt(tmp_path / "food")
    out = import_food101(root, tmp_path / "out")
    splits = load_splits(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 3, "test": 6}
    assert ids(splits["val"]) == ["apple_pie_dev_0", "pizza_dev_0", "sushi_dev_0"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["source"]["layout"] == "mmbt" and info["splits"]["val"] == {"source": "dev.jsonl"}


def test_food101_mmbt_bad_inputs(tmp_path):
    root = food_mmbt(tmp_path / "food")
    rows = lines_of(root / "test.jsonl")
    del rows[1]["text"]
    jsonl(root / "test.jsonl", rows)
    with pytest.raises(DataError, match=r"test\.jsonl:2: missing key 'text'; expected MMBT"):
        import_food101(root, tmp_path / "out")
    rows[1]["text"] = "t"
    rows[2]["label"] = "ramen"
    jsonl(root / "test.jsonl", rows)
    with pytest.raises(DataError, match=r"test\.jsonl:3: key 'label': unknown class 'ramen'"):
        import_food101(root, tmp_path / "out")
    rows[2]["label"] = "pizza"
    rows[3]["img"] = "images/none.jpg"
    jsonl(root / "test.jsonl", rows)
    with pytest.raises(DataError, match=r"test\.jsonl:4: image file not found.*none\.jpg"):
        import_food101(root, tmp_path / "out")
    (root / "test.jsonl").unlink()
    with pytest.raises(DataError, match=r"test\.jsonl: file not found; expected MMBT"):
        import_food101(root, tmp_path / "out", layout="mmbt")


# --------------------------------------------------------------------------- Food-101: MAP arrow


def write_arrow(path: Path, columns: dict, stream: bool = False) -> Path:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is needed for the arrow layouts (pip install pyarrow)")
    table = pa.table(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink:
        writer = pa.ipc.new_stream(sink, table.schema) if stream else pa.ipc.new_file(sink, table.schema)
        writer.write_table(table)
        writer.close()
    return path


def food_arrow(root: Path, stream: bool = False, class_idx: bool = True, drop: str | None = None,
               index=None) -> Path:
    """MAP's arrow files for the classes FOOD; label = index(class) (default: the position in FOOD)."""
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        cols = {"image": [], "text": [], "label": [], "image_id": [], "split": []}
        for li, c in enumerate(FOOD):
            for i in range(n):
                cols["image"].append(image_bytes(COLORS[c], "PNG" if i % 2 else "JPEG"))
                cols["text"].append([f"{c} title {i}"])
                cols["label"].append(index(c) if index else li)
                cols["image_id"].append(f"{c}_{split}_{i}.jpg")
                cols["split"].append(split)
        if drop:
            cols.pop(drop)
        write_arrow(root / f"food101_{split}.arrow", cols, stream=stream)
    if class_idx:
        (root / "class_idx.json").write_text(json.dumps({c: i for i, c in enumerate(FOOD)}))
    return root


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_food101_arrow_layout(tmp_path, stream):
    pytest.importorskip("pyarrow", reason="pyarrow is needed for the arrow layouts (pip install pyarrow)")
    root = food_arrow(tmp_path / "food", stream=stream)
    out = import_food101(root, tmp_path / "out")
    splits = load_splits(out)  # also opens every written image with PIL
    assert {k: len(v) for k, v in splits.items()} == {"train": 9, "val": 3, "test": 6}
    assert splits["train"].classes == FOOD
    s = splits["train"].samples[1]
    assert s.id == "apple_pie_train_1" and s.label == "apple_pie" and s.fields["text"] == "apple_pie title 1"
    assert s.fields["image"] == "images/train/apple_pie_train_1.png"  # PNG bytes keep their suffix
    assert (out / "images/test/sushi_test_0.jpg").is_file()
    assert json.loads((out / "dataset.json").read_text())["source"]["layout"] == "arrow"


def test_food101_arrow_class_names_and_bad_inputs(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is needed for the arrow layouts (pip install pyarrow)")
    # no class_idx.json: Food-101's own 101 names, checked against the names the image ids carry
    root = food_arrow(tmp_path / "food", class_idx=False, index=FOOD101_CLASSES.index)
    out = import_food101(root, tmp_path / "out")
    classes = json.loads((out / "classes.json").read_text())
    assert classes == list(FOOD101_CLASSES) and len(classes) == 101
    assert classes[:3] == ["apple_pie", "baby_back_ribs", "baklava"] and classes[-1] == "waffles"
    assert classes[15:18] == ["ceviche", "cheese_plate", "cheesecake"]  # classes.txt order: '_' before letters
    assert lines_of(out / "test.jsonl")[-1]["label"] == "sushi"
    names = json.loads((out / "dataset.json").read_text())["class_names"]
    assert names == {"source": "Food-101's class list (no class_idx.json)", "rows_checked_against_image_id": 18,
                     "rows": 18}
    # an index whose class is not the one the image id names is refused, naming the row
    wrong = food_arrow(tmp_path / "wrong", class_idx=False)  # pizza rows have index 1 = baby_back_ribs
    with pytest.raises(DataError, match=r"food101_train\.arrow: row 4: image_id 'pizza_train_0\.jpg' names class "
                                        r"'pizza', but label 1 is 'baby_back_ribs' in Food-101's class list"):
        import_food101(wrong, tmp_path / "out_wrong")
    (wrong / "class_idx.json").write_text(json.dumps({"sushi": 0, "pizza": 1, "apple_pie": 2}))
    with pytest.raises(DataError, match=r"row 1: image_id 'apple_pie_train_0\.jpg' names class 'apple_pie', "
                                        r"but label 0 is 'sushi' in .*class_idx\.json"):
        import_food101(wrong, tmp_path / "out_wrong")
    with pytest.raises(DataError, match=r"row 1: column 'label': class index 0 is out of range for the class list"):
        import_food101(wrong, tmp_path / "out_wrong", classes=[])
    bad = food_arrow(tmp_path / "bad", drop="label")
    with pytest.raises(DataError, match=r"food101_train\.arrow: missing column 'label'.*expected MAP's arrow"):
        import_food101(bad, tmp_path / "out2")
    (tmp_path / "bad/food101_test.arrow").unlink()
    with pytest.raises(DataError, match=r"food101_test\.arrow: file not found"):
        import_food101(bad, tmp_path / "out2")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/food101_train.arrow").write_bytes(b"not arrow at all")
    (tmp_path / "junk/food101_test.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(DataError, match=r"food101_train\.arrow: not an arrow IPC file or stream"):
        import_food101(tmp_path / "junk", tmp_path / "out3")


# --------------------------------------------------------------------------- MM-IMDb


MOVIES = {
    # id: (split, plots, genres)
    "0000001": ("train", ["A short plot.", "A much longer second plot about a war."], ["Drama", "War"]),
    "0000002": ("train", ["Comedy plot."], ["Comedy", "Talk-Show", "Romance"]),
    "0000003": ("train", ["Only foreign genres."], ["Reality-TV"]),  # no genre left: skipped
    "0000004": ("dev", ["Noir plot."], ["Film-Noir", "Crime"]),
    "0000005": ("test", [], ["Sci-Fi"]),  # no plot: text missing
    "0000006": ("test", ["x", "y"], ["Short", "Drama"]),
}


def mmimdb_raw(root: Path) -> Path:
    split = {"train": [], "dev": [], "test": []}
    for mid, (s, plots, genres) in MOVIES.items():
        split[s].append(mid)
        (root / "dataset").mkdir(parents=True, exist_ok=True)
        (root / "dataset" / f"{mid}.json").write_text(json.dumps({"plot": plots, "genres": genres, "title": mid}))
        write_image(root / "dataset" / f"{mid}.jpeg", fmt="JPEG")
    (root / "split.json").write_text(json.dumps(split))
    return root


def test_mmimdb_raw_layout(tmp_path):
    root = mmimdb_raw(tmp_path / "imdb")
    out = import_mmimdb(root, tmp_path / "out")
    splits = load_splits(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 1, "test": 2}
    m = splits["train"]
    assert m.multilabel and m.classes == GENRES and len(GENRES) == 23
    first = m.samples[0]
    assert first.id == "0000001" and first.label == ["Drama", "War"]
    assert m.label_index(first) == [0, 14]  # MAP's fixed genre order
    assert m.samples[1].label == ["Comedy", "Romance"]  # Talk-Show dropped
    assert first.fields["text"] == "A short plot."
    assert splits["val"].samples[0].label == ["Crime", "Film-Noir"]  # in the fixed order
    assert splits["test"].samples[0].fields["text"] is None
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    assert counts["dropped_genres"] == {"Reality-TV": 1, "Talk-Show": 1}
    assert counts["skipped"] == {"no genre among the 23": 1}
    assert counts["no_plot_text_missing"] == {"test": 1}
    assert counts["missing_modality"]["test"] == {"image": 0, "text": 1}
    longest = load_splits(import_mmimdb(root, tmp_path / "long", plots="longest"))["train"].samples[0]
    assert longest.fields["text"] == "A much longer second plot about a war."
    joined = load_splits(import_mmimdb(root, tmp_path / "join", plots="join"))["test"].samples[1]
    assert joined.fields["text"] == "x\n\ny"


def test_choose_plot():
    assert choose_plot(["a", "bbb", "cc"], "first") == "a"
    assert choose_plot(["a", "bbb", "ccc"], "longest") == "bbb"
    assert choose_plot(["  ", "b"], "first") == "b"
    assert choose_plot("one", "join") == "one"
    assert choose_plot([], "first") is None and choose_plot(None, "join") is None


def test_mmimdb_raw_bad_inputs(tmp_path):
    root = mmimdb_raw(tmp_path / "imdb")
    (root / "dataset/0000004.jpeg").unlink()
    with pytest.raises(DataError, match=r"split\.json: key 'dev', item 1 \(movie '0000004'\): file not found.*0000004\.jpeg"):
        import_mmimdb(root, tmp_path / "out")
    out = import_mmimdb(root, tmp_path / "out", skip_missing=True)
    assert "val" not in load_splits(out)
    assert json.loads((out / "dataset.json").read_text())["counts"]["skipped"]["missing file"] == 1
    (root / "dataset/0000001.json").write_text(json.dumps({"plot": ["p"]}))
    with pytest.raises(DataError, match=r"0000001\.json: missing field 'genres'"):
        import_mmimdb(root, tmp_path / "out2", skip_missing=True)
    split = json.loads((root / "split.json").read_text())
    del split["test"]
    (root / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match=r"split\.json: missing key 'test'"):
        import_mmimdb(root, tmp_path / "out2")
    (root / "split.json").unlink()
    with pytest.raises(DataError, match=r"split\.json: file not found; expected split\.json \(keys train/dev/test"):
        import_mmimdb(root, tmp_path / "out2")
    with pytest.raises(DataError, match="plots='all'"):
        import_mmimdb(root, tmp_path / "out2", plots="all")


def mmimdb_arrow(root: Path, bad_label: bool = False) -> Path:
    for split, movies in (("train", ["0000001", "0000002", "0000003"]), ("dev", ["0000004"]), ("test", ["0000005", "0000006"])):
        cols = {"image": [], "plots": [], "label": [], "genres": [], "image_id": [], "split": []}
        for mid in movies:
            _, plots, genres = MOVIES[mid]
            hot = [1 if g in genres else 0 for g in GENRES]
            cols["image"].append(image_bytes())
            cols["plots"].append(plots)
            cols["label"].append(hot[:5] if bad_label else hot)
            cols["genres"].append(genres)
            cols["image_id"].append(mid)
            cols["split"].append(split)
        write_arrow(root / f"mmimdb_{split}.arrow", cols)
    return root


def test_mmimdb_arrow_layout(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is needed for the arrow layouts (pip install pyarrow)")
    root = mmimdb_arrow(tmp_path / "imdb")
    out = import_mmimdb(root, tmp_path / "out")
    splits = load_splits(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 1, "test": 2}
    s = splits["train"].samples[0]
    assert s.label == ["Drama", "War"] and s.fields["image"] == "images/train/0000001.jpg"
    assert s.fields["text"] == "A short plot."  # one sample per movie, not one per plot
    bad = mmimdb_arrow(tmp_path / "bad", bad_label=True)
    with pytest.raises(DataError, match=r"mmimdb_train\.arrow: row 1: column 'label': expected a 23-dim multi-hot"):
        import_mmimdb(bad, tmp_path / "out2")


# --------------------------------------------------------------------------- audio-video


def av_root(root: Path, classes=("ANG", "HAP"), n_train: int = 5, n_test: int = 1, sep: str = " ") -> Path:
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for c in classes:
            for i in range(n):
                clip = f"{split}_{c}_{i}"
                write_wav(root / "audio" / f"{clip}.wav")
                write_frames(root / f"{split}_imgs" / clip)
                lines.append(f"{clip}{sep}{c}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cremad_lists_layout(tmp_path):
    root = av_root(tmp_path / "crema")
    import shutil

    shutil.rmtree(root / "train_imgs/train_ANG_0")  # audio only
    (root / "audio/train_HAP_1.wav").unlink()  # frames only
    out = import_cremad(root, tmp_path / "out")
    splits = load_splits(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 8, "val": 2, "test": 2}
    assert splits["train"].classes == ["ANG", "HAP"]
    assert set(splits["train"].modalities) == {"audio", "video"}
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"]["val"] == {"source": "train", "fraction": 0.1, "seed": 0, "method": info["splits"]["val"]["method"]}
    assert info["counts"]["audio_only"] == {"train": 1} and info["counts"]["video_only"] == {"train": 1}
    allrows = {r["id"]: r for s in ("train", "val") for r in lines_of(out / f"{s}.jsonl")}
    assert allrows["train_ANG_0"]["video"] is None and allrows["train_ANG_0"]["audio"].endswith("train_ANG_0.wav")
    assert allrows["train_HAP_1"]["audio"] is None and Path(allrows["train_HAP_1"]["video"]).is_dir()
    # seeded and saved: the same seed gives the same val split
    again = import_cremad(root, tmp_path / "again")
    assert (again / "val.jsonl").read_bytes() == (out / "val.jsonl").read_bytes()


def test_audiovisual_missing_both(tmp_path):
    root = av_root(tmp_path / "crema")
    (root / "audio/test_HAP_0.wav").unlink()
    import shutil

    shutil.rmtree(root / "test_imgs/test_HAP_0")
    with pytest.raises(DataError, match=r"test\.txt:2: clip 'test_HAP_0' has neither audio nor frames"):
        import_cremad(root, tmp_path / "out")
    out = import_cremad(root, tmp_path / "out", skip_missing=True)
    assert len(load_splits(out)["test"]) == 1
    assert json.loads((out / "dataset.json").read_text())["counts"]["skipped"] == {"neither audio nor frames": 1}


def test_audiovisual_bad_inputs(tmp_path):
    root = av_root(tmp_path / "crema")
    with open(root / "test.txt", "a") as f:
        f.write("test_SAD_0 SAD\n")
    with pytest.raises(DataError, match=r"test\.txt:3: unknown label 'SAD' \(not in the labels of the train list\)"):
        import_cremad(root, tmp_path / "out")
    (root / "test.txt").write_text("lonely-line-without-label\n")
    with pytest.raises(DataError, match=r"test\.txt:1: expected '<file> <label>'"):
        import_cremad(root, tmp_path / "out")
    (root / "train.txt").unlink()
    (root / "test.txt").unlink()
    with pytest.raises(DataError, match="no split list files"):
        import_cremad(root, tmp_path / "out")
    with pytest.raises(DataError, match=r"nope\.txt: list file not found"):
        import_cremad(root, tmp_path / "out", lists={"train": "nope.txt"})
    (root / "audio/train_ANG_0.wav").write_bytes(b"RIFF garbage")
    (root / "train.txt").write_text("train_ANG_0 ANG\n")
    with pytest.raises(DataError, match=r"train\.txt:1: unreadable audio file .*train_ANG_0\.wav"):
        import_cremad(root, tmp_path / "out", val_fraction=0)


def test_kinetics_sounds_csv_layout_and_templates(tmp_path):
    root = tmp_path / "ks"
    rows = [["clip", "label", "split"]]
    for split, n in (("train", 3), ("test", 1)):
        for c in ("playing bagpipes", "dribbling basketball"):
            for i in range(n):
                clip = f"{split}{i}_{c.split()[0]}"
                write_wav(root / "wav" / split / f"{clip}.wav")
                write_frames(root / "frames" / clip)
                rows.append([f"{clip}.mp4", c, split])
    with open(root / "clips.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    out = import_kinetics_sounds(root, tmp_path / "out", audio_dir="{root}/wav/{split}", frames_dir="frames",
                                 val_fraction=0.34, seed=1)
    splits = load_splits(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "val": 2, "test": 2}
    assert splits["test"].classes == ["dribbling basketball", "playing bagpipes"]
    assert ids(splits["test"]) == ["test0_playing", "test0_dribbling"]
    info = json.loads((out / "dataset.json").read_text())
    assert info["source"]["layout"] == "csv" and info["splits"]["val"]["seed"] == 1
    # a csv without a split column cannot say which split a clip is in
    (root / "clips.csv").write_text("clip,label\na,b\n")
    with pytest.raises(DataError, match=r"clips\.csv:1: the header has no split column"):
        import_kinetics_sounds(root, tmp_path / "out2", lists="clips.csv")


def test_ave_ampersand_lists_with_val(tmp_path):
    root = tmp_path / "ave"
    for split, name in (("train", "trainSet.txt"), ("val", "valSet.txt"), ("test", "testSet.txt")):
        lines = ["Category&VideoID&Quality&StartTime&EndTime"] if split == "train" else []
        for c in ("Church bell", "Dog"):
            clip = f"{split}{c.replace(' ', '')}"
            write_wav(root / "audio" / f"{clip}.wav")
            write_frames(root / f"{split}_imgs" / clip)
            lines.append(f"{c}&{clip}&good&0&10")
        (root / name).write_text("\n".join(lines) + "\n")
    out = import_ave(root, tmp_path / "out")
    splits = load_splits(out)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 2, "test": 2}
    assert splits["val"].samples[0].label == "Church bell"
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"]["val"]["source"].endswith("valSet.txt") and info["expected_classes"] == 28


def test_audiovisual_video_and_audio_containers(tmp_path):
    av = pytest.importorskip("av", reason="PyAV is needed to decode video/audio containers (pip install av)")
    root = av_root(tmp_path / "crema", n_train=2)
    clip = "train_ANG_0"
    import shutil

    shutil.rmtree(root / "train_imgs" / clip)
    (root / "audio" / f"{clip}.wav").unlink()
    video = root / "video" / f"{clip}.mp4"
    video.parent.mkdir()
    with av.open(str(video), "w") as c:  # 3 s at 5 fps, with an audio track
        vs = c.add_stream("mpeg4", rate=5)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        as_ = c.add_stream("aac", rate=16000)
        for i in range(15):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), format="rgb24")
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        t = np.arange(16000 * 3) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        af = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        af.sample_rate = 16000
        for p in as_.encode(af):
            c.mux(p)
        for p in as_.encode():
            c.mux(p)
    # audio from the mp4 itself (audio_dir holds <clip>.mp4 for this clip), frames from the video file
    (root / "audio" / f"{clip}.mp4").write_bytes(video.read_bytes())
    out = import_cremad(root, tmp_path / "out", video_dir="{root}/video", val_fraction=0)
    rows = {r["id"]: r for r in lines_of(out / "train.jsonl")}
    assert rows[clip]["audio"] == f"audio/{clip}.wav" and rows[clip]["video"] == f"frames/{clip}"
    frames = sorted((out / "frames" / clip).iterdir())
    assert 2 <= len(frames) <= 4 and frames[0].name == "frame_0001.jpg"
    import soundfile as sf

    info = sf.info(str(out / "audio" / f"{clip}.wav"))
    assert info.samplerate == 16000 and info.channels == 1 and info.duration > 2.5
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    assert counts["audio_decoded"] == {"train": 1} and counts["frames_extracted"] == {"train": 1}
    load_splits(out)


def test_audiovisual_container_without_pyav(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "av":
            raise ImportError("no av")
        return real(name, *a, **k)

    root = av_root(tmp_path / "crema", n_train=2)
    (root / "audio/train_ANG_0.wav").rename(root / "audio/train_ANG_0.m4a")
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(DataError, match=r"needs PyAV: pip install av"):
        import_cremad(root, tmp_path / "out")


# --------------------------------------------------------------------------- CLI


def test_cli_data_import(tmp_path, capsys):
    from u2a.cli import main

    root = av_root(tmp_path / "crema")
    assert main(["data", "import", "cremad", str(root), "--out", str(tmp_path / "out"), "--seed", "2",
                 "--val-fraction", "0.2", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "cremad: 12 samples (train 8, val 2, test 2), 2 classes, layout lists" in printed
    assert "fraction 0.2, seed 2" in printed
    info = json.loads((tmp_path / "out/dataset.json").read_text())
    assert info["options"]["seed"] == 2
    assert main(["data", "import", "food101", str(root), "--out", str(tmp_path / "o2")]) == 2
    assert "no Food-101 layout found" in capsys.readouterr().err
    assert main(["data", "import", "mmimdb", str(root), "--out", str(tmp_path / "o3"), "--audio-dir", "x"]) == 2
    assert "only for the audio-video datasets" in capsys.readouterr().err
    # the other data subcommands are still there
    assert main(["data", "check", str(tmp_path / "out")]) == 0
