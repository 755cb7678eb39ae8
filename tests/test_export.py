"""``u2a export``: ONNX graphs of tiny random encoders (two families per model), served with
onnxruntime, equal PyTorch within 1e-4 with every modality and with each one missing, for every
estimator output; a request with one modality runs one encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from _tiny import save_tiny, tiny_adapter, tiny_inputs  # noqa: E402
from u2a.cli import main  # noqa: E402
from u2a.config import ModelConfig  # noqa: E402
from u2a.errors import ModelError  # noqa: E402
from u2a.export import ExportedModel, export_model  # noqa: E402
from u2a.export.exporter import torch_model_from_export  # noqa: E402
from u2a.methods.u2a.config import U2AConfig  # noqa: E402
from u2a.methods.u2a.model import U2AModel  # noqa: E402

FAMILY = {"dinov2": "image", "clip_vision": "image", "vit": "image", "bert": "text", "roberta": "text"}


def trained_like(model, seed=1):
    """Move every trainable parameter and statistic off its initial value (LoRA B starts at zero,
    the residual gain at zero: an untrained model would hide mistakes in those paths)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
        for name, b in model.named_buffers():
            if name.startswith(("stats.", "source_stats.")) and "var" in name:
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.startswith(("stats.", "source_stats.")):
                b.copy_(torch.randn(b.shape, generator=g))
    return model.eval()


def build(image="dinov2", text="bert", folders=None, **u2a):
    torch.manual_seed(0)
    mods = [dict(name="image", encoder=folders[0] if folders else "tiny-image", kind="image"),
            dict(name="text", encoder=folders[1] if folders else "tiny-text", kind="text", max_length=7)]
    cfg = ModelConfig(modalities=mods, num_classes=4, u2a=U2AConfig(**u2a))
    if folders:
        return trained_like(U2AModel.from_config(cfg))
    return trained_like(U2AModel(cfg, {"image": tiny_adapter(image), "text": tiny_adapter(text)}))


PATTERNS = {"complete": [1, 1], "text missing": [1, 0], "image missing": [0, 1]}


def compare(model, exported: ExportedModel, image="dinov2", text="bert", n=5):
    """Max |logit diff| between onnxruntime and PyTorch per pattern, and for a mixed batch."""
    x = {"image": tiny_inputs(image, n, seed=11), "text": tiny_inputs(text, n, seed=12)}
    x["text"]["input_ids"][2, 3:] = 0  # another padded row
    x["text"]["attention_mask"][2, 3:] = 0
    diffs, ran = {}, {}
    mixed = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)[:n]
    cases = {k: torch.tensor([v] * n, dtype=torch.bool) for k, v in PATTERNS.items()}
    cases["mixed"] = mixed
    for name, present in cases.items():
        compact = {m: {k: v[present[:, i]] for k, v in x[m].items()} for i, m in enumerate(model.modalities)
                   if present[:, i].any()}
        with torch.no_grad():
            ref = model(compact, present).logits.numpy()
        got = exported.run({m: {k: v.numpy() for k, v in d.items()} for m, d in compact.items()}, present.numpy())
        diffs[name] = float(np.abs(got - ref).max())
        ran[name] = list(exported.last_encoders_run)
    return diffs, ran


@pytest.fixture(scope="module")
def residual(tmp_path_factory):
    """The `anchored` estimator (output: residual, one-way mask tokens), exported once."""
    model = build(estimator="anchored")
    out = tmp_path_factory.mktemp("residual") / "exp"
    return model, export_model(model, out), out


def check_patterns(model, manifest, out, image="dinov2", text="bert"):
    assert max(manifest["check"]["max_abs_diff_vs_pytorch"].values()) < 1e-4
    diffs, ran = compare(model, ExportedModel(out), image, text)
    for name, d in diffs.items():
        assert d < 1e-4, (name, d)
    assert ran["text missing"] == ["image"] and ran["image missing"] == ["text"]
    assert ran["complete"] == ["image", "text"]
    # the model is left as it was (LoRA unmerged)
    assert not any(getattr(m, "merged", False) for m in model.modules())


@pytest.mark.parametrize("image,text,u2a", [
    ("dinov2", "bert", {"estimator": "paper"}),  # output: source
    ("dinov2", "bert", {"estimator": "probe"}),  # output linear, running target stats (task_probe, the default, infers the same)
    ("dinov2", "bert", {"estimator": "anchored", "output": "target_norm"}),
    ("clip_vision", "roberta", {"estimator": "anchored", "output": "target_norm", "one_way_attention": False}),
], ids=["dinov2+bert-source", "dinov2+bert-linear", "dinov2+bert-target_norm", "clip+roberta-target_norm"])
def test_onnxruntime_equals_pytorch_for_every_pattern(tmp_path, image, text, u2a):
    model = build(image, text, **u2a)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_patterns(model, export_model(model, tmp_path / "exp"), tmp_path / "exp", image, text)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's model is untouched


