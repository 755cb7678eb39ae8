"""ViT-style image encoders: ViT (google/vit-*) and DINOv2 (facebook/dinov2-*).

Both prepend one class token to the patch tokens and add (interpolated) position embeddings in
their embedding layer; the blocks are followed by a final ``layernorm``. In transformers 5 the ViT
blocks are a plain ``layers`` ModuleList on the model (``layers.N.attention.{q,k,v,o}_proj``) while
DINOv2 keeps ``encoder.layer.N.attention.{q,k,v,o}_proj``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from transformers import Dinov2Model, PretrainedConfig, ViTModel

from u2a.encoders.base import EncoderAdapter, attention_mask_4d, image_sample_shape
from u2a.encoders.registry import register_adapter

# ---- ViT and DINOv2 ---------------------------------------------------------------------


class _ViTLikeAdapter(EncoderAdapter):
    kind = "image"
    input_names = ("pixel_values",)

    def _pixels(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        px = inputs["pixel_values"]
        return px.to(self.model.embeddings.patch_embeddings.projection.weight.dtype)

    @torch.no_grad()
    def default_cls(self) -> torch.Tensor | None:
        emb = self.model.embeddings
        return (emb.cls_token[0, 0] + emb.position_embeddings[0, 0]).detach().clone()

    def sample_shape(self, image_size: int | None = None, max_length: int | None = None,
                     frames: int | None = None) -> tuple[int, ...] | None:
        return image_sample_shape(self.config, image_size, frames)

    def placeholder_inputs(self, n: int, like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return self._placeholder_zeros("pixel_values", n, image_sample_shape(self.config, None, None), like)


@register_adapter
class ViTAdapter(_ViTLikeAdapter):
    """google/vit-* (ViTModel; no pooler)."""

    family = "vit"
    model_types = ("vit",)
    lora_target_pattern = r"layers\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)"

    @classmethod
    def model_class(cls):
        return ViTModel

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "EncoderAdapter":
        return cls(ViTModel(cls.encoder_config(config), add_pooling_layer=False))

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, **kwargs: Any) -> "EncoderAdapter":
        kwargs.setdefault("add_pooling_layer", False)
        return super().from_pretrained(name_or_path, config, **kwargs)

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        # interpolate_pos_encoding=True is exact at the native size and resamples at others
        tokens = self.model.embeddings(self._pixels(inputs), interpolate_pos_encoding=True)
        return tokens[:, 1:], None

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        return self.run_layers(self.model.layers, self.model.layernorm, tokens, mask, private)

    @property
    def final_norm(self):
        return self.model.layernorm


@register_adapter
class Dinov2Adapter(_ViTLikeAdapter):
    """facebook/dinov2-* (Dinov2Model). Position encodings are interpolated for any image size."""

    family = "dinov2"
    model_types = ("dinov2",)
    lora_target_pattern = r"encoder\.layer\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)"

    @classmethod
    def model_class(cls):
        return Dinov2Model

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = self.model.embeddings(self._pixels(inputs))
        return tokens[:, 1:], None

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        mask4d = attention_mask_4d(self.config, tokens, mask, private)
        hidden = self.model.encoder(tokens, attention_mask=mask4d).last_hidden_state
        return self.model.layernorm(hidden)

    @property
    def final_norm(self):
        return self.model.layernorm
