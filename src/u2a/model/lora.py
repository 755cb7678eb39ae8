"""LoRA through peft: inject rank-r adapters into an encoder's attention projections, merge them."""

from __future__ import annotations

import peft
from peft.tuners.lora import LoraLayer
from torch import nn

from u2a.config import LoraConfig
from u2a.encoders.base import EncoderAdapter
from u2a.errors import ModelError


def inject_lora(adapter: EncoderAdapter, cfg: LoraConfig, modality: str) -> int:
    """Freeze the encoder and add LoRA to its q, k, v and attention-output projections.

    Returns the number of adapted Linear layers; with the adapter's own pattern this must be
    4 per block, else the pattern and the model disagree (a transformers rename, say).
    """
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    pattern = cfg.targets or adapter.lora_target_pattern
    pcfg = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=pattern,
        bias="none",
    )
    try:
        peft.inject_adapter_in_model(pcfg, adapter.model)
    except ValueError as e:
        raise ModelError(f"modality {modality!r}: LoRA targets {pattern!r} match no module: {e}") from e
    n = sum(isinstance(m, LoraLayer) for m in adapter.model.modules())
    expected = 4 * adapter.num_layers
    if cfg.targets is None and n != expected:
        raise ModelError(
            f"modality {modality!r} ({adapter.family}): LoRA pattern matched {n} layers, expected "
            f"{expected} (q, k, v, out in each of {adapter.num_layers} blocks)"
        )
    for name, p in adapter.model.named_parameters():
        p.requires_grad_("lora_" in name)
    return n


def lora_layers(module: nn.Module) -> list[LoraLayer]:
    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def merge_lora(module: nn.Module) -> None:
    """Fold every LoRA update into its base weight (inference; undone by :func:`unmerge_lora`)."""
    for layer in lora_layers(module):
        if not layer.merged:
            layer.merge()


def unmerge_lora(module: nn.Module) -> None:
    for layer in lora_layers(module):
        if layer.merged:
            layer.unmerge()


def is_merged(module: nn.Module) -> bool:
    return any(layer.merged for layer in lora_layers(module))
