"""Audio-video datasets (CREMA-D, Kinetics-Sounds, AVE) into a u2a manifest folder.

The clips and their labels come from the split list files of the common public splits:

- ``lists`` layout: one file per split, found in ``root`` as ``train.txt`` / ``val.txt``
  (``dev``, ``valid``) / ``test.txt`` (also ``.csv``, ``.lst``, ``<split>Set.txt``, ``my_<split>.txt``,
  ``<split>_list.txt``) or given as ``lists={"train": path, ...}``. A line is MLA's
  ``"<file> <label>"`` (the label is everything after the first blank, so it may hold spaces),
  a CSV row ``<file>,<label>`` (a header naming ``clip``/``label`` columns is allowed), or AVE's
  ``Category&VideoID&Quality&StartTime&EndTime``.
- ``csv`` layout: one CSV with a header ``clip,label,split`` (``lists="path.csv"``, or the only
  CSV in ``root`` with those columns).

``<file>`` may carry a folder and a media suffix; the clip id is its name without the suffix.
Per clip:

- audio: ``audio_dir`` (default ``<root>/audio``) holds ``<clip>.wav`` (or ``.flac``/``.ogg``,
  read by soundfile; ``.mp3``/``.m4a``/``.mp4``/... are decoded with PyAV to 16 kHz mono wav
  under ``out/audio/``). ``audio_dir`` may be a template with ``{root}``, ``{split}`` and
  ``{clip}`` (``"{root}/wav/{split}/{clip}.wav"``).
- video: a folder of frames ``frames_dir/<clip>/`` (default ``frames_dir`` =
  ``<root>/{split}_imgs``: frames pre-extracted at 1 fps as ``frame_XXXX.jpg``); a template with
  ``{clip}`` is allowed. Without a frame folder, a video file ``video_dir/<clip>.mp4`` (only when
  ``video_dir`` is given; needs PyAV) is decoded into ``out/frames/<clip>/`` at ``fps`` frames
  per second.

A clip with only audio or only frames becomes a sample with the other modality null (counted);
a clip with neither is a DataError naming the list file and line (``skip_missing=True`` leaves it
out, counted). Without a val list, a seeded, stratified val split is taken out of train
(``val_fraction``, ``seed``; saved in ``dataset.json``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from u2a.data.importers._common import (
    IMAGE_EXTS,
    carve_val,
    check_out,
    check_root,
    csv_rows,
    file_ok,
    header_col,
    pyav,
    safe_name,
    sniff_header,
    write_dataset,
)
from u2a.data.manifest import SPLIT_ALIASES, as_classes
from u2a.errors import DataError
from u2a.io import atomic_dir

DATASETS = {
    "cremad": {"title": "CREMA-D", "num_classes": 6},
    "kinetics_sounds": {"title": "Kinetics-Sounds", "num_classes": 31},
    "ave": {"title": "AVE", "num_classes": 28},
}
LAYOUTS = ("auto", "lists", "csv")
VAL_FRACTION = 0.1
SAMPLE_RATE = 16000
SF_AUDIO = (".wav", ".flac", ".ogg")
AV_AUDIO = (".mp3", ".m4a", ".aac", ".opus", ".mp4", ".mkv", ".webm", ".avi", ".mov")
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
MEDIA_EXTS = set(SF_AUDIO + AV_AUDIO + VIDEO_EXTS + IMAGE_EXTS + (".npy",))
MODALITIES = {"audio": "audio", "video": "video"}
DEFAULT_AUDIO_DIR = "{root}/audio"
DEFAULT_FRAMES_DIR = "{root}/{split}_imgs"

LISTS_LAYOUT = ("split list files train.txt / val.txt / test.txt in the dataset folder (or lists={split: file}), "
                "one clip per line: '<file> <label>', '<file>,<label>' or AVE's 'Category&VideoID&...'")
CSV_LAYOUT = "one CSV file with a header clip,label,split (lists='file.csv')"
LAYOUT_HELP = {"lists": LISTS_LAYOUT, "csv": CSV_LAYOUT}
LIST_PATTERNS = ("{s}.txt", "{s}.csv", "{s}.lst", "{s}Set.txt", "my_{s}.txt", "{s}_list.txt")
SPLIT_FILE_NAMES = {"train": ("train",), "val": ("val", "dev", "valid", "validation"), "test": ("test",)}
CLIP_COLS = ("clip", "file", "filename", "file_name", "id", "video_id", "videoid", "youtube_id", "path", "name", "video")
LABEL_COLS = ("label", "class", "emotion", "category")
SPLIT_COLS = ("split",)


# --------------------------------------------------------------------------- list files


def find_lists(root: Path) -> dict[str, Path]:
    """The per-split list files in ``root`` (first matching name per split)."""
    found: dict[str, Path] = {}
    for split, names in SPLIT_FILE_NAMES.items():
        for n in names:
            for pat in LIST_PATTERNS:
                p = root / pat.format(s=n)
                if p.is_file() and split not in found:
                    found[split] = p
    return found


def _clip_of(file: str) -> str:
    name = Path(file.strip().replace("\\", "/")).name
    stem, suffix = os.path.splitext(name)
    return stem if suffix.lower() in MEDIA_EXTS else name


def parse_list(path: Path, need_split: bool = False) -> list[tuple[int, str, str, str | None]]:
    """``(line, file, label, split or None)`` for each clip of a list file."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found; expected {LISTS_LAYOUT}")
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        lines = f.read().splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise DataError(f"{path}: empty list file; expected {LISTS_LAYOUT}")
    out: list[tuple[int, str, str, str | None]] = []
    if "&" in first and "," not in first:  # AVE: Category&VideoID&Quality&StartTime&EndTime
        for n, ln in enumerate(lines, 1):
            if not ln.strip():
                continue
            parts = ln.split("&")
            if len(parts) < 2:
                raise DataError(f"{path}:{n}: expected 'Category&VideoID&...' (AVE), got {ln!r}")
            if parts[1].strip().lower() == "videoid":
                continue  # the header of Annotations.txt
            out.append((n, parts[1].strip(), parts[0].strip(), None))
    elif path.suffix.lower() == ".csv" or "," in first:
        cols: tuple[int, int, int | None] = (0, 1, None)
        header = None
        for n, row in csv_rows(path):
            if header is None:
                header = sniff_header(row, set(CLIP_COLS + LABEL_COLS + SPLIT_COLS))
                if header:
                    where, exp = f"{path}:{n}", "columns clip,label[,split]"
                    cols = (header_col(row, CLIP_COLS, where, "clip", exp),
                            header_col(row, LABEL_COLS, where, "label", exp),
                            header_col(row, SPLIT_COLS, where, "split", exp, required=need_split))
                    continue
            if len(row) < 2 or len(row) <= max(c for c in cols if c is not None):
                raise DataError(f"{path}:{n}: {len(row)} cell{'s' if len(row) != 1 else ''}; "
                                f"expected clip,label{',split' if cols[2] is not None else ''}")
            split = row[cols[2]].strip() if cols[2] is not None else (row[2].strip() if not header and len(row) > 2 else None)
            out.append((n, row[cols[0]].strip(), row[cols[1]].strip(), split or None))
        if need_split and not header:
            raise DataError(f"{path}: no header row; expected {CSV_LAYOUT}")
    else:
        for n, ln in enumerate(lines, 1):
            if not ln.strip() or ln.lstrip().startswith("#"):
                continue
            parts = ln.strip().split(None, 1)
            if len(parts) != 2:
                raise DataError(f"{path}:{n}: expected '<file> <label>', got {ln.strip()!r}")
            out.append((n, parts[0], parts[1].strip(), None))
    for n, file, label, _ in out:
        if not file:
            raise DataError(f"{path}:{n}: empty clip name")
        if not label:
            raise DataError(f"{path}:{n}: empty label")
    return out


