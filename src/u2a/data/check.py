"""``u2a data check``: count a dataset's samples and list every problem in its manifest(s)."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from u2a.data.manifest import (
    KINDS,
    SPLITS,
    Manifest,
    Problem,
    _read_records,
    find_split_files,
    load_manifest,
    load_splits,
)
from u2a.errors import DataError


@dataclass
class CheckReport:
    path: Path
    modalities: dict[str, str] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    multilabel: bool = False
    n_samples: int = 0
    per_class: Counter = field(default_factory=Counter)
    per_split: Counter = field(default_factory=Counter)
    per_pattern: Counter = field(default_factory=Counter)
    per_split_class: dict[str, Counter] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is no problem but worth knowing

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_bad_lines(self) -> int:
        return len({(p.source, p.line) for p in self.problems})


def parse_modalities(spec: str | None) -> dict[str, str] | None:
    """``image=image,caption=text`` (or just ``image,text``) as a modalities dict."""
    if not spec:
        return None
    out: dict[str, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, kind = part.partition("=")
        name, kind = name.strip(), (kind.strip() or name.strip())
        if kind not in KINDS:
            raise DataError(f"--modalities: {part!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        out[name] = kind
    if not out:
        raise DataError("--modalities: no modality given")
    return out


NO_SPLIT = ("no line has a split field: `u2a train` needs a split (train, val or test) on every line of a "
            "single manifest, or a folder of train/val/test manifests; check a file that holds one split "
            "with --split NAME")


def _load(path: Path, modalities, classes, check_files, split, report: CheckReport) -> list[Manifest]:
    """The manifests of a dataset, read as training reads them (``load_splits``), bad lines kept
    as problems. A file read whole (no split field anywhere) gets one problem instead of one per line."""
    if path.is_dir():
        if split is not None:
            raise DataError(f"{path}: --split is for a single file; the files of a folder name their splits")
        return list(load_splits(path, modalities, classes, skip_bad=True, check_files=check_files).values())
    if split is not None:
        return [load_manifest(path, modalities, classes, skip_bad=True, check_files=check_files, split=split)]
    records = _read_records(path)[0]
    if records and not any(r.data.get("split") not in (None, "") for r in records):
        report.problems.append(Problem(path, 0, "split", NO_SPLIT))
        return [load_manifest(path, modalities, classes, skip_bad=True, check_files=check_files)]
    return list(load_splits(path, modalities, classes, skip_bad=True, check_files=check_files).values())


def _file_problem(path: Path, e: DataError) -> Problem:
    """A DataError about a whole file (or one line of it, ``FILE:LINE: ...``) as a Problem."""
    msg = str(e)
    m = re.match(rf"{re.escape(str(path))}(?::(\d+))?: ", msg)
    if m:
        return Problem(path, int(m.group(1) or 0), None, msg[m.end():])
    return Problem(path, 0, None, msg)


def check_manifest(
    path: str | os.PathLike,
    modalities: Mapping[str, str] | None = None,
    classes: Sequence[str] | str | os.PathLike | None = None,
    check_files: bool = True,
    split: str | None = None,
) -> CheckReport:
    """Read a manifest (or a folder of train/val/test manifests) and report counts and all problems.

    The dataset is read exactly as ``u2a train`` reads it (``load_splits``): a single file needs a
    ``split`` field on every line (or ``split``: the file holds that one split), and every file
    and text is loaded as the training Collator loads it. Problems with single lines are
    collected, not raised; a problem with the whole file (not found, no header, no modality field,
    an empty train split) is reported at line 0.
    """
    path = Path(path).expanduser()
    report = CheckReport(path=path)
    try:
        manifests = _load(path, modalities, classes, check_files, split, report)
    except DataError as e:
        report.problems.append(_file_problem(path, e))
        return report
    first = manifests[0]
    report.modalities = first.modalities
    report.classes = first.classes
    report.multilabel = first.multilabel
    for m in manifests:
        report.problems.extend(m.problems)
        for s in m.samples:
            report.n_samples += 1
            split_name = s.split or "(none)"
            report.per_split[split_name] += 1
            report.per_pattern[m.pattern(s)] += 1
            sc = report.per_split_class.setdefault(split_name, Counter())
            for c in s.labels:
                report.per_class[c] += 1
                sc[c] += 1
    _check_train_split(path, manifests, report)
    return report


def _check_train_split(path: Path, manifests: list[Manifest], report: CheckReport) -> None:
    """Training needs a train split with samples: an empty one is a problem, none at all a note."""
    if any(p.field == "split" and p.line == 0 for p in report.problems):
        return  # a file without splits: already said
    splits = {s.split for m in manifests for s in m.samples} | {p.split for m in manifests for p in m.problems}
    train_file = find_split_files(path).get("train") if path.is_dir() else None
    if "train" in splits or train_file is not None:
        if not report.per_split.get("train"):
            where = train_file or path
            bad = sum(1 for m in manifests for p in m.problems if p.split == "train")
            why = f" (its {bad} problems leave no good sample)" if bad else ""
            report.problems.append(Problem(where, 0, None, f"the train split is empty{why}: "
                                                           "`u2a train` needs at least one train sample"))
    elif report.n_samples:
        report.notes.append("no train split: fine for `u2a evaluate` or `u2a predict`; `u2a train` needs one")


def _table(rows: list[tuple[str, int]], total: int, indent: str = "  ") -> list[str]:
    if not rows:
        return [f"{indent}(none)"]
    w = max(len(k) for k, _ in rows)
    wn = max(len(str(n)) for _, n in rows)
    return [f"{indent}{k:<{w}}  {n:>{wn}}  {100 * n / max(total, 1):5.1f}%" for k, n in rows]


def _n(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def format_report(report: CheckReport, max_problems: int | None = None) -> str:
    lines = [f"{report.path}: {_n(report.n_samples, 'good sample')}"
             + (f", {_n(report.n_bad_lines, 'bad line')}" if report.problems else "")]
    if report.modalities:
        lines.append("modalities: " + ", ".join(f"{m} ({k})" for m, k in report.modalities.items()))
    if report.n_samples:
        kind = "multi-label" if report.multilabel else "single-label"
        lines.append(f"classes ({len(report.classes)}, {kind}):")
        lines += _table([(c, report.per_class.get(c, 0)) for c in report.classes], report.n_samples)
        order = [s for s in (*SPLITS, "(none)") if s in report.per_split]
        lines.append("splits:")
        lines += _table([(s, report.per_split[s]) for s in order], report.n_samples)
        lines.append("modalities present:")
        lines += _table(report.per_pattern.most_common(), report.n_samples)
        empty = [c for c in report.classes if not report.per_class.get(c)]
        if empty:
            lines.append(f"classes without samples: {', '.join(empty)}")
        if len(order) > 1 and order != ["(none)"]:
            for s in order:
                have = report.per_split_class[s]
                missing = [c for c in report.classes if report.per_class.get(c) and not have.get(c)]
                if missing:
                    lines.append(f"classes missing from {s}: {', '.join(missing)}")
    if report.problems:
        lines.append(f"problems ({len(report.problems)}):")
        shown = report.problems if max_problems is None else report.problems[:max_problems]
        lines += [f"  {p}" for p in shown]
        if len(shown) < len(report.problems):
            lines.append(f"  ... and {len(report.problems) - len(shown)} more")
    else:
        lines.append("no problems found")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
