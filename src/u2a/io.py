"""Small file helpers: atomic writes, so a killed process never leaves a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A failed write (a full disk, a read-only folder) raises an OSError that names ``path``."""
    path = Path(path)
    with oserror_names(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors file of ``tensors`` (CPU, contiguous) as bytes, to write with
    :func:`atomic_write_bytes` (so that a failed write names the file, as every u2a write does)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                metadata=dict(metadata) if metadata else None)


def atomic_write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Any],
                             metadata: Mapping[str, str] | None = None) -> bytes:
    """Write a safetensors file atomically; returns the bytes written."""
    data = safetensors_bytes(tensors, metadata)
    atomic_write_bytes(path, data)
    return data


COMPLETE_MARKER = ".u2a-complete"


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name; on success write a completion marker and rename it.

    A folder without the marker (an interrupted build) is never taken for a finished one:
    :func:`is_complete_dir` says so, and the next build replaces it. A folder that is replaced is
    first renamed aside, then the new one renamed into place, then the old one deleted: at no point
    does ``final`` hold part of either (it may be absent for the instant between the two renames).
    """
    final = Path(final)
    with oserror_names(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; the finished folder should read like any other
    try:
        yield tmp
        with oserror_names(tmp / COMPLETE_MARKER):
            (tmp / COMPLETE_MARKER).write_text("ok\n")
        old = None
        if final.exists() or final.is_symlink():
            # a fresh name (reserved by mkdtemp, then freed) that a folder or a file can be renamed to
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            old.rmdir()
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_dir(path: str | os.PathLike) -> None:
    """Delete a folder so that no half-deleted copy is ever seen under its name: rename it to a
    hidden ``.NAME.*.old`` first (one atomic step), then delete that."""
    path = Path(path)
    if not path.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def is_complete_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / COMPLETE_MARKER).is_file()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, as 64 hex digits (read in chunks)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def oserror_names(path: str | os.PathLike) -> Iterator[None]:
    """Give an OSError that names no file (a ``write`` on a full disk raises one) ``path`` as its
    file name, so that the message says where it happened; other errors pass unchanged."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


_OSERROR_HINTS = {
    "ENOSPC": "the disk is full: free some space, or write elsewhere ($U2A_CACHE, the run's output_dir, --out)",
    "EDQUOT": "the disk quota is used up: free some space, or write elsewhere",
    "EROFS": "the file system is read-only: write elsewhere ($U2A_CACHE, the run's output_dir, --out)",
    "EACCES": "no permission: check the owner and mode of the file or folder, or use another one",
    "EPERM": "the operation is not permitted there: check the file or folder, or use another one",
}


def describe_oserror(e: OSError) -> str:
    """One line for an OSError: the path(s), what failed, and for a full disk, a read-only file
    system or a permission problem what to do."""
    import errno as errno_names

    paths = " -> ".join(str(p) for p in (e.filename, e.filename2) if p is not None)
    what = e.strerror or str(e) or type(e).__name__
    name = errno_names.errorcode.get(e.errno, "") if e.errno is not None else ""
    hint = _OSERROR_HINTS.get(name)
    msg = f"{paths}: {what}" if paths else f"{what} (errno {name or e.errno}; the file is not known)"
    return f"{msg} ({hint})" if hint else msg