# --------------------------------------------------------------------------- media


def _template(tpl: str, root: Path, split: str, clip: str | None = None) -> Path:
    s = tpl.replace("{root}", str(root)).replace("{split}", split)
    if clip is not None:
        s = s.replace("{clip}", clip)
    p = Path(s).expanduser()
    return p if p.is_absolute() else root / p


def _expected(tpl: str, root: Path, split: str, clip: str, ext: str) -> Path:
    """The path a template gives for a clip (for messages)."""
    return _template(tpl, root, split, clip) if "{clip}" in tpl else _template(tpl, root, split) / f"{clip}{ext}"


def _find_csv(root: Path, quiet: bool = False) -> Path | None:
    """The one CSV in ``root`` whose header has a split column."""
    cands = []
    for p in sorted(root.glob("*.csv")):
        with open(p, encoding="utf-8-sig", errors="replace") as f:
            head = [c.strip().lower() for c in f.readline().split(",")]
        if "split" in head:
            cands.append(p)
    if len(cands) == 1:
        return cands[0]
    if quiet and not cands:
        return None
    raise DataError(f"{root}: {'no' if not cands else 'several'} CSV file{'s' if cands else ''} with a split column "
                    f"({', '.join(p.name for p in cands)}); expected {CSV_LAYOUT}, or pass lists=")


