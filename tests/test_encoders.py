"""Encoder adapters: the embed/encode split is faithful to each model's own forward, the LoRA
patterns name exactly the attention projections, and the registry finds families from configs.

Every model here is a tiny randomly initialised one (hidden 32, 2 layers, 2 heads); nothing is
downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import peft
import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import (
    ASTConfig,
    ASTModel,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    GPT2Config,
    GPT2Model,
    MPNetConfig,
    MPNetModel,
    RobertaConfig,
    RobertaModel,
    ViTConfig,
    ViTModel,
    WhisperConfig,
    WhisperForConditionalGeneration,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from u2a.encoders import EncoderAdapter, build_encoder, families
from u2a.encoders.ast import ASTAdapter
from u2a.encoders.bert import BertAdapter, MPNetAdapter, RobertaAdapter
from u2a.encoders.clip import CLIPVisionAdapter
from u2a.encoders.vit import Dinov2Adapter, ViTAdapter
from u2a.encoders.whisper import WhisperAdapter
from u2a.errors import ModelError

D, LAYERS, HEADS, FFN = 32, 2, 2, 64
ATOL = 1e-5
CLS_ID, SEP_ID = 3, 4  # token ids the text adapters are told are [CLS] / [SEP]


def _perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Add noise to every parameter, so zero-initialised ones (AST position embeddings, DINOv2's
    class token, ...) carry information and a wrong split cannot pass by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


# ---- tiny configs ----------------------------------------------------------------------------

def bert_config():
    return BertConfig(vocab_size=100, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                      intermediate_size=FFN, max_position_embeddings=32)


def roberta_config():
    return RobertaConfig(vocab_size=100, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         intermediate_size=FFN, max_position_embeddings=40, pad_token_id=1, bos_token_id=0,
                         eos_token_id=2)


def mpnet_config():
    return MPNetConfig(vocab_size=100, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       intermediate_size=FFN, max_position_embeddings=40, pad_token_id=1)


def clip_vision_config():
    return CLIPVisionConfig(hidden_size=D, intermediate_size=FFN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, image_size=32, patch_size=8)


def clip_config():
    text = dict(hidden_size=D, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                vocab_size=100, max_position_embeddings=16)
    return CLIPConfig(text_config=text, vision_config=clip_vision_config().to_dict(), projection_dim=16)


def vit_config():
    return ViTConfig(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                     image_size=32, patch_size=8)


def dinov2_config():
    return Dinov2Config(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, mlp_ratio=2,
                        image_size=56, patch_size=14)


def ast_config():
    return ASTConfig(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                     patch_size=16, frequency_stride=10, time_stride=10, max_length=64, num_mel_bins=32)


def whisper_config():
    return WhisperConfig(
        d_model=D, encoder_layers=LAYERS, decoder_layers=1, encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, num_mel_bins=16,
        max_source_positions=150, max_target_positions=20, vocab_size=100, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[],
    )


# ---- per-family specs ------------------------------------------------------------------------

def _text_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (2, 8), generator=g)
    ids[:, 0] = CLS_ID
    mask = torch.ones_like(ids)
    ids[0, 7] = SEP_ID
    ids[1, 5] = SEP_ID
    mask[1, 6:] = 0
    ids[1, 6:] = 1  # padding (RoBERTa / MPNet pad id)
    return {"input_ids": ids, "attention_mask": mask}


def _pixels(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(2, 3, size, size, generator=g)}


def _ast_inputs(frames: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_values": torch.randn(2, frames, 32, generator=g)}


def _whisper_inputs(frames: int = 300, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_features": torch.randn(2, 16, frames, generator=g)}


def _names(fmt: str, leaves: tuple[str, ...]) -> set[str]:
    return {fmt.format(i=i, leaf=leaf) for i in range(LAYERS) for leaf in leaves}


@dataclass
class Spec:
    family: str
    adapter_cls: type[EncoderAdapter]
    make: Callable[[], EncoderAdapter]  # a perturbed adapter in eval mode
    inputs: Callable[[], dict[str, torch.Tensor]]
    n_tokens: int  # tokens embed() returns for inputs()
    n_own: int  # the model's own class/distillation tokens embed() drops
    reference: Callable[[EncoderAdapter, dict], torch.Tensor]  # the stock forward's final hidden states
    lora_names: set[str]
    save: Callable[[str], nn.Module]  # writes a tiny model folder; returns the saved model


def _text_adapter(cls, model_cls, config_fn):
    return lambda: cls(_perturb(model_cls(config_fn(), add_pooling_layer=False)), CLS_ID, SEP_ID)


def _text_reference(ad, x):
    return ad.model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state


def _saver(model_fn):
    def save(path):
        m = _perturb(model_fn())
        m.save_pretrained(path)
        return m
    return save


BERT_LORA = _names("encoder.layer.{i}.attention.{leaf}", ("self.query", "self.key", "self.value", "output.dense"))

SPECS = [
    Spec("bert", BertAdapter, _text_adapter(BertAdapter, BertModel, bert_config), _text_inputs, 7, 1,
         _text_reference, BERT_LORA, _saver(lambda: BertModel(bert_config()))),
    Spec("roberta", RobertaAdapter, _text_adapter(RobertaAdapter, RobertaModel, roberta_config), _text_inputs, 7, 1,
         _text_reference, BERT_LORA, _saver(lambda: RobertaModel(roberta_config()))),
    Spec("mpnet", MPNetAdapter, _text_adapter(MPNetAdapter, MPNetModel, mpnet_config), _text_inputs, 7, 1,
         _text_reference, _names("encoder.layer.{i}.attention.attn.{leaf}", ("q", "k", "v", "o")),
         _saver(lambda: MPNetModel(mpnet_config()))),
    Spec("clip_vision", CLIPVisionAdapter, lambda: CLIPVisionAdapter(_perturb(CLIPVisionModel(clip_vision_config()))),
         lambda: _pixels(32), 16, 1,
         lambda ad, x: ad.model.post_layernorm(ad.model(**x).last_hidden_state),
         _names("encoder.layers.{i}.self_attn.{leaf}", ("q_proj", "k_proj", "v_proj", "out_proj")),
         _saver(lambda: CLIPModel(clip_config()))),
    Spec("vit", ViTAdapter, lambda: ViTAdapter(_perturb(ViTModel(vit_config(), add_pooling_layer=False))),
         lambda: _pixels(32), 16, 1,
         lambda ad, x: ad.model(**x).last_hidden_state,
         _names("layers.{i}.attention.{leaf}", ("q_proj", "k_proj", "v_proj", "o_proj")),
         _saver(lambda: ViTModel(vit_config()))),
    Spec("dinov2", Dinov2Adapter, lambda: Dinov2Adapter(_perturb(Dinov2Model(dinov2_config()))),
         lambda: _pixels(56), 16, 1,
         lambda ad, x: ad.model(**x).last_hidden_state,
         _names("encoder.layer.{i}.attention.{leaf}", ("q_proj", "k_proj", "v_proj", "o_proj")),
         _saver(lambda: Dinov2Model(dinov2_config()))),
    Spec("ast", ASTAdapter, lambda: ASTAdapter(_perturb(ASTModel(ast_config()))),
         _ast_inputs, 10, 2,
         lambda ad, x: ad.model(**x).last_hidden_state,
         _names("layers.{i}.attention.{leaf}", ("q_proj", "k_proj", "v_proj", "o_proj")),
         _saver(lambda: ASTModel(ast_config()))),
    Spec("whisper", WhisperAdapter, lambda: WhisperAdapter(_perturb(WhisperEncoder(whisper_config()))),
         _whisper_inputs, 150, 0,
         lambda ad, x: ad.model(**x).last_hidden_state,
         _names("layers.{i}.self_attn.{leaf}", ("q_proj", "k_proj", "v_proj", "out_proj")),
         _saver(lambda: WhisperForConditionalGeneration(whisper_config()))),
]

BY_FAMILY = {s.family: s for s in SPECS}
param_specs = pytest.mark.parametrize("spec", SPECS, ids=[s.family for s in SPECS])


def _own_prefix(spec: Spec, ad: EncoderAdapter, x: dict, n: int) -> torch.Tensor | None:
    """The model's own class (and distillation) token embeddings, to put back in front."""
    if spec.n_own == 0:
        return None
    cls = ad.default_cls().expand(n, 1, ad.hidden_size)
    if spec.family == "ast":  # CLS + distillation token
        emb = ad.model.embeddings
        dist = (emb.distillation_token[0, 0] + emb.position_embeddings[0, 1]).expand(n, 1, ad.hidden_size)
        return torch.cat([cls, dist], dim=1)
    return cls


