"""Deployable inference: a trained U2A model as ONNX graphs (one per modality encoder, one for
token selection and the head) plus merged weights, and a small onnxruntime runtime that takes any
subset of modalities per request (docs/export.md).

- :func:`export_model` (``u2a export RUN --out DIR``)
- :class:`ExportedModel` - ``ExportedModel(DIR).predict({"text": ...})``
"""

from __future__ import annotations

__all__ = ["ExportedModel", "export_model", "load_manifest"]


def __getattr__(name: str):
    if name in ("export_model", "load_manifest"):
        from u2a.export import exporter

        return getattr(exporter, name)
    if name == "ExportedModel":
        from u2a.export.runtime import ExportedModel

        return ExportedModel
    raise AttributeError(name)
