"""Two built-in datasets of icons with speech, for the panel that u2a's defaults are chosen on.

Both are built offline from npm packages (icon fonts and their metadata, pinned by SHA-256) and
speech synthesised with eSpeak NG from PyPI (:mod:`u2a.data.speech`):

``mdi-spoken`` (image + audio; the audio dominates)
    Material Design Icons (``@mdi/font`` for the glyphs, ``@mdi/svg`` for ``meta.json``, Apache-2.0).
    Label: the icon's tag, for icons with exactly one tag; the ten tags with the most such icons,
    leaving out ``Alpha / Numeric`` (glyphs of letters and digits) and ``Brand / Logo`` (company
    marks), at most 150 icons each (a seeded draw). Image: the glyph, black on white, 64 px.
    Audio: the tag's words spoken (``Files / Folders`` -> "files, folders") by one of 24 English
    voices at a random rate and pitch, in white noise at a random signal-to-noise ratio, with
    another tag's words mixed in below it (babble): speech that carries the label, like the
    spoken-digit sets of audio-visual benchmarks, so that audio alone is nearly always right and
    the image alone often is not.

``tabler-trio`` (image + text + audio)
    Tabler Icons (``@tabler/icons`` for ``icons.json``, ``@tabler/icons-webfont`` for the glyphs,
    MIT). Label: the icon's category; the ten categories with the most outline icons, leaving out
    the uncategorised, ``Brand``, ``Letters``, ``Numbers`` and the misspelt ``Sytem``, at most
    150 icons each. Image: the outline glyph, 64 px. Text: the icon's search tags
    (``"time; watch; alarm"``). Audio: the icon's name spoken (``arrow-back-up`` -> "arrow back
    up") in white noise. Three modalities of different strength, none sufficient alone.

Variants of one icon (MDI: one ``baseIconId``; Tabler: one name up to ``-off`` or a trailing
number) always share a split (:func:`u2a.data.splits.grouped_split`), so no test icon has a
near-copy in training. Every random choice comes from ``random.Random`` / numpy generators seeded
with the dataset seed and the icon's name: a dataset built twice is the same dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from u2a.data import npm
from u2a.data.manifest import SPLITS, write_manifest
from u2a.data.splits import FRACTIONS, grouped_split
from u2a.errors import DataError
from u2a.io import atomic_dir, atomic_write_json, is_complete_dir
from u2a.paths import data_dir

IMAGE_SIZE = 64
GLYPH_SIZE = 48
SAMPLING_RATE = 16000
FORMAT = 1  # bump when the folder layout or a recipe below changes


@dataclass(frozen=True)
class Icon:
    name: str
    label: str
    codepoint: int
    group: str
    #: the words the audio speaks, and the text modality (None: the dataset has no text)
    spoken: str
    text: str | None = None


@dataclass(frozen=True)
class NoiseRecipe:
    """White noise at an SNR drawn uniformly from ``snr_db``; with ``babble_db``, another label's
    speech mixed in that many dB (drawn uniformly) below the signal."""

    snr_db: tuple[float, float]
    babble_db: tuple[float, float] | None = None


@dataclass(frozen=True)
class IconDataset:
    name: str
    #: (package, version, pinned sha256) of the metadata package and of the font package
    meta_package: tuple[str, str, str]
    font_package: tuple[str, str, str]
    meta_file: str
    font_file: str
    modalities: tuple[str, ...]
    noise: NoiseRecipe
    classes_max: int = 10
    per_class_max: int = 150
    licence: str = ""
    describe: dict[str, str] = field(default_factory=dict)
    #: metadata bytes -> icons (every candidate; the class choice is made by :func:`choose_classes`)
    parse: Callable[[bytes], list[Icon]] | None = None
    excluded_labels: tuple[str, ...] = ()


def _words(name: str) -> str:
    return " ".join(name.replace("-", " ").replace("_", " ").split())


def parse_mdi(meta: bytes) -> list[Icon]:
    """MDI's ``meta.json``: icons with exactly one tag, not deprecated; spoken: the tag's words."""
    try:
        entries = json.loads(meta)
    except json.JSONDecodeError as e:
        raise DataError(f"@mdi/svg meta.json: broken JSON ({e})") from None
    out = []
    for e in entries:
        tags = e.get("tags") or []
        if e.get("deprecated") or len(tags) != 1 or not e.get("codepoint"):
            continue
        tag = tags[0]
        out.append(Icon(name=e["name"], label=tag, codepoint=int(e["codepoint"], 16),
                        group=e.get("baseIconId") or e["name"],
                        spoken=", ".join(w.strip().lower() for w in tag.replace("+", "/").split("/") if w.strip())))
    return out


_TABLER_VARIANT = re.compile(r"(-off|-\d+)+$")


def parse_tabler(meta: bytes) -> list[Icon]:
    """Tabler's ``icons.json``: icons with an outline glyph; text: the tags; spoken: the name."""
    try:
        entries = json.loads(meta)
    except json.JSONDecodeError as e:
        raise DataError(f"@tabler/icons icons.json: broken JSON ({e})") from None
    out = []
    for e in (entries.values() if isinstance(entries, dict) else entries):
        outline = (e.get("styles") or {}).get("outline")
        if not outline or not outline.get("unicode"):
            continue
        tags = [_words(str(t)).lower() for t in e.get("tags") or [] if str(t).strip()]
        name = e["name"]
        out.append(Icon(name=name, label=e.get("category") or "", codepoint=int(outline["unicode"], 16),
                        group=_TABLER_VARIANT.sub("", name), spoken=_words(name),
                        text="; ".join(dict.fromkeys(tags)) or None))
    return out