def find_audio(root: Path, audio_dir: str, split: str, clip: str, listed: str) -> Path | None:
    cands: list[Path] = []
    lp = Path(listed)
    if lp.suffix.lower() in SF_AUDIO + AV_AUDIO:
        cands.append(lp if lp.is_absolute() else root / lp)
    if "{clip}" in audio_dir:
        p = _template(audio_dir, root, split, clip)
        cands += [p] if p.suffix.lower() in SF_AUDIO + AV_AUDIO else [p.with_name(p.name + e) for e in SF_AUDIO + AV_AUDIO]
    else:
        base = _template(audio_dir, root, split)
        cands += [base / f"{clip}{e}" for e in SF_AUDIO + AV_AUDIO]
    return next((p for p in cands if file_ok(p)), None)


def find_frames(root: Path, frames_dir: str, split: str, clip: str) -> Path | None:
    p = _template(frames_dir, root, split, clip) if "{clip}" in frames_dir else _template(frames_dir, root, split) / clip
    if p.is_dir() and any(f.suffix.lower() in IMAGE_EXTS and f.is_file() for f in p.iterdir()):
        return p
    return None


def find_video(root: Path, video_dir: str | None, split: str, clip: str) -> Path | None:
    if not video_dir:
        return None
    if "{clip}" in video_dir:
        p = _template(video_dir, root, split, clip)
        cands = [p] if p.suffix else [p.with_name(p.name + e) for e in VIDEO_EXTS]
    else:
        cands = [_template(video_dir, root, split) / f"{clip}{e}" for e in VIDEO_EXTS]
    return next((p for p in cands if file_ok(p)), None)


def check_audio(path: Path, where: str) -> None:
    try:
        import soundfile as sf
    except ImportError:
        raise DataError("reading audio needs the soundfile package: pip install soundfile") from None
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise DataError(f"{where}: unreadable audio file {path}: {e}") from None
    if info.frames == 0:
        raise DataError(f"{where}: audio file {path} holds no samples")


def decode_audio(src: Path, dest: Path, where: str, sample_rate: int = SAMPLE_RATE) -> None:
    """Decode any container PyAV reads into a mono ``sample_rate`` Hz 16-bit wav."""
    import numpy as np
    import soundfile as sf

    av = pyav(f"reading {src.suffix} audio ({src})")
    chunks = []
    try:
        with av.open(str(src)) as c:
            if not c.streams.audio:
                raise DataError(f"{where}: {src} has no audio stream")
            rs = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            for frame in c.decode(audio=0):
                for f in rs.resample(frame):
                    chunks.append(f.to_ndarray().reshape(-1))
            for f in rs.resample(None):
                chunks.append(f.to_ndarray().reshape(-1))
    except DataError:
        raise
    except Exception as e:  # PyAV raises av.error.* (FFmpegError) for broken files
        raise DataError(f"{where}: cannot decode audio of {src}: {type(e).__name__}: {e}") from None
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise DataError(f"{where}: {src} holds no audio samples")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dest), np.concatenate(chunks), sample_rate, subtype="PCM_16")


def extract_frames(src: Path, dest: Path, where: str, fps: float = 1.0) -> int:
    """Frames of a video file at ``fps`` per second as ``dest/frame_0001.jpg``, ...; returns how many."""
    av = pyav(f"reading video files ({src})")
    dest.mkdir(parents=True, exist_ok=True)
    k = 0
    try:
        with av.open(str(src)) as c:
            if not c.streams.video:
                raise DataError(f"{where}: {src} has no video stream")
            stream = c.streams.video[0]
            rate = float(stream.average_rate or 25)
            t0, nxt = None, 0.0
            for i, frame in enumerate(c.decode(stream)):
                t = frame.time if frame.time is not None else i / rate
                t0 = t if t0 is None else t0
                if t - t0 + 1e-6 >= nxt:
                    k += 1
                    frame.to_image().convert("RGB").save(dest / f"frame_{k:04d}.jpg", quality=95)
                    nxt = k / fps
    except DataError:
        raise
    except Exception as e:  # av.error.*
        raise DataError(f"{where}: cannot decode video {src}: {type(e).__name__}: {e}") from None
    if k == 0:
        raise DataError(f"{where}: no frames in {src}")
    return k


