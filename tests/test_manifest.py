"""Manifests: reading JSONL and CSV, every kind of bad line (with its line number), splits, writing."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from _badfiles import write_wav
from PIL import Image

from u2a.data.manifest import (
    Manifest,
    find_split_files,
    load_manifest,
    load_splits,
    read_classes,
    write_manifest,
)
from u2a.errors import DataError


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with two tiny PNGs, a corrupt PNG, an audio file, an empty file and a frame folder."""
    Image.new("RGB", (4, 4), "red").save(tmp_path / "a.png")
    Image.new("RGBA", (3, 5), (0, 0, 255, 128)).save(tmp_path / "b.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    write_wav(tmp_path / "clip.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "frames").mkdir()
    Image.new("RGB", (4, 4), "green").save(tmp_path / "frames" / "0001.png")
    (tmp_path / "noframes").mkdir()
    return tmp_path


def jsonl(path: Path, *rows) -> Path:
    """Write rows (dicts, or raw strings for broken lines) as JSON lines."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = [
    {"id": "s1", "label": "cat", "image": "a.png", "text": "a red square"},
    {"id": "s2", "label": "dog", "image": "b.png", "text": None},
    {"id": "s3", "label": "dog", "text": "only text"},
]


# ------------------------------------------------------------------ good manifests


def test_load_jsonl(files):
    m = load_manifest(jsonl(files / "m.jsonl", *GOOD))
    assert isinstance(m, Manifest)
    assert [s.id for s in m.samples] == ["s1", "s2", "s3"]
    assert m.modalities == {"image": "image", "text": "text"}
    assert m.classes == ["cat", "dog"]
    assert not m.multilabel and m.skipped == []
    s1, s2, s3 = m.samples
    assert s1.line == 1 and s3.line == 3 and s1.source == files / "m.jsonl"
    assert m.present(s1) == {"image": True, "text": True}
    assert m.present(s2) == {"image": True, "text": False}
    assert m.present(s3) == {"image": False, "text": True}
    assert [m.pattern(s) for s in m.samples] == ["image+text", "image only", "text only"]
    assert [m.label_index(s) for s in m.samples] == [0, 1, 1]
    assert m.resolve(s1, "image") == files / "a.png"
    assert m.resolve(s1, "text") == "a red square"
    assert m.resolve(s3, "image") is None
    assert m.root == files and m.path == files / "m.jsonl"


def test_load_csv_multilabel_and_empty_cells(files):
    (files / "m.csv").write_text(
        "id,label,image,text\n"
        "c1,cat|dog,a.png,\"text, with comma\"\n"
        "\n"
        "c2,dog,,only text\n"
        "c3,bird,b.png,\n"
    )
    m = load_manifest(files / "m.csv")
    assert m.multilabel
    assert [s.line for s in m.samples] == [2, 4, 5]
    assert [s.label for s in m.samples] == [["cat", "dog"], ["dog"], ["bird"]]
    assert m.classes == ["bird", "cat", "dog"]
    assert m.samples[0].fields["text"] == "text, with comma"
    assert m.samples[1].fields["image"] is None
    assert m.samples[2].fields["text"] is None
    assert m.label_index(m.samples[0]) == [1, 2]


def test_multiline_csv_record_reports_its_first_line(files):
    (files / "m.csv").write_text('id,label,text\nx1,cat,"two\nlines"\nx2,cat,"   "\n')
    with pytest.raises(DataError) as e:
        load_manifest(files / "m.csv")
    assert "m.csv:4:" in str(e.value)


def test_given_modalities_and_classes(files):
    p = jsonl(files / "m.jsonl",
              {"id": 1, "label": "b", "photo": "a.png", "caption": "hello", "image": "not-a-modality-here"},
              {"id": 2, "label": "a", "caption": "world"})
    m = load_manifest(p, modalities={"photo": "image", "caption": "text"}, classes=["b", "a"])
    assert m.modalities == {"photo": "image", "caption": "text"}
    assert m.classes == ["b", "a"]
    assert [s.id for s in m.samples] == ["1", "2"]
    assert [m.label_index(s) for s in m.samples] == [0, 1]
    assert "image" not in m.samples[0].fields


def test_audio_video_and_absolute_paths(files):
    p = jsonl(files / "m.jsonl",
              {"id": "v1", "label": "x", "audio": "clip.wav", "video": "frames"},
              {"id": "v2", "label": "x", "audio": str(files / "clip.wav")})
    m = load_manifest(p)
    assert m.modalities == {"audio": "audio", "video": "video"}
    assert len(m.samples) == 2
    assert m.resolve(m.samples[1], "audio") == files / "clip.wav"


def test_check_files_false_does_not_open_files(files):
    p = jsonl(files / "m.jsonl", {"id": "1", "label": "x", "image": "missing.png"},
              {"id": "2", "label": "x", "image": "corrupt.png"})
    assert len(load_manifest(p, check_files=False).samples) == 2


def test_numeric_labels_sort_as_numbers(files):
    p = jsonl(files / "m.jsonl", *({"id": str(i), "label": lab, "text": "t"} for i, lab in enumerate([10, 2, 1])))
    assert load_manifest(p).classes == ["1", "2", "10"]


# ------------------------------------------------------------------ bad lines

# (line 2 of the manifest, the field named in the message (or None), a piece of the message)
BAD_CASES = {
    "broken_json": ('{"id": "b", "label": "cat", "text": "x"', None, "broken JSON"),
    "not_an_object": ('["b", "cat"]', None, "JSON object"),
    "missing_id": ({"label": "cat", "text": "x"}, "id", "missing id"),
    "empty_id": ({"id": "  ", "label": "cat", "text": "x"}, "id", "empty id"),
    "duplicate_id": ({"id": "s1", "label": "cat", "text": "x"}, "id", "duplicate id 's1' (first used at line 1)"),
    "missing_label": ({"id": "b", "text": "x"}, "label", "missing label"),
    "null_label": ({"id": "b", "label": None, "text": "x"}, "label", "missing label"),
    "empty_label_list": ({"id": "b", "label": [], "text": "x"}, "label", "missing label"),
    "bad_label_type": ({"id": "b", "label": {"a": 1}, "text": "x"}, "label", "label must be"),
    "empty_text": ({"id": "b", "label": "cat", "text": ""}, "text", "empty text"),
    "whitespace_text": ({"id": "b", "label": "cat", "text": " \n\t"}, "text", "empty text"),
    "text_not_string": ({"id": "b", "label": "cat", "text": 3}, "text", "expected a string"),
    "missing_file": ({"id": "b", "label": "cat", "image": "nope.png"}, "image", "file not found"),
    "empty_path": ({"id": "b", "label": "cat", "image": "", "text": "x"}, "image", "empty path"),
    "corrupt_image": ({"id": "b", "label": "cat", "image": "corrupt.png"}, "image", "unreadable image"),
    "image_is_a_folder": ({"id": "b", "label": "cat", "image": "frames"}, "image", "not a file"),
    "empty_audio": ({"id": "b", "label": "cat", "audio": "empty.wav", "text": "x"}, "audio", "empty file"),
    "missing_audio": ({"id": "b", "label": "cat", "audio": "gone.wav", "text": "x"}, "audio", "file not found"),
    "empty_frame_folder": ({"id": "b", "label": "cat", "video": "noframes", "text": "x"}, "video",
                           "holds no frame images"),
    "all_modalities_missing": ({"id": "b", "label": "cat", "image": None, "text": None}, None,
                               "every modality is missing"),
    "unknown_split": ({"id": "b", "label": "cat", "text": "x", "split": "training-set"}, "split", "unknown split name"),
}


def _bad_manifest(files: Path, bad) -> Path:
    rows = [{"id": "s1", "label": "cat", "image": "a.png", "text": "ok"}, bad,
            {"id": "s3", "label": "dog", "text": "fine", "audio": "clip.wav", "video": "frames"}]
    return jsonl(files / "m.jsonl", *rows)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_line_raises_with_line_number(files, case):
    bad, field, msg = BAD_CASES[case]
    p = _bad_manifest(files, bad)
    with pytest.raises(DataError) as e:
        load_manifest(p)
    text = str(e.value)
    assert f"{p}:2: " in text
    assert msg in text
    if field:
        assert f"field '{field}'" in text
    assert "1 problem" in text and ":1:" not in text and ":3:" not in text


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_line_skipped_and_counted(files, case):
    bad, field, msg = BAD_CASES[case]
    m = load_manifest(_bad_manifest(files, bad), skip_bad=True)
    assert [s.id for s in m.samples] == ["s1", "s3"]
    assert len(m.skipped) == 1
    line, reason = m.skipped[0]
    assert line == 2 and msg in reason
    assert [p.line for p in m.problems] == [2]


def test_unknown_label_with_class_list(files):
    p = _bad_manifest(files, {"id": "b", "label": "cow", "text": "x"})
    with pytest.raises(DataError) as e:
        load_manifest(p, classes=["cat", "dog"])
    assert f"{p}:2: sample 'b': field 'label': unknown label 'cow'" in str(e.value)
    m = load_manifest(p, classes=["cat", "dog"], skip_bad=True)
    assert [s.id for s in m.samples] == ["s1", "s3"] and m.skipped[0][0] == 2
    assert m.classes == ["cat", "dog"]
    # without a class list, the label is a new class
    assert load_manifest(p).classes == ["cat", "cow", "dog"]


def test_unknown_label_in_multilabel_list(files):
    p = jsonl(files / "m.jsonl", {"id": "a", "label": ["cat", "cow"], "text": "x"})
    with pytest.raises(DataError, match=r"m\.jsonl:1: sample 'a': field 'label': unknown label 'cow'"):
        load_manifest(p, classes="cat,dog")


def test_all_errors_collected_in_one_message(files):
    rows = [{"id": f"r{i}", "label": "cat", "text": ""} for i in range(25)]
    rows[0] = {"id": "r0", "label": "cat", "text": "good"}
    p = jsonl(files / "m.jsonl", *rows)
    with pytest.raises(DataError) as e:
        load_manifest(p)
    text = str(e.value)
    assert "24 problems" in text
    assert f"{p}:2:" in text and f"{p}:21:" in text
    assert f"{p}:22:" not in text  # only the first 20 are listed
    assert "and 4 more" in text
    m = load_manifest(p, skip_bad=True)
    assert len(m.samples) == 1 and len(m.skipped) == 24
    assert [ln for ln, _ in m.skipped] == list(range(2, 26))


def test_several_problems_on_one_line(files):
    p = _bad_manifest(files, {"id": "b", "label": "cow", "image": "nope.png", "text": " "})
    m = load_manifest(p, classes=["cat", "dog"], skip_bad=True)
    assert len(m.skipped) == 1 and len(m.problems) == 3
    reason = m.skipped[0][1]
    assert "unknown label" in reason and "file not found" in reason and "empty text" in reason


def test_duplicate_of_a_bad_line_is_not_a_duplicate(files):
    p = jsonl(files / "m.jsonl", {"id": "x", "label": "cat", "text": ""}, {"id": "x", "label": "cat", "text": "ok"})
    m = load_manifest(p, skip_bad=True)
    assert [s.line for s in m.samples] == [2] and m.skipped[0][0] == 1


def test_csv_bad_lines(files):
    (files / "m.csv").write_text(
        "id,label,image,text\n"
        "c1,cat,a.png,fine\n"
        "c2,cat,corrupt.png,fine\n"
        "c3,cat,,   \n"
        "c4,cat,a.png\n"
        "c5,,a.png,x\n"
        "c1,dog,,y\n"
        "c7,cat,,\n"
    )
    p = files / "m.csv"
    with pytest.raises(DataError) as e:
        load_manifest(p)
    text = str(e.value)
    for line, msg in [(3, "unreadable image"), (4, "empty text"), (5, "expected 4 CSV fields"),
                      (6, "missing label"), (7, "duplicate id 'c1' (first used at line 2)"),
                      (8, "every modality is missing")]:
        assert f"{p}:{line}: " in text and msg in text
    m = load_manifest(p, skip_bad=True)
    assert [s.id for s in m.samples] == ["c1"]
    assert [ln for ln, _ in m.skipped] == [3, 4, 5, 6, 7, 8]


def test_csv_without_label_column(files):
    (files / "m.csv").write_text("id,text\n1,hello\n")
    with pytest.raises(DataError, match=r"m\.csv:1: CSV header has no 'label' column"):
        load_manifest(files / "m.csv")


def test_file_level_errors(files):
    with pytest.raises(DataError, match="manifest not found"):
        load_manifest(files / "nope.jsonl")
    (files / "m.txt").write_text("x")
    with pytest.raises(DataError, match="unknown manifest format"):
        load_manifest(files / "m.txt")
    jsonl(files / "empty.jsonl")
    with pytest.raises(DataError, match="no modality fields"):
        load_manifest(files / "empty.jsonl")
    jsonl(files / "nomod.jsonl", {"id": "1", "label": "x", "photo": "a.png"})
    with pytest.raises(DataError, match="no modality fields"):
        load_manifest(files / "nomod.jsonl")
    with pytest.raises(DataError, match="unknown kind"):
        load_manifest(files / "nomod.jsonl", modalities={"photo": "picture"})


# ------------------------------------------------------------------ splits


def test_split_field_in_one_file(files):
    p = jsonl(files / "all.jsonl",
              {"id": "1", "label": "a", "text": "x", "split": "train"},
              {"id": "2", "label": "b", "text": "x", "split": "validation"},
              {"id": "3", "label": "c", "text": "x", "split": "test"},
              {"id": "4", "label": "a", "text": "x", "split": "train"})
    m = load_manifest(p)
    assert m.splits() == ["train", "val", "test"]
    assert [s.id for s in m.split("train").samples] == ["1", "4"]
    assert m.split("val").samples[0].split == "val"
    s = load_splits(p)
    assert list(s) == ["train", "val", "test"]
    assert all(x.classes == ["a", "b", "c"] for x in s.values())
    with pytest.raises(DataError, match="unknown split"):
        m.split("holdout")


def test_one_file_needs_a_split_on_every_line(files):
    p = jsonl(files / "all.jsonl",
              {"id": "1", "label": "a", "text": "x", "split": "train"},
              {"id": "2", "label": "a", "text": "x"},
              {"id": "3", "label": "a", "text": "", "split": "test"})
    with pytest.raises(DataError) as e:
        load_splits(p)
    assert f"{p}:2: sample '2': field 'split': missing split" in str(e.value)
    assert f"{p}:3: sample '3': field 'text'" in str(e.value)
    s = load_splits(p, skip_bad=True)
    # a bad line with a known split is counted in that split; one without, in the first split
    assert [ln for ln, _ in s["train"].skipped] == [2]
    assert [ln for ln, _ in s["test"].skipped] == [3]
    assert len(s["test"].samples) == 0


def test_split_folder(files):
    jsonl(files / "train.jsonl", {"id": "1", "label": "b", "image": "a.png"}, {"id": "2", "label": "a", "text": "t"})
    (files / "val.csv").write_text("id,label,text\n3,c,hello\n")
    jsonl(files / "test.jsonl", {"id": "4", "label": "a", "image": "b.png", "split": "test"})
    assert set(find_split_files(files)) == {"train", "val", "test"}
    s = load_splits(files)
    assert list(s) == ["train", "val", "test"]
    assert s["train"].classes == s["test"].classes == ["a", "b", "c"]
    assert s["val"].modalities == {"image": "image", "text": "text"}
    assert s["val"].samples[0].fields == {"image": None, "text": "hello"}
    assert [x.split for x in s["train"].samples] == ["train", "train"]
    assert s["val"].path == files / "val.csv"
    # classes.json in the folder fixes the class list
    (files / "classes.json").write_text(json.dumps(["c", "b", "a"]))
    assert load_splits(files)["train"].classes == ["c", "b", "a"]
    assert load_splits(files, classes=["a", "b", "c", "d"])["val"].classes == ["a", "b", "c", "d"]


def test_split_folder_errors(files):
    jsonl(files / "train.jsonl", {"id": "1", "label": "a", "text": "x"})
    jsonl(files / "val.jsonl", {"id": "1", "label": "a", "text": "y"},
          {"id": "2", "label": "a", "text": "y", "split": "test"})
    jsonl(files / "test.jsonl", {"id": "3", "label": "z", "text": "x"})
    with pytest.raises(DataError) as e:
        load_splits(files, classes=["a"])
    text = str(e.value)
    assert f"{files / 'val.jsonl'}:1: sample '1': field 'id': duplicate id '1' (first used at {files / 'train.jsonl'}:1)" in text
    assert f"{files / 'val.jsonl'}:2: sample '2': field 'split': split 'test' in the val file" in text
    assert f"{files / 'test.jsonl'}:1: sample '3': field 'label': unknown label 'z'" in text
    s = load_splits(files, classes=["a"], skip_bad=True)
    assert [len(x.samples) for x in s.values()] == [1, 0, 0]
    assert [len(x.skipped) for x in s.values()] == [0, 2, 1]


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no train/val/test manifest"):
        load_splits(tmp_path)


# ------------------------------------------------------------------ writing, class lists


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_write_and_read_back(files, suffix):
    rows = [{"id": "1", "label": ["a", "b"], "image": "a.png", "text": "x, \"quoted\"", "split": "train"},
            {"id": "2", "label": ["b"], "image": None, "text": "y", "split": "test"}]
    p = write_manifest(rows, files / f"out{suffix}")
    m = load_manifest(p)
    assert m.multilabel and m.classes == ["a", "b"]
    assert [s.label for s in m.samples] == [["a", "b"], ["b"]]
    assert m.samples[0].fields == {"image": "a.png", "text": 'x, "quoted"'}
    assert m.samples[1].fields["image"] is None
    assert [s.split for s in m.samples] == ["train", "test"]
    # Samples can be written back too
    p2 = write_manifest(m.samples, files / f"again{suffix}")
    assert [s.label for s in load_manifest(p2).samples] == [["a", "b"], ["b"]]
    assert not list(files.glob(".*.tmp"))


def test_write_unknown_format(tmp_path):
    with pytest.raises(DataError):
        write_manifest([{"id": "1"}], tmp_path / "m.parquet")


def test_read_classes(tmp_path):
    assert read_classes("a, b ,c") == ["a", "b", "c"]
    (tmp_path / "c.json").write_text('["x", "y"]')
    assert read_classes(tmp_path / "c.json") == ["x", "y"]
    (tmp_path / "c.txt").write_text("x\n\ny\n")
    assert read_classes(str(tmp_path / "c.txt")) == ["x", "y"]
    with pytest.raises(DataError, match="duplicate"):
        read_classes("a,a")
    with pytest.raises(DataError, match="not found"):
        read_classes(str(tmp_path / "missing.json"))
    # a missing file of another suffix is not a one-class list named after the file
    with pytest.raises(DataError, match="mycls.lst: class list file not found"):
        read_classes("mycls.lst")
    # a broken JSON list is an error naming the file, not one class name per line
    (tmp_path / "classes.json").write_text('["Flags", "Food & Drink", ')
    with pytest.raises(DataError, match=r"classes.json: not valid JSON \(line 1"):
        read_classes(tmp_path / "classes.json")
    (tmp_path / "list.txt").write_text('["x", "y"')
    with pytest.raises(DataError, match="not valid JSON"):
        read_classes(tmp_path / "list.txt")


def test_numeric_label_spellings_are_refused_in_training_too(tmp_path):
    """5 and "05" would be two classes: load_splits (what training reads) refuses it like the check."""
    p = tmp_path / "all.jsonl"
    p.write_text('{"id": "1", "label": 5, "text": "x", "split": "train"}\n'
                 '{"id": "2", "label": "05", "text": "x", "split": "train"}\n'
                 '{"id": "3", "label": "5.0", "text": "x", "split": "val"}\n'
                 '{"id": "4", "label": 5, "text": "x", "split": "test"}\n')
    with pytest.raises(DataError) as e:
        load_splits(p)
    text = str(e.value)
    assert f"{p}:2: sample '2': field 'label': label '05' and label '5' (first at {p}:1, 2 lines)" in text
    assert f"{p}:3: sample '3': field 'label': label '5.0' and label '5'" in text
    s = load_splits(p, skip_bad=True)
    assert s["train"].classes == ["5"] and [x.id for x in s["train"].samples] == ["1"]
    assert [line for line, _ in s["train"].skipped] == [2] and [line for line, _ in s["val"].skipped] == [3]


def test_csv_broken_quotes_are_reported_not_swallowed(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text('id,label,text\n1,a,"ok"\n2,b,"open\n3,a,x\n')
    with pytest.raises(DataError, match=r"m\.csv:3: unterminated quote: .* lines 3-4"):
        load_manifest(p)
    p.write_text('id,label,text\n1,a,"say "hi" twice"\n2,b,"say ""hi"" once"\n')
    m = load_manifest(p, skip_bad=True)
    assert [s.id for s in m.samples] == ["2"] and m.samples[0].fields["text"] == 'say "hi" once'
    assert m.skipped[0][0] == 2 and "broken CSV quoting" in m.skipped[0][1]


def test_a_manifest_path_that_does_not_exist_is_not_found(tmp_path):
    """A missing folder used to be 'unknown manifest format ""'."""
    from u2a.data.manifest import load_splits

    with pytest.raises(DataError, match="no_such_folder: manifest not found"):
        load_splits(tmp_path / "no_such_folder", {"text": "text"})


def test_a_misspelt_modality_field_is_warned_about(tmp_path):
    """'Image' or 'imgae' used to make the image modality silently absent from every sample."""
    from u2a.errors import U2AWarning

    (tmp_path / "a.png").write_bytes(b"")
    f = tmp_path / "m.jsonl"
    f.write_text('{"id": "1", "label": "x", "Image": "a.png", "text": "t"}\n'
                 '{"id": "2", "label": "y", "Image": "a.png", "text": "u"}\n')
    with pytest.warns(U2AWarning, match=r"field 'Image' is not a modality field .* did you mean 'image'\?"):
        m = load_manifest(f)
    assert m.modalities == {"text": "text"}
    with pytest.warns(U2AWarning, match=r"no line has the field 'image': .* other fields: 'Image'; did you mean 'Image'"):
        load_manifest(f, modalities={"image": "image", "text": "text"})
    f.write_text('{"id": "1", "label": "x", "notes": "n", "text": "t"}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # text-only data with a notes field: nothing to say
        load_manifest(f)


def test_one_line_in_another_encoding_is_one_bad_line(tmp_path):
    """A Latin-1 line used to make the whole file 'not UTF-8 text' (by byte offset); a U+2028
    inside a JSON string used to split a line in two."""
    rows = [json.dumps({"id": f"q{i}", "label": "a", "text": f"text {i}"}).encode() for i in range(6)]
    rows[2] = json.dumps({"id": "q2", "label": "a", "text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    rows[4] = json.dumps({"id": "q4", "label": "a", "text": "one\u2028line"}, ensure_ascii=False).encode("utf-8")
    f = tmp_path / "m.jsonl"
    f.write_bytes(b"\r\n".join(rows) + b"\r\n")
    m = load_manifest(f, skip_bad=True)
    assert [s.id for s in m.samples] == ["q0", "q1", "q3", "q4", "q5"]
    assert m.samples[3].fields["text"] == "one\u2028line"
    assert [(p.line, p.message[:16]) for p in m.problems] == [(3, "not UTF-8 text: ")]
    f.write_bytes("\n".join(json.dumps({"id": str(i), "label": "a", "text": "caf\u00e9"}, ensure_ascii=False)
                            for i in range(4)).encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text \(4 of 4 lines; first at line 1\)"):
        load_manifest(f)
