"""Turn raw samples into encoder inputs, with the encoders' own processors where they exist.

A dataset item is ``{"id": str, "label": int | list[int] | None, "fields": {modality: raw | None}}``
where raw is the text itself for text, or an absolute file path (image, audio; video: a file or a
folder of frames). :class:`Collator` makes the batch the model takes::

    {"ids": [...], "inputs": {m: {name: tensor, one row per sample that has m}},
     "present": bool (B, M), "labels": long (B,) or float multi-hot (B, C)}
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from u2a.config import ModalityConfig, ModelConfig
from u2a.encoders.registry import resolve_encoder_path
from u2a.errors import DataError, ModelError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image(path: str | Path, sample_id: str = ""):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(bg, rgba).convert("RGB")
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"sample {sample_id!r}: cannot read image {path}: {e}") from e


def load_audio(path: str | Path, sampling_rate: int, sample_id: str = "") -> np.ndarray:
    """Mono float32 waveform at ``sampling_rate`` (soundfile reads wav/flac/ogg; resampling by scipy)."""
    try:
        import soundfile as sf
    except ImportError as e:  # pragma: no cover
        raise DataError("reading audio needs the soundfile package: pip install soundfile") from e
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise DataError(f"sample {sample_id!r}: cannot read audio {path}: {e}") from e
    wav = wav.mean(axis=1)
    if sr != sampling_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(sr, sampling_rate)
        wav = resample_poly(wav, sampling_rate // g, sr // g).astype(np.float32)
    return wav


class TextProcessor:
    kind = "text"

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def load(self, raw: Any, sample_id: str, train: bool) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise DataError(f"sample {sample_id!r}: text is empty; a missing text must be null, not empty")
        return raw

    def __call__(self, loaded: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(loaded), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


class ImageProcessor:
    """The encoder's own image processor, at ``image_size`` when given."""

    kind = "image"

    def __init__(self, processor, image_size: int | None):
        self.processor = processor
        self.kwargs: dict[str, Any] = {}
        if image_size is not None:
            size = getattr(processor, "size", None) or {}
            if "shortest_edge" in size:
                self.kwargs["size"] = {"shortest_edge": image_size}
            else:
                self.kwargs["size"] = {"height": image_size, "width": image_size}
            if getattr(processor, "do_center_crop", False):
                self.kwargs["crop_size"] = {"height": image_size, "width": image_size}

    def load(self, raw: Any, sample_id: str, train: bool):
        return load_image(raw, sample_id)

    def __call__(self, loaded: Sequence[Any]) -> dict[str, torch.Tensor]:
        out = self.processor(list(loaded), return_tensors="pt", **self.kwargs)
        return {"pixel_values": out["pixel_values"]}


class VideoProcessor(ImageProcessor):
    """``frames`` frames per clip (random positions in training, uniform in testing), each through
    the image processor: ``pixel_values`` of shape (n, frames, 3, H, W). A clip is a folder of frame
    images (sorted by name)."""

    kind = "video"

    def __init__(self, processor, image_size: int | None, frames: int):
        super().__init__(processor, image_size)
        self.frames = frames

    def load(self, raw: Any, sample_id: str, train: bool):
        folder = Path(raw)
        if not folder.is_dir():
            raise DataError(
                f"sample {sample_id!r}: video {raw} is not a folder of frames; extract frames first "
                "(e.g. `ffmpeg -i clip.mp4 -vf fps=1 frames/frame_%04d.jpg`)"
            )
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"sample {sample_id!r}: video folder {raw} holds no frame images")
        idx = sample_frame_indices(len(files), self.frames, train)
        return [load_image(files[i], sample_id) for i in idx]

    def __call__(self, loaded: Sequence[Any]) -> dict[str, torch.Tensor]:
        flat = [im for clip in loaded for im in clip]
        pv = self.processor(flat, return_tensors="pt", **self.kwargs)["pixel_values"]
        return {"pixel_values": pv.view(len(loaded), self.frames, *pv.shape[1:])}


def sample_frame_indices(n: int, k: int, train: bool, rng: random.Random | None = None) -> list[int]:
    """k frame positions out of n: uniform (segment centres) for testing, one random position per
    segment for training. Repeats frames when the clip is shorter than k."""
    edges = np.linspace(0, n, k + 1)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        lo, hi = int(np.floor(a)), max(int(np.ceil(b)) - 1, int(np.floor(a)))
        if train:
            out.append((rng or random).randint(lo, min(hi, n - 1)))
        else:
            out.append(min(int((a + b) / 2), n - 1))
    return out


