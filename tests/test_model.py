"""The U2A model over tiny random encoders of every family."""

from __future__ import annotations

import itertools

import pytest
import torch

from _tiny import KIND, save_tiny, tiny_adapter, tiny_inputs
from u2a.config import ModelConfig
from u2a.errors import ModelError
from u2a.methods.u2a.config import U2AConfig
from u2a.methods.u2a.dropout import sample_modality_dropout
from u2a.methods.u2a.losses import u2a_loss
from u2a.methods.u2a.model import U2AModel

ESTIMATORS = ["paper", "probe", "task_probe"]


def alignment_loss(out, modalities):
    """The paper's eq. 6: the sum over directions of the per-direction MSE."""
    return u2a_loss(out, torch.zeros(len(out.logits), dtype=torch.long), modalities, "multiclass", 1.0)["align"]

# every family appears at least once, paired with another kind of modality
PAIRS = [("clip_vision", "bert"), ("dinov2", "roberta"), ("vit", "mpnet"), ("ast", "clip_vision"), ("whisper", "dinov2")]


def make_model(families, num_classes=3, mask_tokens=True, folders=None, seed=0, estimator="paper", u2a=None, **kw):
    torch.manual_seed(seed)
    mods = [dict(name=f"m{i}", encoder=(folders[i] if folders else f"tiny-{f}"), kind=KIND[f]) for i, f in enumerate(families)]
    ucfg = U2AConfig(mask_tokens=mask_tokens, estimator=estimator, **(u2a or {}))
    cfg = ModelConfig(modalities=mods, num_classes=num_classes, u2a=ucfg, **kw)
    if folders:
        return U2AModel.from_config(cfg)
    return U2AModel(cfg, {f"m{i}": tiny_adapter(f) for i, f in enumerate(families)})


def full_inputs(families, n, seed=0):
    return {f"m{i}": tiny_inputs(f, n, seed + i) for i, f in enumerate(families)}


