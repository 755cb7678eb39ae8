"""Losses of U2A (paper, eqs. 6 and 7): task loss + lambda x mask-token alignment."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from u2a.model.u2a import U2AOutput


@dataclass
class LossOutput:
    total: torch.Tensor
    task: torch.Tensor
    align: torch.Tensor


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy (multiclass, integer labels) or BCE with logits (multilabel, multi-hot labels)."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    return F.cross_entropy(logits, labels.long())


def alignment_loss(out: U2AOutput, modalities: list[str]) -> torch.Tensor:
    """Sum over (source, target) pairs of the MSE between MT(source->target) and CLS(target),
    averaged over the samples that really have both (a dropped modality still counts as present)."""
    total = out.logits.new_zeros(())
    for si, s in enumerate(modalities):
        for ti, t in enumerate(modalities):
            if s == t or (s, t) not in out.mt:
                continue
            rows = (out.present[:, si] & out.present[:, ti]).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            total = total + F.mse_loss(out.mt[(s, t)][rows].float(), out.cls[t][rows].float())
    return total


def u2a_loss(out: U2AOutput, labels: torch.Tensor, modalities: list[str], task: str, align_weight: float) -> LossOutput:
    t = task_loss(out.logits, labels, task)
    a = alignment_loss(out, modalities) if out.mt else t.new_zeros(())
    return LossOutput(total=t + align_weight * a, task=t, align=a)
