"""The seam every method plugs into.

- :class:`MethodModel` - an ``nn.Module`` with one encoder adapter per modality (LoRA injected),
  the prediction contract (:meth:`~MethodModel.encode` once per batch, then
  :meth:`~MethodModel.select` per availability pattern; ``forward`` = both), and saving/loading of
  what was trained (safetensors + JSON config; the frozen encoders are re-loaded from their ids).
- :class:`Method` - how a method trains: its optimizer parameter groups, optional preparation
  before training, and a training step that returns named losses. The
  :class:`~u2a.train.trainer.Trainer` keeps the shell (epochs, accumulation, checkpoints, resume,
  logs, validation and selection) and calls :meth:`Method.train_step` once per micro-batch.
- :class:`StepContext` - what a training step gets from the shell: the (possibly DDP-wrapped)
  model, ``backward``, and for methods that step the optimizer themselves (MLA's alternating
  unimodal updates) ``optimizer_step``.
- :class:`BatchFeatures` - a method's encoder outputs of a batch; evaluation concatenates them over
  a split and re-runs ``select`` for every missing-modality scenario.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from safetensors.torch import load_file
from torch import nn

from u2a.config import ModelConfig
from u2a.encoders import EncoderAdapter, build_encoder
from u2a.errors import ModelError, U2AWarning
from u2a.io import atomic_write_json, atomic_write_safetensors, sha256_file
from u2a.model.lora import inject_lora, is_merged, merge_lora, unmerge_lora

CONFIG_NAME = "u2a_config.json"
WEIGHTS_NAME = "adapter.safetensors"
#: 1: U2A only (``model.mask_tokens`` / ``model.align_weight``); 2: ``model.method`` + sections
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
#: in u2a_config.json: the size and SHA-256 of every file of a saved model, checked on loading
FILES_KEY = "files"
#: in the weights' safetensors metadata: the SHA-256 of the class list they were trained with
CLASSES_KEY = "u2a_classes_sha256"


# ---- features and outputs ---------------------------------------------------------------------

def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


class BatchFeatures:
    """Base for a method's per-batch encoder outputs (a dataclass).

    Every field is a tensor with the batch as its first dimension, or a dict of such tensors; the
    fields named in ``shared_fields`` do not depend on the batch (e.g. the CLS output of a
    placeholder input) and are taken from the first batch when batches are concatenated."""

    shared_fields: ClassVar[tuple[str, ...]] = ()

    def to(self, device: torch.device | str):
        return type(self)(**{f.name: _map_tensors(getattr(self, f.name), lambda t: t.to(device))
                             for f in dataclasses.fields(self)})

    @classmethod
    def concat(cls, parts: Sequence["BatchFeatures"]):
        if not parts:
            raise ValueError("no features to concatenate")
        out = {}
        for f in dataclasses.fields(parts[0]):
            first = getattr(parts[0], f.name)
            if f.name in cls.shared_fields:
                out[f.name] = first
            elif isinstance(first, torch.Tensor):
                out[f.name] = torch.cat([getattr(p, f.name) for p in parts])
            elif isinstance(first, dict):
                out[f.name] = {k: torch.cat([getattr(p, f.name)[k] for p in parts]) for k in first}
            else:
                out[f.name] = first
        return cls(**out)


@dataclass
class ModelOutput:
    """What every method's ``select``/``forward`` returns; methods add their own fields."""

    logits: torch.Tensor
    #: (B, M) the modalities the prediction used
    available: torch.Tensor


# ---- the model ---------------------------------------------------------------------------------

