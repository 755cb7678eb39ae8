"""Fault injection: training runs are killed with SIGKILL at random points - while training (several
seeds) and while writing a checkpoint or the best model - and resumed. After every kill, nothing a
later run or `u2a predict` would load is partial or damaged (every checkpoint and best/ pass their
size and SHA-256 checks); after the last resume, the weights, the optimizer state, metrics.jsonl
(so: no duplicate records) and summary.json are those of an uninterrupted run, bit for bit.

The runs are the synthetic training script (tests/_synthetic.py) in subprocesses, slowed down with
U2A_TEST_BATCH_DELAY (per batch) and U2A_TEST_WRITE_DELAY (per file/folder rename) so that the
kills land inside training and inside writes."""

from __future__ import annotations

import os
import random
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
from u2a.methods.base import verify_saved_model
from u2a.train import checkpoint as ck
from u2a.train.trainer import load_summary, read_metrics

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "_synthetic.py"
VOLATILE = {"samples_per_s", "train_time_s", "time", "run_dir", "resumed_from", "train_samples"}
OVERRIDES = ["train.checkpoint_every_steps=5", "train.keep_last=3"]
COMPARED = ("best/adapter.safetensors", "checkpoints/epoch-0004/trainable.safetensors",
            "checkpoints/epoch-0004/optimizer.safetensors", "checkpoints/epoch-0004/rng.safetensors")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The encoder, a config factory and the uninterrupted reference run."""
    tmp = tmp_path_factory.mktemp("faults")
    enc = S.make_tiny_bert(tmp / "bert", dropout=0.1)

    def config(name: str) -> tuple[Path, Path]:
        cfg = S.build_config(tmp / name, enc, OVERRIDES, name="run", lora_dropout=0.1)
        return save_run_config(cfg, tmp / f"{name}.yaml"), cfg.run_dir

    ref_cfg, ref = config("reference")
    res = subprocess.run([sys.executable, str(SCRIPT), str(ref_cfg)], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return config, ref


def _start(cfg: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(cfg), *args], env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, ready, then_sleep: float = 0.0, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` once ``ready()`` holds (and ``then_sleep`` seconds more). False when the run
    ended first."""
    deadline = time.time() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                return False
            assert time.time() < deadline, "the kill point never came"
            time.sleep(0.005)
        time.sleep(then_sleep)
        if proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _metrics_lines(run: Path) -> int:
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _nothing_partial_is_loadable(run: Path) -> None:
    """What a resumed run or `u2a predict` would read after the kill is whole: every checkpoint that
    counts as complete passes its size and SHA-256 checks (so resume picks the newest one, never a
    damaged one), and best/, when there, passes its own."""
    for c in ck.list_checkpoints(run):
        ck.verify_checkpoint(c)
    assert ck.resume_checkpoint(run) == (ck.list_checkpoints(run) or [None])[-1]
    if (run / "best").exists():
        verify_saved_model(run / "best")


def _resume_to_the_end(cfg: Path, run: Path) -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), str(cfg), "--resume"], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def _same_as_reference(run: Path, ref: Path) -> None:
    assert _strip(read_metrics(run)) == _strip(read_metrics(ref)), "metrics.jsonl differs (duplicates or gaps)"
    assert _strip(load_summary(run)) == _strip(load_summary(ref))
    for rel in COMPARED:
        a, b = load_file(str(run / rel)), load_file(str(ref / rel))
        assert a.keys() == b.keys(), rel
        for k in a:
            assert torch.equal(a[k], b[k]), (rel, k)
    assert sorted(p.name for p in ck.list_checkpoints(run)) == sorted(p.name for p in ck.list_checkpoints(ref))
    leftovers = [p.name for p in [*run.iterdir(), *(run / "checkpoints").iterdir()] if p.name.startswith(".")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("seed,kills", [(0, 2), (1, 2)])
def test_killed_while_training_and_resumed_equals_an_uninterrupted_run(setup, seed, kills):
    config, ref = setup
    cfg, run = config(f"train-{seed}")
    total = _metrics_lines(ref)  # 24 step records (every 2nd of 48 steps) and 4 epoch records
    rng = random.Random(seed)
    for k in range(kills):
        # a random point of the run: after the n-th record of metrics.jsonl, plus up to ~3 batches
        target = rng.randrange(1, total - 2)
        proc = _start(cfg, *(["--resume"] if k else []), U2A_TEST_BATCH_DELAY="0.05")
        killed = _kill_when(proc, lambda: _metrics_lines(run) >= target, then_sleep=rng.uniform(0, 0.15))
        assert killed, f"the run ended before its kill point (record {target})"
        assert not (run / "summary.json").exists()
        _nothing_partial_is_loadable(run)
    _resume_to_the_end(cfg, run)
    _same_as_reference(run, ref)


def test_killed_while_writing_a_checkpoint_and_while_replacing_the_best_model(setup):
    """Killed inside a checkpoint's writes (its files are written and renamed one by one, then the
    folder), resumed, killed again between moving the old best/ aside and moving the new one in
    (then there is no best/ at all, never a mix of two), resumed to the end."""
    config, ref = setup
    cfg, run = config("saving")
    ckpts = run / "checkpoints"
    epochs = [r["best_epoch"] for r in read_metrics(ref) if r["type"] == "epoch"]
    assert len(set(epochs)) > 1, "the reference run must improve after its first epoch (best/ is replaced)"

    # 1. inside the second checkpoint (8 renames of 0.1 s: 7 files, then the folder)
    proc = _start(cfg, U2A_TEST_WRITE_DELAY="0.1", U2A_TEST_WRITE_DELAY_MATCH=os.sep + "checkpoints" + os.sep)

    def writing() -> bool:
        return ckpts.is_dir() and len(ck.list_checkpoints(run)) == 1 \
            and any(p.name.endswith(".partial") for p in ckpts.iterdir())

    assert _kill_when(proc, writing, then_sleep=random.Random(7).uniform(0.05, 0.75))
    assert len(ck.list_checkpoints(run)) == 1
    _nothing_partial_is_loadable(run)

    # 2. between the two renames that replace best/ (each waits 0.3 s)
    proc = _start(cfg, "--resume", U2A_TEST_WRITE_DELAY="0.3", U2A_TEST_WRITE_DELAY_MATCH="best")

    def between_renames() -> bool:  # the old best/ is aside (with its files), the new one not yet in
        return any((p / "adapter.safetensors").exists() for p in run.glob(".best.*.old"))

    assert _kill_when(proc, between_renames)
    assert not (run / "best").exists()
    _nothing_partial_is_loadable(run)

    # 3. to the end
    _resume_to_the_end(cfg, run)
    _same_as_reference(run, ref)
