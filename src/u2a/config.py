"""Typed configs. A run's YAML file maps onto :class:`RunConfig`; ``key=value`` overrides use dotted
paths (``train.lr=5e-5 model.lora.rank=2``). Unknown keys, wrong types and impossible values are
errors that name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from u2a.errors import ConfigError

TASKS = ("multiclass", "multilabel")
KINDS = ("text", "image", "audio", "video")


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass
class LoraConfig:
    """LoRA on the q, k, v and attention-output projections of every block (paper: rank 1, alpha 1)."""

    rank: int = 1
    alpha: float = 1.0
    dropout: float = 0.1
    #: regex overriding the adapter's own target pattern (advanced)
    targets: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "model.lora.rank", f"must be >= 1, got {self.rank}")
        _check(self.alpha > 0, "model.lora.alpha", f"must be > 0, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, "model.lora.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class ModalityConfig:
    """One modality: its name in the data, its encoder and how its raw input is prepared."""

    name: str = ""
    #: Hugging Face model id, local folder, or a u2a asset name (``u2a models list``)
    encoder: str = ""
    #: text, image, audio or video; default: the modality's name when it is one of those
    kind: Optional[str] = None
    #: False builds a randomly initialised encoder of the same architecture
    pretrained: bool = True
    #: text: max tokens; audio: max frames
    max_length: Optional[int] = None
    #: images and video frames: side in pixels (default: the encoder's processor's)
    image_size: Optional[int] = None
    #: video: frames per clip
    frames: int = 3

    def __post_init__(self) -> None:
        _check(bool(self.name), "model.modalities[].name", "every modality needs a name")
        _check(self.name.isidentifier(), f"model.modalities[{self.name}].name", "must be a Python identifier")
        _check(bool(self.encoder), f"model.modalities[{self.name}].encoder", "is required")
        if self.kind is None and self.name in KINDS:
            self.kind = self.name
        _check(self.kind in KINDS, f"model.modalities[{self.name}].kind", f"must be one of {KINDS}, got {self.kind!r}")
        if self.max_length is not None:
            _check(self.max_length >= 1, f"model.modalities[{self.name}].max_length", "must be >= 1")
        if self.image_size is not None:
            _check(self.image_size >= 8, f"model.modalities[{self.name}].image_size", "must be >= 8")
        _check(self.frames >= 1, f"model.modalities[{self.name}].frames", "must be >= 1")


@dataclass
class ModelConfig:
    modalities: list[ModalityConfig] = field(default_factory=list)
    num_classes: int = 0
    task: str = "multiclass"
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: False: the ablation without U2A's mask tokens (a missing modality's slot is the CLS output
    #: of the placeholder input: empty text, zero image/audio)
    mask_tokens: bool = True
    #: lambda of the alignment loss (paper: 0.2)
    align_weight: float = 0.2
    #: common width of the fused feature; default: the encoders' width when they agree, else the largest
    common_dim: Optional[int] = None
    #: class names in label-index order (filled from the data when omitted)
    classes: Optional[list[str]] = None

    def __post_init__(self) -> None:
        self.modalities = [m if isinstance(m, ModalityConfig) else ModalityConfig(**m) for m in self.modalities]
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        _check(len(self.modalities) >= 2, "model.modalities", f"needs at least 2 modalities, got {len(self.modalities)}")
        names = [m.name for m in self.modalities]
        _check(len(set(names)) == len(names), "model.modalities", f"names must be unique, got {names}")
        _check(self.num_classes >= 1, "model.num_classes", f"must be >= 1, got {self.num_classes}")
        _check(self.task in TASKS, "model.task", f"must be one of {TASKS}, got {self.task!r}")
        _check(self.align_weight >= 0, "model.align_weight", "must be >= 0")
        if self.common_dim is not None:
            _check(self.common_dim >= 1, "model.common_dim", "must be >= 1")
        if self.classes is not None:
            _check(
                len(self.classes) == self.num_classes,
                "model.classes",
                f"has {len(self.classes)} names but model.num_classes is {self.num_classes}",
            )

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"model: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**d)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_model_config(path: str | Path) -> ModelConfig:
    """The ``model:`` section of a run config (or a file that holds only a model config)."""
    data = load_yaml(path)
    section = data.get("model", data)
    try:
        return ModelConfig.from_dict(section)
    except TypeError as e:
        raise ConfigError(f"{path}: model: {e}") from e