# ---- (0) registry ----------------------------------------------------------------------------

def test_all_families_registered():
    fams = families()
    for spec in SPECS:
        assert fams[spec.family] is spec.adapter_cls
    assert fams["ast"].model_types == ("audio-spectrogram-transformer",)
    assert set(fams["clip_vision"].model_types) == {"clip", "clip_vision_model"}


# ---- (1) shapes and (8) default_cls ----------------------------------------------------------

@param_specs
def test_embed_encode_shapes(spec):
    ad = spec.make()
    x = spec.inputs()
    with torch.no_grad():
        tokens, mask = ad.embed(x)
        assert tokens.shape == (2, spec.n_tokens, D)
        if ad.kind == "text":
            assert mask is not None and mask.shape == (2, spec.n_tokens)
        else:
            assert mask is None
        # as u2a uses it: 1 CLS in front, k mask tokens at the end
        k = 2
        seq = torch.cat([torch.randn(2, 1, D), tokens, torch.randn(2, k, D)], dim=1)
        if mask is not None:
            mask = torch.cat([mask.new_ones(2, 1), mask, mask.new_ones(2, k)], dim=1)
        hidden = ad.encode(seq, mask)
    assert hidden.shape == (2, spec.n_tokens + 1 + k, D)
    assert torch.isfinite(hidden).all()
    assert ad.hidden_size == D and ad.num_layers == LAYERS


