"""Dataset manifests: one sample per line, in JSON Lines (``.jsonl``) or CSV (``.csv``).

Each sample has an ``id`` (unique string), a ``label`` (a class name, or a list of names for
multi-label data; ``a|b|c`` in CSV), an optional ``split`` (train/val/test) and one field per
modality, named by the modality (``image``, ``text``, ``audio``, ``video``, ...). A modality is
missing when its field is absent or null (JSONL) or empty (CSV). File-like modalities (image,
audio, video) hold paths relative to the manifest's folder (absolute paths are allowed);
``video`` may be a file or a folder of frames; ``text`` holds the text itself.

Every problem is reported as ``FILE:LINE: field 'x': message``. By default all problems of a file
are collected and raised as one :class:`~u2a.errors.DataError` (the first 20 are listed); with
``skip_bad=True`` bad lines are left out and listed in :attr:`Manifest.skipped`.

See ``docs/data.md`` for the format with examples.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from u2a.data.processing import frame_files, validate_text, verify_input
from u2a.errors import DataError, SampleError
from u2a.io import atomic_write_text

KINDS = ("image", "text", "audio", "video")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
RESERVED = ("id", "label", "split")
MANIFEST_SUFFIXES = (".jsonl", ".ndjson", ".csv")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_LISTED = 20


class Problem(NamedTuple):
    """One problem found in a manifest: where it is and what is wrong."""

    source: Path
    line: int  # 1-based; 0 for a problem with the whole file
    field: str | None
    message: str
    split: str | None = None  # the split of the line, when known
    sample: str | None = None  # the sample id of the line, when known

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else f"{self.source}"
        who = f"sample {self.sample!r}: " if self.sample is not None else ""
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {who}{what}{self.message}"


@dataclass
class Sample:
    id: str
    label: list[str] | str | None  # None: unlabelled (``load_manifest(..., require_labels=False)``)
    fields: dict[str, str | None]
    split: str | None
    line: int
    source: Path

    @property
    def labels(self) -> list[str]:
        """The label as a list (one name for single-label data; none for an unlabelled sample)."""
        if self.label is None:
            return []
        return list(self.label) if isinstance(self.label, list) else [self.label]


@dataclass
class Manifest:
    samples: list[Sample]
    modalities: dict[str, str]
    classes: list[str]
    multilabel: bool
    root: Path
    path: Path
    skipped: list[tuple[int, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        return iter(self.samples)

    def split(self, name: str) -> Manifest:
        """The samples of one split (``train``, ``val`` or ``test``), as a Manifest."""
        name = _split_name(name)
        if name is None:
            raise DataError(f"unknown split name; expected one of {', '.join(SPLITS)}")
        probs = [p for p in self.problems if p.split == name]
        return replace(
            self,
            samples=[s for s in self.samples if s.split == name],
            skipped=_skipped(probs),
            problems=probs,
        )

    def splits(self) -> list[str]:
        """The split names used by the samples, in train/val/test order."""
        used = {s.split for s in self.samples}
        return [n for n in SPLITS if n in used]

    def present(self, sample: Sample) -> dict[str, bool]:
        """For each modality, whether ``sample`` has it."""
        return {m: sample.fields.get(m) is not None for m in self.modalities}

    def pattern(self, sample: Sample) -> str:
        """The missing-modality pattern of a sample: ``image+text``, ``image only``, ..."""
        return pattern_name([m for m, ok in self.present(sample).items() if ok])

    def label_index(self, sample: Sample) -> int | list[int] | None:
        """The class index of the sample (a list of indices for multi-label data; None for an
        unlabelled sample)."""
        if sample.label is None:
            return None
        idx = self._class_index()
        try:
            if self.multilabel:
                return [idx[c] for c in sample.labels]
            return idx[sample.label if isinstance(sample.label, str) else sample.label[0]]
        except KeyError as e:
            raise DataError(f"{sample.source}:{sample.line}: unknown label {e.args[0]!r}") from None

    def resolve(self, sample: Sample, modality: str) -> Path | str | None:
        """The value of a modality: the text for text modalities, otherwise its path - as written
        if absolute, else joined to the folder of the manifest (as the manifest's path was given)."""
        value = sample.fields.get(modality)
        if value is None or self.modalities.get(modality) == "text":
            return value
        return _resolve(sample.source.parent, value)

    def _class_index(self) -> dict[str, int]:
        cache = self.__dict__.get("_idx")
        if cache is None or cache[0] is not self.classes or len(cache[1]) != len(self.classes):
            cache = (self.classes, {c: i for i, c in enumerate(self.classes)})
            self.__dict__["_idx"] = cache
        return cache[1]


def pattern_name(present: Sequence[str]) -> str:
    if not present:
        return "none"
    if len(present) == 1:
        return f"{present[0]} only"
    return "+".join(present)


# --------------------------------------------------------------------------- reading


class _Record(NamedTuple):
    line: int
    data: dict[str, Any]
    csv: bool


def _read_records(path: Path, require_labels: bool = True) -> tuple[list[_Record], list[Problem], set[str]]:
    """Parse the lines of a manifest file into dicts, without validating them. Returns the
    records, the lines that cannot be parsed, and the field names (a CSV's header; the keys of
    the JSON objects)."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder; read a folder of train/val/test manifests with load_splits")
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"{path}: manifest not found" + ("" if suffix in MANIFEST_SUFFIXES else
                        " (a manifest is a .jsonl or .csv file, or a folder of train/val/test manifests)"))
    if suffix not in MANIFEST_SUFFIXES:
        raise DataError(f"{path}: unknown manifest format {suffix!r}; use .jsonl or .csv")
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    if suffix == ".csv":
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text ({e})") from None
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from None
        return _read_csv(path, text, require_labels)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: not UTF-8 text (a UTF-16 file); save it as UTF-8")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    # JSON Lines are separated by \n alone: a JSON string may hold U+2028 or \r, which
    # str.splitlines would take for line breaks. Each line is decoded on its own, so that one
    # line in another encoding is one bad line (named), not the whole file refused.
    lines: list[tuple[int, str]] = []
    problems = []
    for n, chunk in enumerate(data.split(b"\n"), start=1):
        chunk = chunk.removesuffix(b"\r")
        try:
            lines.append((n, chunk.decode("utf-8")))
        except UnicodeDecodeError as e:
            problems.append(Problem(path, n, None, f"not UTF-8 text: byte 0x{chunk[e.start]:02x} at column "
                                                   f"{e.start + 1} (a line in another encoding, e.g. Latin-1?)"))
    nonblank = sum(1 for _, raw in lines if raw.strip()) + len(problems)
    if problems and len(problems) * 2 > nonblank:
        raise DataError(f"{path}: not UTF-8 text ({len(problems)} of {nonblank} lines; first at line "
                        f"{problems[0].line}); save it as UTF-8")
    records = []
    for n, raw in lines:
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(Problem(path, n, None, f"broken JSON: {e.msg} (column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(path, n, None, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        records.append(_Record(n, obj, False))
    return records, problems, {k for r in records for k in r.data}


CSV_QUOTING = 'a field with commas, quotes or line breaks is quoted: "a, b"; a quote inside it is doubled: "say ""hi"""'


def _read_csv(path: Path, text: str, require_labels: bool = True) -> tuple[list[_Record], list[Problem], set[str]]:
    # strict: a broken quote is an error, never a field that silently runs on over the next lines
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, problems = [], []
    header: list[str] | None = None
    prev = 0
    while True:
        start = prev + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            end = reader.line_num
            if "end of data" in str(e):
                msg = (f"unterminated quote: a quoted field in the record that starts on line {start} is "
                       f"never closed, so lines {start}-{end} (the rest of the file) cannot be read; "
                       f"{CSV_QUOTING}")
            else:
                msg = f"broken CSV quoting ({e}); {CSV_QUOTING}"
            if header is None:
                raise DataError(f"{path}:{start}: bad CSV header: {msg}") from None
            problems.append(Problem(path, start, None, msg))
            if end <= prev:  # no progress: nothing more can be read
                break
            prev = end
            continue
        end, prev = reader.line_num, reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [h.strip() for h in row]
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup or "" in header:
                bad = ", ".join(dup) if dup else "an empty column name"
                raise DataError(f"{path}:{start}: bad CSV header: {bad}")
            continue
        if len(row) != len(header):
            spans = (f" (the record runs over lines {start}-{end}: an unbalanced quote?)" if end > start else "")
            problems.append(Problem(path, start, None,
                                    f"expected {len(header)} CSV fields (as in the header), got {len(row)}{spans}"))
            continue
        records.append(_Record(start, dict(zip(header, row, strict=True)), True))
    if header is None:
        raise DataError(f"{path}: empty CSV file (no header row)")
    for col in ("id", "label") if require_labels else ("id",):
        if col not in header:
            raise DataError(f"{path}:1: CSV header has no '{col}' column")
    return records, problems, set(header)


def _split_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return SPLIT_ALIASES.get(value.strip().lower())


def infer_modalities(keys: Iterable[str]) -> dict[str, str]:
    """Modalities named by field names: those in image, text, audio, video (in that order)."""
    keys = set(keys)
    return {k: k for k in KINDS if k in keys}


def _modalities(path: Path, modalities: Mapping[str, str] | None, keys: Iterable[str],
                problems: Sequence[Problem]) -> dict[str, str]:
    """The modalities given, else those named by the field names. None found in a file whose
    lines are all broken is no error of its own: the broken lines are the problems to report."""
    if modalities is not None:
        out = _check_modalities(modalities, path)
    else:
        found = infer_modalities(keys)
        if not found and problems:
            return {}
        out = _check_modalities(found, path)
    _warn_absent_modalities(path, out, keys, explicit=modalities is not None)
    return out


def _warn_absent_modalities(path: Path, modalities: Mapping[str, str], keys: Iterable[str], explicit: bool) -> None:
    """A modality that no line of the file has at all is most often a misspelt field ('Image',
    'img'): say so, naming the fields the file has instead. Explicit modalities are checked by
    name; inferred ones by the kinds (image, text, audio, video) that a field nearly names."""
    import difflib
    import warnings

    from u2a.errors import U2AWarning

    keys = set(keys)
    others = sorted(keys - set(modalities) - set(RESERVED))
    wanted = list(modalities) if explicit else [k for k in KINDS if k not in modalities]
    for name in wanted:
        if name in keys:
            continue
        lower = {o.lower(): o for o in others}
        close = difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)
        if not explicit and not close:
            continue  # data without that kind of modality
        if explicit:
            hint = f"; did you mean {', '.join(repr(lower[c]) for c in close)}?" if close else ""
            msg = (f"no line has the field {name!r}: modality {name!r} is missing from every sample; the file's "
                   f"other fields: {', '.join(map(repr, others)) or 'none'}{hint}")
        else:
            msg = (f"field {', '.join(repr(lower[c]) for c in close)} is not a modality field and is ignored "
                   f"(modality fields are named {', '.join(KINDS)}, or named with --modalities / modalities=); "
                   f"did you mean {name!r}?")
        warnings.warn(f"{path}: {msg}", U2AWarning, stacklevel=3)


