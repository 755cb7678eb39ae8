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
