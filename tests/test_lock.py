"""The run-folder lock (u2a.train.lock): one holder at a time, the holder named, a stale lock of a
dead process taken over with a warning, release only of one's own lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from u2a.errors import ConfigError, U2AWarning
from u2a.train.lock import LOCK_NAME, acquire, run_lock


def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_holder_is_refused_with_the_holders_pid_host_and_start(tmp_path):
    run = tmp_path / "run"
    with run_lock(run) as lock:
        info = json.loads((run / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started"]
        assert lock.info == info
        with pytest.raises(ConfigError) as e:
            acquire(run)
        msg = str(e.value)
        assert f"{run} is in use: process {os.getpid()} on host {socket.gethostname()}, started {info['started']}" in msg
        assert "\n" not in msg
    assert not (run / LOCK_NAME).exists()
    acquire(run).release()  # free again


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = _dead_pid()
    stale = {"pid": dead, "host": socket.gethostname(), "started": "2020-01-01 00:00:00 +0000", "token": "x"}
    (run / LOCK_NAME).write_text(json.dumps(stale))
    with pytest.warns(U2AWarning, match=f"taking over the stale lock of process {dead} on host"):
        lock = acquire(run)
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run / LOCK_NAME).exists()
    assert not [p for p in run.iterdir()], "the stale lock leaves nothing behind"


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path):
    """Same pid, but the process running under it started at another time: the lock is stale."""
    run = tmp_path / "run"
    run.mkdir()
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("needs /proc")
    (run / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "started": "then", "proc_start": "1", "token": "x"}))
    with pytest.warns(U2AWarning, match="stale lock"):
        acquire(run).release()


def test_lock_of_another_host_or_unreadable_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "started": "now"}))
    with pytest.raises(ConfigError, match=f"on host elsewhere.*if that process is gone, delete {run / LOCK_NAME}"):
        acquire(run)
    (run / LOCK_NAME).write_text("")  # created, never written
    with pytest.raises(ConfigError, match="does not say by whom"):
        acquire(run)
    assert (run / LOCK_NAME).read_text() == ""


def test_release_leaves_another_processes_lock_alone(tmp_path):
    run = tmp_path / "run"
    lock = acquire(run)
    other = {"pid": os.getpid(), "host": socket.gethostname(), "started": "later", "token": "someone else"}
    (run / LOCK_NAME).write_text(json.dumps(other))  # taken over meanwhile
    lock.release()
    assert json.loads((run / LOCK_NAME).read_text()) == other


def test_exactly_one_of_many_concurrent_processes_gets_the_lock(tmp_path):
    from pathlib import Path

    run, go = tmp_path / "run", tmp_path / "go"
    run.mkdir()
    code = ("import os, sys, time\nfrom u2a.errors import ConfigError\nfrom u2a.train.lock import acquire\n"
            "print('ready', flush=True)\n"
            "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
            "try:\n    acquire(sys.argv[1]); print('got', flush=True); time.sleep(2)\n"
            "except ConfigError:\n    print('refused', flush=True)\n")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(run), str(go)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.write_text("")
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["got", "refused", "refused", "refused"], outs
