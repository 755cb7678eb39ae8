"""Shared model pieces (LoRA handling in :mod:`u2a.model.lora`) and a loader for any saved model.

The U2A model itself lives in :mod:`u2a.methods.u2a`; ``from u2a.model import U2AModel`` keeps
working."""

from __future__ import annotations

_LAZY = {
    "U2AModel": "u2a.methods.u2a.model",
    "U2AOutput": "u2a.methods.u2a.model",
    "Features": "u2a.methods.u2a.model",
    "sample_modality_dropout": "u2a.methods.u2a.dropout",
    "load_model": "u2a.methods.base",
    "MethodModel": "u2a.methods.base",
}

__all__ = list(_LAZY)


def __getattr__(name: str):  # imported on first use: u2a.methods imports u2a.model.lora
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