DATASETS: dict[str, IconDataset] = {
    "mdi-spoken": IconDataset(
        name="mdi-spoken",
        meta_package=("@mdi/svg", "7.4.47", "de92e5dc9ce46c392ab5c53aa7190b19f82b40cb48872a083f788c7e13e91fef"),
        font_package=("@mdi/font", "7.4.47", "66131558352dc8df724feac30f3b7bf7ee7311a79e4f8436f3637c0993edb773"),
        meta_file="package/meta.json",
        font_file="package/fonts/materialdesignicons-webfont.ttf",
        modalities=("image", "audio"),
        noise=NoiseRecipe(snr_db=(-10.0, 10.0), babble_db=(0.0, 6.0)),
        licence="Material Design Icons: Apache-2.0 (icons), the webfont under its own licence in @mdi/font",
        parse=parse_mdi,
        excluded_labels=("Alpha / Numeric", "Brand / Logo"),
        describe={"label": "the icon's one MDI tag", "image": "the glyph, black on white",
                  "audio": "the tag's words, spoken in noise with another tag's words below them"},
    ),
    "tabler-trio": IconDataset(
        name="tabler-trio",
        meta_package=("@tabler/icons", "3.35.0", "a6d2352902a746c2d78ce6f81dbb2f1688a812da0c95aad7df61f1fd639af162"),
        font_package=("@tabler/icons-webfont", "3.35.0",
                      "fddd4f60ad50ca13a37329e66f38920cbc6552ea740b8365faf81db47fe08603"),
        meta_file="package/icons.json",
        font_file="package/dist/fonts/tabler-icons-outline.ttf",
        modalities=("image", "text", "audio"),
        noise=NoiseRecipe(snr_db=(-5.0, 15.0)),
        licence="Tabler Icons: MIT",
        parse=parse_tabler,
        excluded_labels=("", "Brand", "Letters", "Numbers", "Sytem"),
        describe={"label": "the icon's Tabler category", "image": "the outline glyph, black on white",
                  "text": "the icon's search tags", "audio": "the icon's name, spoken in noise"},
    ),
}


def choose_classes(icons: list[Icon], spec: IconDataset, seed: int) -> list[Icon]:
    """The ``classes_max`` labels with the most icons (``excluded_labels`` left out; ties by name),
    at most ``per_class_max`` icons each, drawn with ``random.Random(seed)`` from the icons sorted
    by name; returned sorted by label, then name."""
    counts = Counter(i.label for i in icons if i.label not in spec.excluded_labels)
    labels = sorted(counts, key=lambda c: (-counts[c], c))[:spec.classes_max]
    rng = random.Random(f"{spec.name}-classes-{seed}")
    out: list[Icon] = []
    for c in sorted(labels):
        members = sorted((i for i in icons if i.label == c), key=lambda i: i.name)
        if len(members) > spec.per_class_max:
            members = sorted(rng.sample(members, spec.per_class_max), key=lambda i: i.name)
        out.extend(members)
    return out