@param_specs
def test_default_cls(spec):
    ad = spec.make()
    cls = ad.default_cls()
    if spec.n_own == 0:
        assert cls is None
    else:
        assert cls.shape == (D,)
        assert not cls.requires_grad


def test_default_cls_is_the_models_own_class_token():
    for fam in ("clip_vision", "vit", "dinov2", "ast"):
        spec = BY_FAMILY[fam]
        ad = spec.make()
        x = spec.inputs()
        with torch.no_grad():
            full = ad.model.embeddings(**x)
            if fam == "clip_vision":
                full = ad.model.pre_layrnorm(full)
        torch.testing.assert_close(ad.default_cls(), full[0, 0], atol=ATOL, rtol=0)
        torch.testing.assert_close(ad.default_cls(), full[1, 0], atol=ATOL, rtol=0)


# ---- (2) the split is faithful ---------------------------------------------------------------

@param_specs
def test_split_matches_stock_forward(spec):
    ad = spec.make()
    x = spec.inputs()
    with torch.no_grad():
        tokens, mask = ad.embed(x)
        own = _own_prefix(spec, ad, x, 2)
        seq = tokens if own is None else torch.cat([own, tokens], dim=1)
        if mask is not None:
            mask = torch.cat([mask.new_ones(2, spec.n_own), mask], dim=1)
        ours = ad.encode(seq, mask)
        ref = spec.reference(ad, x)
    assert ours.shape == ref.shape
    if ad.kind == "text":  # compare the real tokens (padded ones are not outputs anyone reads)
        real = x["attention_mask"].bool()
        torch.testing.assert_close(ours[real], ref[real], atol=ATOL, rtol=0)
    else:
        torch.testing.assert_close(ours, ref, atol=ATOL, rtol=0)