@pytest.mark.parametrize("u2a", [{"gate": "validation", "fallback_cases": True, "slot_norm": "rms"},
                                 {"gate": "learned"}, {"mask_tokens": False, "slot_norm": "rms"}],
                         ids=["gate-validation+slot_norm", "gate-learned", "ablation+slot_norm"])
def test_onnxruntime_equals_pytorch_with_gates_and_slot_scales(tmp_path, u2a):
    """The exported head applies the model's own gates (chosen on validation or learned) and slot
    scales: the selection is one function (u2a.methods.u2a.selection.fuse_slots)."""
    model = build(**u2a)
    with torch.no_grad():
        if hasattr(model, "gates"):
            model.gates.copy_(torch.tensor([0.25, 0.75]))
        if hasattr(model, "slot_scale"):
            model.slot_scale.copy_(torch.tensor([2.0, 0.5]))
    check_patterns(model, export_model(model, tmp_path / "exp"), tmp_path / "exp")


def test_onnxruntime_equals_pytorch_residual_estimator(residual):
    check_patterns(*residual)


def test_three_modalities_of_three_more_families(tmp_path):
    """ViT images, AST audio, MPNet text: every one of the 7 availability patterns, where a missing
    slot is the mean of the estimates of the modalities that are there."""
    import itertools

    torch.manual_seed(0)
    fams = {"image": "vit", "audio": "ast", "text": "mpnet"}
    mods = [dict(name=m, encoder=f"tiny-{f}", kind=m, max_length=7 if m == "text" else None) for m, f in fams.items()]
    cfg = ModelConfig(modalities=mods, num_classes=3, u2a=U2AConfig(estimator="anchored"))
    model = trained_like(U2AModel(cfg, {m: tiny_adapter(f) for m, f in fams.items()}))
    export_model(model, tmp_path / "exp")
    exported = ExportedModel(tmp_path / "exp")
    patterns = [p for p in itertools.product([True, False], repeat=3) if any(p)]
    present = torch.tensor([p for p in patterns for _ in range(2)])
    x = {m: tiny_inputs(f, len(present), seed=i) for i, (m, f) in enumerate(fams.items())}
    compact = {m: {k: v[present[:, i]] for k, v in x[m].items()} for i, m in enumerate(model.modalities)}
    with torch.no_grad():
        ref = model(compact, present).logits.numpy()
    got = exported.run({m: {k: v.numpy() for k, v in d.items()} for m, d in compact.items()}, present.numpy())
    assert np.abs(got - ref).max() < 1e-4


def test_whisper_is_refused_clearly(tmp_path):
    torch.manual_seed(0)
    mods = [dict(name="audio", encoder="a", kind="audio"), dict(name="text", encoder="b", kind="text")]
    model = U2AModel(ModelConfig(modalities=mods, num_classes=3),
                     {"audio": tiny_adapter("whisper"), "text": tiny_adapter("bert")})
    with pytest.raises(ModelError, match="Whisper.*not supported yet"):
        export_model(model, tmp_path / "exp")


def test_ablation_without_mask_tokens_exports_its_placeholders(tmp_path):
    model = build(mask_tokens=False)
    export_model(model, tmp_path / "exp")
    exported = ExportedModel(tmp_path / "exp")
    head_inputs = [i["name"] for i in exported.manifest["graphs"]["head"]["inputs"]]
    assert head_inputs == ["available", "cls_image", "cls_text"]
    diffs, _ = compare(model, exported)
    assert max(diffs.values()) < 1e-4, diffs


