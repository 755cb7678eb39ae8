"""FLOPs of a workload, counted two ways, and the matmul peak they are divided by.

**Counted** (:func:`count_flops`): ``torch.utils.flop_counter.FlopCounterMode`` around one call.
It adds up the matrix products torch actually runs (``mm``, ``addmm``, ``bmm``, ``baddbmm``,
convolutions and the fused attention kernels), forward and backward, at 2 FLOPs per
multiply-add; elementwise work (norms, softmax, GELU, the optimizer) is not counted.

**Analytic** (:func:`analytic_flops`), from the model's shapes alone, per encoder that runs, for
``n`` samples of ``L`` tokens each (the real tokens: its own, U2A's CLS token and mask tokens):

- every ``nn.Linear`` inside the transformer blocks (q, k, v, attention output, the MLP; the LoRA
  A and B matrices while they are not merged) is applied to every token: ``2 n L in out``;
- attention per block: ``Q K^T`` and ``A V``, ``2 x 2 n L^2 d`` (d = the width; all heads);
- the convolution that cuts an image or spectrogram into patches: ``2 x (output positions) x
  (kernel volume x in channels) x out channels`` per sample (forward only: the embedding layer is
  frozen and runs without gradient);
- after the encoders: the projections, the estimator bridges and the head, ``2 in out`` per row.

Training = forward + backward. The encoders' own weights are frozen, so their matmuls need only
the gradient of their input in the backward pass (1x the forward), the two attention products
need the gradients of both operands (2x), and the trainable matrices (LoRA A and B, projections,
bridges, head) need both the input and the weight gradient (2x). The patch convolution has no
backward. Text embeddings are lookups (no FLOPs).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import torch
from torch import nn

from u2a.bench.measure import sync


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of ``fn`` as FlopCounterMode counts them, and the count per operator."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    by_op = {str(k).split(".")[-1] if "." in str(k) else str(k): int(v)
             for k, v in fc.get_flop_counts().get("Global", {}).items()}
    return int(fc.get_total_flops()), by_op


def _block_linears(adapter: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The Linear layers of an encoder's transformer blocks (LoRA A/B included), not those of the
    embedding layer."""
    out = []
    for name, mod in adapter.model.named_modules():
        if isinstance(mod, nn.Linear) and "embeddings" not in name.split("."):
            out.append((name, mod))
    return out


def _attention_blocks(adapter: nn.Module) -> int:
    return int(adapter.num_layers)


def _patch_conv_flops(adapter: nn.Module, inputs: Mapping[str, torch.Tensor]) -> int:
    """FLOPs per sample of the convolutions in the embedding layer (patches), from a dry run of
    the embedding on one row with hooks on the convolutions."""
    total = 0
    hooks = []

    def hook(mod, inp, out):
        nonlocal total
        k = mod.weight[0].numel()  # in_channels/groups x kernel volume
        total += 2 * int(out[0].numel()) * k  # out[0]: one sample's outputs (channels x positions)

    for mod in adapter.model.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            hooks.append(mod.register_forward_hook(hook))
    try:
        one = {k: v[:1] for k, v in inputs.items()}
        if "pixel_values" in one and one["pixel_values"].dim() == 5:  # video: per frame
            one["pixel_values"] = one["pixel_values"].flatten(0, 1)
        with torch.no_grad():
            adapter.embed(one)
    finally:
        for h in hooks:
            h.remove()
    return total


