"""Tiny randomly initialised configs of every encoder family, and inputs for them."""

from __future__ import annotations

import torch
import transformers as T

HID = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def tiny_config(family: str):
    if family == "bert":
        return T.BertConfig(vocab_size=100, max_position_embeddings=64, **HID)
    if family == "roberta":
        return T.RobertaConfig(vocab_size=100, max_position_embeddings=70, **HID)
    if family == "mpnet":
        return T.MPNetConfig(vocab_size=100, max_position_embeddings=70, **HID)
    if family == "clip_vision":
        return T.CLIPVisionConfig(image_size=32, patch_size=8, **HID)
    if family == "vit":
        return T.ViTConfig(image_size=32, patch_size=8, **HID)
    if family == "dinov2":
        return T.Dinov2Config(image_size=32, patch_size=8, mlp_ratio=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    if family == "ast":
        return T.ASTConfig(max_length=64, num_mel_bins=32, patch_size=16, frequency_stride=10, time_stride=10, **HID)
    if family == "whisper":
        return T.WhisperConfig(
            d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37, decoder_layers=1,
            decoder_attention_heads=2, decoder_ffn_dim=37, num_mel_bins=16, max_source_positions=50, vocab_size=100,
            pad_token_id=1, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, suppress_tokens=None,
            begin_suppress_tokens=None,
        )
    raise KeyError(family)


FAMILIES = ["bert", "roberta", "mpnet", "clip_vision", "vit", "dinov2", "ast", "whisper"]
KIND = {"bert": "text", "roberta": "text", "mpnet": "text", "clip_vision": "image", "vit": "image",
        "dinov2": "image", "ast": "audio", "whisper": "audio"}


def tiny_inputs(family: str, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if KIND[family] == "text":
        ids = torch.randint(5, 100, (n, 7), generator=g)
        mask = torch.ones_like(ids)
        if n > 1:  # pad the second sample
            pad = tiny_config(family).pad_token_id or 0
            ids[1, 4:] = pad
            mask[1, 4:] = 0
        ids[:, 0] = 2  # a stand-in for the tokenizer's [CLS]
        return {"input_ids": ids, "attention_mask": mask}
    if family == "ast":
        return {"input_values": torch.randn(n, 64, 32, generator=g)}
    if family == "whisper":
        return {"input_features": torch.randn(n, 16, 40, generator=g)}
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=g)}


def tiny_adapter(family: str):
    from u2a.encoders import adapter_for_config

    cfg = tiny_config(family)
    return adapter_for_config(cfg).from_config(cfg)


def save_tiny(family: str, folder) -> str:
    """A tiny random encoder saved as a Hugging Face folder (to load it by path)."""
    adapter = tiny_adapter(family)
    if family == "whisper":
        # a full Whisper checkpoint folder, as the hub has them
        full = T.WhisperModel(tiny_config(family))
        full.encoder.load_state_dict(adapter.model.state_dict())
        full.save_pretrained(folder)
    else:
        adapter.model.save_pretrained(folder)
    return str(folder)