class AudioProcessor:
    """The encoder's own feature extractor (AST: 128-bin log-mel fbank, ``max_length`` frames;
    Whisper: 80-bin log-mel) on 16 kHz mono audio."""

    kind = "audio"

    def __init__(self, extractor, max_length: int | None):
        self.extractor = extractor
        self.max_length = max_length
        self.sampling_rate = int(getattr(extractor, "sampling_rate", 16000))

    def load(self, raw: Any, sample_id: str, train: bool) -> np.ndarray:
        wav = load_audio(raw, self.sampling_rate, sample_id)
        if wav.size == 0:
            raise DataError(f"sample {sample_id!r}: audio {raw} is empty")
        return wav

    def __call__(self, loaded: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        name = type(self.extractor).__name__
        if name.startswith("Whisper"):
            # short clips: pad to the longest clip of the batch, not to 30 s
            longest = max(len(w) for w in loaded)
            hop = int(getattr(self.extractor, "hop_length", 160))
            n = longest + (-longest) % hop
            if self.max_length is not None:
                n = min(n, self.max_length * hop)
            feats = self.extractor(
                list(loaded), sampling_rate=self.sampling_rate, return_tensors="pt",
                padding="max_length", max_length=n, truncation=True,
            )["input_features"]
            return {"input_features": feats}
        kwargs = {"max_length": self.max_length} if self.max_length else {}
        feats = self.extractor(list(loaded), sampling_rate=self.sampling_rate, return_tensors="pt", **kwargs)
        return {"input_values": feats["input_values"]}


def build_processor(mod: ModalityConfig):
    """The processor for one modality, from its encoder's folder."""
    folder = resolve_encoder_path(mod.encoder)
    if mod.kind == "text":
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise ModelError(f"modality {mod.name!r}: no tokenizer for encoder {mod.encoder!r}: {e}") from e
        return TextProcessor(tok, mod.max_length or min(int(tok.model_max_length or 512), 512))
    if mod.kind in ("image", "video"):
        from transformers import AutoImageProcessor

        try:
            proc = AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise ModelError(f"modality {mod.name!r}: no image processor for encoder {mod.encoder!r}: {e}") from e
        if mod.kind == "video":
            return VideoProcessor(proc, mod.image_size, mod.frames)
        return ImageProcessor(proc, mod.image_size)
    if mod.kind == "audio":
        from transformers import AutoFeatureExtractor

        try:
            ext = AutoFeatureExtractor.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise ModelError(f"modality {mod.name!r}: no feature extractor for encoder {mod.encoder!r}: {e}") from e
        return AudioProcessor(ext, mod.max_length)
    raise ModelError(f"modality {mod.name!r}: unknown kind {mod.kind!r}")


class Collator:
    """Collate dataset items into a model batch; each modality is processed only for the samples
    that have it."""

    def __init__(self, config: ModelConfig, processors: Mapping[str, Any], train: bool = False):
        self.config = config
        self.modalities = config.modality_names
        self.processors = dict(processors)
        self.train = train

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        b = len(items)
        present = torch.zeros((b, len(self.modalities)), dtype=torch.bool)
        inputs: dict[str, dict[str, torch.Tensor]] = {}
        for j, m in enumerate(self.modalities):
            proc = self.processors[m]
            loaded = []
            for i, it in enumerate(items):
                raw = it["fields"].get(m)
                if raw is None:
                    continue
                loaded.append(proc.load(raw, str(it["id"]), self.train))
                present[i, j] = True
            if loaded:
                inputs[m] = proc(loaded)
        return {
            "ids": [str(it["id"]) for it in items],
            "inputs": inputs,
            "present": present,
            "labels": self._labels(items),
        }

    def _labels(self, items: Sequence[Mapping[str, Any]]) -> torch.Tensor | None:
        labels = [it.get("label") for it in items]
        if any(lab is None for lab in labels):
            return None
        if self.config.task == "multilabel":
            y = torch.zeros((len(items), self.config.num_classes), dtype=torch.float32)
            for i, lab in enumerate(labels):
                y[i, list(lab)] = 1.0
            return y
        return torch.tensor(labels, dtype=torch.long)


def build_collator(config: ModelConfig, train: bool = False, processors: Mapping[str, Any] | None = None) -> Collator:
    procs = processors or {m.name: build_processor(m) for m in config.modalities}
    return Collator(config, procs, train=train)


def move_batch(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The batch with every tensor on ``device``."""

    def mv(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: mv(v) for k, v in x.items()}
        return x

    return {k: mv(v) for k, v in batch.items()}


Processor = Callable[[Sequence[Any]], dict[str, torch.Tensor]]
