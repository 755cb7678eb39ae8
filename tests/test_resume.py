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
VOLATILE = {"samples_per_s", "train_time_s", "time", "run_dir", "resumed_from"}


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

    assert _strip(resumed) == _strip(reference)  # train_samples too: the sessions before the kill count
    assert resumed["train_samples"] == reference["train_samples"] == 4 * 48
    assert _strip(read_metrics(run)) == _strip(read_metrics(ref_run))
    for rel in ("best/adapter.safetensors", "checkpoints/epoch-0004/trainable.safetensors",
                "checkpoints/epoch-0004/optimizer.safetensors"):
        a, b = load_file(str(run / rel)), load_file(str(ref_run / rel))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (rel, k)


# ---- what resume does with what it finds -----------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (4 epochs of 12 steps) with step and epoch checkpoints."""
    enc = S.make_tiny_bert(tmp_path_factory.mktemp("enc") / "bert")
    cfg = S.build_config(tmp_path_factory.mktemp("finished"), enc,
                         ["train.checkpoint_every_steps=5", "train.keep_last=3"])
    S.run_training(cfg)
    return cfg


def _trainer(cfg, run):
    from u2a.methods import method_of
    from u2a.train.trainer import Trainer

    torch.manual_seed(cfg.train.seed)
    model = method_of(cfg.model).build_model(cfg.model)
    return Trainer(cfg, model, {"train": S.SyntheticDataset(48, missing=0.3, seed=1, prefix="t"),
                                "val": S.SyntheticDataset(7, missing=0.3, seed=2, prefix="v")}, S.collate, run)


def test_a_damaged_newest_checkpoint_is_named_with_the_one_to_resume_from(finished, tmp_path):
    import shutil

    from u2a.errors import ModelError

    run = tmp_path / "run"
    shutil.copytree(finished.run_dir, run)
    names = [p.name for p in ck.list_checkpoints(run)]
    assert names[-2:] == ["step-000045", "epoch-0004"], names
    (run / "checkpoints" / "epoch-0004" / "state.json").write_text('{"format": 1, "epo')  # damaged
    with pytest.raises(ModelError) as e:
        _trainer(finished, run).resume()
    msg = str(e.value)
    assert f"the newest checkpoint {run / 'checkpoints' / 'epoch-0004'} is damaged" in msg
    assert "state.json" in msg and f"to resume from {run / 'checkpoints' / 'step-000045'}" in msg
    # a damaged file of the newest one (its state.json intact) is named the same way
    shutil.rmtree(run / "checkpoints" / "epoch-0004")
    target = run / "checkpoints" / "step-000045" / "optimizer.safetensors"
    data = bytearray(target.read_bytes())
    data[-3] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"the newest checkpoint .*step-000045 is damaged: checkpoint file {target} "
                                         r"is corrupt: its SHA-256 does not match.*to resume from .*step-000040"):
        _trainer(finished, run).resume()


def test_a_damaged_older_checkpoint_is_ignored_with_a_warning(finished, tmp_path):
    import shutil

    from u2a.errors import U2AWarning

    run = tmp_path / "run"
    shutil.copytree(finished.run_dir, run)
    older = ck.list_checkpoints(run)[0]
    assert older.name < "epoch-0004"
    (older / "state.json").write_text("")
    with pytest.warns(U2AWarning, match=f"ignoring the damaged older checkpoint .*{older.name}"):
        path = _trainer(finished, run).resume()
    assert path.name == "epoch-0004"


def test_resume_without_a_checkpoint_never_replaces_a_trained_model(finished, tmp_path):
    import shutil

    from u2a.errors import ConfigError

    run = tmp_path / "run"
    shutil.copytree(finished.run_dir, run)
    shutil.rmtree(run / "checkpoints")
    best = (run / "best" / "adapter.safetensors").read_bytes()
    metrics = (run / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"no checkpoint to resume from, but the folder holds best and summary\.json"):
        _trainer(finished, run).train(resume=True)
    assert (run / "best" / "adapter.safetensors").read_bytes() == best
    assert (run / "metrics.jsonl").read_text() == metrics


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_clean(finished, tmp_path):
    """No checkpoint and no trained model: --resume starts from the beginning, and the logs of the
    killed attempt are not continued (no duplicate records)."""
    import shutil

    from u2a.errors import U2AWarning

    run = tmp_path / "run"
    shutil.copytree(finished.run_dir, run)
    for name in ("checkpoints", "best"):
        shutil.rmtree(run / name)
    (run / "summary.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")  # what the killed attempt logged
    (run / "tb").mkdir()
    (run / "tb" / "events.out.tfevents.old").write_bytes(b"old events")
    with pytest.warns(U2AWarning, match="no checkpoint in .* starting from the beginning"):
        _trainer(finished, run).train(resume=True)
    assert _strip(read_metrics(run)) == _strip(read_metrics(finished.run_dir))
    assert not (run / "tb" / "events.out.tfevents.old").exists()


def test_resume_with_another_batch_count_is_refused(finished, tmp_path):
    import shutil

    from u2a.errors import ModelError
    from u2a.methods import method_of
    from u2a.train.trainer import Trainer

    run = tmp_path / "run"
    shutil.copytree(finished.run_dir, run)
    torch.manual_seed(0)
    model = method_of(finished.model).build_model(finished.model)
    trainer = Trainer(finished, model, {"train": S.SyntheticDataset(40, seed=1, prefix="t")}, S.collate, run)
    with pytest.raises(ModelError, match=r"epoch-0004 was taken with 12 batches per epoch and 1 processes; "
                                         r"this run has 10 batches per epoch"):
        trainer.resume()