def render_glyph(font: Any, codepoint: int, size: int = IMAGE_SIZE) -> bytes:
    """The glyph of ``codepoint`` in ``font`` (a PIL ImageFont), black on white, centred, as an RGB PNG."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), (255, 255, 255))
    ImageDraw.Draw(im).text((size / 2, size / 2), chr(codepoint), font=font, fill=(0, 0, 0), anchor="mm")
    if im.getextrema() == ((255, 255), (255, 255), (255, 255)):
        raise DataError(f"the font has no glyph at U+{codepoint:04X}")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _rng(seed: int, *parts: str) -> np.random.Generator:
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class ClipPlan:
    """How one sample's audio is made: its text and voice, the babble's (or None), the noise."""

    text: str
    voice: Any
    snr_db: float
    babble: tuple[str, Any] | None = None
    babble_db: float = 0.0


def plan_clip(text: str, rng: np.random.Generator, noise: NoiseRecipe, babble_text: str | None = None) -> ClipPlan:
    """A voice (one of :data:`~u2a.data.speech.ENGLISH_VOICES`), rate (130-210 wpm) and pitch
    (25-75) for ``text`` and for the babble, and the signal-to-noise ratios, drawn from ``rng``."""
    from u2a.data.speech import ENGLISH_VOICES, Voice

    def voice() -> Voice:
        return Voice(str(rng.choice(ENGLISH_VOICES)), int(rng.integers(130, 211)), int(rng.integers(25, 76)))

    v = voice()
    babble = (babble_text, voice()) if babble_text is not None and noise.babble_db is not None else None
    snr = float(rng.uniform(*noise.snr_db))
    bdb = float(rng.uniform(*noise.babble_db)) if noise.babble_db is not None else 0.0
    return ClipPlan(text, v, snr, babble, bdb)


def render_clips(plans: list[ClipPlan], seeds: list[np.random.Generator]) -> list[np.ndarray]:
    """The clips of ``plans`` (spoken in order in a fresh process, :func:`u2a.data.speech.speak_all`),
    silence trimmed, at 16 kHz, with the noise mixed in from each clip's generator (float32)."""
    from u2a.data.speech import mix_noise, resample, speak_all, trim_silence

    jobs = []
    for p in plans:
        jobs.append((p.text, p.voice))
        if p.babble is not None:
            jobs.append(p.babble)
    spoken, rate = speak_all(jobs)
    it = iter(spoken)
    out = []
    for p, rng in zip(plans, seeds):
        clip = resample(trim_silence(next(it)), rate, SAMPLING_RATE)
        babble = resample(trim_silence(next(it)), rate, SAMPLING_RATE) if p.babble is not None else None
        out.append(mix_noise(clip, p.snr_db, rng, babble, p.babble_db))
    return out


def default_folder(name: str, seed: int) -> Path:
    spec = DATASETS[name]
    return data_dir() / f"{name}-{spec.meta_package[1]}-seed{seed}"


def _params(spec: IconDataset, seed: int) -> dict[str, Any]:
    return {"format": FORMAT, "name": spec.name, "version": spec.meta_package[1], "seed": seed}


