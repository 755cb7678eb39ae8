"""``u2a data check``: counts per class, split and missing pattern; every problem listed; exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

import u2a.commands.data as data_cmd
from u2a.data.check import check_manifest, format_report, parse_modalities
from u2a.errors import DataError


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="u2a")
    sub = parser.add_subparsers(dest="command")
    data_cmd.register(sub, argparse.HelpFormatter)
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    Image.new("RGB", (4, 4), "red").save(tmp_path / "a.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    rows = [
        {"id": "1", "label": "cat", "image": "a.png", "text": "x", "split": "train"},
        {"id": "2", "label": "cat", "image": "a.png", "text": "x", "split": "train"},
        {"id": "3", "label": "dog", "image": "a.png", "text": None, "split": "val"},
        {"id": "4", "label": "dog", "text": "only text", "split": "test"},
        {"id": "5", "label": "dog", "image": "corrupt.png", "text": "x", "split": "train"},  # line 5
        {"id": "6", "label": "cat", "image": "a.png", "text": "", "split": "train"},  # line 6
        {"id": "7", "label": "cow", "image": "a.png", "text": "x", "split": "train"},  # line 7
        {"id": "8", "label": "cat", "image": "gone.png", "text": "x", "split": "val"},  # line 8
    ]
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_counts_and_problems(dataset):
    r = check_manifest(dataset, classes=["cat", "dog"])
    assert r.n_samples == 4
    assert dict(r.per_class) == {"cat": 2, "dog": 2}
    assert dict(r.per_split) == {"train": 2, "val": 1, "test": 1}
    assert dict(r.per_pattern) == {"image+text": 2, "image only": 1, "text only": 1}
    assert [(p.line, p.field) for p in r.problems] == [(5, "image"), (6, "text"), (7, "label"), (8, "image")]
    assert not r.ok and r.n_bad_lines == 4
    text = format_report(r)
    for piece in ("4 good samples, 4 bad lines", "image+text", "image only", "text only",
                  f"{dataset}:5: sample '5': field 'image': unreadable image",
                  f"{dataset}:6: sample '6': field 'text': empty text",
                  f"{dataset}:7: sample '7': field 'label': unknown label 'cow'",
                  f"{dataset}:8: sample '8': field 'image': file not found"):
        assert piece in text


def test_cli_exit_codes(dataset, tmp_path, capsys):
    assert run_cli("data", "check", str(dataset), "--classes", "cat,dog") == 1
    out = capsys.readouterr().out
    assert ":7: sample '7': field 'label': unknown label 'cow'" in out and "problems (4)" in out
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(dataset.read_text().splitlines()[:4]) + "\n")
    assert run_cli("data", "check", str(good)) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "4 good samples" in out


def test_cli_classes_file_and_modalities(dataset, tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("cat\ndog\ncow\n")
    # line 4 has no image: with only the image modality it is a line with every modality missing;
    # without file checks, the corrupt and the missing image are not seen; cow is a known class.
    assert run_cli("data", "check", str(dataset), "--classes", str(tmp_path / "classes.txt"),
                   "--modalities", "image=image", "--no-check-files") == 1
    out = capsys.readouterr().out
    assert "modalities: image (image)" in out and "7 good samples, 1 bad line" in out
    assert ":4: sample '4': every modality is missing (image)" in out and "problems (1)" in out
    assert "classes (3, single-label)" in out


def test_cli_missing_file_is_a_problem(tmp_path, capsys):
    assert run_cli("data", "check", str(tmp_path / "nope.jsonl")) == 1
    assert "manifest not found" in capsys.readouterr().out


def test_cli_split_folder(tmp_path, capsys):
    for split, n in [("train", 3), ("val", 1), ("test", 1)]:
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps({"id": f"{split}{i}", "label": "ab"[i % 2], "text": "t"}) + "\n" for i in range(n)))
    r = check_manifest(tmp_path)
    assert r.ok and dict(r.per_split) == {"train": 3, "val": 1, "test": 1}
    assert run_cli("data", "check", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "classes missing from val: b" in out and "classes missing from test: b" in out


def test_multilabel_counts(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("id,label,text\n1,a|b,x\n2,b,y\n")
    r = check_manifest(p)
    assert r.multilabel and dict(r.per_class) == {"a": 1, "b": 2}
    assert dict(r.per_split) == {"(none)": 2}


def test_parse_modalities():
    assert parse_modalities("image=image,caption=text") == {"image": "image", "caption": "text"}
    assert parse_modalities("image, text") == {"image": "image", "text": "text"}
    assert parse_modalities(None) is None
    with pytest.raises(DataError, match="unknown kind"):
        parse_modalities("photo")


# ------------------------------------------------------------------ what the check passes trains


def _rows(path: Path, rows: list[dict]) -> Path:
    # json.dumps writes a lone surrogate as the escape "\ud800", as a broken producer would
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_check_decodes_like_training(tmp_path, monkeypatch):
    """Inputs that pass a shallow check but crash training are problems, each on one line naming
    the manifest file, line and sample id."""
    from _badfiles import good_png, png_with_corrupt_idat, truncated_jpeg, truncated_wav_header

    good_png(tmp_path / "ok.png")
    png_with_corrupt_idat(tmp_path / "idat.png")
    truncated_jpeg(tmp_path / "cut.jpg")
    good_png(tmp_path / "big.png", size=80)  # 6400 px: over the limit set below
    truncated_wav_header(tmp_path / "bad.wav")
    p = _rows(tmp_path / "m.jsonl", [
        {"id": "ok", "label": "a", "image": "ok.png", "text": "fine", "split": "train"},
        {"id": "sur", "label": "a", "image": "ok.png", "text": "bad \ud800 text", "split": "train"},
        {"id": "idat", "label": "a", "image": "idat.png", "text": "x", "split": "train"},
        {"id": "cut", "label": "b", "image": "cut.jpg", "text": "x", "split": "train"},
        {"id": "bomb", "label": "b", "image": "big.png", "text": "x", "split": "train"},
        {"id": "wav", "label": "b", "audio": "bad.wav", "text": "x", "split": "train"},
    ])
    monkeypatch.setattr("PIL.Image.MAX_IMAGE_PIXELS", 5000)
    monkeypatch.delenv("U2A_MAX_IMAGE_PIXELS", raising=False)
    r = check_manifest(p, modalities={"image": "image", "text": "text", "audio": "audio"})
    assert r.n_samples == 1
    lines = [str(x) for x in r.problems]
    assert [(x.line, x.sample, x.field) for x in r.problems] == [
        (2, "sur", "text"), (3, "idat", "image"), (4, "cut", "image"), (5, "bomb", "image"), (6, "wav", "audio")]
    assert lines[0].startswith(f"{p}:2: sample 'sur': field 'text': text holds a lone surrogate \\ud800")
    assert lines[1].startswith(f"{p}:3: sample 'idat': field 'image': unreadable image {tmp_path / 'idat.png'}")
    assert lines[2].startswith(f"{p}:4: sample 'cut': field 'image': unreadable image {tmp_path / 'cut.jpg'}")
    assert "truncated" in lines[2]
    assert lines[3].startswith(f"{p}:5: sample 'bomb': field 'image': image {tmp_path / 'big.png'} refused "
                               "as a possible decompression bomb")
    assert lines[4].startswith(f"{p}:6: sample 'wav': field 'audio': unreadable audio {tmp_path / 'bad.wav'}")
    assert all("\n" not in x for x in lines)
    # training refuses the same lines at load time, with the same messages
    from u2a.data.manifest import load_splits

    with pytest.raises(DataError) as e:
        load_splits(p, modalities={"image": "image", "text": "text", "audio": "audio"})
    for x in lines:
        assert x in str(e.value)


def test_single_file_without_split_is_refused_as_training_refuses_it(tmp_path, capsys):
    p = _rows(tmp_path / "all.jsonl", [
        {"id": "1", "label": "a", "text": "x", "split": "train"},
        {"id": "2", "label": "b", "text": "y"},
        {"id": "3", "label": "b", "text": "z", "split": "test"},
    ])
    r = check_manifest(p)
    assert [(x.line, x.field) for x in r.problems] == [(2, "split")]
    assert "missing split" in str(r.problems[0])
    # no split anywhere: one problem for the file, and --split names the one split it holds
    q = _rows(tmp_path / "one.jsonl", [{"id": "1", "label": "a", "text": "x"}, {"id": "2", "label": "b", "text": "y"}])
    r = check_manifest(q)
    assert [(x.line, x.field) for x in r.problems] == [(0, "split")] and r.n_samples == 2
    assert "no line has a split field" in str(r.problems[0]) and "--split" in str(r.problems[0])
    assert run_cli("data", "check", str(q)) == 1
    assert run_cli("data", "check", str(q), "--split", "train") == 0
    out = capsys.readouterr().out
    assert "train  2  100.0%" in out and "no problems found" in out
    assert run_cli("data", "check", str(q), "--split", "test") == 0
    assert "note: no train split" in capsys.readouterr().out
    r = check_manifest(tmp_path, split="train")  # a folder's files name their splits
    assert [(x.line, x.message) for x in r.problems] == [
        (0, "--split is for a single file; the files of a folder name their splits")]


def test_empty_train_split_is_a_problem(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("\n")
    _rows(tmp_path / "val.jsonl", [{"id": "1", "label": "a", "text": "x"}])
    _rows(tmp_path / "test.jsonl", [{"id": "2", "label": "a", "text": "x"}])
    r = check_manifest(tmp_path)
    assert [(x.source.name, x.line) for x in r.problems] == [("train.jsonl", 0)]
    assert "the train split is empty" in str(r.problems[0])
    assert run_cli("data", "check", str(tmp_path)) == 1
    # every train line bad: also empty
    _rows(tmp_path / "train.jsonl", [{"id": "3", "label": "a", "text": ""}])
    r = check_manifest(tmp_path)
    assert "the train split is empty (its 1 problems leave no good sample)" in format_report(r)
    # a folder with only a test split is fine for evaluation: a note, no problem
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "val.jsonl").unlink()
    assert run_cli("data", "check", str(tmp_path)) == 0
    assert "note: no train split" in capsys.readouterr().out


def test_numeric_labels_spelled_two_ways_are_refused(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": "1", "label": 5, "text": "x", "split": "train"}\n'
                 '{"id": "2", "label": "5", "text": "x", "split": "train"}\n'
                 '{"id": "3", "label": "05", "text": "x", "split": "test"}\n'
                 '{"id": "4", "label": 7, "text": "x", "split": "train"}\n')
    r = check_manifest(p)
    assert [(x.line, x.sample, x.field) for x in r.problems] == [(3, "3", "label")]
    msg = str(r.problems[0])
    assert "label '05' and label '5' (first at" in msg and f"{p}:1, 2 lines)" in msg and "two classes" in msg
    assert r.classes == ["5", "7"]
    # 5 and "5" are the same string after str(): one class, no problem
    p.write_text('{"id": "1", "label": 5, "text": "x", "split": "train"}\n'
                 '{"id": "2", "label": "5", "text": "x", "split": "train"}\n')
    assert check_manifest(p).ok
    # a class list that names both spellings makes them two classes on purpose
    p.write_text('{"id": "1", "label": "5", "text": "x", "split": "train"}\n'
                 '{"id": "3", "label": "05", "text": "x", "split": "train"}\n')
    assert not check_manifest(p).ok
    assert check_manifest(p, classes=["5", "05"]).ok


def test_csv_unterminated_quote_is_named(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text('id,label,text,split\n1,a,"fine, quoted",train\n2,b,"never closed,train\n3,a,x,train\n')
    r = check_manifest(p)
    assert r.modalities == {"text": "text"}  # not "no modality fields"
    assert [x.line for x in r.problems] == [3]
    assert f"{p}:3: unterminated quote" in str(r.problems[0]) and "lines 3-4" in str(r.problems[0])
    # in the header
    p.write_text('id,label,"text\n1,a,x\n')
    r = check_manifest(p)
    assert [(x.line, x.message.split(":")[0]) for x in r.problems] == [(1, "bad CSV header")]
    assert "unterminated quote" in str(r.problems[0]) and str(r.problems[0]).startswith(f"{p}:1: ")
