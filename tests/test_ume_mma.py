"""UME-MMA (Li et al., arXiv 2310.06383) on tiny random encoders: late fusion with a missing branch
left out, the two stages (what each trains), missing-modality augmentation, selection only in
stage 2, save/load, and training and resuming through the real Trainer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import _synthetic as S
from _tiny import tiny_adapter, tiny_inputs
from u2a.config import ModelConfig
from u2a.errors import ConfigError
from u2a.losses import task_loss
from u2a.methods import get_method
from u2a.methods.base import load_model
from u2a.methods.u2a.dropout import sample_modality_dropout
from u2a.methods.ume_mma.config import UMEMMAConfig
from u2a.methods.ume_mma.model import UMEMMAModel
from u2a.train.trainer import read_metrics

VOLATILE = {"samples_per_s", "train_time_s", "time", "run_dir", "resumed_from", "train_samples"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def tiny_model(num_classes=3, seed=0, **ume) -> UMEMMAModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(method="ume_mma", num_classes=num_classes, ume_mma=UMEMMAConfig(**ume),
                      modalities=[dict(name="t", encoder="tiny-bert", kind="text"),
                                  dict(name="i", encoder="tiny-clip", kind="image")])
    return UMEMMAModel(cfg, {"t": tiny_adapter("bert"), "i": tiny_adapter("clip_vision")})


def tiny_batch(n, seed=0):
    return {"t": tiny_inputs("bert", n, seed), "i": tiny_inputs("clip_vision", n, seed + 1)}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return S.make_tiny_bert(tmp_path_factory.mktemp("enc") / "bert", dropout=0.0)


def run_cfg(tmp, encoder, *overrides, name="run", lora_dropout=0.0):
    return S.build_config(tmp, encoder, ["model.method=ume_mma", *overrides], name=name, lora_dropout=lora_dropout)


def batch_of(n, missing, seed):
    return S.collate([S.SyntheticDataset(n, missing=missing, seed=seed)[i] for i in range(n)])


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ---- fusion -------------------------------------------------------------------------------------

PRESENT = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)


def test_linear_fusion_leaves_a_missing_branch_out():
    model = tiny_model().eval()
    with torch.no_grad():
        feats = model.encode(tiny_batch(4), PRESENT)
        out = model.select(feats, PRESENT)
    assert out.logits.shape == (4, 3)
    assert feats.cls["t"].shape == (4, 32) and torch.equal(feats.cls["t"][2], torch.zeros(32))
    w, b = model.fusion.weight, model.fusion.bias
    with torch.no_grad():
        torch.testing.assert_close(out.logits[0], w[:, :32] @ feats.cls["t"][0] + w[:, 32:] @ feats.cls["i"][0] + b)
        torch.testing.assert_close(out.logits[1], w[:, :32] @ feats.cls["t"][1] + b)
        # a modality left out at selection contributes nothing, whatever its features
        avail = PRESENT.clone()
        avail[3, 1] = False
        changed = type(feats)(present=feats.present, cls={"t": feats.cls["t"], "i": feats.cls["i"] * 7 + 1})
        a = model.select(feats, avail).logits[3]
        torch.testing.assert_close(a, model.select(changed, avail).logits[3])
        torch.testing.assert_close(a, w[:, :32] @ feats.cls["t"][3] + b)
    assert out.unimodal["t"].shape == (4, 3) and torch.equal(out.unimodal["t"][2], torch.zeros(3))


def test_logit_mean_averages_the_available_heads():
    model = tiny_model(fusion="logit_mean").eval()
    assert model.fusion is None
    with torch.no_grad():
        feats = model.encode(tiny_batch(4), PRESENT)
        out = model.select(feats, PRESENT)
        lt, li = model.heads["t"](feats.cls["t"]), model.heads["i"](feats.cls["i"])
    torch.testing.assert_close(out.logits[0], (lt[0] + li[0]) / 2)
    torch.testing.assert_close(out.logits[1], lt[1])
    torch.testing.assert_close(out.logits[2], li[2])


def test_fusion_starts_as_the_sum_of_the_stage1_heads_once():
    model = tiny_model().eval()
    assert model.init_fusion_from_heads() is True
    with torch.no_grad():
        feats = model.encode(tiny_batch(4), PRESENT)
        out = model.select(feats, PRESENT)
        lt, li = model.heads["t"](feats.cls["t"]), model.heads["i"](feats.cls["i"])
    torch.testing.assert_close(out.logits[0], lt[0] + li[0])
    torch.testing.assert_close(out.logits[1], lt[1] + model.heads["i"].bias.detach())
    with torch.no_grad():
        model.heads["t"].weight.add_(1.0)
    before = model.fusion.weight.detach().clone()
    assert model.init_fusion_from_heads() is False  # a resumed stage 2 keeps its trained fusion
    assert torch.equal(model.fusion.weight, before)


def test_predictions_do_not_depend_on_the_batch():
    model = tiny_model().eval()
    inputs = tiny_batch(4, seed=2)
    with torch.no_grad():
        whole = model(inputs, PRESENT).logits
        alone = torch.cat([model({m: {k: v[i:i + 1] for k, v in x.items()} for m, x in inputs.items()},
                                 PRESENT[i:i + 1]).logits for i in range(4)])
    torch.testing.assert_close(alone, whole, atol=1e-5, rtol=0)


# ---- stages -------------------------------------------------------------------------------------

@pytest.mark.parametrize("epochs,fraction,expected", [(4, 0.5, 2), (5, 0.5, 3), (2, 0.9, 1), (10, 0.05, 1), (10, 0.3, 3)])
def test_stage_schedule_and_selection(encoder, tmp_path, epochs, fraction, expected):
    cfg = run_cfg(tmp_path, encoder, f"train.epochs={epochs}", f"model.ume_mma.stage1_fraction={fraction}")
    method = get_method("ume_mma")
    assert method.stage1_epochs(cfg) == expected
    assert [method.stage(e, cfg) for e in range(epochs)] == [1] * expected + [2] * (epochs - expected)
    assert [method.selectable(e, cfg) for e in range(1, epochs + 1)] == [False] * expected + [True] * (epochs - expected)


def test_one_epoch_is_refused(encoder, tmp_path):
    with pytest.raises(ConfigError, match="train.epochs"):
        get_method("ume_mma").check_run(run_cfg(tmp_path, encoder, "train.epochs=1"))


def _step(model, cfg, epoch, batch, lr=1e-2, seed=0):
    """One training step as the Trainer does it (the method's step, then the optimizer)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    ctx = S.step_context(model, cfg, epoch=epoch, seed=seed)
    method = get_method("ume_mma")
    method.on_epoch_start(model, epoch, cfg)
    losses = method.train_step(ctx, batch)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    opt.zero_grad(set_to_none=True)
    return losses, with_grad


def test_stage1_trains_each_branch_on_its_own_modality(encoder, tmp_path):
    cfg = run_cfg(tmp_path, encoder)
    torch.manual_seed(0)
    model = get_method("ume_mma").build_model(cfg.model)
    before = _params(model)
    losses, with_grad = _step(model, cfg, 0, batch_of(8, 0.5, 5))
    after = _params(model)
    assert set(losses) == {"loss", "fusion", "task/a", "task/b"} and float(losses["fusion"]) == 0.0
    assert float(losses["loss"]) == pytest.approx(float(losses["task/a"]) + float(losses["task/b"]))
    assert {"heads.a.weight", "heads.b.weight", "cls_tokens.a", "cls_tokens.b"} <= with_grad
    assert any("encoders.a." in n and "lora_" in n for n in with_grad)
    assert not any(n.startswith("fusion.") for n in with_grad)
    for n in before:
        changed = not torch.equal(before[n], after[n])
        assert changed == (n in with_grad), n  # fusion and frozen encoder weights bit-identical
        if "lora_" not in n and n.startswith("encoders."):
            assert not changed, n


@pytest.mark.parametrize("train_encoders", [False, True])
def test_stage2_trains_the_fusion_and_freezes_the_encoders(encoder, tmp_path, train_encoders):
    cfg = run_cfg(tmp_path, encoder, f"model.ume_mma.train_encoders_in_stage2={str(train_encoders).lower()}")
    torch.manual_seed(0)
    model = get_method("ume_mma").build_model(cfg.model)
    before = _params(model)
    losses, with_grad = _step(model, cfg, 2, batch_of(8, 0.3, 6))
    assert bool(model.fusion_initialised)
    assert float(losses["task/a"]) == 0.0 and float(losses["loss"]) == float(losses["fusion"]) > 0
    assert {"fusion.weight", "fusion.bias"} <= with_grad
    assert not any(n.startswith("heads.") for n in with_grad)
    lora = {n for n in before if "lora_" in n}
    if train_encoders:
        assert lora & with_grad and "cls_tokens.a" in with_grad
    else:
        assert not (lora & with_grad) and "cls_tokens.a" not in with_grad
        after = _params(model)
        for n in before:
            if n.startswith(("encoders.", "cls_tokens.", "heads.")):
                assert torch.equal(before[n], after[n]), n


def test_stage2_logit_mean_trains_the_heads(encoder, tmp_path):
    cfg = run_cfg(tmp_path, encoder, "model.ume_mma.fusion=logit_mean")
    torch.manual_seed(0)
    model = get_method("ume_mma").build_model(cfg.model)
    _, with_grad = _step(model, cfg, 3, batch_of(8, 0.3, 6))
    assert {"heads.a.weight", "heads.b.weight"} <= with_grad
    assert not any("lora_" in n for n in with_grad)


def test_stage2_drops_modalities_of_complete_samples(encoder, tmp_path):
    """drop_prob 1: every complete sample loses one modality; the loss is the one of the fusion on
    what is left (the same draw from the step's generator)."""
    cfg = run_cfg(tmp_path, encoder, "model.ume_mma.drop_prob=1.0")
    torch.manual_seed(0)
    model = get_method("ume_mma").build_model(cfg.model)
    model.init_fusion_from_heads()
    batch = batch_of(8, 0.25, 7)
    ctx = S.step_context(model, cfg, epoch=2, seed=123)
    losses = get_method("ume_mma").train_step(ctx, batch)
    drop = sample_modality_dropout(batch["present"], torch.Generator().manual_seed(123), keep_prob=0.0)
    complete = batch["present"].all(1)
    assert (drop.sum(1) == complete.long()).all()
    with torch.no_grad():
        dropped = model(batch["inputs"], batch["present"], drop=drop)
        kept = model(batch["inputs"], batch["present"])
    expected = float(task_loss(dropped.logits, batch["labels"], "multiclass"))
    assert float(losses["fusion"]) == pytest.approx(expected, rel=1e-5)
    assert abs(float(task_loss(kept.logits, batch["labels"], "multiclass")) - expected) > 1e-4


# ---- saving, training, resuming -----------------------------------------------------------------

def test_save_load_round_trip(encoder, tmp_path):
    cfg = run_cfg(tmp_path, encoder)
    torch.manual_seed(0)
    model = get_method("ume_mma").build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.init_fusion_from_heads()
    model.save_pretrained(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "u2a_config.json").read_text())
    assert meta["method"] == "ume_mma"
    loaded = load_model(tmp_path / "saved")
    assert type(loaded) is UMEMMAModel and bool(loaded.fusion_initialised)
    batch = batch_of(5, 0.4, 8)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(batch["inputs"], batch["present"]).logits,
                           loaded(batch["inputs"], batch["present"]).logits)


