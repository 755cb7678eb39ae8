"""Registry of encoder adapters (one per model family) and the factory that builds them.

An encoder is named by a Hugging Face model id, a local folder, or a u2a asset name
(``u2a models list``); its family is found from ``config.model_type``.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import TypeVar

from transformers import AutoConfig, PretrainedConfig

from u2a.encoders.base import EncoderAdapter
from u2a.errors import ModelError

log = logging.getLogger(__name__)

_FAMILIES: dict[str, type[EncoderAdapter]] = {}
_BY_MODEL_TYPE: dict[str, type[EncoderAdapter]] = {}

A = TypeVar("A", bound=type[EncoderAdapter])


def register_adapter(cls: A) -> A:
    """Class decorator: make an adapter findable by its family and its ``model_types``."""
    if not cls.family or not cls.model_types or not cls.lora_target_pattern:
        raise TypeError(f"{cls.__name__} must set family, model_types and lora_target_pattern")
    _FAMILIES[cls.family] = cls
    for mt in cls.model_types:
        _BY_MODEL_TYPE[mt] = cls
    return cls


def families() -> dict[str, type[EncoderAdapter]]:
    _import_builtin_families()
    return dict(_FAMILIES)


def adapter_for_config(config: PretrainedConfig, source: str = "") -> type[EncoderAdapter]:
    _import_builtin_families()
    mt = getattr(config, "model_type", None)
    if mt not in _BY_MODEL_TYPE:
        where = f" of {source!r}" if source else ""
        raise ModelError(
            f"unknown model family {mt!r}{where}; u2a has encoder adapters for model types "
            f"{sorted(_BY_MODEL_TYPE)}"
        )
    return _BY_MODEL_TYPE[mt]


# ---- shipped architecture configs (sizes only, no weights) ------------------------------

def _arch_file(name: str) -> str:
    return name.replace("/", "--") + ".json"


def shipped_config(name: str) -> PretrainedConfig | None:
    """The architecture config u2a ships for a paper encoder id (offline), or None."""
    res = resources.files("u2a.encoders") / "arch" / _arch_file(name)
    if not res.is_file():
        return None
    d = json.loads(res.read_text())
    return AutoConfig.for_model(d.pop("model_type"), **d)


def shipped_config_names() -> list[str]:
    folder = resources.files("u2a.encoders") / "arch"
    return sorted(p.name[:-5].replace("--", "/") for p in folder.iterdir() if p.name.endswith(".json"))


def resolve_encoder_path(name_or_path: str) -> str:
    """A u2a asset name becomes its cache folder (fetched if needed); anything else is unchanged."""
    try:
        from u2a.assets import KNOWN_MODELS, resolve_model
    except ImportError:  # pragma: no cover - assets package optional in stripped installs
        return name_or_path
    if name_or_path in KNOWN_MODELS:
        return str(resolve_model(name_or_path))
    return name_or_path


def load_config(name_or_path: str, pretrained: bool = True) -> PretrainedConfig:
    if not pretrained:
        cfg = shipped_config(name_or_path)
        if cfg is not None:
            return cfg
    path = resolve_encoder_path(name_or_path)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        hint = ""
        if not Path(path).exists():
            hint = (
                " (not a local folder; loading a hub id needs network access or the HF cache; "
                f"offline, u2a ships architecture configs for {shipped_config_names()} "
                "- use pretrained: false - and converted weights via `u2a models fetch`)"
            )
        raise ModelError(f"cannot load the config of encoder {name_or_path!r}: {e}{hint}") from e


def build_encoder(name_or_path: str, pretrained: bool = True) -> EncoderAdapter:
    """Build the adapter for an encoder id, folder or asset name.

    ``pretrained=False`` builds a randomly initialised model of the same architecture (offline for
    the encoders whose configs u2a ships).
    """
    config = load_config(name_or_path, pretrained)
    cls = adapter_for_config(config, name_or_path)
    if not pretrained:
        return cls.from_config(config)
    path = resolve_encoder_path(name_or_path)
    try:
        return cls.from_pretrained(path, config)
    except OSError as e:
        raise ModelError(f"cannot load the weights of encoder {name_or_path!r}: {e}") from e


_IMPORTED = False


def _import_builtin_families() -> None:
    global _IMPORTED
    if _IMPORTED:
        return
    _IMPORTED = True
    import importlib

    for mod in ("bert", "clip", "vit", "ast", "whisper"):
        try:
            importlib.import_module(f"u2a.encoders.{mod}")
        except ModuleNotFoundError as e:  # a family module not written yet
            if e.name != f"u2a.encoders.{mod}":
                raise
