"""Errors that u2a reports to the user as a message (no traceback) from the command line."""

from __future__ import annotations


class U2AError(Exception):
    """Base class of errors caused by the user's input, config or files."""


class ConfigError(U2AError):
    """A config key is unknown, has the wrong type or an impossible value."""


class DataError(U2AError):
    """A dataset file, line or sample is missing or malformed."""


class SampleError(DataError):
    """One sample's input cannot be used as training uses it: a file that does not decode, a text
    the tokenizer cannot take. The parts are kept apart so that ``u2a data check`` can place the
    problem at its manifest line and a ``skip_bad`` run can record it:

    - ``reason``: what is wrong (``unreadable image a.png: OSError: image file is truncated``);
    - ``sample_id``, ``modality``: the sample and the field, when known;
    - ``file``: the file that failed (a frame of a video folder: that frame), when there is one;
    - ``where``: ``MANIFEST:LINE`` of the sample, when known.

    ``str()`` joins them into one line: ``MANIFEST:LINE: sample 'id': field 'image': reason``.
    """

    def __init__(self, reason: str, sample_id: str | None = None, file: str | None = None,
                 modality: str | None = None, where: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.sample_id = sample_id
        self.file = None if file is None else str(file)
        self.modality = modality
        self.where = where

    def __reduce__(self):  # keep every part through pickling (DataLoader worker processes)
        return (SampleError, (self.reason, self.sample_id, self.file, self.modality, self.where))

    def located(self, sample_id: str | None = None, modality: str | None = None,
                where: str | None = None) -> SampleError:
        """A copy with the parts that were not known where it was raised filled in."""
        return SampleError(self.reason, self.sample_id if self.sample_id is not None else sample_id,
                           self.file, self.modality if self.modality is not None else modality,
                           self.where if self.where is not None else where)

    def __str__(self) -> str:
        parts = []
        if self.where:
            parts.append(str(self.where))
        if self.sample_id is not None:
            parts.append(f"sample {self.sample_id!r}")
        if self.modality:
            parts.append(f"field '{self.modality}'")
        return ": ".join([*parts, self.reason])


class ModelError(U2AError):
    """An encoder or a saved model cannot be loaded or used as asked."""


class U2AWarning(UserWarning):
    """Something the user should know that does not stop u2a (a stale lock taken over, a saved
    model without a file manifest, a damaged old checkpoint that is ignored). The ``u2a`` command
    prints it as one line, ``u2a: warning: ...``."""