def test_training_through_the_trainer_and_exact_resume(encoder, tmp_path):
    """4 epochs (2 uni-modal, 2 fusion): stage-1 epochs log without validation, the selected epoch
    is a stage-2 one; resumed from a stage-1 checkpoint (crossing into stage 2) and from a stage-2
    one (the fusion is not initialised again), the run ends bit-identical."""
    over = ["train.epochs=4", "train.checkpoint_every_steps=3", "train.keep_last=20"]
    cfg = run_cfg(tmp_path / "ref", encoder, *over, lora_dropout=0.1)
    summary = S.run_training(cfg, n_train=16, n_val=5, missing=0.3)
    assert summary["method"] == "ume_mma" and summary["global_steps"] == 16
    assert summary["best_epoch"] in (3, 4)
    records = read_metrics(cfg.run_dir)
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert ["val" in r for r in epochs] == [False, False, True, True]
    assert epochs[0]["train_losses"]["task/a"] > 0 and epochs[0]["train_losses"]["fusion"] == 0
    assert epochs[3]["train_losses"]["fusion"] > 0 and epochs[3]["train_losses"]["task/a"] == 0
    assert type(load_model(cfg.run_dir / "best")) is UMEMMAModel

    for i, name in enumerate(("step-000006", "step-000009")):
        cut = S.cut_run_at(cfg.run_dir, tmp_path / f"cut{i}" / cfg.name, name)
        cfg2 = run_cfg(tmp_path / f"cut{i}", encoder, *over, lora_dropout=0.1)
        resumed = S.run_training(cfg2, n_train=16, n_val=5, missing=0.3, resume=True)
        assert resumed["resumed_from"].endswith(name)
        assert _strip(resumed) == _strip(summary)
        assert _strip(read_metrics(cut)) == _strip(records)
        for rel in ("checkpoints/epoch-0004/trainable.safetensors", "checkpoints/epoch-0004/optimizer.safetensors",
                    "best/adapter.safetensors"):
            a, b = load_file(str(cfg.run_dir / rel)), load_file(str(cut / rel))
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), (name, rel, k)
