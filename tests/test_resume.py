"""Kill a training run with SIGKILL after its first checkpoint, resume it, and check that it ends
exactly (bit for bit) where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import _synthetic as S
from u2a.config import save_run_config
from u2a.train import checkpoint as ck
from u2a.train.trainer import load_summary, read_metrics

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "_synthetic.py"
VOLATILE = {"samples_per_s", "train_time_s", "time", "run_dir", "resumed_from", "train_samples"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _run(cfg_path: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(cfg_path), *args], env=_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted(tmp_path):
    enc = S.make_tiny_bert(tmp_path / "bert", dropout=0.1)
    overrides = ["train.checkpoint_every_steps=5", "train.keep_last=3"]
    cfgs = {}
    for which in ("killed", "reference"):
        cfg = S.build_config(tmp_path / which, enc, overrides, name="run", lora_dropout=0.1)
        cfgs[which] = save_run_config(cfg, tmp_path / f"{which}.yaml"), cfg.run_dir

    # 1. start, wait for the first checkpoint, SIGKILL
    cfg_path, run = cfgs["killed"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(cfg_path)], env=_env(U2A_TEST_BATCH_DELAY="0.05"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while not ck.list_checkpoints(run):
            assert proc.poll() is None, f"training ended before its first checkpoint:\n{proc.stdout.read()}"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists(), "the run finished before it was killed"
    first = ck.list_checkpoints(run)[-1]

    # 2. resume to the end
    res = _run(cfg_path, "--resume")
    assert res.returncode == 0, res.stdout + res.stderr
    resumed = load_summary(run)
    assert resumed["resumed_from"] is not None and Path(resumed["resumed_from"]).name == first.name

    # 3. an uninterrupted run of the same config
    ref_path, ref_run = cfgs["reference"]
    res = _run(ref_path)
    assert res.returncode == 0, res.stdout + res.stderr
    reference = load_summary(ref_run)

    assert _strip(resumed) == _strip(reference)
    assert _strip(read_metrics(run)) == _strip(read_metrics(ref_run))
    for rel in ("best/adapter.safetensors", "checkpoints/epoch-0004/trainable.safetensors",
                "checkpoints/epoch-0004/optimizer.safetensors"):
        a, b = load_file(str(run / rel)), load_file(str(ref_run / rel))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (rel, k)
