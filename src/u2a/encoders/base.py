"""The encoder adapter interface.

An adapter wraps one Hugging Face transformers model and splits it in two, as U2A needs
(paper, equations 1 and 3):

* :meth:`EncoderAdapter.embed` - the frozen embedding layer: raw model inputs -> a token sequence
  (``n x L x d``) *without* the model's own class token(s), plus a key padding mask (1 = real token)
  for families that pad (text) or ``None``.
* :meth:`EncoderAdapter.encode` - the transformer stack and its final norm on a sequence into which
  U2A has put its own CLS and mask tokens. ``private=k`` hides the last ``k`` tokens from every
  other token (they attend to everything; nothing attends to them): U2A's one-way mask tokens.
* :attr:`EncoderAdapter.final_norm` - the LayerNorm that produces the encoder's outputs (its affine
  map bounds what any output token can be; see :mod:`u2a.methods.u2a.estimators`).

Each family names its LoRA targets exactly (:attr:`lora_target_pattern`, a regex that must match
the query, key, value and attention-output projections of every block and nothing else).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from typing import Any, ClassVar, Iterator, Mapping

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from u2a.errors import ModelError, U2AWarning


class EncoderAdapter(nn.Module):
    #: registry key, e.g. "bert"
    family: ClassVar[str] = ""
    #: ``config.model_type`` values this adapter handles
    model_types: ClassVar[tuple[str, ...]] = ()
    #: what kind of raw input the encoder takes: "text", "image" or "audio"
    kind: ClassVar[str] = ""
    #: names of the tensors the adapter takes from a batch; the first is required, the rest optional
    input_names: ClassVar[tuple[str, ...]] = ()
    #: regex (full match, as peft uses it) naming the q, k, v and attention-output Linear layers
    lora_target_pattern: ClassVar[str] = ""
    #: regex (searched in each name) of checkpoint weights the encoder leaves out on purpose: a
    #: pooler, a classification or pretraining head, the other tower of a two-tower model. Loading
    #: them is no news; any other weight the encoder does not use is reported (a U2AWarning).
    unused_weights: ClassVar[str] = r"(^|\.)(pooler|classifier)\."

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def encoder_config(cls, config: PretrainedConfig) -> PretrainedConfig:
        """The config of the part u2a uses (e.g. the vision tower of a CLIP config)."""
        return config

    @classmethod
    def model_class(cls) -> type[PreTrainedModel]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "EncoderAdapter":
        """A randomly initialised encoder of the given architecture."""
        return cls(cls.model_class()(cls.encoder_config(config)))

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, **kwargs: Any) -> "EncoderAdapter":
        """Pretrained weights; an error if the checkpoint lacks any of the encoder's weights."""
        return cls(load_checked(cls.model_class(), name_or_path, cls.encoder_config(config), cls.family,
                                unused=cls.unused_weights, **kwargs))

    # ---- sizes --------------------------------------------------------------------------
    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    def batch_size(self, inputs: Mapping[str, torch.Tensor]) -> int:
        return int(inputs[self.input_names[0]].shape[0])

    # ---- forward pieces -----------------------------------------------------------------
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        raise NotImplementedError

    @property
    def final_norm(self) -> nn.LayerNorm:
        """The LayerNorm whose output :meth:`encode` returns."""
        raise NotImplementedError

    def run_layers(self, layers, final_norm, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        """Every block of a plain ModuleList stack (transformers 5 ViT / AST layout), then the final
        norm; ``mask`` is a key padding mask (1 = real token) or None."""
        mask4d = attention_mask_4d(self.config, tokens, mask, private)
        hidden = tokens
        for layer in layers:
            hidden = layer(hidden, mask4d)
        return final_norm(hidden)

    @torch.no_grad()
    def default_cls(self) -> torch.Tensor | None:
        """The embedding of the model's own class token (with its position), used to initialise
        U2A's learnable CLS token; ``None`` for families without one (then it starts random)."""
        return None

    def placeholder_inputs(self, n: int, like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Inputs standing for ``n`` missing samples, as the paper's baselines feed them
        (empty text, an all-zero image or audio), of :attr:`input_shape` where the model set it (so
        that a placeholder is the same input whether or not the batch holds the modality); ``like``
        is a real batch to take dtype and device (and, where no input shape is set, the shape) from."""
        raise NotImplementedError

    #: the shape of one sample's main input (``input_names[0]``, without the batch dimension) as the
    #: data pipeline makes it for this model, e.g. (3, 84, 84) for images at the modality's
    #: ``image_size``; set by the model from its modality config (:meth:`sample_shape`). None: it
    #: varies with the sample (text), or it is not known (a bare adapter).
    input_shape: tuple[int, ...] | None = None

    def sample_shape(self, image_size: int | None = None, max_length: int | None = None,
                     frames: int | None = None) -> tuple[int, ...] | None:
        """The shape of one sample's main input for a modality with these settings (``frames``:
        video clips), or None where it varies with the sample. ``None`` settings: the encoder's own."""
        return None

    def _placeholder_zeros(self, name: str, n: int, native: tuple[int, ...],
                           like: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """``{name: zeros}`` of ``n`` rows of :attr:`input_shape` (else ``like``'s shape, else ``native``),
        with ``like``'s dtype and device."""
        ref = like.get(name) if like is not None else None
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
        else:
            shape = tuple(ref.shape[1:]) if ref is not None else native
        if ref is not None:
            return {name: torch.zeros((n, *shape), dtype=ref.dtype, device=ref.device)}
        return {name: torch.zeros((n, *shape), dtype=torch.float32)}

    def subset(self, inputs: Mapping[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``index`` of a batch of inputs."""
        return {k: inputs[k].index_select(0, index) for k in self.input_names if k in inputs}

    def check_inputs(self, inputs: Mapping[str, Any], modality: str) -> None:
        missing = [k for k in self.input_names[:1] if k not in inputs]
        if missing:
            raise ModelError(
                f"modality {modality!r} ({self.family} encoder) needs inputs {list(self.input_names)}; "
                f"missing {missing} (got {sorted(inputs)})"
            )
        rows = {k: int(inputs[k].shape[0]) for k in self.input_names if k in inputs}
        if len(set(rows.values())) > 1:
            raise ModelError(f"modality {modality!r}: input tensors disagree in batch size: {rows}")

    def extra_repr(self) -> str:
        return f"family={self.family}, hidden_size={self.hidden_size}, layers={self.num_layers}"


# ---- helpers shared by the families ---------------------------------------------------


def attention_mask_4d(config: PretrainedConfig, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0):
    """The model's own 4-D attention mask (in the format of its attention implementation) for a key
    padding mask (1 = real token) or ``None``; ``private=k``: the last ``k`` tokens are keys for
    themselves only (one-way tokens: they read every token, no other token reads them)."""
    if mask is None and private == 0:
        return None
    if private == 0:
        return create_bidirectional_mask(config=config, inputs_embeds=tokens, attention_mask=mask)
    first_private = int(tokens.shape[1]) - int(private)

    def one_way(batch_idx, head_idx, q_idx, kv_idx):
        return (kv_idx < first_private) | (q_idx >= first_private)

    return create_bidirectional_mask(config=config, inputs_embeds=tokens, attention_mask=mask, and_mask_function=one_way)


def load_checked(
    model_cls: type[PreTrainedModel],
    name_or_path: str,
    config: PretrainedConfig,
    family: str,
    **kwargs: Any,
) -> PreTrainedModel:
    """``model_cls.from_pretrained`` that refuses to hand back a model with weights missing from the
    checkpoint (transformers only logs them and leaves them randomly initialised).

    transformers' load report (a table of MISSING / UNEXPECTED weights, logged as a warning) is
    held back: missing weights are an error here, weights matching ``unused`` (the family's
    :attr:`EncoderAdapter.unused_weights`) are expected, and any other unused weight is named in a
    :class:`~u2a.errors.U2AWarning`."""
    unused = kwargs.pop("unused", EncoderAdapter.unused_weights)
    with held_load_reports():
        model, info = model_cls.from_pretrained(name_or_path, config=config, output_loading_info=True, **kwargs)
    surprising = sorted(k for k in info.get("unexpected_keys") or () if not re.search(unused, k))
    if surprising:
        shown = ", ".join(surprising[:8]) + (", ..." if len(surprising) > 8 else "")
        warnings.warn(f"encoder {name_or_path!r}: its checkpoint holds {len(surprising)} "
                      f"weight{'s' if len(surprising) != 1 else ''} the {family} encoder does not use: {shown}",
                      U2AWarning, stacklevel=3)
    missing = sorted(set(info.get("missing_keys") or ()) | {k[0] for k in info.get("mismatched_keys") or ()})
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise ModelError(
            f"the checkpoint {name_or_path!r} does not hold the weights of a {family} encoder "
            f"({model_cls.__name__}): missing {shown}"
        )
    model.eval()
    return model


@contextlib.contextmanager
def held_load_reports() -> Iterator[list[logging.LogRecord]]:
    """Hold back the load reports that transformers' ``from_pretrained`` logs (``... LOAD REPORT``,
    a warning of the ``transformers.modeling_utils`` logger) while the block runs; other messages
    pass. The held records are yielded, for a caller that wants to show them after all."""
    held: list[logging.LogRecord] = []

    class _Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if "LOAD REPORT" in str(record.msg):
                held.append(record)
                return False
            return True

    logger = logging.getLogger("transformers.modeling_utils")
    hold = _Hold()
    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)


def image_size_of(config: PretrainedConfig) -> tuple[int, int]:
    size = config.image_size
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def image_sample_shape(config: PretrainedConfig, image_size: int | None, frames: int | None) -> tuple[int, ...]:
    """(channels, H, W) of one image at ``image_size`` (default: the config's), (frames, ...) for video."""
    h, w = (int(image_size), int(image_size)) if image_size else image_size_of(config)
    shape = (int(config.num_channels), h, w)
    return (int(frames), *shape) if frames else shape