def test_manifest_describes_graphs_and_merged_weights_rebuild_the_model(residual):
    model, manifest, exp = residual
    on_disk = json.loads((exp / "manifest.json").read_text())
    assert on_disk == manifest
    enc = manifest["graphs"]["encoders"]
    assert [i["name"] for i in enc["text"]["inputs"]] == ["input_ids", "attention_mask"]
    assert enc["text"]["inputs"][0]["shape"][0] == "batch" and isinstance(enc["text"]["inputs"][0]["shape"][1], str)
    assert [o["name"] for o in enc["image"]["outputs"]] == ["cls", "est_to_text"]
    assert [o["name"] for o in enc["text"]["outputs"]] == ["cls", "est_to_image"]
    assert manifest["graphs"]["head"]["outputs"][0]["name"] == "logits"
    assert manifest["estimator"]["output"] == "residual"
    for m in ("image", "text"):
        assert (exp / "weights" / m / "config.json").is_file()
        assert (exp / "weights" / m / "model.safetensors").is_file()
        assert not manifest["preprocessing"][m]["available"]  # tiny random encoders have no processor
    # the merged encoders (their own format, no peft) + U2A's parts are the model
    from safetensors.torch import load_file

    weights = load_file(str(exp / "weights" / "image" / "model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in weights)
    twin = torch_model_from_export(exp)
    x = {"image": tiny_inputs("dinov2", 3, seed=3), "text": tiny_inputs("bert", 3, seed=4)}
    present = torch.ones(3, 2, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(twin(x, present).logits, model(x, present).logits, atol=1e-4, rtol=1e-4)


def test_only_u2a_models_export(tmp_path):
    from u2a.methods.mla.model import MLAModel

    cfg = ModelConfig(method="mla", modalities=[dict(name="image", encoder="a", kind="image"),
                                                dict(name="text", encoder="b", kind="text")], num_classes=3)
    model = MLAModel(cfg, {"image": tiny_adapter("dinov2"), "text": tiny_adapter("bert")})
    with pytest.raises(ModelError, match="not supported yet"):
        export_model(model, tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


def _tiny_processors(img_folder, txt_folder):
    import transformers as T

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "heart", "cat", "face"]
    vocab = txt_folder / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    T.BertTokenizer(vocab_file=str(vocab)).save_pretrained(str(txt_folder))
    T.BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(img_folder))


def test_cli_export_and_serve_raw_inputs(tmp_path, capsys):
    img = save_tiny("dinov2", tmp_path / "img")
    txt = save_tiny("bert", tmp_path / "txt")
    _tiny_processors(tmp_path / "img", tmp_path / "txt")
    model = build(folders=[img, txt])
    model.save_pretrained(tmp_path / "run" / "best")
    out = tmp_path / "exported"
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert "encoder_text.onnx" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), "--out", str(out)]) == 2  # refuses to overwrite
    exported = ExportedModel(out)
    assert exported.manifest["preprocessing"]["text"]["available"]

    from PIL import Image

    pic = tmp_path / "heart.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(pic)
    text_only = exported.predict({"text": "a red heart"})
    assert text_only["encoders_run"] == ["text"] and text_only["estimated"] == ["image"]
    assert "image" not in exported._sessions  # the image encoder was never even loaded
    both = exported.predict({"image": str(pic), "text": "a red heart"})
    assert both["encoders_run"] == ["image", "text"]
    assert abs(sum(t["prob"] for t in both["top"]) - 1.0) < 1e-5  # 4 classes, top 5: all of them

    # the same raw sample through PyTorch's own preprocessing and model
    from u2a.data.processing import build_collator

    collate = build_collator(model.config, train=False)
    for sample, res in (({"text": "a red heart"}, text_only), ({"image": str(pic), "text": "a red heart"}, both)):
        batch = collate([{"id": "x", "label": None, "fields": {m: sample.get(m) for m in ("image", "text")}}])
        with torch.no_grad():
            ref = model(batch["inputs"], batch["present"]).logits[0].numpy()
        assert np.abs(np.array(res["logits"]) - ref).max() < 1e-4


def test_export_latency_runs(residual, capsys):
    from u2a.export.latency import render_latency

    out = residual[2].parent / "latency.json"
    assert main(["bench", "--export", str(residual[2]), "--repeats", "2", "--warmup", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["variants"]) == {f"{p}/{r}" for p in ("all", "only_image", "only_text")
                                    for r in ("onnxruntime", "pytorch")}
    assert all(v["median_s"] > 0 for v in res["variants"].values())
    assert max(res["max_abs_diff_onnxruntime_vs_pytorch"].values()) < 1e-4
    assert "only_text" in render_latency(res)


def test_a_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ModelError("ONNX export of encoder_image.onnx failed: simulated")

    monkeypatch.setattr("u2a.export.exporter._onnx_export", broken)
    with pytest.raises(ModelError, match="simulated"):
        export_model(build(), tmp_path / "exp")
    assert list(tmp_path.iterdir()) == []


def test_export_into_a_file_is_refused_before_any_work(tmp_path):
    """--out naming a file used to export everything, then fail at the final rename."""
    (tmp_path / "afile").write_text("keep me")
    with pytest.raises(ModelError, match="afile is a file, not a folder"):
        export_model(build(estimator="anchored"), tmp_path / "afile", overwrite=True)
    assert (tmp_path / "afile").read_text() == "keep me"
