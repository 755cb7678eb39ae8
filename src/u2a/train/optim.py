"""AdamW over the trainable parameters and the paper's LR schedule (Section 4.2): warm-up epochs at
``warmup_factor`` x LR, then polynomial decay (power 0.9) to 0, counted in optimizer steps."""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from u2a.config import TrainConfig


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[dict], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters, or over parameter groups (dicts with ``params`` and their
    own ``lr``; a method's :meth:`~u2a.methods.base.Method.param_groups`)."""
    items = list(params)
    if items and isinstance(items[0], dict):
        groups = []
        for g in items:
            ps = [p for p in g["params"] if p.requires_grad]
            if ps:
                groups.append({**g, "params": ps})
    else:
        groups = [{"params": [p for p in items if p.requires_grad]}]
    if not any(g["params"] for g in groups):
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
        foreach=False,  # the same kernel order on every run and device count
    )


def steps_per_epoch(batches_per_epoch: int, grad_accum: int) -> int:
    """Optimizer steps in an epoch of ``batches_per_epoch`` micro-batches (a short tail still steps)."""
    return math.ceil(batches_per_epoch / grad_accum)


def schedule_lengths(cfg: TrainConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(warm-up steps, total steps) in optimizer steps."""
    per_epoch = steps_per_epoch(batches_per_epoch, cfg.grad_accum)
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    warmup = min(int(round(cfg.warmup_epochs * per_epoch)), total)
    return warmup, total


def lr_factor(step: int, warmup_steps: int, total_steps: int, warmup_factor: float = 0.1, power: float = 0.9) -> float:
    """The LR multiplier for optimizer step ``step`` (0-based): ``warmup_factor`` during warm-up,
    then ``(1 - t) ** power`` with t going from 0 (first step after warm-up) to 1 (after the last)."""
    if step < warmup_steps:
        return warmup_factor
    decay = max(total_steps - warmup_steps, 1)
    t = min(max((step - warmup_steps) / decay, 0.0), 1.0)
    return (1.0 - t) ** power


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, batches_per_epoch: int) -> LambdaLR:
    warmup, total = schedule_lengths(cfg, batches_per_epoch)

    def fn(step: int) -> float:
        return lr_factor(step, warmup, total, cfg.warmup_factor, cfg.poly_power)

    return LambdaLR(optimizer, fn)
