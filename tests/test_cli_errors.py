"""Errors of the file system (a full disk, a read-only folder, no permission) come out of the `u2a`
command as one line naming the path, not as a traceback. Tests may run as root, where chmod does not
stop a write, so the errors are injected."""

from __future__ import annotations

import errno
import os

import pytest

import u2a.data.check
import u2a.data.emoji
from u2a.cli import main


@pytest.mark.parametrize("code,hint", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                       (errno.EACCES, "no permission"), (errno.EIO, None)])
def test_oserror_is_one_line_naming_the_path(tmp_path, monkeypatch, capsys, code, hint):
    target = tmp_path / "out" / "file.json"

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(u2a.data.check, "check_manifest", fail)
    assert main(["data", "check", str(tmp_path / "m.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"u2a: error: {target}: {os.strerror(code)}")
    assert err.count("\n") == 1 and "Traceback" not in err
    if hint:
        assert hint in err


def test_a_failed_write_that_names_no_file_is_placed_in_the_output_folder(tmp_path, monkeypatch, capsys):
    def full(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # what f.write() raises: no file name

    monkeypatch.setattr(u2a.data.emoji, "prepare_emoji", full)
    assert main(["data", "prepare", "emoji", "--out", str(tmp_path / "ds"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err == f"u2a: error: {tmp_path / 'ds'}: No space left on device (the disk is full: free some space, " \
                  "or write elsewhere ($U2A_CACHE, the run's output_dir, --out))\n"


def test_rename_errors_name_both_paths(monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/a/tmp", None, "/b/final")  # as os.replace raises it

    monkeypatch.setattr(u2a.data.check, "check_manifest", fail)
    assert main(["data", "check", "x.jsonl"]) == 2
    assert capsys.readouterr().err == f"u2a: error: /a/tmp -> /b/final: {os.strerror(errno.EXDEV)}\n"


def _fail_writes_under(monkeypatch, part: str, code: int = errno.ENOSPC) -> None:
    """Make os.fsync fail as a full disk does (an OSError without a file name) for the files whose
    path contains ``part``: the last step of u2a's atomic writes of checkpoints and JSON files."""
    real = os.fsync

    def fsync(fd):
        if part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the written file through /proc")
def test_atomic_writes_name_the_file_on_a_full_disk(tmp_path, monkeypatch):
    from u2a.io import atomic_write_json, atomic_write_safetensors

    _fail_writes_under(monkeypatch, str(tmp_path))
    with pytest.raises(OSError) as e:
        atomic_write_json(tmp_path / "summary.json", {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "summary.json")
    import torch

    with pytest.raises(OSError) as e:
        atomic_write_safetensors(tmp_path / "w.safetensors", {"x": torch.zeros(2)})
    assert e.value.filename == str(tmp_path / "w.safetensors")
    assert not list(tmp_path.iterdir()), "a failed write leaves no temporary file"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds the written file through /proc")
@pytest.mark.parametrize("code,hint", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only")])
def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, code, hint):
    import _synthetic as S

    cfg = S.write_cli_config(tmp_path)
    _fail_writes_under(monkeypatch, os.sep + "checkpoints" + os.sep, code)
    capsys.readouterr()
    assert main(["train", str(cfg)]) == 2
    full = capsys.readouterr().err
    err = full.splitlines()[-1]  # after the run's own lines (data, method, ...)
    run = tmp_path / "runs" / "cli"
    assert err.startswith(f"u2a: error: {run / 'checkpoints'}{os.sep}.epoch-0001.")
    assert f"trainable.safetensors: {os.strerror(code)} ({hint}" in err
    assert "Traceback" not in full
    assert not list((run / "checkpoints").iterdir()), "no partial checkpoint is left"
    assert not (run / "train.lock").exists()


@pytest.mark.parametrize("argv", [["predict", "RUN", "--text", "x", "--batch-size", "0"],
                                  ["predict", "RUN", "--text", "x", "--top-k", "-1"],
                                  ["evaluate", "RUN", "--batch-size", "-3"],
                                  ["experiment", "CFG", "--batch-size", "0"],
                                  ["bench", "--batch-size", "abc"]])
def test_counts_below_one_are_a_usage_error_naming_the_option(argv, capsys):
    """--batch-size -1 used to predict nothing and report success; 0 gave a traceback."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be an integer >= 1" in err and argv[-2] in err and "Traceback" not in err


def test_atomic_dir_replaces_a_file_or_a_folder_and_leaves_nothing_aside(tmp_path):
    """Replacing a plain file at the target used to fail after the build ('Is a directory') and
    leave an empty hidden .old folder."""
    from u2a.io import atomic_dir

    for before in ("file", "folder"):
        target = tmp_path / before / "out"
        target.parent.mkdir()
        if before == "file":
            target.write_text("a file")
        else:
            target.mkdir()
            (target / "old.txt").write_text("old")
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
        assert target.is_dir() and (target / "new.txt").read_text() == "new"
        assert not (target / "old.txt").exists()
        assert sorted(p.name for p in target.parent.iterdir()) == ["out"]



@pytest.mark.parametrize("argv", [["evaluate", "RUN"], ["export", "RUN", "--out", "x"], ["demo"], ["data", "prepare", "emoji"]])
def test_one_process_commands_refuse_a_multi_process_launch(tmp_path, monkeypatch, capsys, argv):
    """Under torchrun/accelerate launch (WORLD_SIZE > 1) every process would run the whole command
    and write the same files: the commands that run in one process refuse before doing anything."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"`u2a {argv[0]}` runs in one process" in err and "WORLD_SIZE=2" in err
    assert list(tmp_path.iterdir()) == []


def test_train_is_let_through_a_multi_process_launch(monkeypatch):
    from u2a.cli import _one_process_unless_training

    monkeypatch.setenv("WORLD_SIZE", "4")
    _one_process_unless_training("train")  # no error: train runs as one of several processes
    monkeypatch.setenv("WORLD_SIZE", "1")
    _one_process_unless_training("evaluate")
