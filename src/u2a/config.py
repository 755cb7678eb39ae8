"""Typed configs. A run's YAML file maps onto :class:`RunConfig`; ``key=value`` overrides use dotted
paths (``train.lr=5e-5 model.lora.rank=2``). Unknown keys, wrong types and impossible values are
errors that name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import warnings

from omegaconf import MISSING

from u2a.errors import ConfigError
from u2a.methods.mla.config import MLAConfig
from u2a.methods.u2a.config import U2AConfig
from u2a.methods.ume_mma.config import UMEMMAConfig
from u2a.validation import check as _check

TASKS = ("multiclass", "multilabel")
KINDS = ("text", "image", "audio", "video")
#: the methods a config can name (``model.method``); each has its section ``model.<method>``
METHODS = ("u2a", "mla", "ume_mma")


class U2AConfigWarning(FutureWarning):
    """A config key that moved: the config still loads, the message says what to change."""


#: keys that moved when the method seam came in (old dotted key -> new dotted key)
MOVED_KEYS = {
    "model.mask_tokens": "model.u2a.mask_tokens",
    "model.align_weight": "model.u2a.align_weight",
    "train.modality_dropout": "model.u2a.modality_dropout",
}


def _moved(old: str) -> str | None:
    for k, new in MOVED_KEYS.items():
        if old == k or old.startswith(k + "."):
            return new + old[len(k):]
    return None


def migrate_legacy(data: dict[str, Any], where: str = "config", warn: bool = True) -> dict[str, Any]:
    """A copy of a run-config mapping with moved keys (:data:`MOVED_KEYS`) in their new place.

    ``warn``: say (once per key) what to change; run folders written by older u2a versions are
    read without a warning."""
    import copy

    data = copy.deepcopy(data)
    for old, new in MOVED_KEYS.items():
        src_sec, src_key = old.split(".")
        parts = new.split(".")
        sec = data.get(src_sec)
        if not isinstance(sec, dict) or src_key not in sec:
            continue
        value = sec.pop(src_key)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: cannot move {old} to {new}: {p} is not a mapping")
        if parts[-1] in node:
            raise ConfigError(f"{where}: both {old} (old name) and {new} are given; keep only {new}")
        node[parts[-1]] = value
        if warn:
            warnings.warn(f"{where}: '{old}' is now '{new}'; please rename it", U2AConfigWarning, stacklevel=3)
    return data


@dataclass
class LoraConfig:
    """LoRA on the q, k, v and attention-output projections of every block (paper: rank 1, alpha 1)."""

    rank: int = 1
    alpha: float = 1.0
    dropout: float = 0.1
    #: one dropout mask for the q, k and v adapters of a block, which read the same tensor (as a
    #: fused qkv projection has); false: an independent mask per adapter (peft's default)
    shared_dropout: bool = True
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
    """What a saved model needs: the method, the modalities and their encoders, the task, LoRA, and
    the method's own section (``u2a``, ``mla`` or ``ume_mma``; the others keep their defaults)."""

    #: which method trains and predicts (``u2a``, ``mla``, ``ume_mma``; see ``u2a.methods``)
    method: str = "u2a"
    modalities: list[ModalityConfig] = field(default_factory=list)
    num_classes: int = 0
    task: str = "multiclass"
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: common width of the fused feature; default: the encoders' width when they agree, else the largest
    common_dim: Optional[int] = None
    #: class names in label-index order (filled from the data when omitted)
    classes: Optional[list[str]] = None
    u2a: U2AConfig = field(default_factory=U2AConfig)
    mla: MLAConfig = field(default_factory=MLAConfig)
    ume_mma: UMEMMAConfig = field(default_factory=UMEMMAConfig)

    def __post_init__(self) -> None:
        self.modalities = [m if isinstance(m, ModalityConfig) else ModalityConfig(**m) for m in self.modalities]
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        for name, cls in (("u2a", U2AConfig), ("mla", MLAConfig), ("ume_mma", UMEMMAConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        _check(self.method in METHODS, "model.method", f"must be one of {METHODS}, got {self.method!r}")
        _check(len(self.modalities) >= 2, "model.modalities", f"needs at least 2 modalities, got {len(self.modalities)}")
        names = [m.name for m in self.modalities]
        _check(len(set(names)) == len(names), "model.modalities", f"names must be unique, got {names}")
        _check(self.num_classes >= 1, "model.num_classes", f"must be >= 1, got {self.num_classes}")
        _check(self.task in TASKS, "model.task", f"must be one of {TASKS}, got {self.task!r}")
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
    def from_dict(cls, d: dict[str, Any], warn: bool = False) -> "ModelConfig":
        """From a saved model's ``model`` mapping (keys that moved since are put in their place)."""
        d = migrate_legacy({"model": dict(d)}, "model", warn=warn)["model"]
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


# ---- training, data and run configs ------------------------------------------------------

MIXED_PRECISION = ("no", "bf16", "fp16")
#: metrics a run can select its best epoch on (all "higher is better" except loss)
SELECT_METRICS = ("accuracy", "f1_macro", "f1_micro", "f1_samples", "f1_weighted", "loss")
MULTICLASS_METRICS = ("accuracy", "f1_macro", "loss")
MULTILABEL_METRICS = ("f1_macro", "f1_micro", "f1_samples", "f1_weighted", "loss")


ATTENTION = ("auto", "eager", "sdpa")
#: which validation scores select the best epoch: the complete data ("complete"), the mean over
#: the scenarios with one modality left alone ("missing"), or the mean over both ("all")
SELECT_ON = ("complete", "missing", "all")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (defaults: the paper's vision-language recipe, Section 4.2)."""

    epochs: int = 10
    #: per-process batch size (the global batch is batch_size x processes x grad_accum)
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.02
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    #: epochs at warmup_factor x lr before the polynomial decay starts
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.1
    poly_power: float = 0.9
    #: max gradient norm; null: no clipping
    grad_clip: Optional[float] = None
    grad_accum: int = 1
    seed: int = 0
    #: "bf16": autocast to bfloat16 (CPU and GPU; trainable weights and optimizer state stay fp32,
    #: the frozen encoder matrices are held in bf16); "fp16": GPU only
    mixed_precision: str = "no"
    #: the encoders' attention kernels: "eager" (matmul + softmax), "sdpa" (torch's fused kernels),
    #: "auto": eager on CPU (its fused bf16 kernel is ~4x slower on short sequences), sdpa on GPU
    attention: str = "auto"
    eval_every_epochs: int = 1
    select_metric: str = "accuracy"
    #: validation scenarios averaged for selection: complete, missing (each modality alone), all
    select_on: str = "complete"
    #: also checkpoint every N optimizer steps (null: only at the end of each epoch)
    checkpoint_every_steps: Optional[int] = None
    #: checkpoints kept besides the best one
    keep_last: int = 2
    log_every_steps: int = 10
    tensorboard: bool = True
    #: stop after this many optimizer steps (quick runs); null: train all epochs
    max_steps: Optional[int] = None
    num_workers: int = 0
    #: show tqdm progress bars (rank 0 only)
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        _check(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.eps > 0, "train.eps", f"must be > 0, got {self.eps}")
        _check(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "train.betas",
               f"must be two numbers in [0, 1), got {list(self.betas)}")
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        _check(self.warmup_factor > 0, "train.warmup_factor", f"must be > 0, got {self.warmup_factor}")
        _check(self.poly_power >= 0, "train.poly_power", f"must be >= 0, got {self.poly_power}")
        if self.grad_clip is not None:
            _check(self.grad_clip > 0, "train.grad_clip", f"must be > 0 or null, got {self.grad_clip}")
        _check(self.grad_accum >= 1, "train.grad_accum", f"must be >= 1, got {self.grad_accum}")
        _check(self.seed >= 0, "train.seed", f"must be >= 0, got {self.seed}")
        if self.mixed_precision in (False, "False", "false"):
            # YAML reads a bare `no` (also `key=no` on the CLI) as false; OmegaConf then writes 'False'
            self.mixed_precision = "no"
        _check(self.mixed_precision in MIXED_PRECISION, "train.mixed_precision",
               f"must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        _check(self.attention in ATTENTION, "train.attention", f"must be one of {ATTENTION}, got {self.attention!r}")
        _check(self.select_on in SELECT_ON, "train.select_on", f"must be one of {SELECT_ON}, got {self.select_on!r}")
        _check(self.eval_every_epochs >= 1, "train.eval_every_epochs", f"must be >= 1, got {self.eval_every_epochs}")
        _check(self.select_metric in SELECT_METRICS, "train.select_metric",
               f"must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        if self.checkpoint_every_steps is not None:
            _check(self.checkpoint_every_steps >= 1, "train.checkpoint_every_steps",
                   f"must be >= 1 or null, got {self.checkpoint_every_steps}")
        _check(self.keep_last >= 1, "train.keep_last", f"must be >= 1, got {self.keep_last}")
        _check(self.log_every_steps >= 1, "train.log_every_steps", f"must be >= 1, got {self.log_every_steps}")
        if self.max_steps is not None:
            _check(self.max_steps >= 1, "train.max_steps", f"must be >= 1 or null, got {self.max_steps}")
        _check(self.num_workers >= 0, "train.num_workers", f"must be >= 0, got {self.num_workers}")


@dataclass
class MissingSplitConfig:
    """Simulated missing modalities for one split (paper, Section 4.4.1)."""

    #: fraction eta of the samples that lose a modality
    ratio: float = 0.0
    #: which modality goes missing: a modality name, or "both" (any one, see both_ratio)
    type: str = "both"


@dataclass
class MissingConfig:
    train: MissingSplitConfig = field(default_factory=MissingSplitConfig)
    val: MissingSplitConfig = field(default_factory=MissingSplitConfig)
    test: MissingSplitConfig = field(default_factory=MissingSplitConfig)
    #: with type "both" and two modalities: the share of the missing samples that lose the first one
    both_ratio: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            s = getattr(self, split)
            if isinstance(s, dict):
                s = MissingSplitConfig(**s)
                setattr(self, split, s)
            _check(0.0 <= s.ratio <= 1.0, f"data.missing.{split}.ratio", f"must be in [0, 1], got {s.ratio}")
        _check(0.0 <= self.both_ratio <= 1.0, "data.missing.both_ratio", f"must be in [0, 1], got {self.both_ratio}")
        _check(self.seed >= 0, "data.missing.seed", f"must be >= 0, got {self.seed}")


@dataclass
class DataConfig:
    #: a manifest file with a split field, or a folder with train/val/test manifests
    manifest: Optional[str] = None
    #: a built-in dataset name (e.g. "emoji") instead of a manifest
    dataset: Optional[str] = None
    #: leave bad manifest lines out (listed) instead of failing
    skip_bad: bool = False
    missing: MissingConfig = field(default_factory=MissingConfig)
    #: use only N samples of each split (a seeded random subset, kept in file order; quick runs)
    limit: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.missing, dict):
            self.missing = MissingConfig(**self.missing)
        _check(not (self.manifest and self.dataset), "data", "give data.manifest or data.dataset, not both")
        if self.limit is not None:
            _check(self.limit >= 1, "data.limit", f"must be >= 1 or null, got {self.limit}")


@dataclass
class RunConfig:
    #: the run's folder is output_dir/name (default name: the config file's stem)
    name: Optional[str] = None
    output_dir: str = "runs"
    model: ModelConfig = MISSING  # type: ignore[assignment]
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        _check(isinstance(self.model, ModelConfig), "model", "is required (modalities, num_classes, ...)")
        if self.name is not None:
            _check(bool(self.name) and "/" not in self.name and self.name not in (".", ".."), "name",
                   f"must be a plain folder name, got {self.name!r}")
        names = self.model.modality_names
        for split in ("train", "val", "test"):
            t = getattr(self.data.missing, split).type
            _check(t == "both" or t in names, f"data.missing.{split}.type",
                   f"must be 'both' or a modality name {names}, got {t!r}")
        allowed = MULTILABEL_METRICS if self.model.task == "multilabel" else MULTICLASS_METRICS
        _check(self.train.select_metric in allowed, "train.select_metric",
               f"{self.train.select_metric!r} does not fit model.task {self.model.task!r}; use one of {allowed}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / (self.name or "run")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- loading: YAML + dotted overrides through omegaconf structured configs ---------------

def _type_name(tp: Any) -> str:
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        return f"{_type_name(args[0])} or null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _err(key: str, e: Exception) -> ConfigError:
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(e, (ConfigAttributeError, ConfigKeyError)):
        return ConfigError(f"unknown key '{key}'")
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ConfigError(f"{key}: {msg}")


def _empty_like(tp: Any) -> Any:
    """A node with a dataclass type's defaults (without running its validation), or {}."""
    import typing

    from omegaconf import OmegaConf

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        tp = args[0]
    return OmegaConf.structured(tp) if dataclasses.is_dataclass(tp) else {}


def _set_leaf(node: Any, k: Any, key: str, value: Any) -> None:
    """Assign one value, turning omegaconf's validation errors into ConfigErrors naming the key."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(value, dict):
        child = node._get_node(k)
        if isinstance(child, DictConfig) or OmegaConf.is_missing(node, k):
            if OmegaConf.is_missing(node, k) or child._is_none():
                try:
                    node[k] = _empty_like(child._metadata.ref_type)
                except OmegaConfBaseException as e:
                    raise _err(key, e) from None
            if isinstance(node._get_node(k), DictConfig):
                _apply(node[k], value, key + ".")
                return
    if isinstance(value, list):
        child = node._get_node(k)
        if isinstance(child, ListConfig) and any(isinstance(v, dict) for v in value):
            try:
                elem = child._metadata.element_type
                node[k] = [_empty_like(elem) if isinstance(v, dict) else v for v in value]
            except (OmegaConfBaseException, TypeError, ValueError) as e:
                raise _err(key, e) from None
            for i, v in enumerate(value):
                if isinstance(v, dict):
                    _apply(node[k][i], v, f"{key}[{i}].")
            return
    try:
        OmegaConf.update(node, str(k), value, merge=False)
    except OmegaConfBaseException as e:
        from omegaconf.errors import ValidationError

        if isinstance(e, ValidationError) and not isinstance(value, (dict, list)):
            try:
                ref = node._get_node(k)._metadata.ref_type
                raise ConfigError(f"{key}: expected {_type_name(ref)}, got {value!r}") from None
            except (AttributeError, KeyError):
                pass
        raise _err(key, e) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None


def _apply(node: Any, data: dict[str, Any], prefix: str) -> None:
    from omegaconf import DictConfig

    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    for k, v in data.items():
        key = f"{prefix}{k}"
        if not isinstance(node, DictConfig) or k not in node.keys():
            raise ConfigError(f"unknown key '{key}'")
        _set_leaf(node, k, key, v)


def _split_path(key: str) -> list[str | int]:
    """``model.modalities[0].encoder`` or ``model.modalities.0.encoder`` -> segments."""
    import re

    parts: list[str | int] = []
    for seg in key.split("."):
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)?((?:\[\d+\])*)", seg)
        if not seg or m is None:
            if seg.isdigit():
                parts.append(int(seg))
                continue
            raise ConfigError(f"override {key!r}: not a dotted key path")
        if m.group(1):
            parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return parts


def _path_str(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value); the value is read as YAML (``null``, ``[a, b]``, numbers)."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _apply_override(root: Any, text: str) -> None:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    key, value = parse_override(text)
    parts = _split_path(key)
    node = root
    for i, p in enumerate(parts):
        here = _path_str(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(p, int):
            if not isinstance(node, ListConfig):
                raise ConfigError(f"{_path_str(parts[:i])}: not a list, cannot index [{p}]")
            if p >= len(node):
                raise ConfigError(f"{here}: index out of range (the list has {len(node)} items)")
        else:
            if not isinstance(node, DictConfig) or p not in node.keys():
                raise ConfigError(f"unknown key '{here}'")
            if not last and OmegaConf.is_missing(node, p):
                raise ConfigError(f"{here}: not set yet; give the whole section in the YAML file first")
        if last:
            _set_leaf(node, p, here, value)
        else:
            node = node[p]


def _to_object(node: Any, what: str) -> Any:
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        return OmegaConf.to_object(node)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or what
        raise ConfigError(f"{key}: is required") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or what
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None
    except TypeError as e:
        raise ConfigError(f"{what}: {e}") from None


def _schema(cls: type) -> Any:
    from omegaconf import OmegaConf

    node = OmegaConf.structured(cls)
    OmegaConf.set_struct(node, True)
    return node


def build_run_config(data: dict[str, Any] | None = None, overrides: Sequence[str] = (), name: str | None = None,
                     where: str = "config", warn: bool = True) -> RunConfig:
    """A validated RunConfig from a mapping (a parsed YAML file) and ``key=value`` overrides.

    Keys that moved (:data:`MOVED_KEYS`) are read from their old place with a warning."""
    root = _schema(RunConfig)
    _apply(root, migrate_legacy(dict(data or {}), where, warn=warn), "")
    for o in overrides:
        key, _ = parse_override(o)
        new = _moved(key)
        if new is not None:
            warnings.warn(f"override '{key}' is now '{new}'; please rename it", U2AConfigWarning, stacklevel=2)
            o = new + o[o.index("="):]
        _apply_override(root, o)
    if name is not None and root.name is None:
        root.name = name
    return _to_object(root, "config")


def load_run_config(path: str | Path | None, overrides: Sequence[str] = (), warn: bool = True) -> RunConfig:
    """Read a run YAML file, apply dotted ``key=value`` overrides and validate.

    Every problem is a :class:`ConfigError` naming the key. ``warn=False``: read keys that moved
    without a warning (the ``config.yaml`` of a run folder that an older u2a wrote).
    """
    data = load_yaml(path) if path is not None else {}
    return build_run_config(data, overrides, name=Path(path).stem if path is not None else None,
                            where=str(path) if path is not None else "config", warn=warn)


#: defaults that changed, for the ``config.yaml`` a run folder holds (every key written out): a key
#: that such a file lacks was written before the key existed, and the run trained with its old value
SAVED_RUN_DEFAULTS: tuple[tuple[tuple[str, ...], Any], ...] = (
    # a run written before commit 0c5596e (which added the key) drew one dropout case per sample
    (("model", "u2a", "modality_dropout", "cases"), "sample"),
)


def load_saved_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The config of a run folder (its ``config.yaml``, written by :func:`save_run_config`): as
    :func:`load_run_config`, but a key added since the run was written gets the value the run
    trained with (:data:`SAVED_RUN_DEFAULTS`), not today's default."""
    data = load_yaml(path)
    for keys, old in SAVED_RUN_DEFAULTS:
        node = data
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and node and keys[-1] not in node:
            node[keys[-1]] = old
    return build_run_config(data, overrides, name=Path(path).stem, where=str(path), warn=False)


#: what a resumed run may change against the config it trained with: how long it trains and how it
#: logs, checkpoints, loads and skips data - not what it computes (the model, the data, the
#: optimisation, the seed), which would silently make the run's record wrong
RESUME_MAY_CHANGE = frozenset({
    "name", "output_dir",
    "train.epochs", "train.max_steps", "train.progress", "train.log_every_steps", "train.tensorboard",
    "train.keep_last", "train.checkpoint_every_steps", "train.num_workers", "train.eval_every_epochs",
    "data.skip_bad",
})


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def resume_changes(saved: RunConfig, new: RunConfig) -> list[tuple[str, Any, Any]]:
    """The settings in which ``new`` differs from the ``saved`` config of a run and which a resumed
    run may not change (every key outside :data:`RESUME_MAY_CHANGE`): ``(key, saved, new)``."""
    a, b = _flat(saved.to_dict()), _flat(new.to_dict())
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)]


def run_config_yaml(cfg: RunConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_run_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); :func:`load_run_config` reads it back."""
    from u2a.io import atomic_write_text

    atomic_write_text(path, run_config_yaml(cfg))
    return Path(path)


def load_model_config(path: str | Path) -> ModelConfig:
    """The ``model:`` section of a run config (or a file that holds only a model config)."""
    data = load_yaml(path)
    if not isinstance(data.get("model"), dict):
        data = {"model": data}  # a file that holds only a model config
    section = migrate_legacy(data, str(path))["model"]
    root = _schema(ModelConfig)
    _apply(root, section, "model.")
    return _to_object(root, "model")
