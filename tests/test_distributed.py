"""Two CPU processes (gloo, launched with torchrun) against one process with the same global batch.

(a) The trained weights match the single-process run within ATOL. Both runs see the same samples
    per optimizer step (global batch 8 = 2 processes x 4 vs 1 x 8, the same seeded order); only the
    summation order of the gradient average differs. For an exact comparison the randomness that
    differs per process is off: encoder/LoRA dropout 0, modality dropout off, and all samples
    complete (the alignment loss averages over the rows that have both modalities, per process).
(b) Validation on an odd number of samples (7: the distributed sampler pads the last batch)
    counts each sample exactly once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import _synthetic as S
from u2a.config import save_run_config
from u2a.train.trainer import load_summary, read_metrics

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "_synthetic.py"
ATOL = 1e-5  # absolute, on every trained weight after 12 AdamW steps

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_processes_match_one(tmp_path):
    enc = S.make_tiny_bert(tmp_path / "bert", dropout=0.0)
    common = ["train.epochs=2", "model.u2a.modality_dropout.enabled=false", "train.lr=1e-2"]
    dist_cfg = S.build_config(tmp_path / "dist", enc, common + ["train.batch_size=4"], name="run")
    single_cfg = S.build_config(tmp_path / "single", enc, common + ["train.batch_size=8"], name="run")
    cfg_path = save_run_config(dist_cfg, tmp_path / "dist.yaml")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(cfg_path), "--missing", "0"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    dist = load_summary(dist_cfg.run_dir)
    assert dist["num_processes"] == 2

    single = S.run_training(single_cfg, missing=0.0)
    assert single["num_processes"] == 1
    assert dist["global_steps"] == single["global_steps"] == 12

    # (b) each of the 7 validation samples counted once, every epoch
    for run in (dist_cfg.run_dir, single_cfg.run_dir):
        epochs = [r for r in read_metrics(run) if r["type"] == "epoch"]
        assert len(epochs) == 2
        for r in epochs:
            assert r["val"]["n"] == 7 and r["val"]["n_distinct"] == 7
            assert sum(c["support"] for c in r["val"]["per_class"].values()) == 7

    # (a) same weights within ATOL
    a = load_file(str(dist_cfg.run_dir / "checkpoints" / "epoch-0002" / "trainable.safetensors"))
    b = load_file(str(single_cfg.run_dir / "checkpoints" / "epoch-0002" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max abs weight difference 2 processes vs 1: {worst:.3g}")
    assert worst <= ATOL, f"max abs difference {worst}"
    # and the metrics agree
    d_epochs = [r for r in read_metrics(dist_cfg.run_dir) if r["type"] == "epoch"]
    s_epochs = [r for r in read_metrics(single_cfg.run_dir) if r["type"] == "epoch"]
    for d, s in zip(d_epochs, s_epochs):
        assert d["train_loss"] == pytest.approx(s["train_loss"], abs=1e-5)
        assert d["val"]["loss"] == pytest.approx(s["val"]["loss"], abs=1e-5)
        assert d["val"]["accuracy"] == s["val"]["accuracy"]
    assert torch.isfinite(torch.tensor(worst))


def _train_two_and_one(tmp_path, common: list[str], missing: float):
    """The same config trained by 2 gloo processes (batch 4 each) and by 1 (batch 8); returns both
    run folders and summaries."""
    enc = S.make_tiny_bert(tmp_path / "bert", dropout=0.0)
    dist_cfg = S.build_config(tmp_path / "dist", enc, common + ["train.batch_size=4"], name="run")
    single_cfg = S.build_config(tmp_path / "single", enc, common + ["train.batch_size=8"], name="run")
    cfg_path = save_run_config(dist_cfg, tmp_path / "dist.yaml")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(cfg_path), "--missing", str(missing)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    dist = load_summary(dist_cfg.run_dir)
    single = S.run_training(single_cfg, missing=missing)
    assert dist["num_processes"] == 2 and single["num_processes"] == 1
    return dist_cfg.run_dir, dist, single_cfg.run_dir, single


# MLA and UME-MMA average every loss over the samples of all processes (and MLA's projector stores
# the mean feature of all processes), so they match one process even with modalities missing: with
# 90% of the training samples lacking one modality, one process's batch of 4 lacks a modality
# entirely at least once (that process then contributes nothing to its encoder's gradient).
# UME-MMA's stage-2 modality dropout draws per process, so it is off here.
METHOD_CASES = {
    "mla": ["model.method=mla"],
    "ume_mma": ["model.method=ume_mma", "model.ume_mma.drop_prob=0"],
}


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
@pytest.mark.parametrize("method", sorted(METHOD_CASES))
def test_two_processes_match_one_for_each_baseline(tmp_path, method):
    common = ["train.epochs=2", "train.lr=1e-2", *METHOD_CASES[method]]
    dist_run, dist, single_run, single = _train_two_and_one(tmp_path, common, missing=0.9)
    assert dist["method"] == single["method"] == method
    assert dist["global_steps"] == single["global_steps"] == 12
    assert dist["best_epoch"] == single["best_epoch"]
    a = load_file(str(dist_run / "checkpoints" / "epoch-0002" / "trainable.safetensors"))
    b = load_file(str(single_run / "checkpoints" / "epoch-0002" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"{method}: max abs weight difference 2 processes vs 1: {worst:.3g}")
    assert worst <= ATOL, f"max abs difference {worst}"
    if method == "mla":
        assert not torch.allclose(a["projector"], torch.eye(a["projector"].shape[0]))
    d_epochs = [r for r in read_metrics(dist_run) if r["type"] == "epoch"]
    s_epochs = [r for r in read_metrics(single_run) if r["type"] == "epoch"]
    assert len(d_epochs) == len(s_epochs) == 2
    for d, s in zip(d_epochs, s_epochs):
        assert d["train_loss"] == pytest.approx(s["train_loss"], abs=1e-5)
        assert d["train_losses"].keys() == s["train_losses"].keys()
        for k in d["train_losses"]:
            assert d["train_losses"][k] == pytest.approx(s["train_losses"][k], abs=1e-5), k
        assert ("val" in d) == ("val" in s)
        if "val" in d:
            assert d["val"]["n"] == d["val"]["n_distinct"] == 7
            assert d["val"]["loss"] == pytest.approx(s["val"]["loss"], abs=1e-5)
