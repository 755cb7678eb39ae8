"""The modules that become ONNX graphs: one per modality encoder, one for token selection and the
head. They call the model's own code (``run_encoder``, ``_estimate``, the selection rule of
``U2AModel.select``), so that the exported graphs compute what ``U2AModel.encode`` / ``select``
compute.

Graph names and tensors (``<m>``, ``<s>``, ``<t>``: modality names, which are identifiers):

- ``encoder_<m>.onnx``: inputs = the encoder's own inputs (``input_ids`` and ``attention_mask``
  for text, ``pixel_values`` for images, ``input_values`` / ``input_features`` for audio), batch
  first; outputs ``cls`` (n, D), the projected CLS feature, and per other modality t
  ``est_to_<t>`` (n, D), the projected mask-token estimate of CLS(t) after the estimator map of
  ``model.u2a.output`` (none without mask tokens).
- ``head.onnx``: inputs ``available`` (B, M) float (1 = the sample has the modality), ``cls_<m>``
  (B, D) and ``est_<s>_to_<t>`` (B, D) (rows of samples without s: anything, e.g. zeros); output
  ``logits`` (B, C). Slot t = ``cls_<t>`` where t is available, else the mean of
  ``est_<s>_to_<t>`` over the available s (U2A, eq. 4), shrunk toward the constant fill by the
  model's gates where it has them; without mask tokens the placeholder's CLS feature, a constant
  of the graph. Slots are divided by the model's slot scales (``slot_norm``), summed and go
  through the head (:func:`u2a.methods.u2a.selection.fuse_slots`, the model's own selection).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch
from torch import nn

from u2a.methods.u2a.selection import fuse_slots


class EncoderGraph(nn.Module):
    def __init__(self, model, modality: str, input_names: list[str]):
        super().__init__()
        self.model = model
        self.m = modality
        self.input_names = list(input_names)
        self.targets = model.targets_of(modality) if model.has_mask_tokens else []

    def output_names(self) -> list[str]:
        return ["cls"] + [f"est_to_{t}" for t in self.targets]

    def _run(self, inputs: dict[str, torch.Tensor]):
        model, m = self.model, self.m
        back = model.mask_tokens[m] if model.has_mask_tokens else None
        c, mt = model.run_encoder(m, inputs, model.cls_tokens[m].unsqueeze(0), back,
                                  private=model.settings.one_way_attention)
        outs = [model.proj[m](c[:, 0])]
        for j, t in enumerate(self.targets):
            e, _ = model._estimate(m, t, mt[:, j])
            outs.append(e)
        return tuple(outs)


class _Enc1(EncoderGraph):
    def forward(self, x0):
        return self._run({self.input_names[0]: x0})


class _Enc2(EncoderGraph):
    def forward(self, x0, x1):
        return self._run({self.input_names[0]: x0, self.input_names[1]: x1})


class _Enc3(EncoderGraph):
    def forward(self, x0, x1, x2):
        return self._run({self.input_names[0]: x0, self.input_names[1]: x1, self.input_names[2]: x2})


def encoder_graph(model, modality: str, input_names: list[str]) -> EncoderGraph:
    cls = {1: _Enc1, 2: _Enc2, 3: _Enc3}[len(input_names)]
    return cls(model, modality, input_names).eval()


class HeadGraph(nn.Module):
    """Token selection (eq. 4), sum fusion and the head, with the availability as an input."""

    def __init__(self, model):
        super().__init__()
        self.modalities = list(model.modalities)
        self.has_mt = bool(model.has_mask_tokens)
        self.pairs = [(s, t) for t in self.modalities for s in self.modalities if s != t] if self.has_mt else []
        self.head = model.head
        n = len(self.modalities)
        with torch.no_grad():
            if not self.has_mt:
                # the ablation: the CLS feature of each modality's placeholder input, computed once
                ph = torch.stack([model._placeholder_cls(m, None)[0].float() for m in self.modalities])
                self.register_buffer("placeholder", ph)
            # the gates and constant fills the model predicts with (fixed once trained)
            gates = model.gate_values() if self.has_mt else None
            self.gated = gates is not None
            if self.gated:
                self.register_buffer("gates", gates.detach().float().clone())
                self.register_buffer("constants", torch.cat([model.constant_fill(t).float() for t in self.modalities]))
            scale = getattr(model, "slot_scale", None)
            self.register_buffer("scale", scale.detach().float().clone() if scale is not None else torch.ones(n))

    def input_names(self) -> list[str]:
        return ["available"] + [f"cls_{m}" for m in self.modalities] + [f"est_{s}_to_{t}" for s, t in self.pairs]

    def select(self, available: torch.Tensor, cls: list[torch.Tensor], est: list[torch.Tensor]) -> torch.Tensor:
        """The model's own token selection (:func:`u2a.methods.u2a.selection.fuse_slots`) and head."""
        mods = self.modalities
        estimates = ({(mods.index(s), mods.index(t)): e for (s, t), e in zip(self.pairs, est)}
                     if self.has_mt else None)
        fused = fuse_slots(
            available > 0.5, cls, estimates,
            gates=self.gates if self.gated else None,
            constants=[self.constants[i:i + 1] for i in range(len(mods))] if self.gated else None,
            placeholders=[self.placeholder[i:i + 1] for i in range(len(mods))] if not self.has_mt else None,
            scale=self.scale,
        )
        return self.head(fused)

    def forward(self, available: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        """``features``: the ``cls_<m>`` tensors, then the ``est_<s>_to_<t>`` ones (input_names order)."""
        n = len(self.modalities)
        return self.select(available, list(features[:n]), list(features[n:]))


# ---- a traceable attention mask ----------------------------------------------------------------

def traceable_attention_mask(config, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0):
    """What :func:`u2a.encoders.base.attention_mask_4d` computes for eager attention (an additive
    float mask, n x 1 x L x L, 0 where a query may read a key, the dtype's minimum elsewhere), in
    plain tensor operations that keep the sequence length symbolic when exported."""
    if mask is None and private == 0:
        return None
    n, length = tokens.shape[0], tokens.shape[1]
    keep = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=tokens.device)
    if mask is not None:
        keep = keep & mask.to(torch.bool)[:, None, None, :]
    if private:
        idx = torch.arange(length, device=tokens.device)
        first = length - private
        one_way = (idx[None, :] < first) | (idx[:, None] >= first)  # (query, key)
        keep = keep & one_way[None, None]
    keep = keep.expand(n, 1, length, length)
    zero = torch.zeros((), dtype=tokens.dtype, device=tokens.device)
    return torch.where(keep, zero, torch.finfo(tokens.dtype).min)


@contextlib.contextmanager
def exportable_masks() -> Iterator[None]:
    """While exporting, the encoder modules build their attention masks with
    :func:`traceable_attention_mask` (transformers' mask builder and ``int(tokens.shape[1])`` in
    u2a's one-way mask fix the sequence length to the example's). The models must use eager
    attention. Restored on exit."""
    patched = []
    for name, mod in list(sys.modules.items()):
        if name.startswith("u2a.encoders") and mod is not None and hasattr(mod, "attention_mask_4d"):
            patched.append((mod, mod.attention_mask_4d))
            mod.attention_mask_4d = traceable_attention_mask
    try:
        yield
    finally:
        for mod, fn in patched:
            mod.attention_mask_4d = fn
