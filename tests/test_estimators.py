"""The U2A estimator switches (model.u2a): what each one guarantees, on tiny random encoders."""

from __future__ import annotations

import pytest
import torch

from _tiny import KIND, tiny_adapter, tiny_inputs
from u2a.config import ModelConfig
from u2a.methods.u2a.config import U2AConfig
from u2a.methods.u2a.estimators import reachable_floor
from u2a.methods.u2a.losses import alignment_terms, u2a_loss
from u2a.methods.u2a.model import U2AModel

FAMS = ("dinov2", "bert")


def make(fams=FAMS, seed=0, **u2a):
    torch.manual_seed(seed)
    mods = [dict(name=f"m{i}", encoder=f"tiny-{f}", kind=KIND[f]) for i, f in enumerate(fams)]
    cfg = ModelConfig(modalities=mods, num_classes=3, u2a=U2AConfig(**u2a))
    return U2AModel(cfg, {f"m{i}": tiny_adapter(f) for i, f in enumerate(fams)})


def inputs(n=4, fams=FAMS):
    return {f"m{i}": tiny_inputs(f, n, seed=i) for i, f in enumerate(fams)}


def lora_grads(model, modality):
    return {n: p.grad for n, p in model.encoders[modality].named_parameters() if "lora_" in n}


def test_stop_gradient_leaves_the_target_encoders_lora_without_alignment_gradient():
    """With stop_grad_target the alignment term MSE(estimate from m0, CLS(m1)) sends no gradient
    into m1's encoder (its LoRA): only the source side learns to align. Without it, it does."""
    present = torch.ones(4, 2, dtype=torch.bool)
    for stop, expect_zero in ((True, True), (False, False)):
        model = make(estimator="paper", stop_grad_target=stop)
        model.train()
        for m in model.modalities:  # LoRA B starts at 0: give it a value so that A gets gradient too
            for n, p in model.encoders[m].named_parameters():
                if "lora_B" in n:
                    torch.nn.init.normal_(p, std=0.1)
        out = model(inputs(), present)
        term = alignment_terms(out, model.modalities, stop_grad_target=stop)["m0->m1"]
        term.backward()
        grads = lora_grads(model, "m1")
        total = sum(float(g.abs().sum()) for g in grads.values() if g is not None)
        if expect_zero:
            assert all(g is None or float(g.abs().max()) == 0.0 for g in grads.values())
        else:
            assert total > 0
        # the source side always learns from it
        assert sum(float(g.abs().sum()) for g in lora_grads(model, "m0").values() if g is not None) > 0


@pytest.mark.parametrize("fams", [("dinov2", "bert"), ("clip_vision", "roberta"), ("vit", "ast")])
def test_one_way_attention_keeps_the_cls_path_bit_identical_to_a_model_without_mask_tokens(fams):
    """one_way_attention: nothing attends to the mask tokens, so each available modality's CLS
    output equals, bit for bit, that of the same model without mask tokens (same weights)."""
    with_mt = make(fams, estimator="paper", one_way_attention=True).eval()
    without = make(fams, mask_tokens=False).eval()
    state = {k: v for k, v in with_mt.state_dict().items() if not k.startswith("mask_tokens")}
    without.load_state_dict(state, strict=False)
    for m in with_mt.modalities:
        with_mt.encoders[m].model.set_attn_implementation("eager")
        without.encoders[m].model.set_attn_implementation("eager")
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    x = inputs(4, fams)
    with torch.no_grad():
        a = with_mt.encode(x, present)
        b = without.encode(x, present)
    for m in with_mt.modalities:
        assert torch.equal(a.cls[m], b.cls[m]), m
    # and two-way (the paper) does change it
    two_way = make(fams, estimator="paper", one_way_attention=False).eval()
    two_way.load_state_dict(with_mt.state_dict())
    with torch.no_grad():
        c = two_way.encode(x, present)
    assert any(not torch.equal(c.cls[m], b.cls[m]) for m in with_mt.modalities)


