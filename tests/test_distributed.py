"""Two CPU processes (gloo, launched with torchrun) against one process with the same global batch.

(a) The trained weights match the single-process run within ATOL. Both runs see the same samples
    per optimizer step (global batch 8 = 2 processes x 4 vs 1 x 8, the same seeded order); only the
    summation order of the gradient average differs. For an exact comparison the randomness that
    differs per process is off: encoder/LoRA dropout 0, modality dropout off, and all samples
    complete (the alignment loss averages over the rows that have both modalities, per process).
(b) Validation on an odd number of samples (7: one process gets a smaller last batch; the
    evaluation loaders do not pad it with repeats) counts each sample exactly once, in the
    metrics and in the mask-token diagnostics.
(c) data.skip_bad with samples and a whole batch that fail to load on one process.
(d) The `u2a` command itself under torchrun against one process.
"""

from __future__ import annotations

import json
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
        # the mask-token diagnostics count each validation sample once too (no sampler padding)
        assert d["val"]["estimates"].keys() == s["val"]["estimates"].keys()
        for k, e in d["val"]["estimates"].items():
            assert e["n"] == s["val"]["estimates"][k]["n"] == 7
            assert e["mse"] == pytest.approx(s["val"]["estimates"][k]["mse"], rel=1e-4)
            assert e["constant_mse"] == pytest.approx(s["val"]["estimates"][k]["constant_mse"], rel=1e-4)
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


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_processes_skip_samples_that_fail_to_load(tmp_path):
    """data.skip_bad with two processes: a validation sample that fails to load (the processes'
    last validation batches then differ in size) is left out and counted, every other sample
    counted once; a training batch in which every sample fails on one process is skipped by both
    processes together - also when it is the batch that ends a gradient-accumulation group, whose
    gradients are then averaged over the processes by hand - and the two processes' weights stay
    identical."""
    enc = S.make_tiny_bert(tmp_path / "bert", dropout=0.0)
    cfg = S.build_config(tmp_path / "dist", enc, ["train.epochs=2", "train.batch_size=4", "train.grad_accum=2",
                                                  "train.lr=1e-2"], name="run")
    cfg_path = save_run_config(cfg, tmp_path / "dist.yaml")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    # the U2A statistics pass takes 2 batches of training samples before training: batch 6 of
    # process 1 is its 4th training batch of epoch 1, the last of the second accumulation group
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               U2A_TEST_FAIL_IDS="t0005,v0006", U2A_TEST_FAIL_BATCH="1:6")
    res = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(cfg_path), "--missing", "0.3",
         "--check-replicas"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert "replicas identical" in res.stdout
    summary = load_summary(cfg.run_dir)
    assert summary["num_processes"] == 2
    assert summary["skipped_batches"] == 1
    assert summary["global_steps"] == 6  # 2 epochs x 3 groups of 2 batches: the skipped batch's group steps too
    records = json.loads((cfg.run_dir / "data.json").read_text())["skipped_samples"]
    whole = {r["id"] for r in records if r["reason"] == "injected (whole batch)"}
    assert len(whole) == 4 and all(r["split"] == "train" for r in records if r["id"] in whole)
    assert {(r["split"], r["id"]) for r in records if r["reason"] == "injected"} == {("train", "t0005"),
                                                                                     ("val", "v0006")}
    epochs = [r for r in read_metrics(cfg.run_dir) if r["type"] == "epoch"]
    assert len(epochs) == 2
    for r in epochs:
        assert r["val"]["n"] == r["val"]["n_distinct"] == 6 and r["val"]["skipped"] == 1
    skipped = [r for r in read_metrics(cfg.run_dir) if r["type"] == "skipped_batch"]
    assert len(skipped) == 1 and skipped[0]["processes"] == [1] and skipped[0]["epoch"] == 1
    # every sample that loaded on a process that did train, counted once per epoch
    assert skipped[0]["not_trained"] == 4  # process 0's batch of that step
    assert summary["train_samples"] == 2 * 48 - 2 - 4 - 4
    w = load_file(str(cfg.run_dir / "checkpoints" / "epoch-0002" / "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_the_u2a_command_under_torchrun_matches_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m u2a.cli train CONFIG` (the documented launch, real data
    pipeline: manifests, tokenizer, collator) writes one complete run folder, releases its lock,
    and equals one process with the same global batch (the default recipe draws no random dropout
    case: `cases: all`, and the tiny encoder has no dropout)."""
    from u2a.cli import main

    cfg = S.write_cli_config(tmp_path, epochs=2, batch_size=4, lr=1e-2)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "u2a.cli", "train", str(cfg),
                          "--no-progress", "name=dist"], env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert main(["train", str(cfg), "--no-progress", "name=single", "train.batch_size=8"]) == 0
    dist_run, single_run = tmp_path / "runs" / "dist", tmp_path / "runs" / "single"
    assert sorted(p.name for p in dist_run.iterdir()) == sorted(p.name for p in single_run.iterdir())
    assert not (dist_run / "train.lock").exists()
    dist, single = load_summary(dist_run), load_summary(single_run)
    assert dist["num_processes"] == 2 and single["num_processes"] == 1
    assert dist["global_steps"] == single["global_steps"] == 12
    assert dist["test"]["n"] == dist["test"]["n_distinct"] == 6
    assert dist["test"]["loss"] == pytest.approx(single["test"]["loss"], abs=1e-5)
    assert dist["best_val"]["loss"] == pytest.approx(single["best_val"]["loss"], abs=1e-5)
    a = load_file(str(dist_run / "best" / "adapter.safetensors"))
    b = load_file(str(single_run / "best" / "adapter.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= ATOL
