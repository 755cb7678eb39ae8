"""Methods: U2A and the baselines it is compared with, behind one seam.

A method is a :class:`~u2a.methods.base.Method` subclass registered under a name (the config key
``model.method``). It brings its own package: config (``model.<name>`` section), model (an
:class:`~u2a.methods.base.MethodModel`), losses and training step. Everything else is shared: the
encoders and LoRA, data, the :class:`~u2a.train.trainer.Trainer` shell (epochs, accumulation,
checkpoints, resume, logs, selection on validation), evaluation and reports.

Built-in methods are imported on first use, so that importing the registry (and the configs) stays
cheap::

    from u2a.methods import get_method
    method = get_method("mla")           # the MLA Method object
    model = method.build_model(cfg.model)

A fourth method: write ``u2a/methods/<name>/`` (config dataclass, model, method), add its config
section to :class:`u2a.config.ModelConfig` and its name to ``u2a.config.METHODS``, and register it
here in ``_BUILTIN`` (or call :func:`register_method` from your own package).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from u2a.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from u2a.methods.base import Method

#: built-in methods: name -> "module:attribute" of the Method subclass
_BUILTIN = {
    "u2a": "u2a.methods.u2a.method:U2AMethod",
    "mla": "u2a.methods.mla.method:MLAMethod",
    "ume_mma": "u2a.methods.ume_mma.method:UMEMMAMethod",
}
_REGISTRY: dict[str, "Method"] = {}

#: named variants for ``u2a experiment --methods``: label -> (method, config overrides)
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "u2a": ("u2a", ()),
    # the ablation keeps its CLS tokens at the base learning rate whatever the estimator preset
    # says: on validation a token learning rate lowered it (docs/estimators.md)
    "u2a_no_mt": ("u2a", ("model.u2a.mask_tokens=false", "model.u2a.token_lr=0")),
    # the paper's method: its estimator and its random modality dropout (one case per sample)
    "u2a_paper": ("u2a", ("model.u2a.estimator=paper", "model.u2a.modality_dropout.cases=sample")),
    "mla": ("mla", ()),
    "ume_mma": ("ume_mma", ()),
}


def register_method(cls):
    """Class decorator: register a :class:`Method` subclass under ``cls.name``."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> "Method":
    """The registered method ``name`` (built-ins are imported on first use)."""
    if name not in _REGISTRY and name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        cls = getattr(importlib.import_module(module), attr)
        if name not in _REGISTRY:
            register_method(cls)
    if name not in _REGISTRY:
        raise ConfigError(f"model.method: unknown method {name!r}; known: {method_names()}")
    return _REGISTRY[name]


def method_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def method_of(model_config) -> "Method":
    return get_method(model_config.method)


__all__ = ["VARIANTS", "get_method", "method_names", "method_of", "register_method"]
