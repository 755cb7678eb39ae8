"""Metrics and prediction."""

from u2a.evaluation.metrics import compute_metrics, is_better
from u2a.evaluation.predict import predict

__all__ = ["compute_metrics", "is_better", "predict"]
