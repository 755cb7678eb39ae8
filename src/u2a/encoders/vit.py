"""ViT-style image encoders: ViT (google/vit-*) and DINOv2 (facebook/dinov2-*).

Both prepend one class token to the patch tokens and add (interpolated) position embeddings in
their embedding layer; the blocks are followed by a final ``layernorm``. In transformers 5 the ViT
blocks are a plain ``layers`` ModuleList on the model (``layers.N.attention.{q,k,v,o}_proj``) while
DINOv2 keeps ``encoder.layer.N.attention.{q,k,v,o}_proj``.

The small helpers at the top are shared by the other non-text families (CLIP, AST, Whisper).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from transformers import Dinov2Model, PretrainedConfig, PreTrainedModel, ViTModel
from transformers.masking_utils import create_bidirectional_mask

from u2a.encoders.base import EncoderAdapter
from u2a.encoders.registry import register_adapter
from u2a.errors import ModelError

# ---- helpers shared by the vision and audio families --------------------------------------


def attention_mask_4d(config: PretrainedConfig, tokens: torch.Tensor, mask: torch.Tensor | None):
    """The model's own 4-D attention mask for a key padding mask (1 = real token), or ``None``."""
    if mask is None:
        return None
    return create_bidirectional_mask(config=config, inputs_embeds=tokens, attention_mask=mask)


def load_checked(
    model_cls: type[PreTrainedModel],
    name_or_path: str,
    config: PretrainedConfig,
    family: str,
    **kwargs: Any,
) -> PreTrainedModel:
    """``model_cls.from_pretrained`` that refuses to hand back a model with weights missing from the
    checkpoint (transformers only logs them and leaves them randomly initialised)."""
    model, info = model_cls.from_pretrained(name_or_path, config=config, output_loading_info=True, **kwargs)
    missing = sorted(set(info.get("missing_keys") or ()) | {k[0] for k in info.get("mismatched_keys") or ()})
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ModelError(
            f"the checkpoint {name_or_path!r} does not hold the weights of a {family} encoder "
            f"({model_cls.__name__}): missing {shown}"
        )
    model.eval()
    return model


def image_size_of(config: PretrainedConfig) -> tuple[int, int]:
    size = config.image_size
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def zeros_like_input(
    name: str, n: int, native: tuple[int, ...], like: Mapping[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """``{name: zeros}`` of ``n`` rows, shaped like ``like[name]`` or else ``(n, *native)``."""
    if like is not None and name in like:
        ref = like[name]
        return {name: torch.zeros((n, *ref.shape[1:]), dtype=ref.dtype, device=ref.device)}
    return {name: torch.zeros((n, *native), dtype=torch.float32)}


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

    def placeholder_inputs(self, n: int, like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        h, w = image_size_of(self.config)
        return zeros_like_input("pixel_values", n, (int(self.config.num_channels), h, w), like)


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
        return cls(load_checked(ViTModel, name_or_path, cls.encoder_config(config), cls.family, **kwargs))

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        # interpolate_pos_encoding=True is exact at the native size and resamples at others
        tokens = self.model.embeddings(self._pixels(inputs), interpolate_pos_encoding=True)
        return tokens[:, 1:], None

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mask4d = attention_mask_4d(self.config, tokens, mask)
        hidden = tokens
        for layer in self.model.layers:
            hidden = layer(hidden, mask4d)
        return self.model.layernorm(hidden)


@register_adapter
class Dinov2Adapter(_ViTLikeAdapter):
    """facebook/dinov2-* (Dinov2Model). Position encodings are interpolated for any image size."""

    family = "dinov2"
    model_types = ("dinov2",)
    lora_target_pattern = r"encoder\.layer\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)"

    @classmethod
    def model_class(cls):
        return Dinov2Model

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, **kwargs: Any) -> "EncoderAdapter":
        return cls(load_checked(Dinov2Model, name_or_path, cls.encoder_config(config), cls.family, **kwargs))

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = self.model.embeddings(self._pixels(inputs))
        return tokens[:, 1:], None

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        mask4d = attention_mask_4d(self.config, tokens, mask)
        hidden = self.model.encoder(tokens, attention_mask=mask4d).last_hidden_state
        return self.model.layernorm(hidden)
