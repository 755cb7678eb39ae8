"""The task loss every method shares: cross-entropy (multiclass) or binary cross-entropy with
logits (multilabel). Method-specific losses live in their method's package
(``u2a.methods.u2a.losses``: the alignment loss of eq. 6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def summed_task_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """The task loss summed over the rows (0 with a gradient path when there are none): the
    baselines divide it by the rows of every process themselves."""
    n = int(logits.shape[0])
    if n == 0:
        return logits.float().sum() * 0.0
    return task_loss(logits, labels, task) * n


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Cross-entropy (multiclass, integer labels) or BCE with logits (multilabel, multi-hot labels)."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32))
    return F.cross_entropy(logits.float(), labels.long())
