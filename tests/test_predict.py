"""`u2a predict RUN --manifest FILE` on new data: labels optional, one output line per manifest line
in order, skipped lines reported with their reason and counted, a non-zero exit when lines were
skipped unless --allow-skipped; metrics only when every predicted line has a label."""

from __future__ import annotations

import json

import pytest

import _synthetic as S
from u2a.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    cfg = S.write_cli_config(tmp)
    assert main(["train", str(cfg)]) == 0
    return tmp / "runs" / "cli", tmp / "data"


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unlabelled_manifest_is_predicted_line_by_line(run, tmp_path, capsys):
    run_dir, data = run
    rows = _lines(data / "test.jsonl")
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in rows))
    out = tmp_path / "preds.jsonl"
    capsys.readouterr()
    assert main(["predict", str(run_dir), "--manifest", str(new), "--out", str(out), "--batch-size", "4"]) == 0
    err = capsys.readouterr().err
    preds = _lines(out)
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    assert [p["line"] for p in preds] == list(range(1, len(rows) + 1))
    assert all(p["status"] == "ok" and p["pred"] in ("red", "green", "blue") and "label" not in p for p in preds)
    assert "metrics" not in err and "skipped" not in err.replace("0 skipped", "")
    # the same lines with labels: the same predictions, and metrics
    capsys.readouterr()
    assert main(["predict", str(run_dir), "--manifest", str(data / "test.jsonl"), "--out", str(out)]) == 0
    labelled = _lines(out)
    assert [p["pred"] for p in labelled] == [p["pred"] for p in preds]
    assert [p["label"] for p in labelled] == [r["label"] for r in rows]
    assert '"accuracy"' in capsys.readouterr().err


