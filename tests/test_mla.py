"""MLA (Zhang et al., CVPR 2024) on tiny random encoders: shapes and fusion, the head-gradient
projector, alternating unimodal steps (gradients only where they belong), batch independence,
save/load, and training and resuming through the real Trainer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import _synthetic as S
from _tiny import tiny_adapter, tiny_inputs
from u2a.config import ModelConfig
from u2a.errors import ConfigError
from u2a.methods import get_method
from u2a.methods.base import load_model
from u2a.methods.mla.config import MLAConfig
from u2a.methods.mla.model import MLAModel, fusion_weights, prediction_entropy
from u2a.train.trainer import read_metrics

VOLATILE = {"samples_per_s", "train_time_s", "time", "run_dir", "resumed_from", "train_samples"}


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def tiny_model(num_classes=3, seed=0, **mla) -> MLAModel:
    """Text (BERT) + image (CLIP vision) tiny encoders; ``common_dim`` 16 so that both project."""
    torch.manual_seed(seed)
    cfg = ModelConfig(method="mla", num_classes=num_classes, common_dim=16, mla=MLAConfig(**mla),
                      modalities=[dict(name="t", encoder="tiny-bert", kind="text"),
                                  dict(name="i", encoder="tiny-clip", kind="image")])
    return MLAModel(cfg, {"t": tiny_adapter("bert"), "i": tiny_adapter("clip_vision")})


def tiny_batch(n, seed=0):
    return {"t": tiny_inputs("bert", n, seed), "i": tiny_inputs("clip_vision", n, seed + 1)}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return S.make_tiny_bert(tmp_path_factory.mktemp("enc") / "bert", dropout=0.0)


def run_cfg(tmp, encoder, *overrides, name="run", lora_dropout=0.0):
    return S.build_config(tmp, encoder, ["model.method=mla", *overrides], name=name, lora_dropout=lora_dropout)


# ---- shapes and fusion ------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", ["entropy", "mean"])
def test_shapes_and_fusion_every_pattern(fusion):
    model = tiny_model(fusion=fusion).eval()
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    with torch.no_grad():
        feats = model.encode(tiny_batch(4), present)
        out = model.select(feats, present)
    assert out.logits.shape == (4, 3)
    assert set(feats.logits) == {"t", "i"} and feats.logits["t"].shape == (4, 3)
    assert torch.equal(feats.logits["t"][2], torch.zeros(3)) and torch.equal(feats.logits["i"][1], torch.zeros(3))
    w = out.weights
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    assert torch.equal(w[~present], torch.zeros(int((~present).sum())))
    # one modality: its own head's prediction, unchanged
    torch.testing.assert_close(out.logits[1], feats.logits["t"][1])
    torch.testing.assert_close(out.logits[2], feats.logits["i"][2])
    lt, li = feats.logits["t"][[0, 3]], feats.logits["i"][[0, 3]]
    if fusion == "mean":
        torch.testing.assert_close(out.logits[[0, 3]], (lt + li) / 2)
    else:
        h = torch.stack([prediction_entropy(lt, "multiclass"), prediction_entropy(li, "multiclass")], 1)
        ww = torch.softmax(-h, dim=1)
        torch.testing.assert_close(out.logits[[0, 3]], ww[:, :1] * lt + ww[:, 1:] * li)
    # dropping a modality at selection = the modality's head alone
    avail = present.clone()
    avail[0, 1] = False
    torch.testing.assert_close(model.select(feats, avail).logits[0], feats.logits["t"][0])


def test_entropy_weights_favour_the_confident_modality_per_sample():
    confident = torch.tensor([8.0, 0.0, 0.0])
    unsure = torch.tensor([0.1, 0.0, 0.05])
    # sample 0: modality 0 confident; sample 1: modality 1 confident
    logits = torch.stack([torch.stack([confident, unsure]), torch.stack([unsure, confident])])
    w = fusion_weights(logits, torch.ones(2, 2, dtype=torch.bool), "multiclass", "entropy")
    assert w[0, 0] > 0.7 and w[1, 1] > 0.7
    torch.testing.assert_close(w[0], w[1].flip(0))
    # multilabel: the sum of the per-class Bernoulli entropies
    h = prediction_entropy(torch.tensor([[0.0, 0.0], [20.0, -20.0]]), "multilabel")
    torch.testing.assert_close(h, torch.tensor([2 * torch.log(torch.tensor(2.0)), 0.0]), atol=1e-6, rtol=0)
    wm = fusion_weights(torch.tensor([[[0.0, 0.0], [20.0, -20.0]]]), torch.ones(1, 2, dtype=torch.bool),
                        "multilabel", "entropy")
    assert wm[0, 1] > wm[0, 0]


def test_predictions_do_not_depend_on_batch_size_or_company():
    """The public code weighs modalities once per batch; here each sample's weights are its own."""
    model = tiny_model().eval()
    n = 7
    inputs = tiny_batch(n, seed=3)
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [1, 1], [0, 1], [1, 1]], dtype=torch.bool)

    def subset(idx):
        idx_t = torch.tensor(idx)
        return {m: {k: v[idx_t] for k, v in x.items()} for m, x in inputs.items()}, present[idx_t]

    # other samples to keep them company: other inputs, other modalities
    extra = tiny_batch(5, seed=11)
    extra_present = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 1], [0, 1]], dtype=torch.bool)
    together = {m: {k: torch.cat([v, extra[m][k]]) for k, v in x.items()} for m, x in inputs.items()}

    with torch.no_grad():
        whole = model(*subset(list(range(n)))).logits
        alone = torch.cat([model(*subset([i])).logits for i in range(n)])
        shuffled = torch.empty_like(whole)
        for chunk in ([5, 2, 6], [0, 3], [1, 4]):
            shuffled[torch.tensor(chunk)] = model(*subset(chunk)).logits
        mixed = model(together, torch.cat([present, extra_present])).logits[:n]
    torch.testing.assert_close(alone, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(shuffled, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed, whole, atol=1e-5, rtol=0)
    assert not torch.allclose(whole[0], whole[3])  # the check compares different predictions


# ---- the head-gradient projector ----------------------------------------------------------------

def test_projector_matches_closed_form_and_stays_symmetric():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    rs = [torch.randn(16, generator=g) for _ in range(5)]
    alphas = [1.0, 0.5, 0.3, 0.2, 0.1]
    for r, a in zip(rs, alphas):
        model.update_projector(r, a)
    expected = torch.linalg.inv(torch.eye(16, dtype=torch.float64)
                                + sum(torch.outer(r, r).double() / a for r, a in zip(rs, alphas)))
    torch.testing.assert_close(model.projector.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.projector, model.projector.T)


def test_projection_changes_the_head_gradient_and_spares_orthogonal_directions():
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    r1, r2 = torch.randn(16, generator=g) * 3, torch.randn(16, generator=g) * 3
    model.update_projector(r1, 1e-3)
    model.update_projector(r2, 1e-3)
    grad = torch.randn(3, 16, generator=g)
    model.head.weight.grad = grad.clone()
    model.head.bias.grad = torch.ones(3)
    model.project_head_grad()
    new = model.head.weight.grad
    # it changes the gradient, as grad @ P ...
    assert (new - grad).abs().max() > 0.1
    torch.testing.assert_close(new, grad @ model.projector, atol=1e-6, rtol=0)
    # ... whose update barely moves the head's output on the stored features (W x changes by G P x)
    assert (new @ r1).abs().max() < 1e-2 * (grad @ r1).abs().max()
    assert (new @ r2).abs().max() < 1e-2 * (grad @ r2).abs().max()
    # directions orthogonal to every stored feature are untouched
    basis, _ = torch.linalg.qr(torch.stack([r1, r2], 1))
    v = torch.randn(16, generator=g)
    v = v - basis @ (basis.T @ v)
    torch.testing.assert_close(new @ v, grad @ v, atol=1e-5, rtol=0)
    # a gradient that lives in the orthogonal complement comes out as it went in
    ortho = grad - (grad @ basis) @ basis.T
    model.head.weight.grad = ortho.clone()
    model.project_head_grad()
    torch.testing.assert_close(model.head.weight.grad, ortho, atol=1e-5, rtol=0)
    # the bias gradient is left as it is
    assert torch.equal(model.head.bias.grad, torch.ones(3))


def test_huge_alpha_is_the_identity():
    model = tiny_model()
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        model.update_projector(torch.randn(16, generator=g) * 5, 1e12)
    torch.testing.assert_close(model.projector, torch.eye(16), atol=1e-8, rtol=0)
    grad = torch.randn(3, 16, generator=g)
    model.head.weight.grad = grad.clone()
    model.project_head_grad()
    torch.testing.assert_close(model.head.weight.grad, grad, atol=1e-7, rtol=0)


def _one_step(encoder, tmp, gm: bool, preset: torch.Tensor):
    """One MLA training step on one batch, from a projector preset to ``preset``; returns the head
    gradients the optimizer saw at each of the two modality steps and the projector afterwards."""
    cfg = run_cfg(tmp, encoder, f"model.mla.gradient_modification={str(gm).lower()}")
    torch.manual_seed(0)
    model = get_method("mla").build_model(cfg.model)
    model.projector.copy_(preset)
    seen = []
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = S.collate([S.SyntheticDataset(6, missing=0.0, seed=4)[i] for i in range(6)])
    ctx = S.step_context(model, cfg, opt, progress=0.5,
                         on_step=lambda m: seen.append(m.head.weight.grad.detach().clone()))
    losses = get_method("mla").train_step(ctx, batch)
    return seen, model, losses


def test_training_step_projects_the_gradient_for_real_and_is_off_when_disabled(encoder, tmp_path):
    g = torch.Generator().manual_seed(3)
    r = torch.randn(32, generator=g) * 2
    preset = torch.linalg.inv(torch.eye(32) + torch.outer(r, r) / 0.5)
    preset = (preset + preset.T) / 2

    on, model_on, losses = _one_step(encoder, tmp_path / "on", True, preset)
    off, model_off, _ = _one_step(encoder, tmp_path / "off", False, preset)
    assert len(on) == len(off) == 2  # one optimizer step per modality
    assert set(losses) == {"loss", "task/a", "task/b", "projector/kept"}
    assert float(losses["projector/kept"]) < float(preset.diagonal().mean())
    # the first step (modality a) starts from the same state: the gradient the optimizer saw is the
    # plain one times the preset projector
    torch.testing.assert_close(on[0], off[0] @ preset, atol=1e-6, rtol=0)
    assert (on[0] - off[0]).abs().max() > 1e-4
    # the projector stored a's and b's batch-mean features (alpha decayed at progress 0.5) ...
    assert not torch.allclose(model_on.projector, preset)
    # ... and nothing when the modification is off
    assert torch.equal(model_off.projector, preset)


# ---- gradients only where they belong -------------------------------------------------------------

def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_alternating_steps_move_only_the_stepped_modality(encoder, tmp_path):
    cfg = run_cfg(tmp_path, encoder)
    torch.manual_seed(0)
    model = get_method("mla").build_model(cfg.model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith(("cls_tokens.", "head.", "proj.")) for n in trainable)
    with_grad = []
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ctx = S.step_context(model, cfg, opt, on_step=lambda m: with_grad.append(
        {n for n, p in m.named_parameters() if p.grad is not None}))
    before = _params(model)
    batch = S.collate([S.SyntheticDataset(8, missing=0.5, seed=5)[i] for i in range(8)])
    get_method("mla").train_step(ctx, batch)
    after = _params(model)
    step_a, step_b = with_grad
    assert any(n.startswith("encoders.a.") for n in step_a) and not any(n.startswith("encoders.b.") for n in step_a)
    assert any(n.startswith("encoders.b.") for n in step_b) and not any(n.startswith("encoders.a.") for n in step_b)
    assert "head.weight" in step_a and "head.weight" in step_b
    assert "cls_tokens.a" in step_a and "cls_tokens.b" not in step_a
    for n in before:
        changed = not torch.equal(before[n], after[n])
        assert changed == (n in trainable), n  # frozen weights bit-identical, every trainable one moved


def test_full_finetuning_trains_blocks_but_not_embeddings(encoder, tmp_path):
    cfg = run_cfg(tmp_path, encoder, "model.mla.finetune=full")
    torch.manual_seed(0)
    model = get_method("mla").build_model(cfg.model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert any(".encoder.layer.0.attention.self.query.weight" in n for n in names)
    assert any(".encoder.layer.1.output.LayerNorm.weight" in n for n in names)
    assert not any(".embeddings." in n for n in names)
    lora_model = get_method("mla").build_model(run_cfg(tmp_path / "l", encoder).model)
    assert model.count_parameters()[1] > 10 * lora_model.count_parameters()[1]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = _params(model)
    batch = S.collate([S.SyntheticDataset(8, missing=0.0, seed=6)[i] for i in range(8)])
    get_method("mla").train_step(S.step_context(model, cfg, opt), batch)
    after = _params(model)
    for n in before:
        if ".embeddings." in n:
            assert torch.equal(before[n], after[n]), n
    assert not torch.equal(before["encoders.a.model.encoder.layer.0.attention.self.query.weight"],
                           after["encoders.a.model.encoder.layer.0.attention.self.query.weight"])


def test_gradient_accumulation_is_refused(encoder, tmp_path):
    cfg = run_cfg(tmp_path, encoder, "train.grad_accum=2")
    with pytest.raises(ConfigError, match="train.grad_accum"):
        get_method("mla").check_run(cfg)


# ---- saving, training, resuming -----------------------------------------------------------------

def test_save_load_round_trip(encoder, tmp_path):
    cfg = run_cfg(tmp_path, encoder, "model.mla.fusion=entropy")
    torch.manual_seed(0)
    model = get_method("mla").build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.update_projector(torch.randn(32), 0.5)
    model.save_pretrained(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "u2a_config.json").read_text())
    assert meta["method"] == "mla" and meta["model"]["mla"]["fusion"] == "entropy"
    loaded = load_model(tmp_path / "saved")
    assert type(loaded) is MLAModel
    assert torch.equal(loaded.projector, model.projector)
    batch = S.collate([S.SyntheticDataset(5, missing=0.4, seed=7)[i] for i in range(5)])
    model.eval()
    loaded.eval()
    with torch.no_grad():
        a = model(batch["inputs"], batch["present"]).logits
        b = loaded(batch["inputs"], batch["present"]).logits
    assert torch.equal(a, b)


def test_training_through_the_trainer_and_exact_resume(encoder, tmp_path):
    """A short run with model.method=mla (LoRA dropout on, so the RNG state matters), and the same
    run resumed from a mid-epoch checkpoint: bit-identical weights, projector, optimizer and logs."""
    over = ["train.epochs=2", "train.checkpoint_every_steps=3", "train.keep_last=10"]
    cfg = run_cfg(tmp_path / "ref", encoder, *over, lora_dropout=0.1)
    summary = S.run_training(cfg, n_train=20, n_val=5, missing=0.3)
    assert summary["method"] == "mla" and summary["method_label"] == "MLA"
    assert summary["global_steps"] == 10 and summary["best_epoch"] in (1, 2)
    records = read_metrics(cfg.run_dir)
    steps = [r for r in records if r["type"] == "step"]
    assert steps and all({"loss", "task/a", "task/b", "projector/kept"} <= set(r) for r in steps)
    kept = [r["projector/kept"] for r in steps]
    assert kept == sorted(kept, reverse=True) and kept[-1] < 1.0
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]
    ck = load_file(str(cfg.run_dir / "checkpoints" / "epoch-0002" / "trainable.safetensors"))
    assert "projector" in ck and not torch.allclose(ck["projector"], torch.eye(32))
    best = load_model(cfg.run_dir / "best")
    assert type(best) is MLAModel

    # "killed" after the step-3 checkpoint (inside epoch 1), then resumed
    cut = S.cut_run_at(cfg.run_dir, tmp_path / "cut" / cfg.name, "step-000003")
    cfg2 = run_cfg(tmp_path / "cut", encoder, *over, lora_dropout=0.1)
    assert cfg2.run_dir == cut
    resumed = S.run_training(cfg2, n_train=20, n_val=5, missing=0.3, resume=True)
    assert resumed["resumed_from"].endswith("step-000003")
    assert _strip(resumed) == _strip(summary)
    assert _strip(read_metrics(cut)) == _strip(records)
    for rel in ("checkpoints/epoch-0002/trainable.safetensors", "checkpoints/epoch-0002/optimizer.safetensors",
                "best/adapter.safetensors"):
        a, b = load_file(str(cfg.run_dir / rel)), load_file(str(cut / rel))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (rel, k)
