"""Turn raw samples into encoder inputs, with the encoders' own processors where they exist.

A dataset item is ``{"id": str, "label": int | list[int] | None, "fields": {modality: raw | None}}``
where raw is the text itself for text, or an absolute file path (image, audio; video: a folder of
frame images). :class:`Collator` makes the batch the model takes::

    {"ids": [...], "inputs": {m: {name: tensor, one row per sample that has m}},
     "present": bool (B, M), "labels": long (B,) or float multi-hot (B, C),
     "skipped": [{"id", "modality", "file", "reason"}, ...]}  # with skip_bad: samples left out

:func:`validate_text`, :func:`load_image`, :func:`read_audio` and :func:`verify_input` are the one
place where an input is judged usable: the Collator loads through them and ``u2a data check`` runs
them on every sample.
"""

from __future__ import annotations

import logging
import os
import random
import unicodedata
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from u2a.errors import DataError, ModelError, SampleError

if TYPE_CHECKING:  # torch and transformers are imported where they are used: `u2a data check` needs neither
    import torch

    from u2a.config import ModalityConfig, ModelConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
PIXEL_LIMIT_ENV = "U2A_MAX_IMAGE_PIXELS"


# --------------------------------------------------------------------------- loading one input
#
# These functions are the one place where an input is judged usable: the Collator loads every
# batch through them, and `u2a data check` (u2a.data.manifest) runs them on every sample, so that
# what the check passes trains. They raise SampleError (a DataError) naming the file and reason.


def validate_text(raw: Any, sample_id: str | None = None) -> str:
    """The text of a sample, as the tokenizer will take it: a non-empty string that is valid
    Unicode (a lone surrogate such as ``"\\ud800"`` from a broken JSON escape is refused: the
    tokenizer cannot encode it)."""
    if not isinstance(raw, str):
        raise SampleError(f"expected a text, got {type(raw).__name__}", sample_id)
    if not raw.strip():
        raise SampleError("empty text (a missing text must be null or absent, not empty)", sample_id)
    if all(unicodedata.category(ch) in ("Cf", "Cc", "Zs", "Zl", "Zp") for ch in raw):
        raise SampleError("text of only invisible characters (zero-width spaces, byte-order marks, "
                          "controls): an empty text; a missing text must be null or absent", sample_id)
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as e:
        ch = raw[e.start]
        raise SampleError(
            f"text holds a lone surrogate \\u{ord(ch):04x} at character {e.start + 1}, which is not valid "
            "Unicode (a broken \\u escape in the JSON?); fix or remove it", sample_id) from None
    return raw


def _pixel_limit() -> None:
    """Apply ``$U2A_MAX_IMAGE_PIXELS`` (a number, or ``none`` for no limit) to PIL's limit."""
    value = os.environ.get(PIXEL_LIMIT_ENV)
    if value is None:
        return
    from PIL import Image

    v = value.strip().lower()
    if v in ("none", "0", ""):
        Image.MAX_IMAGE_PIXELS = None
        return
    try:
        Image.MAX_IMAGE_PIXELS = int(float(v))
    except ValueError:
        raise DataError(f"${PIXEL_LIMIT_ENV}={value!r}: expected a number of pixels or 'none'") from None


def load_image(path: str | Path, sample_id: str | None = None):
    """The image, fully decoded, as RGB (transparent pixels composited onto white; turned upright
    by its EXIF orientation; 16-bit and float grayscale scaled to 8 bits, :func:`_deep_to_rgb`).

    A file that does not decode (truncated JPEG, corrupt PNG data, not an image) and an image
    larger than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89
    megapixels; ``$U2A_MAX_IMAGE_PIXELS`` sets it) raise SampleError naming the file."""
    from PIL import Image

    _pixel_limit()
    p = str(path)
    try:
        with warnings.catch_warnings():
            # PIL warns above its limit and raises above twice the limit: both are refused
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as opened:
                opened.load()
                im = _upright(opened)
                if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                    return _deep_to_rgb(im, p, sample_id)
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    return Image.alpha_composite(bg, rgba).convert("RGB")
                return im.convert("RGB")
    except SampleError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SampleError(
            f"image {p} refused as a possible decompression bomb: {e} Shrink the image, or if it is "
            f"genuine raise the limit with ${PIXEL_LIMIT_ENV}=N (pixels)", sample_id, file=p) from None
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, zlib.error, ValueError, ...)
        raise SampleError(f"unreadable image {p}: {type(e).__name__}: {e}", sample_id, file=p) from e


