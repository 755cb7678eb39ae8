"""BERT-like text encoders: BERT (and MiniLM, which is a BertModel), RoBERTa, XLM-R, MPNet."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from transformers import AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel

from u2a.encoders.base import EncoderAdapter, attention_mask_4d, load_checked
from u2a.encoders.registry import register_adapter


class _TextAdapter(EncoderAdapter):
    kind = "text"
    input_names = ("input_ids", "attention_mask", "token_type_ids")
    # the pooler, and the pretraining heads of BertForPreTraining / *ForMaskedLM checkpoints
    unused_weights = r"(^|\.)(pooler|cls|lm_head|classifier)\."

    def __init__(self, model: PreTrainedModel, cls_token_id: int | None = None, sep_token_id: int | None = None):
        super().__init__(model)
        cfg = model.config
        self.cls_token_id = cls_token_id if cls_token_id is not None else getattr(cfg, "bos_token_id", None)
        self.sep_token_id = sep_token_id if sep_token_id is not None else getattr(cfg, "eos_token_id", None)
        self.pad_token_id = getattr(cfg, "pad_token_id", None) or 0

    @classmethod
    def model_class(cls):
        return AutoModel

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> "EncoderAdapter":
        return cls(AutoModel.from_config(config, add_pooling_layer=False))

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: PretrainedConfig, **kwargs: Any) -> "EncoderAdapter":
        model = load_checked(AutoModel, name_or_path, config, cls.family, unused=cls.unused_weights,
                             add_pooling_layer=False, **kwargs)
        cls_id = sep_id = None
        problem = None
        try:
            tok = AutoTokenizer.from_pretrained(name_or_path)
            cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
        except (OSError, ValueError, TypeError) as e:
            problem = f"{type(e).__name__}: {e}"
        adapter = cls(model, cls_id, sep_id)
        if problem is not None and adapter.cls_token_id is None:
            import warnings

            from u2a.errors import U2AWarning

            warnings.warn(f"{name_or_path}: no tokenizer could be loaded ({problem}) and the config names no "
                          "bos token: U2A's CLS token starts from a random vector instead of the encoder's own "
                          "[CLS] embedding, and the placeholder text of a missing modality is pad ids",
                          U2AWarning, stacklevel=2)
        return adapter

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = inputs["input_ids"]
        kwargs = {}
        if inputs.get("token_type_ids") is not None and self.family == "bert":
            kwargs["token_type_ids"] = inputs["token_type_ids"]
        tokens = self.model.embeddings(input_ids=ids, **kwargs)
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        # position 0 holds the tokenizer's [CLS] / <s>: U2A's own CLS token replaces it
        return tokens[:, 1:], mask[:, 1:].to(tokens.dtype)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None, private: int = 0) -> torch.Tensor:
        mask4d = attention_mask_4d(self.config, tokens, mask, private)
        return self.model.encoder(tokens, attention_mask=mask4d)[0]

    @property
    def final_norm(self):
        # post-LN blocks: the last block's output LayerNorm produces the encoder's outputs
        return self.model.encoder.layer[-1].output.LayerNorm

    @torch.no_grad()
    def default_cls(self) -> torch.Tensor | None:
        if self.cls_token_id is None:
            return None
        ids = torch.tensor([[self.cls_token_id]], device=self.model.device)
        return self.model.embeddings(input_ids=ids)[0, 0].detach().clone()

    def placeholder_inputs(self, n: int, like: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The tokenisation of the empty string: [CLS] [SEP], padded to ``like``'s length."""
        length = int(like["input_ids"].shape[1]) if like is not None else 2
        length = max(length, 2)
        ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        ids[:, 0] = self.cls_token_id if self.cls_token_id is not None else self.pad_token_id
        ids[:, 1] = self.sep_token_id if self.sep_token_id is not None else ids[:, 0]
        mask = torch.zeros((n, length), dtype=torch.long)
        mask[:, :2] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if like is not None and "token_type_ids" in like:
            out["token_type_ids"] = torch.zeros_like(ids)
        return out


@register_adapter
class BertAdapter(_TextAdapter):
    """BERT and BERT-architecture models (bert-base-uncased, all-MiniLM-L6-v2, ...)."""

    family = "bert"
    model_types = ("bert",)
    lora_target_pattern = r"encoder\.layer\.\d+\.attention\.(self\.(query|key|value)|output\.dense)"


@register_adapter
class RobertaAdapter(_TextAdapter):
    family = "roberta"
    model_types = ("roberta", "xlm-roberta")
    lora_target_pattern = r"encoder\.layer\.\d+\.attention\.(self\.(query|key|value)|output\.dense)"


@register_adapter
class MPNetAdapter(_TextAdapter):
    family = "mpnet"
    model_types = ("mpnet",)
    lora_target_pattern = r"encoder\.layer\.\d+\.attention\.attn\.(q|k|v|o)"
