"""The paper's LR schedule: warm-up at 0.1 x LR, then polynomial decay (power 0.9) to ~0."""

from __future__ import annotations

import pytest
import torch

from u2a.config import TrainConfig
from u2a.train.optim import build_optimizer, build_scheduler, lr_factor, schedule_lengths


def _lrs(cfg: TrainConfig, batches: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([p], cfg)
    sched = build_scheduler(opt, cfg, batches)
    out = []
    _, total = schedule_lengths(cfg, batches)
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out.append(opt.param_groups[0]["lr"])  # after the last step
    return out


def test_optimizer_settings():
    p = torch.nn.Parameter(torch.zeros(3))
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    opt = build_optimizer([p, frozen], TrainConfig())
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.AdamW)
    assert g["lr"] == 1e-3 and g["eps"] == 1e-8 and g["weight_decay"] == 0.02
    assert len(g["params"]) == 1  # only trainable parameters


def test_warmup_then_poly_decay():
    cfg = TrainConfig(epochs=10, lr=1e-3, warmup_epochs=1)
    lrs = _lrs(cfg, batches=10)  # 10 steps per epoch, 100 in all
    assert schedule_lengths(cfg, 10) == (10, 100)
    assert lrs[:10] == pytest.approx([1e-4] * 10)  # warm-up: 0.1 x LR
    assert lrs[10] == pytest.approx(1e-3)  # full LR right after warm-up
    for k in (10, 30, 55, 99):
        assert lrs[k] == pytest.approx(1e-3 * (1 - (k - 10) / 90) ** 0.9)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # monotone decay
    assert lrs[99] < 1e-3 * 0.02 and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_grad_accum_counts_optimizer_steps():
    cfg = TrainConfig(epochs=2, warmup_epochs=1, grad_accum=4)
    # 10 micro-batches per epoch -> 3 optimizer steps per epoch (the short tail still steps)
    assert schedule_lengths(cfg, 10) == (3, 6)
    lrs = _lrs(cfg, 10)
    assert lrs[:3] == pytest.approx([1e-4] * 3)
    assert lrs[3] == pytest.approx(1e-3)


def test_max_steps_and_fractional_warmup():
    cfg = TrainConfig(epochs=10, warmup_epochs=0.5, max_steps=20)
    assert schedule_lengths(cfg, 10) == (5, 20)
    assert lr_factor(4, 5, 20) == 0.1
    assert lr_factor(5, 5, 20) == 1.0
    assert lr_factor(20, 5, 20) == 0.0
    assert lr_factor(0, 0, 10, power=1.0) == 1.0 and lr_factor(5, 0, 10, power=1.0) == pytest.approx(0.5)