class MethodModel(nn.Module):
    """One frozen pretrained encoder per modality (with LoRA), and a method's own parts."""

    #: the registry name of the method this model belongs to
    method_name: ClassVar[str] = ""

    def __init__(self, config: ModelConfig, encoders: Mapping[str, EncoderAdapter]):
        super().__init__()
        self.config = config
        self.modalities: list[str] = config.modality_names
        missing = [m for m in self.modalities if m not in encoders]
        if missing:
            raise ModelError(f"no encoder given for modalities {missing}")
        self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.set_input_shapes()
        self.adapt_encoders()

    def set_input_shapes(self) -> None:
        """Tell each encoder the shape of one sample's input as the data pipeline makes it for its
        modality (images at ``image_size``, audio at ``max_length`` frames), so that a placeholder
        input (an absent modality, fed as the paper's baselines feed it) is the same whether or not
        the batch holds real inputs of that modality."""
        from u2a.data.processing import input_settings

        for mc in self.config.modalities:
            enc = self.encoders[mc.name]
            enc.input_shape = enc.sample_shape(**input_settings(mc))

    def adapt_encoders(self) -> None:
        """Freeze the encoders and add LoRA (rank ``config.lora.rank``) to their attention."""
        for m in self.modalities:
            inject_lora(self.encoders[m], self.config.lora, m)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ModelConfig, pretrained: bool | None = None):
        """Build the encoders named in the config. ``pretrained`` overrides each modality's flag."""
        encoders = {
            m.name: build_encoder(m.encoder, pretrained=m.pretrained if pretrained is None else pretrained)
            for m in config.modalities
        }
        return cls(config, encoders)

    def targets_of(self, source: str) -> list[str]:
        return [t for t in self.modalities if t != source]

    @property
    def device(self) -> torch.device:
        return next(p for p in self.parameters() if p.requires_grad).device

    # ---- parameters and state -----------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint or a saved model holds: the trainable parameters and the method's own
        persistent buffers (statistics, projector state); never the frozen encoder weights."""
        state = self.trainable_state_dict()
        for name, buf in self.named_buffers():
            if not name.startswith("encoders.") and self._is_persistent(name):
                state[name] = buf.detach()
        return state

    def _is_persistent(self, name: str) -> bool:
        module_name, _, leaf = name.rpartition(".")
        module = self.get_submodule(module_name) if module_name else self
        return leaf not in module._non_persistent_buffers_set

    def count_parameters(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.parameters())
        learnable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return total, learnable

    # ---- encoders -----------------------------------------------------------------------
    def rows_to_encode(
        self, m: str, inputs: Mapping[str, torch.Tensor], present: torch.Tensor, encode_all: bool = False
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Modality m's inputs for the samples that have it, and their batch rows.

        ``inputs`` may hold one row per sample (placeholders where m is absent; skipped unless
        ``encode_all``) or one row per sample that has m."""
        enc = self.encoders[m]
        enc.check_inputs(inputs, m)
        b = present.shape[0]
        rows = present.nonzero().squeeze(1)
        n_in = enc.batch_size(inputs)
        if n_in == b:
            if encode_all or rows.numel() == b:
                return dict(inputs), torch.arange(b, device=present.device)
            return enc.subset(inputs, rows), rows
        if n_in == rows.numel():
            if encode_all:
                raise ModelError(f"modality {m!r}: encode_all needs one input row per sample ({b}), got {n_in}")
            return dict(inputs), rows
        raise ModelError(
            f"modality {m!r}: inputs have {n_in} rows, but the batch has {b} samples of which "
            f"{rows.numel()} have this modality (give one row per sample or one per present sample)"
        )

    def run_encoder(
        self,
        m: str,
        inputs: Mapping[str, torch.Tensor],
        front: torch.Tensor,
        back: torch.Tensor | None = None,
        private: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Modality m's encoder on ``[front tokens, embedded input, back tokens]``.

        ``front`` (k1, d) and ``back`` (k2, d) are learnable tokens shared by every sample; returns
        their outputs, (n, k1, d) and (n, k2, d). ``private``: the back tokens are one-way (they
        read every token, no other token reads them). Video (``pixel_values`` of shape
        n x frames x 3 x H x W): each frame is its own sequence and the outputs are averaged over
        the frames (the mean keeps the per-image scale and ignores frame order)."""
        first = inputs.get("pixel_values")
        if first is not None and first.dim() == 5:
            n, f = first.shape[:2]
            flat = {k: (v.flatten(0, 1) if k == "pixel_values" else v) for k, v in inputs.items()}
            a, b = self.run_encoder(m, flat, front, back, private)
            a = a.view(n, f, *a.shape[1:]).mean(dim=1)
            if b is not None:
                b = b.view(n, f, *b.shape[1:]).mean(dim=1)
            return a, b
        enc = self.encoders[m]
        with torch.no_grad():  # the embedding layer is frozen
            tokens, mask = enc.embed(inputs)
        n, _, d = tokens.shape
        k1 = front.shape[0]
        k2 = 0 if back is None else back.shape[0]
        parts = [front.to(tokens.dtype).unsqueeze(0).expand(n, k1, d), tokens]
        if k2:
            parts.append(back.to(tokens.dtype).unsqueeze(0).expand(n, k2, d))
        seq = torch.cat(parts, dim=1)
        if mask is not None:
            mask = torch.cat([mask.new_ones((n, k1)), mask, mask.new_ones((n, k2))], dim=1)
        hidden = enc.encode(seq, mask, private=k2 if (private and k2) else 0)
        return hidden[:, :k1], (hidden[:, hidden.shape[1] - k2:] if k2 else None)

    def check_present(self, present: torch.Tensor, ids: Sequence[str] | None) -> torch.Tensor:
        present = present.to(torch.bool)
        b, n_mod = present.shape
        if n_mod != len(self.modalities):
            raise ModelError(f"present has {n_mod} columns, the model has modalities {self.modalities}")
        empty = (~present.any(dim=1)).nonzero().squeeze(1).tolist()
        if empty:
            names = [str(ids[i]) if ids is not None else f"#{i}" for i in empty]
            raise ModelError(f"sample(s) {names} have no modality at all; a prediction needs at least one")
        return present

    # ---- the prediction contract --------------------------------------------------------
    def encode(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
    ) -> BatchFeatures:
        """Run each encoder on the samples that have its modality. The result must not depend on
        which *other* modalities a sample has, so one ``encode`` serves every scenario."""
        raise NotImplementedError

    def select(self, feats: BatchFeatures, available: torch.Tensor) -> ModelOutput:
        """The prediction when only ``available`` (B, M; a subset of the present ones) is used."""
        raise NotImplementedError

    def forward(
        self,
        inputs: Mapping[str, Mapping[str, torch.Tensor]],
        present: torch.Tensor,
        drop: torch.Tensor | None = None,
        ids: Sequence[str] | None = None,
        encode_all: bool = False,
    ) -> ModelOutput:
        """The prediction from every modality a sample has (minus ``drop``, B x M, if given)."""
        present = present.to(torch.bool)
        available = present & ~drop.to(torch.bool) if drop is not None else present
        return self.select(self.encode(inputs, present, ids=ids, encode_all=encode_all), available)

    def check_available(self, feats: BatchFeatures, available: torch.Tensor) -> torch.Tensor:
        available = available.to(torch.bool)
        present = getattr(feats, "present")
        if (available & ~present).any():
            raise ModelError("available marks a modality that the sample does not have")
        if not available.any(dim=1).all():
            raise ModelError("a sample has no available modality (all missing or all dropped)")
        return available

    def diagnostics(self, feats: BatchFeatures, labels: torch.Tensor | None, classes: Sequence[str],
                    task: str) -> dict[str, Any]:
        """Method-specific measurements on encoded features (U2A: mask-token estimate MSE)."""
        return {}

    # ---- settings chosen on validation ------------------------------------------------------
    def calibration_scenarios(self) -> dict[str, tuple[Callable, dict[str, Any]]]:
        """Extra validation scenarios, ``name -> (availability function, select keyword
        arguments)``, whose logits :meth:`calibrate` needs each time the model is validated
        (U2A's ``gate: validation``); none by default."""
        return {}

    def calibrate(self, logits: Mapping[str, torch.Tensor], score: Callable[[torch.Tensor], float]) -> dict[str, Any]:
        """Choose settings from the validation logits of :meth:`calibration_scenarios`
        (``score(logits)``: the selection metric of logits on the validation labels), store them in
        the model and return ``{"logits": {scenario: logits with the chosen settings}, ...}``."""
        return {}

    # ---- LoRA merge ---------------------------------------------------------------------
    def merge_lora(self) -> None:
        merge_lora(self.encoders)

    def unmerge_lora(self) -> None:
        unmerge_lora(self.encoders)

    # ---- saving and loading -------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write only what was trained (and the method's statistics) as safetensors, plus a JSON
        config naming the method and the encoders; the frozen encoders are re-loaded from their ids."""
        if is_merged(self.encoders):
            raise ModelError("cannot save a model whose LoRA is merged: call unmerge_lora() first")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # the weights carry the hash of the class list they were trained with (edited or reordered
        # classes in u2a_config.json are an error on loading, not a silent relabelling) ...
        data = atomic_write_safetensors(directory / WEIGHTS_NAME, self.saved_state_dict(), metadata={
            "format": "pt", "u2a_format": str(FORMAT_VERSION), CLASSES_KEY: classes_digest(self.config)})
        meta = {"u2a_format": FORMAT_VERSION, "method": self.method_name, "model": self.config.to_dict()}
        if extra:
            meta.update(extra)
        # ... and the config their size and SHA-256, which loading checks (written last: a config
        # that names these weights is never seen next to other ones)
        meta[FILES_KEY] = {WEIGHTS_NAME: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
        atomic_write_json(directory / CONFIG_NAME, meta)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, pretrained: bool | None = None) -> "MethodModel":
        """Load a saved model; called on the base class it builds the saved method's model. The
        files are checked first (:func:`verify_saved_model`)."""
        config = verify_saved_model(directory)
        model_cls = cls
        if cls is MethodModel or cls.method_name != config.method:
            from u2a.methods import get_method

            model_cls = get_method(config.method).model_class
        model = model_cls.from_config(config, pretrained=pretrained)
        model.load_trainable(Path(directory) / WEIGHTS_NAME)
        return model

    def load_trainable(self, path: str | Path | Mapping[str, torch.Tensor], where: str | None = None) -> None:
        """Load what :meth:`saved_state_dict` holds, from a file or a mapping (``where``: the file
        it was read from, for errors); every name and shape must match (a mismatch is an error
        naming them)."""
        if isinstance(path, Mapping):
            state, where = dict(path), where or "state"
        else:
            where = str(path)
            try:
                state = load_file(str(path))
            except Exception as e:  # safetensors raises its own error types for truncated files
                raise ModelError(f"{path}: cannot read the weights ({e}); the file is corrupt or truncated") from e
        own = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        expected = self.saved_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ModelError(
                f"{where}: weights do not fit this model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        for n in expected:
            target = own.get(n)
            if target is None:
                target = buffers[n]
            if target.shape != state[n].shape:
                raise ModelError(f"{where}: {n} has shape {tuple(state[n].shape)}, the model {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(state[n])


def classes_digest(config: ModelConfig) -> str:
    """The SHA-256 of what gives the outputs their meaning: the task, the number of classes and
    the class names in order."""
    classes = list(config.classes) if config.classes is not None else None
    text = json.dumps({"task": config.task, "num_classes": int(config.num_classes), "classes": classes},
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_saved_model(directory: str | Path) -> ModelConfig:
    """Check a saved model folder before it is loaded and return its config: every file has the
    size and SHA-256 that ``u2a_config.json`` lists, and the class list is the one the weights were
    trained with. Each problem is a ModelError naming the file. A folder saved before u2a wrote
    these (no ``files`` entry) loads with a warning."""
    directory = Path(directory)
    config = read_model_config(directory)
    cfg_path = directory / CONFIG_NAME
    files = json.loads(cfg_path.read_text()).get(FILES_KEY)
    if files is None:
        warnings.warn(f"{directory} was saved by an older u2a, without the sizes and SHA-256 of its files: its "
                      "weights are loaded unchecked (save it again with save_pretrained to add them)",
                      U2AWarning, stacklevel=3)
        return config
    if not isinstance(files, dict) or WEIGHTS_NAME not in files:
        raise ModelError(f"{cfg_path}: '{FILES_KEY}' does not list {WEIGHTS_NAME}")
    for name, info in files.items():
        p = directory / name
        if not p.is_file():
            raise ModelError(f"saved model file {p} is missing")
        size = p.stat().st_size
        if not isinstance(info, dict) or size != info.get("size"):
            expected = info.get("size") if isinstance(info, dict) else None
            raise ModelError(f"saved model file {p} is corrupt or truncated: {size} bytes, {CONFIG_NAME} says {expected}")
        if sha256_file(p) != info.get("sha256"):
            raise ModelError(f"saved model file {p} is corrupt: its SHA-256 does not match the one in {CONFIG_NAME}")
    from safetensors import safe_open

    with safe_open(str(directory / WEIGHTS_NAME), "pt") as f:
        bound = (f.metadata() or {}).get(CLASSES_KEY)
    if bound is None:
        raise ModelError(f"{directory / WEIGHTS_NAME}: its metadata holds no class-list hash ({CLASSES_KEY})")
    if bound != classes_digest(config):
        shown = config.classes if config.classes is None or len(config.classes) <= 8 else [*config.classes[:8], "..."]
        raise ModelError(
            f"{cfg_path}: the classes (model.classes {shown}, num_classes {config.num_classes}, task {config.task}) "
            f"are not those the weights in {WEIGHTS_NAME} were trained with: they were edited or reordered, which "
            "would relabel every prediction; restore the original class list"
        )
    return config


def read_model_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` of a saved model folder (older formats are converted), unchecked:
    :func:`verify_saved_model` also checks the files."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ModelError(f"{directory} is not a saved u2a model: {p.name} is missing")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg_path}: not valid JSON ({e})") from e
    fmt = meta.get("u2a_format")
    if fmt not in READABLE_FORMATS:
        raise ModelError(f"{cfg_path}: u2a_format {fmt!r} is not one this u2a reads {READABLE_FORMATS}")
    return ModelConfig.from_dict(meta["model"])


def load_model(directory: str | Path, pretrained: bool | None = None) -> MethodModel:
    """Load any saved u2a model (U2A, MLA, UME-MMA, ...) from its folder."""
    return MethodModel.from_pretrained(directory, pretrained=pretrained)


# ---- training ----------------------------------------------------------------------------------

@dataclass
class StepContext:
    """What :meth:`Method.train_step` gets from the Trainer for one micro-batch."""

    #: the model as prepared by accelerate (DDP-wrapped with several processes): call it for
    #: forward passes that must synchronise gradients
    model: nn.Module
    #: the plain model (its attributes, its ``encode``/``select``)
    unwrapped: MethodModel
    accelerator: Any
    cfg: Any
    epoch: int
    batch_index: int
    #: micro-batches in this gradient-accumulation group (the loss is divided by it)
    group: int
    #: seeded per (seed, epoch, batch, process): for the method's own randomness
    generator: torch.Generator
    #: share of the optimizer steps done before this one, 0 .. 1
    progress: float
    optimizer_step_fn: Callable[[], None] | None = None

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss / self.group)

    def optimizer_step(self) -> None:
        """Clip, step and zero the gradients (methods with ``steps_optimizer = True`` only)."""
        if self.optimizer_step_fn is None:
            raise RuntimeError("this method does not step the optimizer itself")
        self.optimizer_step_fn()

    def autocast(self):
        return self.accelerator.autocast()

    @property
    def num_processes(self) -> int:
        return int(self.accelerator.num_processes)

    def sum_over_processes(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over every process (itself with one process): e.g. sample counts, so
        that a loss averaged over the samples of all processes is the same with 1 or N of them."""
        if self.num_processes == 1:
            return value
        return self.accelerator.reduce(value.to(self.accelerator.device), reduction="sum")


class Method:
    """A training method: how its model is built, optimised and stepped.

    ``train_step`` returns named scalar losses (detached or not; the same keys every step, one of
    them ``"loss"``) after calling ``ctx.backward``; the Trainer steps the optimizer at the end of
    each accumulation group - unless ``steps_optimizer`` is True, in which case the method calls
    ``ctx.optimizer_step()`` itself (one or more times per batch; no gradient accumulation)."""

    name: ClassVar[str] = ""
    #: display name in reports
    label: ClassVar[str] = ""
    model_class: ClassVar[type[MethodModel]] = MethodModel
    steps_optimizer: ClassVar[bool] = False

    def build_model(self, config: ModelConfig, pretrained: bool | None = None) -> MethodModel:
        return self.model_class.from_config(config, pretrained=pretrained)

    def display_name(self, config: ModelConfig) -> str:
        return self.label or self.name

    def check_run(self, cfg: Any) -> None:
        """Refuse run settings the method cannot honour (ConfigError naming the key)."""
        from u2a.errors import ConfigError

        if self.steps_optimizer and cfg.train.grad_accum != 1:
            raise ConfigError(f"train.grad_accum: {self.label or self.name} steps the optimizer once per modality "
                              f"and batch; gradient accumulation is not supported (set it to 1)")

    def prepare(self, model: MethodModel, dataset: Any, collate: Callable, cfg: Any, log: Callable[[str], None]) -> None:
        """Called once before the optimizer is built (also when resuming; must be deterministic)."""

    def param_groups(self, model: MethodModel, cfg: Any) -> list[dict[str, Any]]:
        """Optimizer parameter groups (``lr`` relative to nothing: absolute values)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.train.lr}]

    def on_epoch_start(self, model: MethodModel, epoch: int, cfg: Any) -> None:
        """Called before each training epoch (e.g. to switch stages)."""

    def selectable(self, epoch: int, cfg: Any) -> bool:
        """Whether the model after ``epoch`` (1-based) may be selected as the best one."""
        return True

    def train_step(self, ctx: StepContext, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
