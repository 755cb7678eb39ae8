"""``u2a bench`` on tiny random encoders: every comparison runs in seconds and writes its fields;
the paper's placeholder path and the skip-absent path give the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _tiny import save_tiny, tiny_adapter
from u2a.bench import Bench, BenchOptions
from u2a.bench import workload
from u2a.bench.measure import interleave, peak_memory
from u2a.cli import main
from u2a.config import ModelConfig, load_run_config
from u2a.errors import ConfigError
from u2a.methods.u2a.config import U2AConfig
from u2a.methods.u2a.model import U2AModel

TEXT_TOKENS = 7


def tiny_model(image="dinov2", text="bert", estimator="anchored", seed=0, **u2a):
    torch.manual_seed(seed)
    mods = [dict(name="image", encoder="tiny-image", kind="image"),
            dict(name="text", encoder="tiny-text", kind="text", max_length=TEXT_TOKENS)]
    cfg = ModelConfig(modalities=mods, num_classes=3, u2a=U2AConfig(estimator=estimator, **u2a))
    return U2AModel(cfg, {"image": tiny_adapter(image), "text": tiny_adapter(text)})


def quick(**kw):
    base = dict(batch_size=8, repeats=1, warmup=0, peak_size=128, compile_backend="eager", compile_timeout=120)
    base.update(kw)
    return BenchOptions(**base)


@pytest.fixture(scope="module")
def result():
    model = tiny_model()
    return Bench(model, quick(), text_tokens={"text": TEXT_TOKENS}).run()


def test_every_comparison_runs_and_writes_its_fields(result):
    comps = result["comparisons"]
    assert set(comps) == {"skip_absent", "precision", "attention", "dropout", "compile", "lora", "latency", "flops"}
    for name, c in comps.items():
        assert "error" not in c, (name, c.get("error"))
    json.dumps(result)  # JSON-safe as it is

    sa = comps["skip_absent"]["scenarios"]
    assert set(sa) == {"eta0", "both70", "text70"}
    for rec in sa.values():
        for mode in ("train", "infer"):
            for v in ("placeholder", "skip"):
                stats = rec[mode]["variants"][v]
                assert stats["median_s"] > 0 and stats["samples_per_s"] > 0 and stats["repeats"] == 1
                assert stats["memory"]["peak_mib"] >= 0
            assert rec[mode]["placeholder/skip"] > 0
    p = comps["precision"]
    assert p["train"]["fp32/bf16"] > 0 and p["infer"]["fp32/bf16"] > 0
    assert 0 <= p["logits_max_abs_diff_bf16_vs_fp32"] < 1.0  # bf16 rounding, not garbage
    for dt in ("fp32", "bf16"):
        assert comps["attention"][dt]["train"]["sdpa/eager"] > 0
    assert comps["dropout"]["modules"] > 0
    for dt in ("fp32", "bf16"):
        assert set(comps["dropout"][dt]["train"]["variants"]) == {"torch", "u2a"}
        assert comps["dropout"][dt]["train"]["torch/u2a"] > 0
    for mode in ("infer", "train"):
        c = comps["compile"][mode]
        assert "error" not in c, c
        assert c["eager/compiled"] > 0 and c["compile_s"] >= 0
    assert comps["compile"]["infer"]["logits_max_abs_diff"] < 1e-4
    lora = comps["lora"]
    assert set(lora["infer"]["variants"]) == {"stock", "merged", "unmerged", "merged_no_mask_tokens"}
    assert lora["merged/merged_no_mask_tokens"] > 0 and lora["merged_no_mask_tokens/stock"] > 0
    assert lora["merged/stock"] > 0 and lora["unmerged/merged"] > 0
    assert lora["logits_max_abs_diff_merged_vs_unmerged"] < 1e-4
    lat = comps["latency"]
    assert {"all/skip", "all/placeholder", "only_image/skip", "only_text/skip"} <= set(lat["variants"])
    assert lat["variants"]["all/skip"]["ms_per_sample"] > 0


def test_the_lora_check_compares_a_nonzero_update():
    """peft starts LoRA B at zero: the bench gives an untrained model's B seeded values before it
    checks merged against unmerged logits, so that the check compares a real update."""
    from u2a.bench.runner import copy_model, fill_lora_b, untrained_lora

    model = tiny_model().eval()
    assert untrained_lora(model)
    x = workload.synthetic_inputs(model, 4, {"text": TEXT_TOKENS})
    present = torch.ones(4, 2, dtype=torch.bool)
    with torch.no_grad():
        before = model(x, present).logits
        filled = copy_model(model)
        fill_lora_b(filled, seed=0)
        assert not untrained_lora(filled)
        unmerged = filled(x, present).logits
        merged = copy_model(filled)
        merged.merge_lora()
        after = merged(x, present).logits
    assert (unmerged - before).abs().max() > 1e-4  # the update changes the logits
    assert (after - unmerged).abs().max() < 1e-5  # and merging keeps it


def test_the_torch_dropout_variant_has_no_fast_dropout_left():
    from u2a.bench.runner import with_torch_dropout
    from u2a.model.dropout import FastDropout

    model = tiny_model()
    fast = [m.p for m in model.modules() if isinstance(m, FastDropout)]
    plain = with_torch_dropout(model)
    assert fast and not any(isinstance(m, FastDropout) for m in plain.modules())
    assert sorted(m.p for m in plain.modules() if type(m) is torch.nn.Dropout and m.p > 0) == sorted(fast)
    assert any(isinstance(m, FastDropout) for m in model.modules())  # the original is untouched


def test_placeholder_path_and_skip_absent_give_equal_logits(result):
    for name, rec in result["comparisons"]["skip_absent"]["scenarios"].items():
        chk = rec["logits_check"]
        assert chk["equal"], (name, chk)
        assert chk["max_abs_diff"] <= 1e-5


def test_scenarios_follow_the_map_tables():
    mods, kinds = ["image", "text"], {"image": "image", "text": "text"}
    sc = {s.name: s for s in workload.build_scenarios(mods, kinds, 20)}
    assert sc["eta0"].present.all()
    c = sc["both70"].counts(mods)
    assert c == {"image": 13, "text": 13}  # 14 incomplete: 7 lose the text, 7 the image
    assert sc["both70"].present.any(dim=1).all()
    assert sc["text70"].counts(mods) == {"image": 20, "text": 6}


def test_equality_check_sees_a_difference(monkeypatch):
    """The check is not vacuous: a placeholder batch whose present rows differ fails it."""
    model = tiny_model()
    bench = Bench(model, quick(), text_tokens={"text": TEXT_TOKENS})
    real = workload.placeholder_inputs

    def tampered(model, full, present):
        out = real(model, full, present)
        out["image"]["pixel_values"] = out["image"]["pixel_values"] + 0.5
        return out

    monkeypatch.setattr("u2a.bench.runner.placeholder_inputs", tampered)
    chk = bench.equality("both70")
    assert not chk["equal"] and chk["max_abs_diff"] > 1e-5


def test_skip_path_does_less_work_where_modalities_are_missing(result):
    sa = result["comparisons"]["skip_absent"]["scenarios"]
    for sc in ("both70", "text70"):
        mem = {p: sa[sc]["train"]["variants"][p]["memory"] for p in ("placeholder", "skip")}
        assert 0 < mem["skip"]["saved_mib"] < mem["placeholder"]["saved_mib"], mem
    fl = result["comparisons"]["flops"]["scenarios"]
    for mode in ("train", "infer"):
        assert fl["eta0"][f"skip/{mode}"]["counted"] == fl["eta0"][f"placeholder/{mode}"]["counted"]
        for sc in ("both70", "text70"):
            assert fl[sc][f"skip/{mode}"]["counted"] < fl[sc][f"placeholder/{mode}"]["counted"]
    # training = forward + backward: more than the forward, less than 3x it (frozen weights)
    for sc in fl.values():
        assert sc["skip/infer"]["counted"] < sc["skip/train"]["counted"] < 3 * sc["skip/infer"]["counted"]


@pytest.mark.parametrize("pair,estimator", [(("dinov2", "bert"), "anchored"), (("clip_vision", "roberta"), "paper"),
                                            (("vit", "mpnet"), "anchored")])
def test_analytic_flops_agree_with_the_counter(pair, estimator):
    model = tiny_model(*pair, estimator=estimator)
    bench = Bench(model, quick(), text_tokens={"text": TEXT_TOKENS})
    for sc in ("eta0", "both70"):
        for path in ("skip", "placeholder"):
            for mode in ("infer", "train"):
                rec = bench.flops_of(sc, path, mode)
                assert rec["counted"] > 0
                assert rec["analytic/counted"] == pytest.approx(1.0, abs=0.02), (sc, path, mode, rec)


def test_utilisation_uses_useful_flops_and_the_measured_peak(result):
    rows = result["utilisation"]
    assert rows
    peaks = result["matmul_peak"]
    assert peaks["fp32"]["gflops"] > 0 and peaks["bf16"]["gflops"] > 0
    for r in rows:
        assert r["peak_gflops"] == pytest.approx(peaks[r["dtype"]]["gflops"])
        assert 0 < r["utilisation"] < 5
        assert r["useful_flops"] <= r["executed_flops"]
    placeholder = [r for r in rows if r["path"] == "placeholder" and r["scenario"] == "both70"]
    assert placeholder and all(r["useful_flops"] < r["executed_flops"] for r in placeholder)


def test_interleave_rotates_and_takes_medians():
    calls = []
    t = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=3,
                   device="cpu", items=4)
    assert calls[:2] == ["a", "b"]  # warm-up
    assert calls[2:] == ["a", "b", "b", "a", "a", "b"]  # rounds, order rotated
    assert len(t["a"].seconds) == 3 and t["a"].as_dict()["samples_per_s"] > 0


def test_peak_memory_sees_a_large_temporary():
    def big():
        x = torch.ones(64 * 2 ** 20 // 4)  # 64 MiB
        return float(x.sum())

    rec = peak_memory(big, "cpu")
    assert rec["peak_mib"] >= 48, rec


def test_options_are_checked():
    with pytest.raises(ConfigError, match="unknown comparison"):
        BenchOptions(only=["speed"])
    with pytest.raises(ConfigError, match="precision"):
        BenchOptions(precision="fp16")


def test_cli_bench_on_a_config(tmp_path, capsys):
    img = save_tiny("dinov2", tmp_path / "img")
    txt = save_tiny("bert", tmp_path / "txt")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model:\n"
        "  modalities:\n"
        f"    - {{name: image, encoder: {img}, kind: image}}\n"
        f"    - {{name: text, encoder: {txt}, kind: text, max_length: 6}}\n"
        "  num_classes: 4\n"
        "train: {batch_size: 8}\n"
    )
    out = tmp_path / "res.json"
    rc = main(["bench", "train.batch_size=6", "--config", str(cfg), "--repeats", "1", "--warmup", "0", "--only", "skip_absent,flops",
               "--peak-size", "128", "--out", str(out), "--fail-on-mismatch"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["meta"]["config"] == str(cfg) and res["meta"]["options"]["batch_size"] == 6
    assert set(res["comparisons"]) == {"skip_absent", "flops"}
    assert all(r["logits_check"]["equal"] for r in res["comparisons"]["skip_absent"]["scenarios"].values())
    text = capsys.readouterr().out
    assert "skip_absent both70" in text and "useful-FLOP utilisation" in text


def test_paper_bench_config_is_offline_random_init():
    cfg = load_run_config(Path(__file__).resolve().parent.parent / "configs" / "bench" / "paper_clip_bert.yaml")
    assert [m.encoder for m in cfg.model.modalities] == ["openai/clip-vit-base-patch16", "bert-base-uncased"]
    assert not any(m.pretrained for m in cfg.model.modalities)
    assert cfg.train.batch_size == 64
    from u2a.encoders.registry import shipped_config

    assert all(shipped_config(m.encoder) is not None for m in cfg.model.modalities)


@pytest.mark.parametrize("method", ["mla", "ume_mma"])
def test_other_methods_bench_with_their_task_loss(method):
    from u2a.methods import get_method

    mods = [dict(name="image", encoder="a", kind="image"), dict(name="text", encoder="b", kind="text")]
    cfg = ModelConfig(method=method, modalities=mods, num_classes=3)
    model = get_method(method).model_class(cfg, {"image": tiny_adapter("dinov2"), "text": tiny_adapter("bert")})
    res = Bench(model, quick(only=["skip_absent", "flops"]), text_tokens={"text": TEXT_TOKENS}).run()
    sa = res["comparisons"]["skip_absent"]
    assert "error" not in sa, sa
    assert all(rec["logits_check"]["equal"] for rec in sa["scenarios"].values())
    assert res["comparisons"]["flops"]["scenarios"]["both70"]["skip/train"]["analytic"] is None  # U2A only