@pytest.mark.parametrize("output", ["residual", "linear"])
def test_anchored_estimators_equal_the_mean_placeholder_at_init(output):
    """residual / linear outputs start at mean_t (gain 0 / U = 0): an untrained U2A fills a missing
    slot with the training mean of CLS(t), like a mean placeholder, for every sample."""
    model = make(estimator="anchored", output=output).eval()
    mean = {m: torch.randn(32) for m in model.modalities}
    var = {m: torch.rand(32) + 0.5 for m in model.modalities}
    model.set_target_stats(mean, var)
    if output == "linear":
        model.set_source_stats({k: torch.randn(32) for k in model.source_stats},
                               {k: torch.rand(32) + 0.5 for k in model.source_stats})
    present = torch.tensor([[1, 0], [0, 1], [1, 0]], dtype=torch.bool)
    with torch.no_grad():
        feats = model.encode(inputs(3), present)
    torch.testing.assert_close(feats.mt[("m0", "m1")][[0, 2]], mean["m1"].expand(2, -1))
    torch.testing.assert_close(feats.mt[("m1", "m0")][[1]], mean["m0"].expand(1, -1))


def test_linear_estimator_learns_a_regression_and_beats_the_constant():
    """The linear output standardises the MT output and maps it to the target: trained on the
    alignment loss alone it gets below the constant's MSE on a target it can predict."""
    torch.manual_seed(0)
    model = make(estimator="anchored", output="linear", estimator_rank=8, one_way_attention=True)
    model.train()
    x = inputs(16)
    present = torch.ones(16, 2, dtype=torch.bool)
    with torch.no_grad():
        f0 = model.encode(x, present)
    model.set_target_stats({m: f0.align_target[m].mean(0) for m in model.modalities},
                           {m: f0.align_target[m].var(0, unbiased=False) for m in model.modalities})
    model.set_source_stats({f"{s}_to_{t}": f0.mt_source[(s, t)].mean(0) for (s, t) in f0.mt_source},
                           {f"{s}_to_{t}": f0.mt_source[(s, t)].var(0, unbiased=False) for (s, t) in f0.mt_source})
    params = [p for n, p in model.named_parameters() if n.startswith(("up.", "down.", "anchor."))]
    opt = torch.optim.Adam(params, lr=1e-2)
    for m in model.modalities:  # freeze the encoders' dropout noise out of this check
        model.encoders[m].eval()
    for _ in range(300):
        out = model(x, present)
        loss = sum(alignment_terms(out, model.modalities, stop_grad_target=True).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        errs = model.estimate_errors(model.estimate_sums(model.encode(x, present)))
    for d, e in errs.items():
        assert e["mse"] < 0.5 * e["constant_mse"], (d, e)


def test_detached_estimate_gets_no_task_gradient():
    """detach_estimate: the task loss trains the head to use the estimate, not the estimator (with
    one-way attention the mask tokens then get no task gradient at all; with two-way attention the
    CLS tokens attend to them, so the task still reaches them through the CLS path)."""
    model = make(estimator="paper", detach_estimate=True, one_way_attention=True)
    model.train()
    present = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)
    out = model(inputs(), present)
    losses = u2a_loss(out, torch.tensor([0, 1, 2, 0]), model.modalities, "multiclass", align_weight=0.0)
    losses["loss"].backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.mask_tokens.values())
    assert float(model.head.weight.grad.abs().sum()) > 0


def test_floor_against_brute_force_on_tiny_norms():
    """reachable_floor is the exact minimum over outputs of a LayerNorm with the given scale and
    shift (the sphere |z|^2 = d inside sum(z) = 0): a many-start projected gradient search never
    does better, and gets within 1e-4 of it."""
    g = torch.Generator().manual_seed(3)
    for d in (4, 7):
        gamma = torch.rand(d, generator=g) * 3 + 0.1
        beta = torch.randn(d, generator=g)
        y = torch.randn(6, d, generator=g) * 0.5
        floor = reachable_floor(gamma, beta, y)
        best = torch.full((6,), float("inf"))
        for _ in range(60):
            z = torch.randn(6, d, generator=g).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=0.05)
            for _ in range(250):
                zz = z - z.mean(1, keepdim=True)
                zz = zz * (d / (zz ** 2).sum(1, keepdim=True)).sqrt()
                loss = ((gamma * zz + beta - y) ** 2).mean(1)
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
            best = torch.minimum(best, loss.detach())
        assert (best >= floor - 1e-5).all()
        assert torch.allclose(best, floor, atol=1e-4), (best, floor)


