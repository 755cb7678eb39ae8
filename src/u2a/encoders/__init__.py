"""Encoder adapters: one module per model family, behind a registry."""

from u2a.encoders.base import EncoderAdapter
from u2a.encoders.registry import (
    adapter_for_config,
    build_encoder,
    families,
    load_config,
    register_adapter,
    shipped_config,
    shipped_config_names,
)

__all__ = [
    "EncoderAdapter",
    "adapter_for_config",
    "build_encoder",
    "families",
    "load_config",
    "register_adapter",
    "shipped_config",
    "shipped_config_names",
]
