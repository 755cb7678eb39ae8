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
                  f"{dataset}:5: field 'image': unreadable image",
                  f"{dataset}:6: field 'text': empty text",
                  f"{dataset}:7: field 'label': unknown label 'cow'",
                  f"{dataset}:8: field 'image': file not found"):
        assert piece in text


def test_cli_exit_codes(dataset, tmp_path, capsys):
    assert run_cli("data", "check", str(dataset), "--classes", "cat,dog") == 1
    out = capsys.readouterr().out
    assert ":7: field 'label': unknown label 'cow'" in out and "problems (4)" in out
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
    assert ":4: every modality is missing (image)" in out and "problems (1)" in out
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