# --------------------------------------------------------------------------- import


def import_audiovisual(
    dataset: str,
    root: str | os.PathLike,
    out: str | os.PathLike,
    layout: str = "auto",
    *,
    lists: Mapping[str, str | os.PathLike] | str | os.PathLike | None = None,
    audio_dir: str | None = None,
    frames_dir: str | None = None,
    video_dir: str | None = None,
    fps: float = 1.0,
    seed: int = 0,
    val_fraction: float | None = None,
    skip_missing: bool = False,
    classes: Sequence[str] | str | None = None,
    progress: bool = False,
) -> Path:
    """Import an audio-video dataset (``cremad``, ``kinetics_sounds`` or ``ave``) from ``root``
    into the manifest folder ``out`` (returned). See the module docstring for the layouts."""
    from tqdm import tqdm

    if dataset not in DATASETS:
        raise DataError(f"unknown audio-video dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if layout not in LAYOUTS:
        raise DataError(f"{dataset}: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    root = check_root(root)
    out = check_out(out, root)
    audio_dir = str(audio_dir) if audio_dir else DEFAULT_AUDIO_DIR
    frames_dir = str(frames_dir) if frames_dir else DEFAULT_FRAMES_DIR
    video_dir = str(video_dir) if video_dir else None
    frac = VAL_FRACTION if val_fraction is None else float(val_fraction)
    if fps <= 0:
        raise DataError(f"fps must be > 0, got {fps}")
    cls = as_classes(classes)

    # which files list the clips of which split
    entries: dict[str, list[tuple[Path, int, str, str]]] = {}  # split -> (file, line, listed file, label)
    csv_path: Path | None = None
    found: dict[str, Path] = {}
    if isinstance(lists, (str, os.PathLike)):
        csv_path = Path(lists).expanduser()
        csv_path = csv_path if csv_path.is_absolute() else root / csv_path
    elif isinstance(lists, Mapping):
        for k, v in lists.items():
            s = SPLIT_ALIASES.get(str(k).lower())
            if s is None:
                raise DataError(f"lists: {k!r} is not a split name (train, val, test)")
            p = Path(v).expanduser()
            found[s] = p if p.is_absolute() else root / p
    elif layout == "csv":
        csv_path = _find_csv(root)
    else:
        found = find_lists(root) if layout in ("auto", "lists") else {}
        if not found and layout == "auto":
            csv_path = _find_csv(root, quiet=True)
        if not found and csv_path is None:
            raise DataError(f"{root}: no split list files (train.txt, test.txt, ...) found; expected one of:\n"
                            + "\n".join(f"  {k}: {v}" for k, v in LAYOUT_HELP.items()))
    if csv_path is not None:
        layout = "csv"
        for n, file, label, split in parse_list(csv_path, need_split=True):
            s = SPLIT_ALIASES.get((split or "").strip().lower())
            if s is None:
                raise DataError(f"{csv_path}:{n}: column 'split': {split!r} is not train, val or test")
            entries.setdefault(s, []).append((csv_path, n, file, label))
        files = {"all": str(csv_path)}
    else:
        layout = "lists"
        if "train" not in found:
            raise DataError(f"{root / 'train.txt'}: train list file not found; expected {LISTS_LAYOUT}")
        for s, p in found.items():
            entries[s] = []
            for n, file, label, split in parse_list(p):
                if split and SPLIT_ALIASES.get(split.lower()) not in (None, s):
                    raise DataError(f"{p}:{n}: split {split!r} in the {s} list")
                entries[s].append((p, n, file, label))
        files = {s: str(p) for s, p in found.items()}

    # class list: given, else the train labels
    if "train" not in entries or not entries["train"]:
        raise DataError(f"{dataset}: no train clips in {files}")
    classes = cls or sorted({e[3] for e in entries["train"]}, key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c))
    known = set(classes)
    for s, es in entries.items():
        for path, n, _, label in es:
            if label not in known:
                src = "the class list" if cls else "the labels of the train list"
                raise DataError(f"{path}:{n}: unknown label {label!r} (not in {src})")

    counts: dict[str, Counter[str]] = {"skipped": Counter(), "audio_only": Counter(), "video_only": Counter(),
                                       "audio_decoded": Counter(), "frames_extracted": Counter()}
    seen: dict[str, str] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    with atomic_dir(out) as tmp:
        for s in ("train", "val", "test"):
            if s not in entries:
                continue
            rows[s] = []
            for path, n, listed, label in tqdm(entries[s], desc=f"{dataset} {s}", unit=" clip", disable=not progress):
                where = f"{path}:{n}"
                clip = _clip_of(listed)
                sid = safe_name(clip)
                if sid in seen:
                    raise DataError(f"{where}: clip {clip!r} is listed twice (first at {seen[sid]})")
                seen[sid] = where
                audio = find_audio(root, audio_dir, s, clip, listed)
                frames = find_frames(root, frames_dir, s, clip)
                video = find_video(root, video_dir, s, clip) if frames is None else None
                if audio is None and frames is None and video is None:
                    if skip_missing:
                        counts["skipped"]["neither audio nor frames"] += 1
                        continue
                    tried = f"audio {_expected(audio_dir, root, s, clip, '.wav')}, frames {_expected(frames_dir, root, s, clip, '')}/"
                    if video_dir:
                        tried += f", video {_expected(video_dir, root, s, clip, '.mp4')}"
                    raise DataError(f"{where}: clip {clip!r} has neither audio nor frames (looked for {tried}); "
                                    f"set audio_dir / frames_dir (--audio-dir / --frames-dir), or pass skip_missing "
                                    f"to leave such clips out")
                a_rel: str | None = None
                if audio is not None:
                    if audio.suffix.lower() in SF_AUDIO:
                        check_audio(audio, where)
                        a_rel = str(audio.resolve())
                    else:
                        a_rel = f"audio/{sid}.wav"
                        decode_audio(audio, tmp / a_rel, where)
                        counts["audio_decoded"][s] += 1
                v_rel: str | None = None
                if frames is not None:
                    v_rel = str(frames.resolve())
                elif video is not None:
                    v_rel = f"frames/{sid}"
                    extract_frames(video, tmp / v_rel, where, fps)
                    counts["frames_extracted"][s] += 1
                if v_rel is None:
                    counts["audio_only"][s] += 1
                elif a_rel is None:
                    counts["video_only"][s] += 1
                rows[s].append({"id": sid, "label": label, "audio": a_rel, "video": v_rel})
        split_info: dict[str, Any] = {s: {"source": files.get(s, files.get("all"))} for s in rows}
        if not rows.get("val") and frac > 0:
            split_info["val"] = carve_val(rows, frac, seed)
        info = DATASETS[dataset]
        write_dataset(tmp, dataset, rows, classes, MODALITIES, {
            "source": {"dataset": info["title"], "root": str(root), "layout": layout,
                       "layout_description": LAYOUT_HELP[layout], "files": files,
                       "audio_dir": audio_dir, "frames_dir": frames_dir, "video_dir": video_dir},
            "options": {"seed": seed, "val_fraction": frac, "skip_missing": skip_missing, "fps": fps},
            "splits": split_info,
            "expected_classes": info["num_classes"],
            "label": "class name from the list files (single-label)",
            "audio": f"source .wav/.flac/.ogg by absolute path; other containers decoded to "
                     f"{SAMPLE_RATE} Hz mono wav under audio/",
            "video": f"frame folders by absolute path; video files decoded at {fps:g} fps under frames/",
        }, {k: dict(sorted(v.items())) for k, v in counts.items()})
    return out


def import_cremad(root: str | os.PathLike, out: str | os.PathLike, layout: str = "auto", **options: Any) -> Path:
    """CREMA-D (6 emotions). MLA's lists have only train and test: a seeded val is made from train."""
    return import_audiovisual("cremad", root, out, layout, **options)


def import_kinetics_sounds(root: str | os.PathLike, out: str | os.PathLike, layout: str = "auto", **options: Any) -> Path:
    """Kinetics-Sounds (31 classes)."""
    return import_audiovisual("kinetics_sounds", root, out, layout, **options)


def import_ave(root: str | os.PathLike, out: str | os.PathLike, layout: str = "auto", **options: Any) -> Path:
    """AVE (28 classes; train/val/test lists, e.g. AVE's trainSet.txt / valSet.txt / testSet.txt)."""
    return import_audiovisual("ave", root, out, layout, **options)