def _matches(folder: Path, params: dict[str, Any]) -> bool:
    if not is_complete_dir(folder):
        return False
    try:
        info = json.loads((folder / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return {k: info.get(k) for k in params} == params


def _read_file(spec_pkg: tuple[str, str, str], path: str, progress: bool) -> tuple[bytes, Path]:
    package, version, sha = spec_pkg
    tgz = npm.fetch_npm(package, version, {version: sha})
    want = PurePosixPath(path)
    got = npm.read_members(tgz, lambda n: n == want, progress, desc=f"reading {package}")
    if want not in got:
        raise DataError(f"{tgz}: no {path} in the archive of {package}@{version}")
    return got[want], tgz


def prepare_icons(name: str, seed: int = 0, out: str | Path | None = None, progress: bool = True,
                  force: bool = False, limit_per_class: int | None = None) -> Path:
    """Build (or reuse) the icon dataset ``name`` (``mdi-spoken`` or ``tabler-trio``) and return
    its folder: ``train.jsonl``, ``val.jsonl``, ``test.jsonl``, ``images/``, ``audio/`` (16 kHz
    FLAC), ``classes.json`` and ``dataset.json`` (sources with their SHA-256, recipe, counts).

    ``out``: the folder (default ``data_dir()/<name>-<version>-seed<seed>``); built under a
    temporary name and renamed when complete; reused when complete with the same options unless
    ``force``. ``limit_per_class``: a smaller build for tests (at most that many icons per class)."""
    from PIL import ImageFont
    from tqdm import tqdm

    if name not in DATASETS:
        raise DataError(f"unknown icon dataset {name!r}; known: {sorted(DATASETS)}")
    spec = DATASETS[name]
    params = _params(spec, seed)
    if limit_per_class is not None:
        params["limit_per_class"] = int(limit_per_class)
    folder = Path(out).expanduser() if out is not None else default_folder(name, seed)
    if not force and _matches(folder, params):
        return folder
    if folder.exists() and not is_complete_dir(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder} exists and is not a prepared dataset; choose another --out or remove it")

    meta, meta_tgz = _read_file(spec.meta_package, spec.meta_file, progress)
    font_bytes, font_tgz = _read_file(spec.font_package, spec.font_file, progress)
    try:
        # the basic layout engine: one code point is one glyph (raqm's shaping fails on some
        # private-use code points of icon fonts)
        font = ImageFont.truetype(io.BytesIO(font_bytes), GLYPH_SIZE, layout_engine=ImageFont.Layout.BASIC)
    except OSError as e:
        raise DataError(f"{font_tgz}: {spec.font_file} is not a font PIL can read ({e})") from None
    icons = choose_classes(spec.parse(meta), spec, seed)
    if limit_per_class is not None:
        by: dict[str, list[Icon]] = defaultdict(list)
        for i in icons:
            by[i.label].append(i)
        icons = [i for c in sorted(by) for i in by[c][:limit_per_class]]
    if "text" in spec.modalities:
        icons = [i for i in icons if i.text]
    if not icons:
        raise DataError(f"{meta_tgz}: no icons left for {name}")
    classes = sorted({i.label for i in icons})
    spoken_by_class = {c: sorted({i.spoken for i in icons if i.label == c}) for c in classes}

    # a group of variants belongs to the class most of its icons have (ties: by name), so that
    # all of its icons share a split even where their labels differ
    members: dict[str, list[Icon]] = defaultdict(list)
    for i in icons:
        members[i.group].append(i)
    groups: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for g, its in members.items():
        votes = Counter(i.label for i in its)
        owner = min(votes, key=lambda c: (-votes[c], c))
        groups[owner][g] = [i.name for i in its]
    split_of = grouped_split(groups, seed)

    import soundfile as sf

    with atomic_dir(folder) as tmp:
        tmp.chmod(0o755)
        (tmp / "images").mkdir()
        (tmp / "audio").mkdir()
        rows, plans, rngs = [], [], []
        for icon in tqdm(icons, desc=f"{name} images", unit=" icons", disable=not progress):
            sid = icon.name
            rng = _rng(seed, name, sid)
            row: dict[str, Any] = {"id": sid, "label": icon.label}
            (tmp / "images" / f"{sid}.png").write_bytes(render_glyph(font, icon.codepoint))
            row["image"] = f"images/{sid}.png"
            if "text" in spec.modalities:
                row["text"] = icon.text
            babble = None
            if spec.noise.babble_db is not None:
                others = [c for c in classes if c != icon.label]
                babble = spoken_by_class[others[int(rng.integers(len(others)))]][0]
            plans.append(plan_clip(icon.spoken, rng, spec.noise, babble))
            rngs.append(rng)
            row["audio"] = f"audio/{sid}.flac"
            row["split"] = split_of[sid]
            rows.append(row)
        if progress:
            print(f"{name}: speaking {len(plans)} clips with eSpeak NG ...", flush=True)
        for row, wav in zip(rows, render_clips(plans, rngs)):
            sf.write(tmp / row["audio"], wav, SAMPLING_RATE, subtype="PCM_16")
        per_split = {s: [{k: v for k, v in r.items() if k != "split"} for r in rows if r["split"] == s] for s in SPLITS}
        for s, rs in per_split.items():
            write_manifest(rs, tmp / f"{s}.jsonl")
        atomic_write_json(tmp / "classes.json", classes)
        per_class = Counter(i.label for i in icons)
        atomic_write_json(tmp / "dataset.json", {
            **params,
            "source": [
                {"package": spec.meta_package[0], "version": spec.meta_package[1], "registry": "npm",
                 "file": meta_tgz.name, "sha256": spec.meta_package[2], "used": spec.meta_file},
                {"package": spec.font_package[0], "version": spec.font_package[1], "registry": "npm",
                 "file": font_tgz.name, "sha256": spec.font_package[2], "used": spec.font_file},
                {"package": "espeakng-loader", "registry": "PyPI", "used": "eSpeak NG speech synthesis"},
            ],
            "licence": spec.licence,
            "modalities": {m: m for m in spec.modalities},
            "recipe": {**spec.describe, "image_size": IMAGE_SIZE, "glyph_size": GLYPH_SIZE,
                       "audio_rate": SAMPLING_RATE, "noise": asdict(spec.noise),
                       "classes": f"the {spec.classes_max} largest, excluding {list(spec.excluded_labels)}; "
                                  f"at most {spec.per_class_max} per class"},
            "split": {"fractions": FRACTIONS, "method": "stratified by label, icon variants grouped, "
                                                        "random.Random(seed)"},
            "classes": classes,
            "counts": {
                "total": len(rows),
                "per_split": {s: len(rs) for s, rs in per_split.items()},
                "per_class": {c: per_class[c] for c in classes},
                "per_split_class": {s: dict(sorted(Counter(r["label"] for r in rs).items()))
                                    for s, rs in per_split.items()},
            },
        })
    return folder
