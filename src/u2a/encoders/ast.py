"""Audio Spectrogram Transformer (MIT/ast-finetuned-audioset-*), model_type
"audio-spectrogram-transformer".

Input ``input_values``: log-mel filter banks ``n x max_length x num_mel_bins`` (what
``ASTFeatureExtractor`` produces). The embedding layer prepends two tokens, a class token and a
distillation token; both are dropped by :meth:`ASTAdapter.embed` (U2A's own CLS token replaces them;
it is initialised from the class token). In transformers 5 the blocks are a plain ``layers``
ModuleList on the model, with ``attention.{q,k,v,o}_proj``.

Spectrograms shorter than ``max_length`` frames are accepted: the position embeddings of the
frequency x time patch grid are cut to the patches present (as the AST authors do for shorter
clips). Longer ones are refused.
"""

from __future__ import annotations

from typing import Mapping

import torch
from transformers import ASTModel

from u2a.encoders.base import (
    EncoderAdapter,
)
from u2a.encoders.registry import register_adapter
from u2a.errors import ModelError


@register_adapter
class ASTAdapter(EncoderAdapter):
    family = "ast"
    model_types = ("audio-spectrogram-transformer",)
    kind = "audio"
    input_names = ("input_values",)
    lora_target_pattern = r"layers\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj)"

    @classmethod
    def model_class(cls):
        return ASTModel

    # ---- geometry -----------------------------------------------------------------------
    def _grid(self, frames: int) -> tuple[int, int]:
        cfg = self.config
        f = (cfg.num_mel_bins - cfg.patch_size) // cfg.frequency_stride + 1
        t = (frames - cfg.patch_size) // cfg.time_stride + 1
        return f, t

    def _check(self, x: torch.Tensor) -> None:
        cfg = self.config
        if x.dim() != 3 or x.shape[2] != cfg.num_mel_bins:
            raise ModelError(
                f"AST encoder expects input_values of shape (batch, frames, {cfg.num_mel_bins} mel bins); "
                f"got {tuple(x.shape)}"
            )
        frames = int(x.shape[1])
        if frames > cfg.max_length:
            raise ModelError(
                f"AST encoder: spectrogram of {frames} frames is longer than the model's max_length "
                f"{cfg.max_length}; cut or resample the clips to at most {cfg.max_length} frames"
            )
        if frames < cfg.patch_size:
            raise ModelError(
                f"AST encoder: spectrogram of {frames} frames is shorter than one patch "
                f"({cfg.patch_size} frames)"
            )

    # ---- forward pieces -----------------------------------------------------------------
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.model.embeddings
        x = inputs["input_values"]
        self._check(x)
        x = x.to(emb.patch_embeddings.projection.weight.dtype)
        frames = int(x.shape[1])
        if frames == self.config.max_length:
            return emb(x)[:, 2:], None
        # shorter clip: keep the position embeddings of the time columns present
        patches = emb.patch_embeddings(x)
        f_full, t_full = self._grid(self.config.max_length)
        f, t = self._grid(frames)
        pos = emb.position_embeddings[:, 2:].reshape(1, f_full, t_full, -1)[:, :f, :t].reshape(1, f * t, -1)
        return emb.dropout(patches + pos), None

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        return self.run_layers(self.model.layers, self.model.layernorm, tokens, mask, private)

    @property
    def final_norm(self):
        return self.model.layernorm

    @torch.no_grad()
    def default_cls(self) -> torch.Tensor | None:
        emb = self.model.embeddings
        return (emb.cls_token[0, 0] + emb.position_embeddings[0, 0]).detach().clone()

    def sample_shape(self, image_size: int | None = None, max_length: int | None = None,
                     frames: int | None = None) -> tuple[int, ...] | None:
        # the feature extractor pads or cuts every clip to max_length frames
        return (int(max_length or self.config.max_length), int(self.config.num_mel_bins))

    def placeholder_inputs(self, n: int, like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return self._placeholder_zeros("input_values", n, self.sample_shape(), like)