def all_patterns(m: int):
    return [p for p in itertools.product([True, False], repeat=m) if any(p)]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("fams", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_shapes_and_selection_every_pattern(fams, estimator):
    model = make_model(fams, estimator=estimator).eval()
    pats = all_patterns(2)
    present = torch.tensor([p for p in pats for _ in range(2)])  # 6 samples, 3 patterns
    inputs = full_inputs(fams, len(present))
    with torch.no_grad():
        out = model(inputs, present)
        feats = model.encode(inputs, present)
    assert out.logits.shape == (len(present), 3)
    assert out.fused.shape == (len(present), model.dim)
    c0, c1 = feats.cls["m0"], feats.cls["m1"]
    mt01, mt10 = feats.mt[("m0", "m1")], feats.mt[("m1", "m0")]
    for i, (a, b) in enumerate(present.tolist()):
        if a and b:
            expected = c0[i] + c1[i]
        elif a:  # m1 missing -> (CLS m0, MT of m0)
            expected = c0[i] + mt01[i]
        else:  # m0 missing -> (MT of m1, CLS m1)
            expected = mt10[i] + c1[i]
        torch.testing.assert_close(out.fused[i], expected)
    torch.testing.assert_close(out.logits, model.head(out.fused))


def test_n3_selection_uses_mean_of_available_mask_tokens():
    fams = ("bert", "clip_vision", "ast")
    model = make_model(fams).eval()
    present = torch.tensor(all_patterns(3))
    inputs = full_inputs(fams, len(present))
    with torch.no_grad():
        out = model(inputs, present)
        feats = model.encode(inputs, present)
    assert set(feats.mt) == {(s, t) for s in model.modalities for t in model.modalities if s != t}
    for i, row in enumerate(present.tolist()):
        expected = 0
        for ti, t in enumerate(model.modalities):
            if row[ti]:
                expected = expected + feats.cls[t][i]
            else:
                src = [s for si, s in enumerate(model.modalities) if row[si] and s != t]
                expected = expected + torch.stack([feats.mt[(s, t)][i] for s in src]).mean(0)
        torch.testing.assert_close(out.fused[i], expected)
    # learnable: 3 CLS + 6 mask tokens
    assert model.mask_tokens["m0"].shape == (2, 32)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("fams", PAIRS[:3], ids=["+".join(p) for p in PAIRS[:3]])
def test_only_trainable_parameters_change(fams, estimator):
    model = make_model(fams, estimator=estimator)
    model.train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    own = {"cls_tokens", "mask_tokens", "head", "proj", "gain", "anchor", "bridge", "up", "down"}
    assert all("lora_" in n or n.split(".")[0] in own for n in trainable)
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    inputs = full_inputs(fams, 4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = u2a_loss(model(inputs, present), torch.tensor([0, 1, 2, 0]), model.modalities, "multiclass", 0.2)
    loss["loss"].backward()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
    # LoRA B starts at zero, so after one step every trainable group has moved
    opt.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert any("lora_B" in n for n in moved)
    assert any(n.startswith("cls_tokens") for n in moved)
    # the paper's estimate is the mask tokens' output; the probe starts at the mean (U = 0): its up
    # map moves first, and the mask tokens learn from the paper's alignment term
    assert any(n.startswith("mask_tokens") for n in moved)
    if estimator != "paper":
        assert any(n.startswith("up.") for n in moved)
    assert any(n.startswith("head") for n in moved)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("fams", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_skipping_absent_inputs_equals_placeholders_then_selection(fams, estimator):
    """The encoders run only on the samples that have the modality; feeding placeholders for the
    others and then selecting gives the same logits."""
    model = make_model(fams, estimator=estimator).eval()
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)
    inputs = full_inputs(fams, 5)
    placeheld = {}
    for i, m in enumerate(model.modalities):
        enc = model.encoders[m]
        x = {k: v.clone() for k, v in inputs[m].items()}
        ph = enc.placeholder_inputs(5, like=x)
        for k in x:
            if k in ph:
                x[k][~present[:, i]] = ph[k][~present[:, i]]
        placeheld[m] = x
    compact = {m: {k: v[present[:, i]] for k, v in inputs[m].items()} for i, m in enumerate(model.modalities)}
    with torch.no_grad():
        skipped = model(compact, present).logits
        subset = model(placeheld, present).logits
        everything = model(placeheld, present, encode_all=True).logits
    torch.testing.assert_close(skipped, everything, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(subset, everything, atol=1e-5, rtol=1e-5)


def test_ablation_without_mask_tokens_uses_placeholder_cls():
    fams = ("clip_vision", "bert")
    model = make_model(fams, mask_tokens=False).eval()
    assert len(model.mask_tokens) == 0
    present = torch.tensor([[1, 1], [1, 0], [0, 1]], dtype=torch.bool)
    inputs = full_inputs(fams, 3)
    with torch.no_grad():
        out = model(inputs, present)
        # the placeholder's CLS: encode a placeholder sample as if it were real
        ph = {m: model.encoders[m].placeholder_inputs(1, like=inputs[m]) for m in model.modalities}
        ph_feats = model.encode(ph, torch.ones(1, 2, dtype=torch.bool))
        feats = model.encode(inputs, present)
    torch.testing.assert_close(out.fused[1], feats.cls["m0"][1] + ph_feats.cls["m1"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.fused[2], ph_feats.cls["m0"][0] + feats.cls["m1"][2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fams", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_ablation_encodes_its_placeholder_as_one_more_row(fams, monkeypatch):
    """The placeholder rides in the batch: one encoder pass per modality, the same placeholder CLS
    as a pass of its own, and the task loss reaches the LoRA weights through it."""
    model = make_model(fams, mask_tokens=False).eval()
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    inputs = full_inputs(fams, 4)
    calls = []
    real = model.run_encoder

    def counting(m, x, *a, **k):
        calls.append((m, next(iter(x.values())).shape[0]))
        return real(m, x, *a, **k)

    monkeypatch.setattr(model, "run_encoder", counting)
    with torch.no_grad():
        feats = model.encode(inputs, present, need_placeholder=~present)
    assert sorted(calls) == [("m0", 4), ("m1", 4)]  # 3 present rows + the placeholder, each
    monkeypatch.setattr(model, "run_encoder", real)
    with torch.no_grad():
        for m in model.modalities:
            alone = model._placeholder_cls(m, inputs[m])
            torch.testing.assert_close(feats.placeholder_cls[m], alone, atol=1e-5, rtol=1e-5)
    # nothing of m1 in the batch: its placeholder still gets a pass of its own
    only0 = torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)
    with torch.no_grad():
        f0 = model.encode({"m0": tiny_inputs(fams[0], 2, 0)}, only0, need_placeholder=~only0)
        torch.testing.assert_close(f0.placeholder_cls["m1"], model._placeholder_cls("m1", None), atol=1e-5, rtol=1e-5)
    model.train()
    out = model({"m0": {k: v[:1] for k, v in inputs["m0"].items()}}, torch.tensor([[1, 0]], dtype=torch.bool))
    out.logits.sum().backward()
    lora_b = [p for n, p in model.named_parameters() if n.startswith("encoders.m1.") and "lora_B" in n]
    assert lora_b and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


@pytest.mark.parametrize("family", ["dinov2", "clip_vision", "vit", "ast"])
def test_placeholder_is_the_same_input_with_or_without_the_modality_in_the_batch(family):
    """The ablation's placeholder has the shape the data pipeline gives the modality (images at the
    modality's image_size, audio at its max_length), not the encoder config's native one: its CLS
    feature is the same when the batch holds real inputs of the modality and when it holds none
    (a text-only batch). Before, a batch without images got a placeholder at the config's size
    (518 px for DINOv2): another input, and for DINOv2 at 84 px a 6x slower training step."""
    fams = (family, "bert")
    small = {"input_values": torch.randn(3, 40, 32)} if family == "ast" else {"pixel_values": torch.randn(3, 3, 16, 16)}
    mods = [dict(name="m0", encoder=f"tiny-{family}", kind=KIND[family], **({"max_length": 40} if family == "ast" else {"image_size": 16})),
            dict(name="m1", encoder="tiny-bert", kind="text")]
    torch.manual_seed(0)
    model = U2AModel(ModelConfig(modalities=mods, num_classes=3, u2a=U2AConfig(mask_tokens=False)),
                     {"m0": tiny_adapter(family), "m1": tiny_adapter("bert")}).eval()
    assert model.encoders["m0"].input_shape == tuple(next(iter(small.values())).shape[1:])
    present = torch.tensor([[1, 1], [1, 0], [0, 1]], dtype=torch.bool)
    text_only = torch.tensor([[0, 1], [0, 1]], dtype=torch.bool)
    with torch.no_grad():
        with_m0 = model.encode({"m0": small, "m1": tiny_inputs("bert", 3)}, present, need_placeholder=~present)
        without_m0 = model.encode({"m1": tiny_inputs("bert", 2)}, text_only, need_placeholder=~text_only)
    torch.testing.assert_close(without_m0.placeholder_cls["m0"], with_m0.placeholder_cls["m0"], atol=1e-5, rtol=1e-5)
    # and a placeholder of the encoder config's native size would have been another input
    native = tiny_adapter(family).placeholder_inputs(1)
    assert next(iter(native.values())).shape[1:] != next(iter(small.values())).shape[1:]


def test_processed_image_size_is_the_processors_output_not_the_configs(tmp_path):
    """Without an image_size the placeholder takes the size the encoder's own processor gives
    (DINOv2's processor crops to 224 while its config says 518); image_size wins where set."""
    from transformers import BitImageProcessor

    from u2a.config import ModalityConfig
    from u2a.data.processing import processed_image_size

    folder = save_tiny("dinov2", tmp_path / "dino")
    BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 24, "width": 24}, do_center_crop=True).save_pretrained(folder)
    assert processed_image_size(ModalityConfig(name="image", encoder=folder)) == 24
    assert processed_image_size(ModalityConfig(name="image", encoder=folder, image_size=16)) == 16
    assert processed_image_size(ModalityConfig(name="image", encoder=str(tmp_path / "nothing-here"))) is None
    model = U2AModel.from_config(ModelConfig(modalities=[dict(name="image", encoder=folder),
                                                         dict(name="text", encoder=save_tiny("bert", tmp_path / "bert"))],
                                             num_classes=2, u2a=U2AConfig(mask_tokens=False)))
    assert model.encoders["image"].input_shape == (3, 24, 24)  # the tiny config's native size is 32


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("fams", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_save_load_round_trip_and_merge(tmp_path, fams, estimator):
    folders = [save_tiny(f, tmp_path / f"enc{i}") for i, f in enumerate(fams)]
    model = make_model(fams, folders=folders, estimator=estimator)
    if estimator != "paper":  # statistics are saved with the model
        model.set_target_stats({m: torch.randn(32) for m in model.modalities},
                               {m: torch.rand(32) + 0.5 for m in model.modalities})
        model.set_source_stats({k: torch.randn(32) for k in model.source_stats},
                               {k: torch.rand(32) + 0.5 for k in model.source_stats})
    # train a step so LoRA and tokens are not at their initial values
    present = torch.tensor([[1, 1], [1, 0], [0, 1]], dtype=torch.bool)
    inputs = full_inputs(fams, 3)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        u2a_loss(model(inputs, present), torch.tensor([0, 1, 2]), model.modalities, "multiclass", 0.2)["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        before = model(inputs, present).logits
    model.save_pretrained(tmp_path / "saved")
    files = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert files == ["adapter.safetensors", "u2a_config.json"]
    loaded = U2AModel.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        after = loaded(inputs, present).logits
    torch.testing.assert_close(after, before, atol=1e-6, rtol=1e-6)
    # merge folds LoRA into the base weights
    loaded.merge_lora()
    with torch.no_grad():
        merged = loaded(inputs, present).logits
    assert (merged - before).abs().max() < 1e-5
    with pytest.raises(ModelError, match="merged"):
        loaded.save_pretrained(tmp_path / "again")
    loaded.unmerge_lora()
    loaded.save_pretrained(tmp_path / "again")


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_saved_weights_hold_only_trainable_parameters_and_statistics(tmp_path, estimator):
    from safetensors.torch import load_file

    fams = ("clip_vision", "bert")
    folders = [save_tiny(f, tmp_path / f"enc{i}") for i, f in enumerate(fams)]
    model = make_model(fams, folders=folders, estimator=estimator)
    model.save_pretrained(tmp_path / "saved")
    state = load_file(str(tmp_path / "saved" / "adapter.safetensors"))
    stats = {n for n in state if n.startswith(("stats.", "source_stats."))}
    assert set(state) - stats == {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(v.numel() for n, v in state.items() if n not in stats) == model.count_parameters()[1]
    # the paper's estimator needs no statistics; the probe stores mean and variance per target and of
    # each mask token's output
    want = set() if estimator == "paper" else (
        {f"stats.{m}.{k}" for m in model.modalities for k in ("mean", "var", "run_mean", "run_var")}
        | {f"source_stats.{s}_to_{t}.{k}" for s in model.modalities for t in model.modalities if s != t
           for k in ("mean", "var", "run_mean", "run_var")})
    stats = {n for n in state if n.startswith(("stats.", "source_stats."))}
    assert stats == want


def test_corrupt_weights_give_clear_error(tmp_path):
    fams = ("clip_vision", "bert")
    folders = [save_tiny(f, tmp_path / f"enc{i}") for i, f in enumerate(fams)]
    make_model(fams, folders=folders).save_pretrained(tmp_path / "saved")
    w = tmp_path / "saved" / "adapter.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        U2AModel.from_pretrained(tmp_path / "saved")


def test_all_missing_sample_is_an_error_naming_it():
    fams = ("clip_vision", "bert")
    model = make_model(fams).eval()
    present = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    with pytest.raises(ModelError, match="'food-17'"):
        model(full_inputs(fams, 2), present, ids=["food-3", "food-17"])


def test_batch_whose_modalities_disagree_in_size():
    fams = ("clip_vision", "bert")
    model = make_model(fams).eval()
    present = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    inputs = full_inputs(fams, 4)
    inputs["m1"] = tiny_inputs("bert", 2)  # 3 samples have m1
    with pytest.raises(ModelError, match="'m1'.*2 rows.*4 samples.*3 have"):
        model(inputs, present)
    inputs = full_inputs(fams, 4)
    inputs["m1"]["attention_mask"] = inputs["m1"]["attention_mask"][:3]
    with pytest.raises(ModelError, match="disagree in batch size"):
        model(inputs, present)


def test_alignment_loss_only_on_samples_that_have_both():
    fams = ("clip_vision", "bert")
    model = make_model(fams).eval()
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    with torch.no_grad():
        out = model(full_inputs(fams, 4), present)
    both = torch.tensor([0, 3])
    expected = torch.nn.functional.mse_loss(out.mt[("m0", "m1")][both], out.cls["m1"][both]) + torch.nn.functional.mse_loss(
        out.mt[("m1", "m0")][both], out.cls["m0"][both]
    )
    torch.testing.assert_close(alignment_loss(out, model.modalities), expected)
    # a dropped modality still serves as alignment target
    drop = torch.tensor([[0, 1], [0, 0], [0, 0], [1, 0]], dtype=torch.bool)
    with torch.no_grad():
        out_d = model(full_inputs(fams, 4), present, drop=drop)
    torch.testing.assert_close(alignment_loss(out_d, model.modalities), expected)
    torch.testing.assert_close(out_d.fused[0], out.cls["m0"][0] + out.mt[("m0", "m1")][0])


def test_multilabel_loss_is_bce():
    fams = ("clip_vision", "bert")
    model = make_model(fams, num_classes=4, task="multilabel").eval()
    present = torch.ones(2, 2, dtype=torch.bool)
    y = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float)
    with torch.no_grad():
        out = model(full_inputs(fams, 2), present)
    loss = u2a_loss(out, y, model.modalities, "multilabel", 0.0)
    torch.testing.assert_close(loss["loss"], torch.nn.functional.binary_cross_entropy_with_logits(out.logits, y))


def test_modality_dropout_only_on_complete_samples():
    present = torch.tensor([[1, 1]] * 3000 + [[1, 0]] * 100, dtype=torch.bool)
    drop = sample_modality_dropout(present, torch.Generator().manual_seed(0))
    assert not drop[3000:].any()
    assert (drop.sum(1) <= 1).all()
    frac = drop[:3000].float().mean(0)
    # keep all / drop m0 / drop m1 uniformly: 1/3 each
    assert torch.allclose(frac, torch.tensor([1 / 3, 1 / 3]), atol=0.03)
    drop = sample_modality_dropout(present, torch.Generator().manual_seed(0), keep_prob=0.5)
    assert abs(drop[:3000].any(1).float().mean().item() - 0.5) < 0.03


def test_every_case_is_the_expectation_of_modality_dropout():
    from u2a.methods.u2a.dropout import every_case

    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    for keep_prob, weights in ((None, [1 / 3] * 3), (0.5, [0.5, 0.25, 0.25])):
        cases = every_case(present, keep_prob)
        assert [w for w, _ in cases] == pytest.approx(weights)
        drops = [d for _, d in cases]
        assert not drops[0].any()
        # drop-one cases touch only the complete samples, one modality each
        assert drops[1].tolist() == [[True, False], [False, False], [False, False], [True, False]]
        assert drops[2].tolist() == [[False, True], [False, False], [False, False], [False, True]]
    # every outcome sample_modality_dropout can draw is one of the cases
    drawn = sample_modality_dropout(present, torch.Generator().manual_seed(0))
    assert any(torch.equal(drawn[0], d[0]) for _, d in every_case(present))


@pytest.mark.parametrize("mask_tokens", [True, False], ids=["mask_tokens", "no_mask_tokens"])
def test_all_cases_from_one_encoder_pass_equal_separate_forwards(mask_tokens):
    from u2a.methods.u2a.dropout import every_case

    fams = ("dinov2", "bert")
    model = make_model(fams, mask_tokens=mask_tokens, estimator="probe").eval()
    present = torch.tensor([[1, 1], [1, 1], [1, 0], [0, 1]], dtype=torch.bool)
    inputs = full_inputs(fams, len(present))
    labels = torch.tensor([0, 1, 2, 1])
    cases = every_case(present, 0.4)
    with torch.no_grad():
        out = model(inputs, present, cases=cases)
        assert len(out.case_logits) == 3
        for (w, logits), (w0, drop) in zip(out.case_logits, cases):
            assert w == w0
            torch.testing.assert_close(logits, model(inputs, present, drop=drop).logits)
        torch.testing.assert_close(out.logits, model(inputs, present).logits)
        loss = u2a_loss(out, labels, model.modalities, "multiclass", 0.0)["task"]
        expected = sum(w * torch.nn.functional.cross_entropy(lg, labels) for w, lg in out.case_logits)
        torch.testing.assert_close(loss, expected)
    with pytest.raises(ModelError, match="either drop or cases"):
        model(inputs, present, drop=cases[1][1], cases=cases)


def test_widths_that_differ_get_projections():
    from _tiny import tiny_config
    from u2a.encoders import adapter_for_config

    cfg_small = tiny_config("bert")
    cfg_wide = tiny_config("clip_vision")
    cfg_wide.hidden_size = 48
    mods = [dict(name="image", encoder="x"), dict(name="text", encoder="y")]
    model = U2AModel(
        ModelConfig(modalities=mods, num_classes=2, u2a=U2AConfig(estimator="paper")),
        {"image": adapter_for_config(cfg_wide).from_config(cfg_wide), "text": adapter_for_config(cfg_small).from_config(cfg_small)},
    )
    assert model.dim == 48
    assert isinstance(model.proj["image"], torch.nn.Identity)
    assert isinstance(model.proj["text"], torch.nn.Linear)
    out = model.eval()(
        {"image": {"pixel_values": torch.randn(2, 3, 32, 32)}, "text": tiny_inputs("bert", 2)},
        torch.ones(2, 2, dtype=torch.bool),
    )
    assert out.logits.shape == (2, 2)