def test_text_embed_drops_only_the_class_token():
    for fam in ("bert", "roberta", "mpnet"):
        ad = BY_FAMILY[fam].make()
        x = _text_inputs()
        with torch.no_grad():
            tokens, mask = ad.embed(x)
            full = ad.model.embeddings(input_ids=x["input_ids"])
        torch.testing.assert_close(tokens, full[:, 1:], atol=ATOL, rtol=0)
        assert torch.equal(mask, x["attention_mask"][:, 1:].float())
        torch.testing.assert_close(ad.default_cls(), full[0, 0], atol=ATOL, rtol=0)


# ---- non-native sizes ------------------------------------------------------------------------

@pytest.mark.parametrize("family,size,n_tokens", [("dinov2", 28, 4), ("dinov2", 112, 64), ("clip_vision", 48, 36),
                                                  ("vit", 48, 36)])
def test_vision_other_image_sizes(family, size, n_tokens):
    ad = BY_FAMILY[family].make()
    with torch.no_grad():
        tokens, _ = ad.embed(_pixels(size))
        hidden = ad.encode(torch.cat([ad.default_cls().expand(2, 1, D), tokens], 1), None)
    assert tokens.shape == (2, n_tokens, D)
    assert hidden.shape == (2, n_tokens + 1, D) and torch.isfinite(hidden).all()


def test_ast_shorter_clip_and_too_long():
    ad = BY_FAMILY["ast"].make()
    with torch.no_grad():
        tokens, _ = ad.embed(_ast_inputs(frames=40))  # time patches (40-16)//10+1 = 3, x 2 frequency rows
        full, _ = ad.embed(_ast_inputs(frames=64))
    assert tokens.shape == (2, 6, D)
    # the short clip's patches get the position embeddings of the same grid cells of a full clip
    x = _ast_inputs(frames=40)["input_values"]
    padded = torch.cat([x, torch.randn(2, 24, 32)], dim=1)
    with torch.no_grad():
        long, _ = ad.embed({"input_values": padded})
    torch.testing.assert_close(tokens.reshape(2, 2, 3, D), long.reshape(2, 2, 5, D)[:, :, :3], atol=ATOL, rtol=0)
    with pytest.raises(ModelError, match="65 frames.*max_length 64"):
        ad.embed(_ast_inputs(frames=65))
    with pytest.raises(ModelError, match="32 mel bins"):
        ad.embed({"input_values": torch.zeros(2, 64, 20)})
    assert full.shape == (2, 10, D)


# ---- (3) LoRA patterns -----------------------------------------------------------------------

