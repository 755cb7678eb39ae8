"""Dropout that costs little on a CPU, for LoRA adapters and the frozen encoders' own dropout.

Why not ``nn.Dropout``: on a CPU torch draws its mask with ``bernoulli_`` (serially, from the one
Mersenne-Twister generator) and applies it through ops on a bool mask, which are slower than the
float multiply they stand for; peft also draws a separate mask for each of the q, k and v adapters
of a block, which read the same tensor. docs/benchmarks.md (``u2a bench --only dropout``) has the
measured cost in a training step.

:class:`FastDropout`:

- draws 16-bit random integers from torch's default generator (seeded, checkpointed and restored
  like every other draw), one per element; an element is kept when its integer is at least a
  threshold, so P(drop) = p rounded to 1/65536;
- builds the mask as a float tensor (on a CPU with numpy, whose comparison and conversion are
  several times faster than torch's on bool tensors) holding 0 or 1/(1-p) (inverted dropout) and
  applies it with one multiply, forward and backward;
- in a shared group (the q, k and v adapters of a block, as a fused qkv projection has), the first
  module draws the mask and the others reuse it.

The result is the same, bit for bit, as ``torch.where(keep, x * (1 / (1 - p)), 0)`` with the same
integers (for non-fp32 inputs the scale is applied in the input's precision first, as that
expression does). Outside training mode, or with p = 0, the input is returned as is.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn


def _keep_threshold(p: float) -> int:
    """A signed 16-bit integer v keeps its element when v >= this (P = 1 - p, p to 1/65536)."""
    return int(round(p * 65536)) - 32768


def random_int16(shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniform signed 16-bit integers of ``shape`` from the default generator of ``device``."""
    n = 1
    for s in shape:
        n *= int(s)
    words = torch.randint(-(2 ** 31), 2 ** 31 - 1, ((n + 1) // 2,), dtype=torch.int32, device=device)
    return words.view(torch.int16)[:n].view(tuple(int(s) for s in shape))


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, value: float = 1.0,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``value`` where an element is kept (probability 1 - p), else 0, as ``dtype``."""
    v = random_int16(shape, device)
    threshold = _keep_threshold(p)
    if v.device.type == "cpu":
        mask = torch.from_numpy(np.multiply(v.numpy() >= threshold, np.float32(value), dtype=np.float32))
        return mask if dtype == torch.float32 else mask.to(dtype)
    return (v >= threshold).to(dtype) * value


class SharedMask:
    """What a group of dropout modules that read the same tensor shares: that tensor (a weak
    reference: the group never keeps an activation or its autograd graph alive after the step)
    and its mask."""

    def __init__(self) -> None:
        self.x: weakref.ref | None = None
        self.mask: torch.Tensor | None = None

    def holds(self, x: torch.Tensor) -> bool:
        return self.x is not None and self.x() is x and self.mask is not None

    def keep(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        self.x, self.mask = weakref.ref(x), mask


class FastDropout(nn.Module):
    """Inverted dropout with :func:`keep_mask`; in a ``shared`` group, a module given the very
    tensor the group's previous module got reuses that module's mask."""

    def __init__(self, p: float, shared: SharedMask | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self._shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        fp32 = x.dtype == torch.float32
        group = self._shared
        if group is not None and group.holds(x):
            mask = group.mask
        else:
            value = 1.0 / (1.0 - self.p) if fp32 else 1.0
            mask = keep_mask(x.shape, self.p, value, x.device, x.dtype)
            if group is not None:
                group.keep(x, mask)
        if fp32:
            return x * mask
        # scale in x's precision first, as torch.where(keep, x * scale, 0) rounds
        return (x * (1.0 / (1.0 - self.p))) * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, shared={self._shared is not None}"
