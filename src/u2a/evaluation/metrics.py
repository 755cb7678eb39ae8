"""Classification metrics (scikit-learn): accuracy and macro-F1 for multiclass; F1 macro, micro,
samples and weighted at threshold 0.5 on sigmoid outputs for multilabel; per-class scores.
Macro-F1 averages over the classes (labels) that occur in the split's labels or predictions."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from u2a.losses import task_loss


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def compute_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: str = "multiclass",
    classes: Sequence[str] | None = None,
    threshold: float = 0.5,
    per_class: bool = True,
) -> dict[str, Any]:
    """Metrics of ``logits`` (N, C) against integer labels (N,) or multi-hot labels (N, C).

    Returns floats (``accuracy``, ``f1_macro``, ... and ``loss``, the mean task loss), ``n``, and
    with ``per_class`` a ``per_class`` dict {class: {precision, recall, f1, support}}.
    """
    n, c = int(logits.shape[0]), int(logits.shape[1])
    names = list(classes) if classes is not None else [str(i) for i in range(c)]
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return out
    logits_f = logits.detach().float().cpu()
    labels_c = labels.detach().cpu()
    out["loss"] = float(task_loss(logits_f, labels_c, task))
    label_ids = list(range(c))
    if task == "multilabel":
        y_true = _np(labels_c).astype(int)
        y_pred = (torch.sigmoid(logits_f) >= threshold).numpy().astype(int)
        for avg in ("micro", "samples", "weighted"):
            out[f"f1_{avg}"] = float(f1_score(y_true, y_pred, average=avg, zero_division=0))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
        # macro over the labels that occur (true or predicted): a label absent from both says
        # nothing about the model, and scoring it 0 would understate F1 on a small split
        seen = (y_true.sum(axis=0) > 0) | (y_pred.sum(axis=0) > 0)
        out["f1_macro"] = float(f[seen].mean()) if seen.any() else 0.0
    else:
        y_true = _np(labels_c).astype(int)
        y_pred = logits_f.argmax(dim=1).numpy()
        out["accuracy"] = float(accuracy_score(y_true, y_pred))
        # macro over the classes that occur (true or predicted), as scikit-learn's default: a class
        # absent from both says nothing about the model, and scoring it 0 would understate F1 on a
        # split that lacks it
        seen = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
        out["f1_macro"] = float(f1_score(y_true, y_pred, labels=seen, average="macro", zero_division=0))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=label_ids, average=None, zero_division=0)
    if per_class:
        out["per_class"] = {
            names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i in range(c)
        }
    return out


def is_better(value: float | None, best: float | None, metric: str) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (loss: lower is better; the rest: higher)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict (for logs and TensorBoard)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
