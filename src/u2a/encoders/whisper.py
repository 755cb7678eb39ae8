"""Whisper's audio encoder (openai/whisper-*), model_type "whisper".

Built as ``WhisperEncoder(WhisperConfig)``; loading a full Whisper checkpoint keeps only the encoder
weights (keys ``model.encoder.*`` in hub checkpoints, ``encoder.*`` in folders written by u2a's
converter, or bare keys from a saved ``WhisperEncoder``).

Input ``input_features``: log-mel spectrograms ``n x num_mel_bins x frames``. The stock forward
insists on exactly ``2 * max_source_positions`` (3000) frames; :meth:`WhisperAdapter.embed` accepts
any length up to that (two convolutions, the second of stride 2, then the first ``T`` sinusoidal
position embeddings), so short clips need not be padded to 30 s. Whisper has no class token
(:meth:`default_cls` is ``None``) and no padding mask (clips in a batch share one length).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from u2a.encoders.base import (
    EncoderAdapter,
    attention_mask_4d,
)
from u2a.encoders.registry import register_adapter
from u2a.errors import ModelError

#: checkpoint key prefixes mapped away when loading only the encoder
_KEY_MAPPING = {r"^model\.encoder\.": "", r"^encoder\.": ""}


@register_adapter
class WhisperAdapter(EncoderAdapter):
    family = "whisper"
    model_types = ("whisper",)
    kind = "audio"
    input_names = ("input_features",)
    lora_target_pattern = r"layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"
    # a full Whisper checkpoint: the decoder and the output projection
    unused_weights = r"^(model\.)?(decoder\.|proj_out\.)"

    @classmethod
    def model_class(cls):
        return WhisperEncoder

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, **kwargs: Any) -> "EncoderAdapter":
        kwargs.setdefault("key_mapping", _KEY_MAPPING)
        adapter = super().from_pretrained(name_or_path, config, **kwargs)
        adapter.model.embed_positions.requires_grad_(False)  # as WhisperEncoder.__init__ leaves it
        return adapter

    # ---- geometry -----------------------------------------------------------------------
    @property
    def max_frames(self) -> int:
        return int(self.config.max_source_positions) * self.model.conv1.stride[0] * self.model.conv2.stride[0]

    def num_tokens(self, frames: int) -> int:
        """Encoder positions produced from ``frames`` mel frames."""
        for conv in (self.model.conv1, self.model.conv2):
            k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            frames = (frames + 2 * p - k) // s + 1
        return frames

    # ---- forward pieces -----------------------------------------------------------------
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        enc = self.model
        x = inputs["input_features"]
        if x.dim() != 3 or x.shape[1] != enc.num_mel_bins:
            raise ModelError(
                f"Whisper encoder expects input_features of shape (batch, {enc.num_mel_bins} mel bins, frames); "
                f"got {tuple(x.shape)}"
            )
        frames = int(x.shape[2])
        n_pos = self.num_tokens(frames)
        limit = int(self.config.max_source_positions)
        if n_pos > limit:
            raise ModelError(
                f"Whisper encoder: {frames} mel frames give {n_pos} positions, more than the model's "
                f"max_source_positions {limit} (at most {self.max_frames} frames, i.e. 30 s); cut the clips"
            )
        x = x.to(enc.conv1.weight.dtype)
        h = nn.functional.gelu(enc.conv1(x))
        h = nn.functional.gelu(enc.conv2(h))
        h = h.permute(0, 2, 1)
        h = h + enc.embed_positions.weight[:n_pos].to(h.dtype)
        h = nn.functional.dropout(h, p=enc.dropout, training=enc.training)
        return h, None

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        enc = self.model
        mask4d = attention_mask_4d(self.config, tokens, mask, private)
        hidden = tokens
        for layer in enc.layers:
            # LayerDrop, as the stock forward does (off unless encoder_layerdrop > 0 in training)
            if enc.training and enc.layerdrop > 0.0 and torch.rand([]) < enc.layerdrop:
                continue
            hidden = layer(hidden, mask4d)
        return enc.layer_norm(hidden)

    @property
    def final_norm(self):
        return self.model.layer_norm

    def default_cls(self) -> torch.Tensor | None:
        return None

    def sample_shape(self, image_size: int | None = None, max_length: int | None = None,
                     frames: int | None = None) -> tuple[int, ...] | None:
        # clips are padded to the longest of their batch, at most max_length frames. With max_length
        # set, the placeholder is that long (the same input in every batch; a pass of its own where
        # the batch is shorter); without it (up to 30 s), it takes the batch's length, as a pass of
        # 1,500 positions per step would cost more than the consistency is worth
        return (int(self.config.num_mel_bins), int(min(max_length, self.max_frames))) if max_length else None

    def placeholder_inputs(self, n: int, like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return self._placeholder_zeros("input_features", n, (int(self.config.num_mel_bins), self.max_frames), like)
