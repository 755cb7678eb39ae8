"""Token selection and fusion (paper, eqs. 4-5): the one implementation that the model
(:meth:`U2AModel.select <u2a.methods.u2a.model.U2AModel.select>`) and its exported head graph
(:class:`u2a.export.graphs.HeadGraph`) both run.

The slot of modality t is its own CLS feature where t is available; where it is missing, the mean
of the estimates of t from the available modalities (mask tokens; with two modalities exactly
eq. 4), shrunk toward the constant fill c_t by the gate g_t (``c_t + g_t (estimate - c_t)``), or,
for a model without mask tokens, the placeholder's feature. Each slot may be divided by its
modality's scale; the slots are summed.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch


def fuse_slots(
    available: torch.Tensor,
    cls: Sequence[torch.Tensor],
    estimates: Mapping[tuple[int, int], torch.Tensor] | None = None,
    gates: torch.Tensor | None = None,
    constants: Sequence[torch.Tensor] | None = None,
    placeholders: Sequence[torch.Tensor | None] | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused feature (B, D).

    ``available`` (B, M) bool; ``cls``: M tensors (B, D); ``estimates``: ``(s, t) -> (B, D)``, the
    estimate of modality t from modality s (indices), or None for a model without mask tokens;
    ``gates`` (M,) with ``constants`` (M tensors (1, D)): the shrinkage of each modality's estimate
    toward its constant fill (None: the estimate as it is); ``placeholders``: without mask
    tokens, M tensors (1, D) or None (zeros); ``scale`` (M,): each slot is divided by it."""
    slots = []
    for t, cls_t in enumerate(cls):
        avail_t = available[:, t:t + 1]
        if estimates is not None:
            total = torch.zeros_like(cls_t)
            count = torch.zeros_like(cls_t[:, :1])
            for (s, tt), e in estimates.items():
                if tt != t:
                    continue
                w = available[:, s:s + 1].to(cls_t.dtype)
                total = total + w * e
                count = count + w
            fill = total / count.clamp(min=1)
            if gates is not None:
                c = constants[t]
                fill = c + gates[t].to(fill.dtype) * (fill - c)
        elif placeholders is not None and placeholders[t] is not None:
            fill = placeholders[t].expand_as(cls_t)
        else:
            fill = torch.zeros_like(cls_t)
        slot = torch.where(avail_t, cls_t, fill)
        slots.append(slot / scale[t].to(slot.dtype) if scale is not None else slot)
    return torch.stack(slots, dim=0).sum(dim=0)