@param_specs
def test_lora_pattern_matches_exactly_the_attention_projections(spec):
    ad = spec.make()
    model = ad.model
    peft.inject_adapter_in_model(peft.LoraConfig(r=1, lora_alpha=1, target_modules=ad.lora_target_pattern), model)
    n_lora_a = sum(1 for name, _ in model.named_modules() if name.endswith(".lora_A"))
    assert n_lora_a == 4 * ad.num_layers
    adapted = {name for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == spec.lora_names
    for name in adapted:
        assert isinstance(model.get_submodule(name).base_layer, nn.Linear)


@param_specs
def test_lora_pattern_against_module_names(spec):
    """Without peft: the regex full-matches exactly the expected Linear names."""
    import re

    ad = spec.make()
    matched = {n for n, m in ad.model.named_modules() if re.fullmatch(ad.lora_target_pattern, n)}
    assert matched == spec.lora_names
    assert all(isinstance(ad.model.get_submodule(n), nn.Linear) for n in matched)


# ---- (4) text padding never leaks ------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet"])
def test_text_padding_does_not_leak(family):
    ad = BY_FAMILY[family].make()
    x = _text_inputs()
    y = {k: v.clone() for k, v in x.items()}
    y["input_ids"][1, 6:] = torch.tensor([42, 77])  # change the padded ids of row 1

    def run(inputs):
        with torch.no_grad():
            tokens, mask = ad.embed(inputs)
            seq = torch.cat([ad.default_cls().expand(2, 1, D), tokens, torch.randn(1, 1, D).expand(2, 1, D)], 1)
            mask = torch.cat([mask.new_ones(2, 1), mask, mask.new_ones(2, 1)], 1)
            return ad.encode(seq, mask)

    torch.manual_seed(0)
    a = run(x)
    torch.manual_seed(0)
    b = run(y)
    # row 1: u2a CLS, 5 real tokens, (2 padded), mask token
    keep = [0, 1, 2, 3, 4, 5, 8]
    torch.testing.assert_close(a[1, keep], b[1, keep], atol=ATOL, rtol=0)
    torch.testing.assert_close(a[0], b[0], atol=ATOL, rtol=0)
    assert not torch.allclose(a[1, 6:8], b[1, 6:8])  # the padded positions themselves did change


# ---- (5) Whisper lengths ---------------------------------------------------------------------

def test_whisper_short_and_odd_clips():
    ad = BY_FAMILY["whisper"].make()
    with torch.no_grad():
        for frames, n_pos in [(200, 100), (201, 101), (7, 4)]:
            tokens, mask = ad.embed(_whisper_inputs(frames))
            assert mask is None
            assert tokens.shape == (2, n_pos, D)
            assert ad.encode(tokens, None).shape == (2, n_pos, D)
        # a short clip gets the first positions of the full-length one (convs are local)
        short, _ = ad.embed(_whisper_inputs(200))
        full, _ = ad.embed({"input_features": torch.cat([_whisper_inputs(200)["input_features"],
                                                         torch.zeros(2, 16, 100)], dim=2)})
        torch.testing.assert_close(short[:, :99], full[:, :99], atol=ATOL, rtol=0)


def test_whisper_too_long_clip_is_refused():
    ad = BY_FAMILY["whisper"].make()
    with pytest.raises(ModelError, match=r"302 mel frames give 151 positions.*max_source_positions 150.*300"):
        ad.embed(_whisper_inputs(302))
    with pytest.raises(ModelError, match="16 mel bins"):
        ad.embed({"input_features": torch.zeros(2, 80, 100)})
    ad.embed(_whisper_inputs(300))  # exactly the limit is fine


# ---- (6) build_encoder on local folders ------------------------------------------------------

def _state_equal(a: nn.Module, b: nn.Module, prefix_b: str = "") -> None:
    sb = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sb[prefix_b + k]), k


@param_specs
def test_build_encoder_from_folder(spec, tmp_path):
    saved = spec.save(str(tmp_path))
    ad = build_encoder(str(tmp_path))
    assert type(ad) is spec.adapter_cls and ad.family == spec.family
    assert not ad.model.training
    if spec.family == "clip_vision":  # a full CLIPModel folder: only the vision tower is loaded
        _state_equal(ad.model, saved.vision_model)
    elif spec.family == "whisper":  # a full Whisper checkpoint: only the encoder is loaded
        _state_equal(ad.model, saved.model.encoder)
        assert not ad.model.embed_positions.weight.requires_grad
    else:
        _state_equal(ad.model, saved)
    # and the randomly initialised variant of the same architecture
    rnd = build_encoder(str(tmp_path), pretrained=False)
    assert type(rnd) is spec.adapter_cls and rnd.hidden_size == D and rnd.num_layers == LAYERS


def test_build_clip_vision_model_folder(tmp_path):
    saved = _perturb(CLIPVisionModel(clip_vision_config()))
    saved.save_pretrained(tmp_path)
    ad = build_encoder(str(tmp_path))
    assert isinstance(ad, CLIPVisionAdapter)
    _state_equal(ad.model, saved)


