"""How the encoders run (not what they compute): the attention kernel and the precision of the
frozen weights. Set by the Trainer and the evaluation pipelines from ``train.attention`` and
``train.mixed_precision``; docs/benchmarks.md has the measurements behind the defaults."""

from __future__ import annotations

import torch
from torch import nn

from u2a.errors import ConfigError


def resolve_attention(choice: str, device: torch.device | str) -> str:
    """``auto``: eager on CPU (torch's fused bf16 attention kernel is ~4x slower than matmul +
    softmax on sequences of a few dozen tokens), sdpa elsewhere."""
    if choice == "auto":
        return "eager" if torch.device(device).type == "cpu" else "sdpa"
    if choice not in ("eager", "sdpa"):
        raise ConfigError(f"train.attention: must be auto, eager or sdpa, got {choice!r}")
    return choice


def set_attention(model: nn.Module, impl: str) -> None:
    """Switch every encoder of a method model to the attention implementation ``impl``."""
    for enc in getattr(model, "encoders", {}).values():
        cfg = enc.model.config
        if hasattr(enc.model, "set_attn_implementation"):
            enc.model.set_attn_implementation(impl)
        else:  # pragma: no cover - older transformers
            cfg._attn_implementation = impl


@torch.no_grad()
def cast_frozen_matrices(model: nn.Module, dtype: torch.dtype) -> int:
    """Hold the frozen Linear / Conv weights of the encoders in ``dtype`` (bf16 under bf16
    autocast: the cast autocast would make before every matmul, done once). Trainable parameters
    (LoRA, tokens, heads), norms and embeddings keep their precision. Returns the count cast."""
    n = 0
    for enc in getattr(model, "encoders", {}).values():
        for module in enc.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and not module.weight.requires_grad:
                module.weight.data = module.weight.data.to(dtype)
                if module.bias is not None and not module.bias.requires_grad:
                    module.bias.data = module.bias.data.to(dtype)
                n += 1
    return n


def configure(model: nn.Module, attention: str, mixed_precision: str, device: torch.device | str) -> dict:
    """Apply ``train.attention`` and (for bf16) the bf16 frozen matrices; returns what was set."""
    impl = resolve_attention(attention, device)
    set_attention(model, impl)
    cast = cast_frozen_matrices(model, torch.bfloat16) if mixed_precision == "bf16" else 0
    return {"attention": impl, "frozen_matrices_bf16": cast}
