"""Tiny broken inputs that pass a shallow check (PIL's verify, a size test) but fail to load."""

from __future__ import annotations

import io
import random
import wave
import zlib
from pathlib import Path

from PIL import Image


def noise_image(size: int = 32, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))


def good_png(path: Path, size: int = 8) -> Path:
    noise_image(size).save(path, "PNG")
    return path


def png_with_corrupt_idat(path: Path) -> Path:
    """A PNG whose IDAT data is damaged but whose chunk CRCs are right: ``verify()`` passes, decoding fails."""
    buf = io.BytesIO()
    noise_image().save(buf, "PNG")
    data = bytearray(buf.getvalue())
    pos = 8
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        if bytes(data[pos + 4:pos + 8]) == b"IDAT":
            body = pos + 8
            for k in range(n // 2, n):
                data[body + k] ^= 0xA5
            crc = zlib.crc32(bytes(data[pos + 4:body + n])) & 0xFFFFFFFF
            data[body + n:body + n + 4] = crc.to_bytes(4, "big")
            break
        pos += 12 + n
    path.write_bytes(bytes(data))
    return path


def truncated_jpeg(path: Path) -> Path:
    """The first half of a JPEG: PIL opens and verifies it, decoding fails."""
    buf = io.BytesIO()
    noise_image(64, seed=1).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def write_wav(path: Path, frames: int = 160) -> Path:
    """A real 16 kHz mono 16-bit WAV (a short ramp), written with the standard library."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(int(i * 50).to_bytes(2, "little", signed=True) for i in range(frames)))
    return path


def truncated_wav_header(path: Path) -> Path:
    """A WAV header without its data chunk: not empty, not readable."""
    full = io.BytesIO()
    with wave.open(full, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 10)
    path.write_bytes(full.getvalue()[:30])
    return path