def test_build_whisper_converter_folder_with_encoder_keys_only(tmp_path):
    import safetensors.torch

    cfg = whisper_config()
    enc = _perturb(WhisperEncoder(cfg))
    cfg.save_pretrained(tmp_path)
    safetensors.torch.save_file({f"encoder.{k}": v.contiguous() for k, v in enc.state_dict().items()},
                                str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ad = build_encoder(str(tmp_path))
    assert isinstance(ad, WhisperAdapter)
    _state_equal(ad.model, enc)
    x = _whisper_inputs(300)
    with torch.no_grad():
        torch.testing.assert_close(ad.encode(*ad.embed(x)), enc(**x).last_hidden_state, atol=ATOL, rtol=0)


def test_build_whisper_folder_without_encoder_weights_fails(tmp_path):
    import safetensors.torch

    cfg = whisper_config()
    cfg.save_pretrained(tmp_path)
    safetensors.torch.save_file({"decoder.layer_norm.weight": torch.ones(D)}, str(tmp_path / "model.safetensors"),
                                metadata={"format": "pt"})
    with pytest.raises(ModelError, match="missing.*conv1"):
        build_encoder(str(tmp_path))


def test_unknown_model_type_is_a_clear_error(tmp_path):
    GPT2Model(GPT2Config(n_embd=D, n_layer=1, n_head=HEADS, vocab_size=100, n_positions=32)).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as e:
        build_encoder(str(tmp_path))
    msg = str(e.value)
    assert "'gpt2'" in msg
    for mt in ("bert", "clip", "vit", "dinov2", "audio-spectrogram-transformer", "whisper"):
        assert f"'{mt}'" in msg


# ---- (7) placeholders ------------------------------------------------------------------------

@param_specs
def test_placeholder_inputs(spec):
    ad = spec.make()
    like = spec.inputs()
    ph = ad.placeholder_inputs(3, like=like)
    if ad.kind == "text":
        assert ph["input_ids"].shape == (3, 8) and ph["attention_mask"].shape == (3, 8)
        assert ph["attention_mask"].sum(1).tolist() == [2, 2, 2]
        assert ph["input_ids"][:, 0].tolist() == [CLS_ID] * 3 and ph["input_ids"][:, 1].tolist() == [SEP_ID] * 3
        assert ad.placeholder_inputs(1)["input_ids"].shape == (1, 2)
    else:
        (name,) = ad.input_names
        assert set(ph) == {name}
        assert ph[name].shape == (3, *like[name].shape[1:])
        assert ph[name].dtype == like[name].dtype
        assert not ph[name].any()
        native = ad.placeholder_inputs(1)[name]
        expected = {
            "clip_vision": (1, 3, 32, 32), "vit": (1, 3, 32, 32), "dinov2": (1, 3, 56, 56),
            "ast": (1, 64, 32), "whisper": (1, 16, 300),
        }[spec.family]
        assert native.shape == expected and not native.any()
    # placeholders go through the encoder
    with torch.no_grad():
        tokens, mask = ad.embed(ph)
        assert tokens.shape[0] == 3


def test_whisper_placeholder_follows_short_clips():
    ad = BY_FAMILY["whisper"].make()
    ph = ad.placeholder_inputs(2, like=_whisper_inputs(200))
    assert ph["input_features"].shape == (2, 16, 200)


def test_a_text_encoder_without_tokenizer_or_bos_id_warns(tmp_path, monkeypatch):
    """When no tokenizer loads from the folder and the config names no bos id, U2A's CLS token
    cannot start from the encoder's [CLS] embedding: said, not silent."""
    from transformers import BertConfig, BertModel

    from u2a.encoders import bert
    from u2a.encoders.registry import build_encoder
    from u2a.errors import U2AWarning

    def no_tokenizer(*args, **kwargs):
        raise OSError("no tokenizer files in the folder")

    monkeypatch.setattr(bert.AutoTokenizer, "from_pretrained", no_tokenizer)

    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, bos_token_id=None, eos_token_id=None)
    BertModel(cfg).save_pretrained(tmp_path / "bert")
    with pytest.warns(U2AWarning, match="no tokenizer could be loaded .* random vector"):
        enc = build_encoder(str(tmp_path / "bert"))
    assert enc.cls_token_id is None and enc.default_cls() is None