def test_floor_check_warns_when_the_papers_estimator_cannot_beat_a_constant():
    """The check printed before training: a source norm whose outputs are far from the targets
    (targets tiny, scale large) is flagged; a target manifold output is not."""
    from u2a.methods.u2a.method import U2AMethod

    model = make(estimator="paper").eval()
    with torch.no_grad():
        for m in model.modalities:
            model.encoders[m].final_norm.weight.fill_(5.0)
            model.encoders[m].final_norm.bias.zero_()
    targets = {m: torch.randn(20, 32) * 0.05 for m in model.modalities}
    checks = U2AMethod().floor_checks(model, targets)
    assert {c.source for c in checks} == {"m0", "m1"}
    assert all(c.floor > c.constant and not c.beats_constant and "WARNING" in c.note for c in checks)
    ok = make(estimator="anchored", output="target_norm").eval()
    assert all(c.floor == 0.0 for c in U2AMethod().floor_checks(ok, targets))


def test_align_encoder_false_keeps_alignment_out_of_the_encoder():
    """align_encoder=false: the alignment loss trains the estimate map only (a probe); the mask
    tokens and LoRA get no gradient from it."""
    model = make(estimator="paper", output="linear", align_encoder=False, stop_grad_target=True)
    model.train()
    for m in model.modalities:
        for n, p in model.encoders[m].named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        for key in model.up:
            torch.nn.init.normal_(model.up[key].weight, std=0.1)
    out = model(inputs(), torch.ones(4, 2, dtype=torch.bool))
    sum(alignment_terms(out, model.modalities, stop_grad_target=True).values()).backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.mask_tokens.values())
    for m in model.modalities:
        assert all(g is None or float(g.abs().max()) == 0.0 for g in lora_grads(model, m).values())
    assert all(float(model.up[k].weight.grad.abs().sum()) > 0 for k in model.up)


def test_source_alignment_trains_the_encoder_while_the_probe_fills_the_slot():
    """source_align_weight > 0 with a probe estimator: the paper's eq. 6 on the raw MT output adds a
    loss that reaches the mask tokens (cross-modal training of the encoder) while the slot is the
    probe's estimate."""
    model = make(estimator="paper", output="linear", align_encoder=False, stop_grad_target=True,
                 detach_estimate=True, source_align_weight=0.2)
    model.train()
    out = model(inputs(), torch.ones(4, 2, dtype=torch.bool))
    losses = u2a_loss(out, torch.tensor([0, 1, 2, 0]), model.modalities, "multiclass", 0.2,
                      stop_grad_target=True, source_align_weight=0.2)
    assert "source_align" in losses and losses["source_align"].item() > 0
    losses["source_align"].backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in model.mask_tokens.values())


@pytest.mark.parametrize("mask_tokens", [True, False])
def test_token_lr_gives_each_modalitys_tokens_a_group_scaled_to_its_embedding_rms(mask_tokens):
    """``token_lr``: the CLS token (and the mask token, where there is one) of each modality get
    ``token_lr x RMS(embedded tokens)`` as learning rate; every other trainable parameter keeps the
    base rate. A model without mask tokens gets the same for its CLS tokens."""
    from types import SimpleNamespace

    from u2a.methods.u2a.method import U2AMethod

    model = make(token_lr=0.01, mask_tokens=mask_tokens)
    n = 6

    def collate(rows):
        return {"inputs": inputs(len(rows)), "present": torch.ones(len(rows), 2, dtype=torch.bool),
                "ids": [str(r) for r in rows]}

    cfg = SimpleNamespace(model=SimpleNamespace(u2a=SimpleNamespace(stats_samples=n)),
                          train=SimpleNamespace(seed=0, lr=5e-3))
    method = U2AMethod()
    info = method.prepare(model, list(range(n)), collate, cfg, lambda line: None)
    groups = {g["name"]: g for g in method.param_groups(model, cfg)}
    assert set(groups) == {"main", "tokens/m0", "tokens/m1"}
    x = inputs(n)
    model.eval()  # as the statistics pass embeds: without the embeddings' dropout
    for m in model.modalities:
        with torch.no_grad():
            tok, mask = model.encoders[m].embed(x[m])
        w = torch.ones(tok.shape[:2]) if mask is None else mask.float()
        rms = float((((tok.float() ** 2).mean(-1) * w).sum() / w.sum()) ** 0.5)
        assert info["embed_rms"][m] == pytest.approx(rms, rel=1e-5)
        assert groups[f"tokens/{m}"]["lr"] == pytest.approx(0.01 * rms, rel=1e-5)
        want = [model.cls_tokens[m]] + ([model.mask_tokens[m]] if mask_tokens else [])
        assert [id(p) for p in groups[f"tokens/{m}"]["params"]] == [id(p) for p in want]
    assert groups["main"]["lr"] == 5e-3
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)
