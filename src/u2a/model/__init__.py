"""The U2A model, LoRA handling and modality dropout."""

from u2a.model.dropout import sample_modality_dropout
from u2a.model.u2a import Features, U2AModel, U2AOutput

__all__ = ["Features", "U2AModel", "U2AOutput", "sample_modality_dropout"]