def encoder_flops(adapter: nn.Module, n: int, tokens: int, training: bool,
                  inputs: Mapping[str, torch.Tensor] | None = None, frames: int = 1) -> dict[str, int]:
    """Analytic FLOPs of one encoder on ``n`` samples of ``tokens`` tokens (see the module
    docstring), split into its parts."""
    seqs = n * frames
    linear_fwd = 0
    linear_train_extra = 0
    for name, lin in _block_linears(adapter):
        f = 2 * seqs * tokens * lin.in_features * lin.out_features
        linear_fwd += f
        trainable = lin.weight.requires_grad
        linear_train_extra += 2 * f if trainable else f
    d = int(adapter.hidden_size)
    attn_fwd = _attention_blocks(adapter) * 2 * 2 * seqs * tokens * tokens * d
    conv = _patch_conv_flops(adapter, inputs) * seqs if inputs is not None else 0
    parts = {"linear": linear_fwd, "attention": attn_fwd, "patch_embedding": conv}
    if training:
        parts["backward_linear"] = linear_train_extra
        parts["backward_attention"] = 2 * attn_fwd
    return parts


def heads_flops(model: nn.Module, rows: Mapping[str, int], training: bool) -> int:
    """Analytic FLOPs of what runs after the encoders: per modality m with ``rows[m]`` encoded
    samples, its projection (CLS and every estimate), the estimator bridges; the head on every
    sample of the batch (``rows["_batch"]``)."""
    total = 0
    mult = 3 if training else 1
    proj = getattr(model, "proj", {})
    bridge = getattr(model, "bridge", {})
    mods = list(getattr(model, "modalities", []))
    has_mt = bool(getattr(model, "has_mask_tokens", False))
    settings = getattr(model, "settings", None)
    source_space = settings is not None and settings.output == "source"
    for m in mods:
        n = rows.get(m, 0)
        targets = [t for t in mods if t != m] if has_mt else []
        p = proj[m] if m in proj else None
        if isinstance(p, nn.Linear):
            total += 2 * n * p.in_features * p.out_features * mult
        for t in targets:
            key = f"{m}_to_{t}"
            if key in bridge:
                b = bridge[key]
                total += 2 * n * b.in_features * b.out_features * mult
            pt = proj[m if source_space else t] if t in proj else None
            if isinstance(pt, nn.Linear):
                total += 2 * n * pt.in_features * pt.out_features * mult
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        total += 2 * rows.get("_batch", 0) * head.in_features * head.out_features * mult
    return total


def analytic_flops(model: nn.Module, workload: Mapping[str, Any], training: bool) -> dict[str, Any]:
    """Analytic FLOPs of one forward (or training step) of a U2A-style model on a workload:
    ``workload["encoded"][m]`` = (rows encoded, inputs of those rows, tokens per sequence,
    frames)."""
    per_mod = {}
    rows: dict[str, int] = {"_batch": int(workload["batch"])}
    total = 0
    for m, (n, inputs, tokens, frames) in workload["encoded"].items():
        if n == 0:
            continue
        parts = encoder_flops(model.encoders[m], n, tokens, training, inputs, frames)
        per_mod[m] = {"rows": n, "tokens": tokens, **parts, "total": sum(parts.values())}
        total += per_mod[m]["total"]
        rows[m] = n
    after = heads_flops(model, rows, training)
    return {"total": total + after, "encoders": per_mod, "after_encoders": after}


def matmul_peak(dtype: torch.dtype, device: torch.device | str, n: int = 1024, repeats: int = 5,
                min_time: float = 0.2) -> dict[str, Any]:
    """The measured matmul rate of this machine: median over ``repeats`` timings of an ``n x n``
    by ``n x n`` product in ``dtype`` (each timing repeats the product until ``min_time`` s)."""
    dev = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dev, dtype)
    b = torch.randn(n, n, generator=g).to(dev, dtype)
    torch.mm(a, b)
    sync(dev)
    t0 = time.perf_counter()
    torch.mm(a, b)
    sync(dev)
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_time / one))
    rates = []
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b)
        sync(dev)
        dt = time.perf_counter() - t0
        rates.append(2.0 * n ** 3 * inner / dt)
    rates.sort()
    return {"n": n, "gflops": rates[len(rates) // 2] / 1e9, "max_gflops": rates[-1] / 1e9, "repeats": repeats,
            "calls_per_timing": inner}