def _check_modalities(modalities: Mapping[str, str], path: Path) -> dict[str, str]:
    out = {}
    for name, kind in modalities.items():
        if kind not in KINDS:
            raise DataError(f"modality {name!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        if name in RESERVED:
            raise DataError(f"modality {name!r}: the name is reserved for the {name} field")
        out[name] = kind
    if not out:
        raise DataError(f"{path}: no modality fields; expected one of {', '.join(KINDS)} "
                        "(or name them with modalities=)")
    return out


def _resolve(root: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def _check_file(kind: str, p: Path) -> str | None:
    """None if the file of a modality is usable, else what is wrong with it.

    The file is loaded exactly as training loads it (:func:`u2a.data.processing.verify_input`):
    images and every frame of a video folder are fully decoded, audio files fully read."""
    try:
        if kind == "video":
            if not p.exists():
                return f"file not found: {p}"
            for f in frame_files(p):
                msg = _check_file("image", f)
                if msg:
                    return msg
            return None
        if not p.exists():
            return f"file not found: {p}"
        if not p.is_file():
            return f"not a file: {p}"
        try:
            size = p.stat().st_size
        except OSError as e:
            return f"cannot read {p}: {e.strerror}"
        if size == 0:
            return f"empty file: {p}"
        if not os.access(p, os.R_OK):
            return f"file not readable: {p}"
        verify_input(kind, p)
    except SampleError as e:
        return e.reason
    return None


def _validate(
    path: Path,
    records: list[_Record],
    modalities: dict[str, str],
    classes: Sequence[str] | None,
    check_files: bool,
    file_split: str | None = None,
    require_split: bool = False,
    seen_ids: dict[str, tuple[Path, int]] | None = None,
    require_labels: bool = True,
) -> tuple[list[Sample], list[Problem], bool]:
    """Check the records of one file; returns the good samples, the problems, and multilabel."""
    class_set = set(classes) if classes is not None else None
    seen_ids = {} if seen_ids is None else seen_ids
    root = path.parent
    samples: list[Sample] = []
    problems: list[Problem] = []
    multilabel = False
    for rec in records:
        n, d = rec.line, rec.data
        bad: list[Problem] = []
        sid: str | None = None

        def err(fld: str | None, msg: str) -> None:
            bad.append(Problem(path, n, fld, msg, sample=sid))

        # id
        raw_id = d.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            err("id", "missing id" if raw_id is None else f"id must be a string, got {type(raw_id).__name__}")
        else:
            sid = str(raw_id).strip() or None
            if sid is None:
                err("id", "empty id")
        # label
        raw = d.get("label")
        label: list[str] | str | None = None
        if rec.csv and isinstance(raw, str) and "|" in raw:
            raw = raw.split("|")
        if raw is None or raw == "" or raw == []:
            if require_labels:
                err("label", "missing label")
        elif isinstance(raw, list):
            names = []
            for x in raw:
                if isinstance(x, bool) or not isinstance(x, (str, int)) or not str(x).strip():
                    err("label", f"bad class name {x!r} in label list")
                else:
                    names.append(str(x).strip())
            label = list(dict.fromkeys(names))
            multilabel = True
        elif isinstance(raw, (str, int)) and not isinstance(raw, bool):
            label = str(raw).strip()
            if not label:
                err("label", "missing label")
                label = None
        else:
            err("label", f"label must be a class name or a list of names, got {type(raw).__name__}")
        if label is not None and class_set is not None:
            unknown = [c for c in ([label] if isinstance(label, str) else label) if c not in class_set]
            if unknown:
                err("label", f"unknown label {', '.join(map(repr, unknown))} (not in the class list)")
        # split
        split = None
        rs = d.get("split")
        if rs is not None and not (rec.csv and rs == ""):
            split = _split_name(rs)
            if split is None:
                err("split", f"unknown split name {rs!r}; expected one of {', '.join(SPLITS)}")
            elif file_split is not None and split != file_split:
                err("split", f"split {rs!r} in the {file_split} file")
        if split is None and file_split is not None:
            split = file_split
        if split is None and require_split and not any(p.field == "split" for p in bad):
            err("split", "missing split (a single manifest for all splits needs a split field on every line)")
        # modalities
        fields: dict[str, str | None] = {}
        for m, kind in modalities.items():
            v = d.get(m)
            if isinstance(v, str) and rec.csv and v == "":
                v = None
            if v is None:
                fields[m] = None
                continue
            if not isinstance(v, str):
                err(m, f"expected a string or null, got {type(v).__name__}")
                fields[m] = None
                continue
            if kind == "text":
                try:
                    validate_text(v)  # the check the Collator makes before the tokenizer
                except SampleError as e:
                    err(m, e.reason)
                fields[m] = v
                continue
            if not v.strip():
                err(m, "empty path (a missing file must be null or absent)")
                fields[m] = None
                continue
            fields[m] = v
            if check_files:
                msg = _check_file(kind, _resolve(root, v))
                if msg:
                    err(m, msg)
        if not bad and all(v is None for v in fields.values()):
            err(None, f"every modality is missing ({', '.join(modalities)})")
        # duplicate id (after the rest, so that a bad line does not claim its id)
        if sid is not None:
            if sid in seen_ids:
                src, first = seen_ids[sid]
                at = f"line {first}" if src == path else f"{src}:{first}"
                err("id", f"duplicate id {sid!r} (first used at {at})")
            elif not bad:
                seen_ids[sid] = (path, n)
        if bad:
            problems.extend(p._replace(split=split) for p in bad)
            continue
        samples.append(Sample(id=sid, label=label, fields=fields, split=split, line=n, source=path))
    return samples, problems, multilabel


def _sorted_classes(names: Iterable[str]) -> list[str]:
    names = set(names)
    if names and all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def _skipped(problems: list[Problem]) -> list[tuple[int, str]]:
    by_line: dict[tuple[Path, int], list[str]] = {}
    for p in problems:
        msg = f"field '{p.field}': {p.message}" if p.field else p.message
        by_line.setdefault((p.source, p.line), []).append(msg)
    return [(line, "; ".join(msgs)) for (_, line), msgs in by_line.items()]


def _raise(problems: list[Problem], what: Path) -> None:
    n = len(problems)
    listed = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
    more = f"\n  ... and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
    raise DataError(f"{what}: {n} problem{'s' if n != 1 else ''} in the manifest "
                    f"(`u2a data check {what}` lists them all; `u2a train --skip-bad` trains without "
                    f"those lines):\n{listed}{more}")


def as_classes(classes: Sequence[str] | str | os.PathLike | None) -> list[str] | None:
    """A class list given as names, a file, or a comma-separated string (None stays None)."""
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        return read_classes(classes)
    out = [str(c) for c in classes]
    if len(set(out)) != len(out):
        raise DataError("the class list has duplicate names")
    return out


def read_classes(spec: str | os.PathLike) -> list[str]:
    """A class list from a file (a JSON list, or one name per line) or a comma-separated string."""
    p = Path(spec).expanduser()
    if p.is_file():
        text = p.read_text(encoding="utf-8-sig")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if p.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
                # a broken JSON list must not be read as one class name per line
                raise DataError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); a class "
                                "list is a JSON list of names, or a text file with one name per line") from None
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("classes"), list):
            obj = obj["classes"]
        if isinstance(obj, list):
            names = [str(x).strip() for x in obj]
        elif obj is not None and p.suffix.lower() == ".json":
            raise DataError(f"{p}: a JSON class list must be a list of names (or {{\"classes\": [...]}}), "
                            f"got {type(obj).__name__}")
        else:
            names = [ln.strip() for ln in text.splitlines()]
    elif isinstance(spec, str) and "," in spec:
        names = [x.strip() for x in spec.split(",")]
    else:
        raise DataError(f"{spec}: class list file not found (a list of names is given comma-separated: a,b,c)")
    names = [n for n in names if n]
    if not names:
        raise DataError(f"{spec}: empty class list")
    if len(set(names)) != len(names):
        raise DataError(f"{spec}: the class list has duplicate names")
    return names


