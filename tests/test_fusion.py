"""How U2A fills a missing modality's slot when its estimate may mislead: the gate toward the
constant fill (model.u2a.gate), the constant-fill training cases (fallback_cases) and slot
normalisation (slot_norm), on tiny random encoders."""

from __future__ import annotations

import pytest
import torch

from _tiny import KIND, tiny_adapter, tiny_inputs
from u2a.config import ModelConfig
from u2a.errors import ConfigError
from u2a.methods.u2a.config import GATE_GRID, U2AConfig
from u2a.methods.u2a.dropout import every_case, with_constant_fill
from u2a.methods.u2a.model import U2AModel


def make(fams=("dinov2", "bert"), seed=0, **u2a):
    torch.manual_seed(seed)
    mods = [dict(name=f"m{i}", encoder=f"tiny-{f}", kind=KIND[f]) for i, f in enumerate(fams)]
    cfg = ModelConfig(modalities=mods, num_classes=3, u2a=U2AConfig(**u2a))
    model = U2AModel(cfg, {f"m{i}": tiny_adapter(f) for i, f in enumerate(fams)})
    # trained-looking state: a non-zero estimate map and anchor, statistics away from 0 / 1
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in [*model.up.parameters(), *model.anchor.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for st in model.stats.values():
            st.run_mean.copy_(torch.randn(st.run_mean.shape, generator=g))
            st.run_var.copy_(torch.rand(st.run_var.shape, generator=g) + 0.5)
    return model.eval()


def inputs(n=5, fams=("dinov2", "bert")):
    return {f"m{i}": tiny_inputs(f, n, seed=i) for i, f in enumerate(fams)}


def test_gate_zero_is_exactly_the_constant_fill_and_gate_one_the_estimate():
    """At the fallback setting (g = 0) a missing slot is the constant c_t: the logits equal those
    of the head on (available CLS + c_t) exactly; at g = 1 they equal the model without a gate."""
    gated = make(gate="validation")
    plain = make(gate="none")
    plain.load_state_dict(gated.state_dict(), strict=False)
    present = torch.ones(5, 2, dtype=torch.bool)
    with torch.no_grad():
        feats = gated.encode(inputs(), present)
        for keep in (0, 1):
            avail = torch.zeros_like(present)
            avail[:, keep] = True
            t = gated.modalities[1 - keep]
            out0 = gated.select(feats, avail, gates=[0.0, 0.0])
            manual = gated.head(feats.cls[gated.modalities[keep]] + gated.constant_fill(t))
            assert torch.equal(out0.logits, manual)
            out1 = gated.select(feats, avail, gates=[1.0, 1.0])
            assert torch.allclose(out1.logits, plain.select(feats, avail).logits, atol=1e-6)
            # complete samples do not depend on the gate
            full = gated.select(feats, present, gates=[0.0, 0.0]).logits
            assert torch.equal(full, gated.select(feats, present, gates=[1.0, 1.0]).logits)


def test_logits_are_affine_in_the_gate():
    """The calibration evaluates any gate from g = 0 and g = 1 (logits(g) = (1-g) logits(0) + g logits(1))."""
    model = make(gate="validation")
    present = torch.ones(5, 2, dtype=torch.bool)
    avail = torch.tensor([[True, False]] * 5)
    with torch.no_grad():
        feats = model.encode(inputs(), present)
        lo = model.select(feats, avail, gates=[0.0, 0.0]).logits
        hi = model.select(feats, avail, gates=[0.0, 1.0]).logits
        mid = model.select(feats, avail, gates=[0.0, 0.25]).logits
    assert torch.allclose(mid, 0.75 * lo + 0.25 * hi, atol=1e-5)


def test_calibrate_chooses_the_best_gate_per_modality_and_ties_go_to_the_estimate():
    model = make(gate="validation")
    labels = torch.tensor([0, 1, 2, 0, 1])
    onehot = torch.nn.functional.one_hot(labels, 3).float()
    # m0 alone: the estimate of m1 (delta) points to the right class only at g <= 0.5; m1 alone:
    # the estimate of m0 is neutral (every gate scores the same: the tie goes to g = 1)
    base0 = onehot * 2.0
    wrong = torch.roll(onehot, 1, dims=1) * 3.0
    logits = {"gate:m0|0": base0, "gate:m0|m1": base0 + wrong,
              "gate:m1|0": onehot, "gate:m1|m0": onehot}
    assert set(logits) == set(model.calibration_scenarios())

    def score(lg):
        return float((lg.argmax(1) == labels).float().mean())

    got = model.calibrate(logits, score)
    assert got["gates"] == {"m0": 1.0, "m1": 0.5}
    assert model.gates.tolist() == [1.0, 0.5]
    assert got["score"] == 1.0
    assert torch.allclose(got["logits"]["m0 only"], base0 + 0.5 * wrong)
    assert set(GATE_GRID) >= {0.0, 0.5, 1.0}


def test_three_modalities_calibrate_over_every_proper_subset():
    model = make(fams=("dinov2", "bert", "whisper"), gate="validation")
    names = model.calibration_scenarios()
    # 6 subsets; each has its base and one scenario per missing modality: 3 x (1 + 2) + 3 x (1 + 1)
    assert len(names) == 15
    present = torch.ones(4, 3, dtype=torch.bool)
    with torch.no_grad():
        feats = model.encode(inputs(4, ("dinov2", "bert", "whisper")), present)
        logits = {k: model.select(feats, fn(present), **kw).logits for k, (fn, kw) in names.items()}
    labels = torch.tensor([0, 1, 2, 0])
    got = model.calibrate(logits, lambda lg: float((lg.argmax(1) == labels).float().mean()))
    assert set(got["logits"]) == {"m0 only", "m1 only", "m2 only", "m0 + m1 only", "m0 + m2 only", "m1 + m2 only"}
    g = torch.tensor([got["gates"][m] for m in model.modalities])
    with torch.no_grad():
        direct = model.select(feats, torch.tensor([[True, False, False]] * 4), gates=g).logits
    assert torch.allclose(direct, got["logits"]["m0 only"], atol=1e-5)


def test_constant_fill_cases_split_each_drop_case_in_two():
    present = torch.tensor([[True, True], [True, False]])
    cases = with_constant_fill(every_case(present), 2)
    assert len(cases) == 5
    assert abs(sum(c[0] for c in cases) - 1.0) < 1e-12
    assert [len(c) for c in cases] == [2, 2, 3, 2, 3]
    assert cases[2][2] == [0.0, 0.0] and torch.equal(cases[1][1], cases[2][1])


def test_constant_fill_cases_need_every_case_training():
    with pytest.raises(ConfigError, match="fallback_cases"):
        U2AConfig(fallback_cases=True, modality_dropout={"cases": "sample"})
    with pytest.raises(ConfigError, match="gate"):
        U2AConfig(gate="sometimes")


def test_slot_norm_divides_every_slot_by_its_modality_scale():
    model = make(slot_norm="rms")
    plain = make(slot_norm="none")
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        model.slot_scale.copy_(torch.tensor([2.0, 0.5]))
    present = torch.ones(5, 2, dtype=torch.bool)
    with torch.no_grad():
        feats = model.encode(inputs(), present)
        fused = model.select(feats, present).fused
        expect = feats.cls["m0"] / 2.0 + feats.cls["m1"] / 0.5
    assert torch.allclose(fused, expect, atol=1e-6)
    assert torch.allclose(plain.select(feats, present).fused, feats.cls["m0"] + feats.cls["m1"], atol=1e-6)


def test_learned_gate_is_trained_by_the_task_loss():
    model = make(gate="learned").train()
    present = torch.ones(5, 2, dtype=torch.bool)
    drop = torch.tensor([[False, True]] * 5)
    out = model(inputs(), present, drop=drop)
    out.logits.sum().backward()
    assert model.gate_logits.grad is not None and float(model.gate_logits.grad[1].abs()) > 0
    assert float(model.gate_logits.grad[0]) == 0.0  # m0 is never missing here


def test_training_chooses_the_gate_on_validation_each_epoch_and_saves_it(tmp_path):
    """gate: validation - each validation records the chosen gates (and scores the one-modality
    scenarios with them); best/ holds the gates of its epoch; a reloaded model predicts with them."""
    import json

    import _synthetic as syn
    from u2a.methods.base import load_model

    enc = syn.make_tiny_bert(tmp_path / "bert")
    cfg = syn.build_config(tmp_path, enc, ["model.u2a.gate=validation", "model.u2a.fallback_cases=true",
                                          "model.u2a.slot_norm=rms", "train.select_on=all", "train.epochs=2"])
    summary = syn.run_training(cfg, n_val=11)
    vals = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in vals if "val" in r]
    assert len(vals) == 2
    for v in vals:
        gates = v["calibration"]["gates"]
        assert set(gates) == {"a", "b"} and all(g in GATE_GRID for g in gates.values())
        one = [v["scenarios"][f"{m} only"]["accuracy"] for m in ("a", "b")]
        assert abs(v["calibration"]["score"] - sum(one) / 2) < 1e-9
    best = vals[summary["best_epoch"] - 1]["calibration"]["gates"]
    model = load_model(cfg.run_dir / "best")
    assert model.gates.tolist() == [best["a"], best["b"]]
    rms = summary["prepare"]["slot_rms"]  # measured before training (a tiny BERT's final norm: ~1)
    assert model.slot_scale.tolist() == pytest.approx([rms["a"], rms["b"]], rel=1e-6)
