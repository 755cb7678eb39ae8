"""u2a.allocator: the ``u2a`` command fixes glibc's mmap threshold once, leaves it alone when the
user asked to, and trains the same weights, bit for bit, either way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import _synthetic as S
from u2a import allocator

GLIBC = sys.platform.startswith("linux") and allocator._glibc() is not None


def _state_in_fresh_process(**env: str) -> list[str]:
    """allocator_state() before and after two calls of tune_allocator(), in a new interpreter."""
    code = ("from u2a.allocator import tune_allocator, allocator_state\n"
            "print(allocator_state()); print(tune_allocator()); print(tune_allocator()); print(allocator_state())")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("U2A_MALLOC", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    res = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_tuned_once_on_glibc():
    before, first, second, after = _state_in_fresh_process()
    assert before == "default (not tuned)"
    assert first == second == after == "glibc mmap_threshold=32 MiB, trim_threshold=64 MiB"


@pytest.mark.parametrize("env, reason", [
    ({"U2A_MALLOC": "default"}, "$U2A_MALLOC=default"),
    ({"U2A_MALLOC": " Default "}, "$U2A_MALLOC=default"),
    ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, "set by $MALLOC_MMAP_THRESHOLD_"),
    ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}, "set by $GLIBC_TUNABLES"),
])
def test_left_alone_when_the_user_says_so(env, reason):
    before, first, second, after = _state_in_fresh_process(**env)
    assert before == "default (not tuned)"
    assert first == second == after and first.startswith("default (") and reason in first


def test_the_command_tunes_before_it_runs(monkeypatch, capsys):
    from u2a.cli import main

    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setenv("U2A_MALLOC", "default")  # what it would do is tested above; here: that it is called
    assert main([]) == 2  # no subcommand: help
    assert allocator.allocator_state() == "default ($U2A_MALLOC=default)"
    capsys.readouterr()


def test_same_weights_with_and_without_tuning(tmp_path):
    """The allocator decides where tensors live, not what is computed: two trainings of the same
    config, glibc's default heap and the tuned one, save identical adapters."""
    cfg = S.write_cli_config(tmp_path, name="heap", epochs=1, sizes=(("train", 24), ("val", 8), ("test", 8)))
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")}
    weights = {}
    for mode in ("default", "tuned"):
        run_env = {**env, "U2A_MALLOC": "default"} if mode == "default" else {k: v for k, v in env.items() if k != "U2A_MALLOC"}
        res = subprocess.run([sys.executable, "-m", "u2a.cli", "train", str(cfg), "--no-progress", f"name={mode}"],
                             env=run_env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        weights[mode] = load_file(str(tmp_path / "runs" / mode / "best" / "adapter.safetensors"))
    a, b = weights["default"], weights["tuned"]
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
