"""Synthetic speech for the built-in audio datasets: eSpeak NG through the PyPI package
``espeakng-loader``, with noise mixed in at a chosen signal-to-noise ratio.

``espeakng-loader`` ships the eSpeak NG shared library and its voice data for Linux, macOS and
Windows, so the audio datasets build from PyPI alone, like the emoji set builds from npm alone
(no system ``espeak-ng`` needed). The package only loads the library; the few calls that turn a
text into samples are bound here with ``ctypes``: the Python bindings on PyPI either run the
``espeak-ng`` program (which the package does not ship) or phonemize only (``phonemizer``), and
synthesis to memory needs five functions of the library's stable C API (``speak_lib.h``).

eSpeak NG draws its breath and noise sources from the C library's ``rand()`` and keeps state from
one utterance to the next (its output for a text depends, by a few samples, on what it spoke
before in the process; re-initialising does not reset it). Seeding ``rand()`` before each
utterance and speaking a dataset's clips in order in a fresh process (:func:`speak_all`) gives
the same samples every time (checked across processes): a dataset built twice is the same
dataset (the noise u2a adds comes from seeded numpy generators).
"""

from __future__ import annotations

import ctypes
import threading
from ctypes.util import find_library
from dataclasses import dataclass

import numpy as np

from u2a.errors import DataError

#: eSpeak NG's ``espeak_AUDIO_OUTPUT``: synthesis returns when done, samples go to the callback
_AUDIO_OUTPUT_SYNCHRONOUS = 2
#: ``espeak_PARAMETER``
_RATE, _PITCH = 1, 3
#: ``espeak_Synth`` flags: UTF-8 text; position type: characters
_CHARS_UTF8, _POS_CHARACTER = 1, 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

#: English voices of eSpeak NG (accent x voice variant) that the datasets draw from. The breathy
#: variants f2, f3 and f5 are left out: their breath noise differs from one process to the next
#: (measured: the same text and voice gave other samples in 3 of 5 fresh processes), the others
#: are bit for bit the same.
ENGLISH_VOICES = tuple(f"{accent}+{variant}" for accent in ("en-us", "en", "en-gb-scotland", "en-029")
                       for variant in ("m1", "m3", "m5", "m7", "f1", "f4"))


@dataclass(frozen=True)
class Voice:
    """How a clip is spoken: an eSpeak NG voice name, words per minute and pitch (0-99)."""

    name: str = "en-us"
    rate: int = 170
    pitch: int = 50


class Synthesizer:
    """Text -> 16-bit samples with eSpeak NG (one library instance per process, used under a lock:
    the C library keeps global state)."""

    _lock = threading.Lock()
    _instance: "Synthesizer | None" = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise DataError("the audio datasets need eSpeak NG from PyPI: pip install espeakng-loader "
                            "(or pip install 'u2a[panel]')") from e
        path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise DataError(f"{path}: cannot load the eSpeak NG library of espeakng-loader: {e}") from None
        data = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
        if rate <= 0:
            raise DataError(f"{data}: eSpeak NG could not start with this voice data (code {rate})")
        self.sampling_rate = int(rate)
        self._lib = lib
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):  # called by the library with each block of samples
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # kept alive as long as the library may call it
        libc_name = find_library("c")
        self._libc = ctypes.CDLL(libc_name) if libc_name else None
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    @classmethod
    def get(cls) -> "Synthesizer":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def speak(self, text: str, voice: Voice = Voice()) -> np.ndarray:
        """The speech of ``text`` as int16 samples at :attr:`sampling_rate`."""
        with self._lock:
            lib = self._lib
            if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise DataError(f"eSpeak NG has no voice {voice.name!r}")
            lib.espeak_SetParameter(_RATE, int(voice.rate), 0)
            lib.espeak_SetParameter(_PITCH, int(voice.pitch), 0)
            self._chunks = []
            if self._libc is not None:
                self._libc.srand(0)  # eSpeak NG's noise sources: the same draws for every utterance
                self._libc.srandom(0)
            raw = text.encode("utf-8")
            err = lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if err != 0:
                raise DataError(f"eSpeak NG could not speak {text!r} (code {err})")
            chunks, self._chunks = self._chunks, []
        if not chunks:
            raise DataError(f"eSpeak NG gave no samples for {text!r}")
        return np.concatenate(chunks)


def _speak_jobs(jobs: list[tuple[str, Voice]]) -> list[np.ndarray]:
    synth = Synthesizer.get()
    return [synth.speak(text, voice) for text, voice in jobs]


def speak_all(jobs: list[tuple[str, Voice]]) -> tuple[list[np.ndarray], int]:
    """Speak every ``(text, voice)`` in order, in a fresh process (see the module docstring);
    returns the int16 clips and their sampling rate."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        clips = ex.submit(_speak_jobs, list(jobs)).result()
        rate = ex.submit(_sampling_rate).result()
    return clips, rate


def _sampling_rate() -> int:
    return Synthesizer.get().sampling_rate


def trim_silence(wav: np.ndarray, threshold: float = 0.02, pad: int = 800) -> np.ndarray:
    """``wav`` without the leading and trailing stretches below ``threshold`` x its peak
    (``pad`` samples kept on each side)."""
    x = wav.astype(np.float32)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        return wav
    loud = np.flatnonzero(np.abs(x) >= threshold * peak)
    return wav[max(0, loud[0] - pad): loud[-1] + 1 + pad]


def resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy) from ``rate`` to ``target`` Hz; float32 in [-1, 1]."""
    from math import gcd

    from scipy.signal import resample_poly

    x = wav.astype(np.float32) / (32768.0 if wav.dtype == np.int16 else 1.0)
    if rate == target:
        return x
    g = gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def mix_noise(signal: np.ndarray, snr_db: float, rng: np.random.Generator,
              babble: np.ndarray | None = None, babble_db: float = 6.0) -> np.ndarray:
    """``signal`` plus white noise at ``snr_db`` (power ratio of the signal to the noise, in dB);
    with ``babble`` (another clip), that clip too, ``babble_db`` below the signal. Scaled to a
    peak of 0.9 so that the file cannot clip."""
    x = signal.astype(np.float32)
    p = float(np.mean(x ** 2)) or 1e-12
    out = x + rng.standard_normal(x.shape[0]).astype(np.float32) * np.sqrt(p / 10 ** (snr_db / 10))
    if babble is not None and babble.size:
        b = np.resize(babble.astype(np.float32), x.shape[0])
        pb = float(np.mean(b ** 2)) or 1e-12
        out = out + b * np.sqrt(p / pb / 10 ** (babble_db / 10))
    return (out * (0.9 / max(float(np.abs(out).max()), 1e-6))).astype(np.float32)
