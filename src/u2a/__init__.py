"""u2a: Unified Unimodal Adaptation for multimodal learning with missing modalities."""

__version__ = "0.1.0"
