"""One process at a time trains into a run folder: ``RUN/train.lock``.

The lock is a file created atomically (``O_CREAT | O_EXCL``: of two processes that try at once,
exactly one succeeds) holding JSON: the holder's pid, host, start time and command. A second
process gets a :class:`~u2a.errors.ConfigError` naming the holder. A lock left by a process that
is gone (same host, its pid no longer running, or running a different program since) is taken
over with a warning; a lock held on another host cannot be checked from here, so the message
says which host and file to look at. The lock is released (the file deleted) when the holder
finishes or fails; a kill -9 leaves it behind, stale, to be taken over by the next run.

:func:`u2a.pipelines.train.train_run` (``u2a train``, ``u2a experiment``, ``u2a demo``) holds it
while it trains; in distributed runs only the main process takes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from u2a.errors import ConfigError, U2AWarning
from u2a.io import oserror_names

LOCK_NAME = "train.lock"


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid
    from the process that took the lock; None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _running(pid: int, proc_start: str | None) -> bool:
    """Whether the process that took a lock on this host still runs."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    if proc_start is not None:
        now = _proc_start(pid)
        if now is not None and now != proc_start:
            return False  # the pid was reused by another process
    return True


def _describe(info: dict[str, Any]) -> str:
    cmd = info.get("command")
    return (f"process {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"
            + (f" ({cmd})" if cmd else ""))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class RunLock:
    """The lock on one run folder, held by this process (:func:`acquire`)."""

    def __init__(self, path: Path, info: dict[str, Any]):
        self.path = path
        self.info = info

    def release(self) -> None:
        """Delete the lock file - only if it is still this process's (never another's)."""
        try:
            held = _read(self.path)
        except FileNotFoundError:
            return
        if held is not None and held.get("pid") == self.info["pid"] and held.get("token") == self.info["token"]:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def acquire(run_dir: str | Path, what: str = "training") -> RunLock:
    """Take the lock of ``run_dir`` (created if needed) or raise a ConfigError naming its holder."""
    run_dir = Path(run_dir)
    with oserror_names(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    pid = os.getpid()
    info = {
        "pid": pid,
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv and sys.argv[0] else "",
        "what": what,
        "proc_start": _proc_start(pid),
        "token": os.urandom(8).hex(),
    }
    data = (json.dumps(info) + "\n").encode()
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = _read(path)
                if holder is None:  # its writer may be between creating and writing it
                    time.sleep(0.2)
                    holder = _read(path)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if holder is None:
                raise ConfigError(
                    f"{run_dir} is locked: {path} exists but does not say by whom; if no u2a process "
                    f"trains into this folder, delete {path}"
                ) from None
            if holder.get("host") != info["host"]:
                raise ConfigError(
                    f"{run_dir} is in use: {_describe(holder)} trains into it (lock {path}); wait for it to "
                    f"finish, or, if that process is gone, delete {path}"
                ) from None
            if _running(int(holder.get("pid") or 0), holder.get("proc_start")):
                raise ConfigError(
                    f"{run_dir} is in use: {_describe(holder)} trains into it (lock {path}); wait for it to "
                    "finish or stop it, or train into another folder (name=...)"
                ) from None
            _take_over(path, holder)
            warnings.warn(f"{run_dir}: taking over the stale lock of {_describe(holder)}: that process is gone",
                          U2AWarning, stacklevel=2)
            continue
        try:
            with oserror_names(path):
                os.write(fd, data)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        os.close(fd)
        return RunLock(path, info)
    raise ConfigError(f"{run_dir}: could not take the lock {path} (other processes keep taking it)")


def _take_over(path: Path, holder: dict[str, Any]) -> None:
    """Remove a stale lock, unless another process replaced it meanwhile: it is renamed aside (one
    atomic step) and put back if what was renamed is not the lock that was judged stale."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # another process took it over first
    try:
        taken = _read(aside)
    except FileNotFoundError:
        return
    if taken != holder:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)  # a live lock of another process: restore it (unless replaced again)
    with contextlib.suppress(FileNotFoundError):
        aside.unlink()


@contextlib.contextmanager
def run_lock(run_dir: str | Path, enabled: bool = True, what: str = "training") -> Iterator[RunLock | None]:
    """Hold the lock of ``run_dir`` for the ``with`` block (``enabled=False``: no lock, e.g. on the
    processes of a distributed run other than the main one)."""
    lock = acquire(run_dir, what) if enabled else None
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


__all__ = ["LOCK_NAME", "RunLock", "acquire", "run_lock"]