def _finish(samples: list[Sample], multilabel: bool) -> None:
    if multilabel:
        for s in samples:
            if isinstance(s.label, str):  # an unlabelled sample (None) stays None
                s.label = [s.label]


def load_manifest(
    path: str | os.PathLike,
    modalities: Mapping[str, str] | None = None,
    classes: Sequence[str] | str | os.PathLike | None = None,
    skip_bad: bool = False,
    check_files: bool = True,
    split: str | None = None,
    require_labels: bool = True,
) -> Manifest:
    """Read and check one manifest file (``.jsonl`` or ``.csv``).

    ``modalities`` maps field names to kinds (image, text, audio, video); by default the fields
    named image, text, audio or video. ``classes`` (a list, a file or a comma list) fixes the
    class list and order; by default it is the sorted set of labels. ``split``: the file holds
    that split (as a file of a split folder does): every sample gets it, and a ``split`` field
    must agree. ``require_labels=False``: a line without a label is an unlabelled sample (its
    ``label`` is None), as for new data to predict; a label that is given is checked as usual
    (training always needs labels). Raises ``DataError`` listing the problems, or with ``skip_bad``
    leaves the bad lines out and lists them in ``.skipped``.
    """
    path = Path(path).expanduser()
    file_split = None
    if split is not None:
        file_split = _split_name(split)
        if file_split is None:
            raise DataError(f"unknown split name {split!r}; expected one of {', '.join(SPLITS)}")
    records, problems, keys = _read_records(path, require_labels)
    mods = _modalities(path, modalities, keys, problems)
    cls = as_classes(classes)
    samples, bad, multilabel = _validate(path, records, mods, cls, check_files, file_split=file_split,
                                         require_labels=require_labels)
    if file_split is not None:
        problems = [p._replace(split=file_split) for p in problems]
    problems.extend(bad)
    problems.sort(key=lambda p: p.line)
    return _build([(path, path, samples, problems)], mods, cls, multilabel, skip_bad, path.parent, path)[path]


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def _number(name: str):
    """The number a class name spells (``"05"``, ``"5"`` and ``"5.0"`` spell 5), else None."""
    if not _NUMBER.fullmatch(name):
        return None
    from decimal import Decimal

    return Decimal(name).normalize()


