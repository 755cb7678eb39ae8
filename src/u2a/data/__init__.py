"""Datasets: manifests (JSONL/CSV), checking them, and the built-in emoji dataset."""

from u2a.data.check import CheckReport, check_manifest, format_report, parse_modalities
from u2a.data.emoji import prepare_emoji
from u2a.data.manifest import (
    KINDS,
    SPLITS,
    Manifest,
    Problem,
    Sample,
    find_split_files,
    infer_modalities,
    load_manifest,
    load_splits,
    read_classes,
    write_manifest,
)

__all__ = [
    "KINDS",
    "SPLITS",
    "CheckReport",
    "Manifest",
    "Problem",
    "Sample",
    "check_manifest",
    "find_split_files",
    "format_report",
    "infer_modalities",
    "load_manifest",
    "load_splits",
    "parse_modalities",
    "prepare_emoji",
    "read_classes",
    "write_manifest",
]
