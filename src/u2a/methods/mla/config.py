"""The MLA baseline's config (``model.mla`` in a run config).

MLA (Zhang et al., "Multimodal Representation Learning by Alternating Unimodal Adaptation",
CVPR 2024, arXiv 2311.10707): one encoder per modality, one shared linear head, trained by
alternating unimodal steps with a head-gradient projection, fused at test time by per-sample
prediction entropy. See docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from u2a.validation import check

FINETUNE = ("lora", "full")
FUSIONS = ("entropy", "mean")


@dataclass
class MLAConfig:
    """``model.mla``."""

    #: "lora": the encoders get LoRA (model.lora; rank 1 keeps the budget comparable with U2A);
    #: "full": every encoder weight is trained (embedding layers stay frozen)
    finetune: str = "lora"
    #: project the shared head's gradient away from the features of the previous modality
    gradient_modification: bool = True
    #: alpha of the recursive projector at the start of training ...
    alpha: float = 1.0
    #: ... multiplied by alpha_decay ** progress (progress: 0 -> 1 over training)
    alpha_decay: float = 0.1
    #: test-time fusion of the per-modality predictions: "entropy" (per sample, lower entropy ->
    #: higher weight) or "mean"
    fusion: str = "entropy"

    def __post_init__(self) -> None:
        check(self.finetune in FINETUNE, "model.mla.finetune", f"must be one of {FINETUNE}, got {self.finetune!r}")
        check(self.alpha > 0, "model.mla.alpha", f"must be > 0, got {self.alpha}")
        check(0 < self.alpha_decay <= 1, "model.mla.alpha_decay", f"must be in (0, 1], got {self.alpha_decay}")
        check(self.fusion in FUSIONS, "model.mla.fusion", f"must be one of {FUSIONS}, got {self.fusion!r}")