def _spelling_problems(parts) -> list:
    """Labels that write the same number differently (``5`` and ``"05"``) would become two classes.

    Without a class list they are refused: the most used spelling of a number (the first seen on
    a tie) is kept, and every line that writes it otherwise is a problem naming both spellings and
    where the kept one is first used. Returns ``parts`` with those lines moved to the problems."""
    spellings: dict[Any, dict[str, list[Sample]]] = {}
    for _, _, samples, _ in parts:
        for smp in samples:
            for name in smp.labels:
                num = _number(name)
                if num is not None:
                    spellings.setdefault(num, {}).setdefault(name, []).append(smp)
    bad: dict[int, list[str]] = {}
    for names in spellings.values():
        if len(names) < 2:
            continue
        keep = max(names, key=lambda k: len(names[k]))  # the first of the most used (dicts keep order)
        first = names[keep][0]
        at = f"{first.source}:{first.line}"
        for name, users in names.items():
            if name == keep:
                continue
            for smp in users:
                bad.setdefault(id(smp), []).append(
                    f"label {name!r} and label {keep!r} (first at {at}, {len(names[keep])} lines) are the same "
                    f"number written differently and would become two classes; write it one way "
                    f"(or give a class list that names both)")
    if not bad:
        return parts
    out = []
    for key, file, samples, probs in parts:
        moved = [Problem(smp.source, smp.line, "label", msg, smp.split, smp.id)
                 for smp in samples if id(smp) in bad for msg in bad[id(smp)]]
        out.append((key, file, [smp for smp in samples if id(smp) not in bad],
                    sorted(list(probs) + moved, key=lambda p: p.line)))
    return out