def test_labels_written_as_lists_are_read_in_the_models_format(run, tmp_path, capsys):
    """A single-label model given a manifest whose labels are one-name lists predicts and scores
    them (it used to stop with a traceback and write nothing); a line naming two classes is
    skipped with the reason."""
    run_dir, data = run
    rows = _lines(data / "test.jsonl")
    listed = tmp_path / "listed.jsonl"
    rows2 = [dict(r, label=[r["label"]]) for r in rows]
    rows2[1]["label"] = ["red", "green"]
    listed.write_text("".join(json.dumps(r) + "\n" for r in rows2))
    out, ref = tmp_path / "preds.jsonl", tmp_path / "ref.jsonl"
    assert main(["predict", str(run_dir), "--manifest", str(data / "test.jsonl"), "--out", str(ref)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run_dir), "--manifest", str(listed), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    preds = _lines(out)
    assert len(preds) == len(rows) and preds[1]["status"] == "skipped" and "names 2 classes" in preds[1]["reason"]
    assert [p["pred"] for i, p in enumerate(preds) if i != 1] == [p["pred"] for i, p in enumerate(_lines(ref)) if i != 1]
    assert '"accuracy"' in err


def test_bad_lines_are_skipped_in_place_counted_and_fail_the_exit_code(run, tmp_path, capsys):
    run_dir, data = run
    rows = _lines(data / "test.jsonl")
    lines = [json.dumps(r) for r in rows[:2]]
    lines.append('{"id": "broken", "a": "w1 w2"')                                   # 3: broken JSON
    lines.append(json.dumps({"id": "empty", "a": "", "b": "w3"}))                   # 4: empty text
    lines.append(json.dumps({"id": "cow", "label": "cow", "a": "w3"}))              # 5: not a class of the model
    lines.append(json.dumps({"id": "nolabel", "a": "w1 w1 w1", "b": None}))         # 6: fine, unlabelled
    lines.append(json.dumps({"id": rows[0]["id"], "a": "w4"}))                      # 7: duplicate id
    lines.append(json.dumps({"id": "nothing", "a": None, "b": None}))               # 8: no modality
    new = tmp_path / "mixed.jsonl"
    new.write_text("\n".join(lines) + "\n")
    out = tmp_path / "preds.jsonl"
    capsys.readouterr()
    assert main(["predict", str(run_dir), "--manifest", str(new), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    preds = _lines(out)
    assert [p["line"] for p in preds] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [p["status"] for p in preds] == ["ok", "ok", "skipped", "skipped", "skipped", "ok", "skipped", "skipped"]
    skipped = {p["line"]: p for p in preds if p["status"] == "skipped"}
    assert "broken JSON" in skipped[3]["reason"] and skipped[3]["id"] is None
    assert skipped[4]["id"] == "empty" and "field 'a': empty text" in skipped[4]["reason"]
    assert skipped[5]["id"] == "cow" and "unknown label 'cow'" in skipped[5]["reason"]
    assert "duplicate id" in skipped[7]["reason"] and "every modality is missing" in skipped[8]["reason"]
    assert preds[5]["id"] == "nolabel" and preds[5]["estimated"] == ["b"]
    assert f"u2a: skipped 5 of 8 lines of {new}" in err
    assert "metrics" not in err, "metrics need a label on every predicted line"
    # asked not to fail: the same output, exit 0
    assert main(["predict", str(run_dir), "--manifest", str(new), "--out", str(out), "--allow-skipped"]) == 0
    assert _lines(out) == preds
    # without --out: the same lines on stdout, the count on stderr
    capsys.readouterr()
    assert main(["predict", str(run_dir), "--manifest", str(new)]) == 1
    captured = capsys.readouterr()
    assert [json.loads(line) for line in captured.out.splitlines()] == preds
    assert "skipped 5 of 8 lines" in captured.err


def test_inputs_that_fail_to_load_are_skipped_even_a_whole_batch(run, tmp_path, capsys, monkeypatch):
    """Samples the collator cannot load (here: made to fail) get a skipped line; a batch in which
    every sample fails does not stop the prediction."""
    from u2a.data.processing import Collator
    from u2a.errors import SampleError

    run_dir, data = run
    rows = _lines(data / "test.jsonl")
    load = Collator._load

    def failing(self, it):
        if it["id"] in (rows[1]["id"], rows[2]["id"], rows[3]["id"]):
            raise SampleError("unreadable input: damaged", str(it["id"]), "/x/file", "a", it.get("where"))
        return load(self, it)

    monkeypatch.setattr(Collator, "_load", failing)
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(run_dir), "--manifest", str(data / "test.jsonl"), "--out", str(out),
                 "--batch-size", "2"]) == 1
    preds = _lines(out)
    assert [p["status"] for p in preds] == ["ok", "skipped", "skipped", "skipped", "ok", "ok"]
    assert preds[2]["reason"] == "field 'a': unreadable input: damaged" and preds[2]["line"] == 3
    err = capsys.readouterr().err
    assert "skipped 3 of 6 lines" in err and "3 skipped lines not counted" in err


def test_csv_without_a_label_column(run, tmp_path):
    run_dir, data = run
    rows = _lines(data / "test.jsonl")
    new = tmp_path / "new.csv"
    new.write_text("id,a,b\n" + "".join(f"{r['id']},{r['a'] or ''},{r['b'] or ''}\n" for r in rows))
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(run_dir), "--manifest", str(new), "--out", str(out)]) == 0
    preds = _lines(out)
    assert [p["id"] for p in preds] == [r["id"] for r in rows] and [p["line"] for p in preds] == [2, 3, 4, 5, 6, 7]


def test_the_loader_needs_labels_unless_told_otherwise(tmp_path):
    from u2a.data.manifest import load_manifest
    from u2a.errors import DataError

    f = tmp_path / "m.jsonl"
    f.write_text('{"id": "1", "text": "hello"}\n{"id": "2", "label": "cat", "text": "a cat"}\n')
    with pytest.raises(DataError, match="missing label"):
        load_manifest(f)
    m = load_manifest(f, require_labels=False)
    assert [s.label for s in m.samples] == [None, "cat"] and m.classes == ["cat"]
    assert m.label_index(m.samples[0]) is None and m.label_index(m.samples[1]) == 0


def test_inputs_given_two_ways_are_refused_not_one_silently_dropped(run, capsys):
    run_dir, data = run
    for argv, says in ((["--manifest", str(data / "test.jsonl"), "--text", "w1 w2"], "--text would be ignored"),
                       (["--field", "a=w1", "--field", "a=w2"], "--field a is given twice")):
        capsys.readouterr()
        assert main(["predict", str(run_dir), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("u2a: error:") and says in err, err
