"""LoRA through peft: inject rank-r adapters into an encoder's attention projections, merge them.

Dropout: peft's adapters and the encoders use ``nn.Dropout``, slow on a CPU; u2a swaps in
:class:`u2a.model.dropout.FastDropout` (same distribution, p rounded to 1/65536) and, with
``model.lora.shared_dropout``, one mask for the adapters of a block that read the same tensor (q, k
and v), as a fused qkv projection has.
"""

from __future__ import annotations

import peft
from peft.tuners.lora import LoraLayer
from torch import nn

from u2a.config import LoraConfig
from u2a.encoders.base import EncoderAdapter
from u2a.errors import ModelError
from u2a.model.dropout import FastDropout, SharedMask


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
    install_fast_dropout(adapter.model, shared=cfg.shared_dropout)
    return n


def install_fast_dropout(model: nn.Module, shared: bool = True) -> int:
    """Replace the dropout of every LoRA adapter, and every ``nn.Dropout`` with p > 0 of the
    encoder, by :class:`FastDropout`; LoRA adapters under the same parent module share a mask
    group when ``shared``. Returns the number of modules replaced."""
    groups: dict[str, SharedMask] = {}
    n = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            for key, d in list(module.lora_dropout.items()):
                if isinstance(d, nn.Dropout) and d.p > 0:
                    group = groups.setdefault(parent, SharedMask()) if shared else None
                    module.lora_dropout[key] = FastDropout(d.p, group)
                    n += 1
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                setattr(module, child_name, FastDropout(child.p))
                n += 1
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