def _build(parts, mods, cls, multilabel, skip_bad, root, what) -> dict[Any, Manifest]:
    if cls is None:
        parts = _spelling_problems(parts)
    all_problems = [p for _, _, _, probs in parts for p in probs]
    if all_problems and not skip_bad:
        _raise(all_problems, what)
    if not any(r for _, _, r, _ in parts) and not all_problems:
        raise DataError(f"{what}: no samples in the manifest")
    samples_all = [s for _, _, r, _ in parts for s in r]
    _finish(samples_all, multilabel)
    classes = cls if cls is not None else _sorted_classes(c for s in samples_all for c in s.labels)
    out = {}
    for key, file, samples, probs in parts:
        out[key] = Manifest(samples=samples, modalities=dict(mods), classes=list(classes),
                            multilabel=multilabel, root=root, path=file,
                            skipped=_skipped(probs), problems=list(probs))
    return out


def find_split_files(folder: str | os.PathLike) -> dict[str, Path]:
    """The ``train``/``val``/``test`` manifest files in a folder (``.jsonl`` or ``.csv``)."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in MANIFEST_SUFFIXES:
            split = _split_name(f.stem)
            if split is None:
                continue
            if split in found:
                raise DataError(f"{folder}: two manifests for the {split} split: {found[split].name}, {f.name}")
            found[split] = f
    return {s: found[s] for s in SPLITS if s in found}


def load_splits(
    path_or_dir: str | os.PathLike,
    modalities: Mapping[str, str] | None = None,
    classes: Sequence[str] | str | os.PathLike | None = None,
    skip_bad: bool = False,
    check_files: bool = True,
) -> dict[str, Manifest]:
    """Read a dataset's splits: a folder with ``train``/``val``/``test`` manifests, or one
    manifest with a ``split`` field on every line. Returns ``{split: Manifest}``.

    All splits share one class list: ``classes`` if given, else ``classes.json`` in the folder
    if there is one, else the sorted union of the labels over the splits. An id must be unique
    over all splits.
    """
    path = Path(path_or_dir).expanduser()
    cls = as_classes(classes)
    if path.is_dir():
        files = find_split_files(path)
        if not files:
            raise DataError(f"{path}: no train/val/test manifest (train.jsonl, val.jsonl, test.jsonl or .csv)")
        if cls is None and (path / "classes.json").is_file():
            cls = read_classes(path / "classes.json")
        parsed = {s: _read_records(f) for s, f in files.items()}
        mods = _modalities(path, modalities, {k for _, _, ks in parsed.values() for k in ks},
                           [p for _, probs, _ in parsed.values() for p in probs])
        seen: dict[str, tuple[Path, int]] = {}
        parts, multilabel = [], False
        for s, f in files.items():
            recs, probs, _ = parsed[s]
            samples, bad, ml = _validate(f, recs, mods, cls, check_files, file_split=s, seen_ids=seen)
            probs = [p._replace(split=s) for p in probs]
            probs = sorted(probs + bad, key=lambda p: p.line)
            multilabel |= ml
            parts.append((s, f, samples, probs))
        return _build(parts, mods, cls, multilabel, skip_bad, path, path)
    records, problems, keys = _read_records(path)
    mods = _modalities(path, modalities, keys, problems)
    samples, bad, multilabel = _validate(path, records, mods, cls, check_files, require_split=True)
    problems = sorted(problems + bad, key=lambda p: p.line)
    full = _build([(path, path, samples, problems)], mods, cls, multilabel, skip_bad, path.parent, path)[path]
    used = set(full.splits()) | {p.split for p in full.problems}
    names = [n for n in SPLITS if n in used]
    if not names:
        raise DataError(f"{path}: no usable samples")
    out = {n: full.split(n) for n in names}
    # Bad lines whose split is unknown are counted once, with the first split.
    orphans = [p for p in full.problems if p.split is None]
    if orphans:
        first = out[names[0]]
        first.problems = sorted(first.problems + orphans, key=lambda p: p.line)
        first.skipped = _skipped(first.problems)
    return out


# --------------------------------------------------------------------------- writing


def _as_dict(s: Sample | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(s, Sample):
        d: dict[str, Any] = {"id": s.id, "label": s.label}
        if s.split is not None:
            d["split"] = s.split
        d.update(s.fields)
        return d
    return dict(s)


def write_manifest(samples: Iterable[Sample | Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write samples (dicts or :class:`Sample`) as a ``.jsonl`` or ``.csv`` manifest, atomically.

    In CSV, a list label is written as ``a|b|c`` and a missing value (None) as an empty cell.
    """
    path = Path(path).expanduser()
    rows = [_as_dict(s) for s in samples]
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif suffix == ".csv":
        cols: dict[str, None] = {"id": None, "label": None}
        if any("split" in r for r in rows):
            cols["split"] = None
        for r in rows:
            cols.update(dict.fromkeys(r))
        buf = io.StringIO(newline="")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(list(cols))
        for r in rows:
            out = []
            for c in cols:
                v = r.get(c)
                if isinstance(v, (list, tuple)):
                    v = "|".join(map(str, v))
                out.append("" if v is None else v)
            w.writerow(out)
        text = buf.getvalue()
    else:
        raise DataError(f"{path}: unknown manifest format {suffix!r}; use .jsonl or .csv")
    atomic_write_text(path, text)
    return path