def _upright(im):
    """The image turned as its EXIF orientation says (phone photos store the sensor's rotation)."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block: the pixels as stored
        return im


def _deep_to_rgb(im, p: str, sample_id: str | None):
    """A 16-bit, 32-bit integer or float grayscale image as 8-bit RGB, scaled by its bit depth
    (PIL's own conversion clips such images to white or black). Integers: 16-bit range (32-bit
    integer images hold 16-bit data in PNG and TIFF; larger values are refused). Floats: [0, 1] or
    [0, 255]; any other range is refused, since its scale cannot be told."""
    from PIL import Image

    a = np.asarray(im, dtype=np.float64)
    if a.size and not np.isfinite(a).all():
        raise SampleError(f"image {p} ({im.mode}) holds NaN or infinite values", sample_id, file=p)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode == "F":
        if lo >= 0 and hi <= 1:
            a = a * 255.0
        elif not (lo >= 0 and hi <= 255):
            raise SampleError(f"image {p} is a float image with values in [{lo:g}, {hi:g}]: u2a reads float images "
                              "in [0, 1] or [0, 255]; save it as an 8- or 16-bit image", sample_id, file=p)
    else:
        if lo < 0 or hi > 65535:
            raise SampleError(f"image {p} is a {im.mode} integer image with values in [{lo:g}, {hi:g}], outside "
                              "the 16-bit range; save it as an 8- or 16-bit image", sample_id, file=p)
        a = a / 257.0
    gray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def read_audio(path: str | Path, sample_id: str | None = None) -> tuple[np.ndarray, int]:
    """The whole file decoded (soundfile: wav, flac, ogg, ...) as a mono float32 waveform, and its
    sampling rate. An unreadable file, one without samples, or one holding NaN or infinite values
    raises SampleError."""
    try:
        import soundfile as sf
    except ImportError as e:  # pragma: no cover
        raise DataError("reading audio needs the soundfile package: pip install soundfile") from e
    p = str(path)
    try:
        wav, sr = sf.read(p, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / ...
        raise SampleError(f"unreadable audio {p}: {type(e).__name__}: {e}", sample_id, file=p) from e
    if wav.shape[0] == 0:
        raise SampleError(f"audio {p} holds no samples", sample_id, file=p)
    if not np.isfinite(wav).all():
        raise SampleError(f"audio {p} holds NaN or infinite sample values", sample_id, file=p)
    return wav.mean(axis=1), int(sr)


def load_audio(path: str | Path, sampling_rate: int, sample_id: str | None = None) -> np.ndarray:
    """Mono float32 waveform at ``sampling_rate`` (soundfile reads wav/flac/ogg; resampling by scipy)."""
    wav, sr = read_audio(path, sample_id)
    if sr != sampling_rate:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(sr, sampling_rate)
        wav = resample_poly(wav, sampling_rate // g, sr // g).astype(np.float32)
    return wav


def frame_files(raw: str | Path, sample_id: str | None = None) -> list[Path]:
    """The frame images of a video sample (a folder of images, sorted by name)."""
    folder = Path(raw)
    if not folder.is_dir():
        raise SampleError(
            f"video {raw} is not a folder of frames; extract frames first "
            "(e.g. `ffmpeg -i clip.mp4 -vf fps=1 frames/frame_%04d.jpg`)", sample_id, file=str(raw))
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SampleError(f"video folder {raw} holds no frame images ({' '.join(sorted(IMAGE_SUFFIXES))})",
                          sample_id, file=str(raw))
    return files


def verify_input(kind: str, raw: Any, sample_id: str | None = None) -> None:
    """Load one modality value of a sample exactly as training does, and drop it: raises
    SampleError if training could not use it. Every frame of a video folder is decoded (training
    picks frames at random)."""
    if kind == "text":
        validate_text(raw, sample_id)
    elif kind == "image":
        load_image(raw, sample_id)
    elif kind == "audio":
        read_audio(raw, sample_id)
    elif kind == "video":
        for f in frame_files(raw, sample_id):
            load_image(f, sample_id)
    else:
        raise DataError(f"unknown modality kind {kind!r}")


# --------------------------------------------------------------------------- processors


class TextProcessor:
    kind = "text"

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def load(self, raw: Any, sample_id: str, train: bool) -> str:
        return validate_text(raw, sample_id)

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
        files = frame_files(raw, sample_id)
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
    Whisper: 80-bin log-mel, as long as the batch's longest clip, cut at ``max_length`` frames or
    the encoder's 30 s window) on 16 kHz mono audio."""

    kind = "audio"

    def __init__(self, extractor, max_length: int | None):
        self.extractor = extractor
        self.max_length = max_length
        self.sampling_rate = int(getattr(extractor, "sampling_rate", 16000))

    def load(self, raw: Any, sample_id: str, train: bool) -> np.ndarray:
        wav = load_audio(raw, self.sampling_rate, sample_id)
        if wav.size == 0:
            raise SampleError(f"audio {raw} is empty after resampling", sample_id, file=str(raw))
        return wav

    def __call__(self, loaded: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        name = type(self.extractor).__name__
        if name.startswith("Whisper"):
            # short clips: pad to the longest clip of the batch, not to 30 s; at least one STFT
            # window (a batch of clips shorter than it cannot be framed); longer clips are cut to
            # max_length frames, by default the encoder's window (30 s: nb_max_frames), as
            # Whisper itself cuts them
            longest = max(len(w) for w in loaded)
            hop = int(getattr(self.extractor, "hop_length", 160))
            n_fft = int(getattr(self.extractor, "n_fft", 400))
            n = max(longest, n_fft + 1)
            n = n + (-n) % hop
            frames = self.max_length or getattr(self.extractor, "nb_max_frames", None)
            if frames:
                n = min(n, int(frames) * hop)
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
    from u2a.encoders.registry import resolve_encoder_path

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


def _local_image_processor(encoder: str):
    """The encoder's image processor where it can be had without fetching or converting anything
    (a local folder, a u2a asset already in the cache, a hub id in the local HF cache), else None."""
    from transformers import AutoImageProcessor

    folder: str | None = encoder
    try:
        from u2a.assets import KNOWN_MODELS, is_cached, model_dir
    except ImportError:  # pragma: no cover - assets package optional in stripped installs
        KNOWN_MODELS = ()
    if encoder in KNOWN_MODELS:
        folder = str(model_dir(encoder)) if is_cached(encoder) else None
    if folder is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except Exception:  # noqa: BLE001 - no processor there: the caller falls back to the encoder's size
        return None


def processed_image_size(mod: "ModalityConfig") -> int | None:
    """The side in pixels of the images the data pipeline gives an image or video modality:
    ``image_size`` when set, else what the encoder's processor makes of an image (e.g. DINOv2: 224,
    although its config says 518); None where the processor is not at hand or its output is not square."""
    if mod.image_size is not None:
        return int(mod.image_size)
    proc = _local_image_processor(mod.encoder)
    if proc is None:
        return None
    from PIL import Image

    out = ImageProcessor(proc, None)([Image.new("RGB", (64, 64))])["pixel_values"]
    h, w = int(out.shape[-2]), int(out.shape[-1])
    return h if h == w else None


def input_settings(mod: "ModalityConfig") -> dict[str, int | None]:
    """The settings that fix the shape of one sample's input of this modality as the data pipeline
    makes it (``EncoderAdapter.sample_shape``'s arguments)."""
    if mod.kind in ("image", "video"):
        return {"image_size": processed_image_size(mod), "frames": mod.frames if mod.kind == "video" else None}
    if mod.kind == "audio":
        return {"max_length": mod.max_length}
    return {}


class Collator:
    """Collate dataset items into a model batch; each modality is processed only for the samples
    that have it.

    An item is ``{"id", "label", "fields": {modality: raw or None}}``, optionally with ``"where"``
    (``MANIFEST:LINE``, which :class:`~u2a.data.datasets.ManifestDataset` adds) for the messages.

    A sample whose input fails to load (a file that does not decode, an invalid text) or that the
    encoder's processor cannot take raises a :class:`~u2a.errors.SampleError` naming the manifest
    line, the sample id, the field and the file. With ``skip_bad=True`` the sample is dropped from
    the batch instead: a warning names it, and a record ``{"id", "modality", "file", "reason"}``
    (plus ``"where"`` when known) is appended to :attr:`skipped` and to the batch's ``"skipped"``
    list. Read the batch's list when batches are built in DataLoader worker processes, where
    :attr:`skipped` of the copy in the main process stays empty. A batch in which every sample
    fails raises a DataError listing them all, unless ``allow_empty`` (prediction on new data,
    training with ``data.skip_bad``): then it is an empty batch (no ids) whose ``"skipped"`` lists
    them."""

    def __init__(self, config: ModelConfig, processors: Mapping[str, Any], train: bool = False,
                 skip_bad: bool = False, allow_empty: bool = False):
        self.config = config
        self.modalities = config.modality_names
        self.processors = dict(processors)
        self.train = train
        self.skip_bad = skip_bad
        self.allow_empty = allow_empty
        self.skipped: list[dict[str, str]] = []

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        errors: list[SampleError] = []
        good: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        for it in items:
            try:
                good.append((it, self._load(it)))
            except SampleError as e:
                errors.append(self._failed(e))
        inputs: dict[str, dict[str, torch.Tensor]] = {}
        while good:
            try:
                # a batch is built the same way wherever it is asked for: a caller's bf16 autocast
                # (the trainer's statistics pass, evaluation) must not reach the processors (torch
                # ops inside Whisper's feature extractor would return bf16, which numpy cannot take)
                with torch.autocast("cpu", enabled=False):
                    inputs = self._process(good)
                break
            except _Culprits as c:
                for i in sorted(c.errors, reverse=True):
                    errors.append(self._failed(c.errors[i]))
                    del good[i]
        if not good and errors and not self.allow_empty:
            raise DataError(f"every sample of a batch ({len(items)}) failed to load:\n"
                            + "\n".join(f"  {e}" for e in errors))
        kept = [it for it, _ in good]
        present = torch.zeros((len(kept), len(self.modalities)), dtype=torch.bool)
        for i, (_, loaded) in enumerate(good):
            for j, m in enumerate(self.modalities):
                present[i, j] = m in loaded
        records = [self._record(e) for e in errors]
        return {
            "ids": [str(it["id"]) for it in kept],
            "inputs": inputs,
            "present": present,
            "labels": self._labels(kept),
            "skipped": records,
        }

    def _load(self, it: Mapping[str, Any]) -> dict[str, Any]:
        sid, where = str(it["id"]), it.get("where")
        out: dict[str, Any] = {}
        for m in self.modalities:
            raw = it["fields"].get(m)
            if raw is None:
                continue
            try:
                out[m] = self.processors[m].load(raw, sid, self.train)
            except SampleError as e:
                raise e.located(sid, m, where) from e
            except DataError as e:  # a processor of one's own may raise a plain DataError
                raise SampleError(str(e), sid, str(raw) if self._kind(m) != "text" else None, m, where) from e
        return out

    def _kind(self, m: str) -> str:
        return getattr(self.processors[m], "kind", "")

    def _process(self, good: list[tuple[Mapping[str, Any], dict[str, Any]]]) -> dict[str, Any]:
        inputs = {}
        for m in self.modalities:
            rows = [(i, loaded[m]) for i, (_, loaded) in enumerate(good) if m in loaded]
            if not rows:
                continue
            proc = self.processors[m]
            try:
                inputs[m] = proc([v for _, v in rows])
            except Exception as batch_error:  # the processors' libraries raise many kinds
                # find the samples that fail on their own; if none does, the batch is at fault
                culprits = {}
                for i, v in rows:
                    try:
                        proc([v])
                    except Exception as e:
                        it = good[i][0]
                        raw = it["fields"].get(m)
                        culprits[i] = SampleError(
                            f"the {m} processor cannot take it: {type(e).__name__}: {e}", str(it["id"]),
                            None if self._kind(m) == "text" else str(raw), m, it.get("where"))
                if not culprits:
                    raise DataError(f"cannot process the {m} inputs of a batch (ids "
                                    f"{', '.join(str(good[i][0]['id']) for i, _ in rows)}): "
                                    f"{type(batch_error).__name__}: {batch_error}") from batch_error
                raise _Culprits(culprits) from batch_error
        return inputs

    def _failed(self, e: SampleError) -> SampleError:
        """Raise ``e`` unless skipping; else warn, record it and return it."""
        if not self.skip_bad:
            raise e
        log.warning("u2a: skipping sample %r (field '%s'%s): %s", e.sample_id, e.modality,
                    f", file {e.file}" if e.file else "", e.reason)
        self.skipped.append(self._record(e))
        return e

    @staticmethod
    def _record(e: SampleError) -> dict[str, str]:
        rec = {"id": str(e.sample_id), "modality": str(e.modality), "file": e.file or "", "reason": e.reason}
        if e.where:
            rec["where"] = str(e.where)
        return rec

    def _labels(self, items: Sequence[Mapping[str, Any]]) -> torch.Tensor | None:
        import torch

        labels = [it.get("label") for it in items]
        if any(lab is None for lab in labels):
            return None
        if self.config.task == "multilabel":
            y = torch.zeros((len(items), self.config.num_classes), dtype=torch.float32)
            for i, lab in enumerate(labels):
                y[i, list(lab)] = 1.0
            return y
        return torch.tensor(labels, dtype=torch.long)


class _Culprits(Exception):
    """Samples (by index in the batch) that the processor of a modality cannot take."""

    def __init__(self, errors: dict[int, SampleError]):
        super().__init__(f"{len(errors)} samples")
        self.errors = errors


def build_collator(config: ModelConfig, train: bool = False, processors: Mapping[str, Any] | None = None,
                   skip_bad: bool = False, allow_empty: bool = False) -> Collator:
    """The Collator of a model config, with its encoders' processors (or ``processors``).
    ``skip_bad``: drop samples that fail to load from their batch, warn and record them
    (:attr:`Collator.skipped`, ``batch["skipped"]``) instead of raising; ``allow_empty``: a batch
    in which every sample fails is an empty batch, not an error."""
    procs = processors or {m.name: build_processor(m) for m in config.modalities}
    return Collator(config, procs, train=train, skip_bad=skip_bad, allow_empty=allow_empty)


def move_batch(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The batch with every tensor on ``device``."""
    import torch

    def mv(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.to(device, non_blocking=True)
        if isinstance(x, dict):
            return {k: mv(v) for k, v in x.items()}
        return x

    return {k: mv(v) for k, v in batch.items()}


Processor = Callable[[Sequence[Any]], "dict[str, torch.Tensor]"]
