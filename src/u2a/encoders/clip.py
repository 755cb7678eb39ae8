"""CLIP vision tower (openai/clip-vit-*).

A hub id names a full ``CLIPModel`` whose config is a ``CLIPConfig`` (model_type "clip"); u2a uses
its ``vision_config`` and builds a ``CLIPVisionModel`` (which loads only the ``vision_model.*``
weights). In transformers 5 ``CLIPVisionModel`` no longer wraps a ``vision_model`` submodule: its
children are ``embeddings``, ``pre_layrnorm``, ``encoder`` (``encoder.layers.N``) and
``post_layernorm``.

Split: ``embed`` = patch + class embedding + position embedding + ``pre_layrnorm`` (the class token
is then dropped); ``encode`` = ``encoder`` + ``post_layernorm`` applied to every token (the stock
model applies ``post_layernorm`` only to the pooled class token).
"""

from __future__ import annotations

from typing import Mapping

import torch
from transformers import CLIPVisionModel, PretrainedConfig

from u2a.encoders.base import (
    EncoderAdapter,
    attention_mask_4d,
    image_sample_shape,
)
from u2a.encoders.registry import register_adapter
from u2a.errors import ModelError


@register_adapter
class CLIPVisionAdapter(EncoderAdapter):
    family = "clip_vision"
    model_types = ("clip", "clip_vision_model")
    kind = "image"
    input_names = ("pixel_values",)
    lora_target_pattern = r"encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
    # a full CLIPModel checkpoint: the text tower, the projections and the logit scale
    unused_weights = r"^(text_model\.|text_projection\.|visual_projection\.|logit_scale$)"

    @classmethod
    def encoder_config(cls, config: PretrainedConfig) -> PretrainedConfig:
        if config.model_type == "clip":
            return config.vision_config
        if config.model_type == "clip_vision_model":
            return config
        raise ModelError(f"{cls.__name__} cannot use a config of model type {config.model_type!r}")

    @classmethod
    def model_class(cls):
        return CLIPVisionModel

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        px = inputs["pixel_values"]
        # exact at the native size; resamples the position embeddings at other sizes
        tokens = self.model.embeddings(px, interpolate_pos_encoding=True)
        tokens = self.model.pre_layrnorm(tokens)
        return tokens[:, 1:], None

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        mask4d = attention_mask_4d(self.config, tokens, mask, private)
        hidden = self.model.encoder(inputs_embeds=tokens, attention_mask=mask4d).last_hidden_state
        return self.model.post_layernorm(hidden)

    @property
    def final_norm(self):
        return self.model.post_layernorm

    @torch.no_grad()
    def default_cls(self) -> torch.Tensor | None:
        emb = self.model.embeddings
        cls = emb.class_embedding + emb.position_embedding.weight[0]
        return self.model.pre_layrnorm(cls).detach().clone()

    def sample_shape(self, image_size: int | None = None, max_length: int | None = None,
                     frames: int | None = None) -> tuple[int, ...] | None:
        return image_sample_shape(self.config, image_size, frames)

    def placeholder_inputs(self, n: int, like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return self._placeholder_zeros("pixel_values", n, image_sample_shape(self.config, None, None), like)
