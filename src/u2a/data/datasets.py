"""Datasets that feed the model: a manifest split, with a missing-modality table applied."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from torch.utils.data import Dataset

from u2a.data.manifest import Manifest, load_splits
from u2a.data.missing import MissingSpec, apply_code, load_or_build_tables
from u2a.errors import ConfigError, DataError


class ManifestDataset(Dataset):
    """Items ``{"id", "label", "fields": {modality: path or text or None}, "where"}`` of one split
    (``where``: ``MANIFEST:LINE`` of the sample, for the Collator's messages).

    ``table`` (one code per sample, see :mod:`u2a.data.missing`) removes modalities on top of
    those the manifest already lacks."""

    def __init__(
        self,
        manifest: Manifest,
        modalities: Sequence[str],
        table: Sequence[int] | None = None,
        pair: Sequence[str] = ("text", "image"),
    ):
        self.manifest = manifest
        self.samples = list(manifest.samples)
        self.modalities = list(modalities)
        missing = [m for m in self.modalities if m not in manifest.modalities]
        if missing:
            raise DataError(
                f"{manifest.path}: the model's modalities {missing} are not fields of the manifest "
                f"(it has {sorted(manifest.modalities)})"
            )
        if table is not None and len(table) != len(self.samples):
            raise DataError(f"missing table has {len(table)} rows, the split {len(self.samples)} samples")
        self.table = list(table) if table is not None else None
        self.pair = tuple(pair)

    def __len__(self) -> int:
        return len(self.samples)

    def fields(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        out: dict[str, Any] = {}
        drop = apply_code(self.table[i], self.pair) if self.table is not None else None
        for m in self.modalities:
            v = self.manifest.resolve(s, m)
            out[m] = None if v is None else str(v)
        if drop is not None and any(v is not None for m, v in out.items() if m != drop):
            # a table never takes a sample's only modality (the data may already lack the other)
            out[drop] = None
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        return {"id": s.id, "label": self.manifest.label_index(s), "fields": self.fields(i),
                "where": f"{s.source}:{s.line}"}


def resolve_manifest_path(data_cfg: Any) -> Path:
    """The manifest (file or folder) named by ``data.manifest`` or built for ``data.dataset``."""
    if getattr(data_cfg, "manifest", None):
        return Path(data_cfg.manifest).expanduser()
    name = getattr(data_cfg, "dataset", None)
    if name:
        from u2a.data.builtin import prepare_builtin

        return prepare_builtin(name)
    raise ConfigError("data: set data.manifest (a manifest file or folder) or data.dataset")


def _warn_classes_without_training_samples(splits: Mapping[str, Any]) -> None:
    """A class that no training sample has cannot be learned; most often it is a misspelt label
    in val or test (or a class list that names more than the data has): say which, and where."""
    import warnings

    from u2a.errors import U2AWarning

    train = splits.get("train")
    if train is None:
        return
    seen = {c for smp in train.samples for c in smp.labels}
    unseen = [c for c in train.classes if c not in seen]
    if not unseen:
        return
    where = []
    for name, man in splits.items():
        for smp in man.samples:
            hits = [c for c in smp.labels if c in unseen]
            if hits and len(where) < 5:
                where.append(f"{smp.source}:{smp.line} ({', '.join(map(repr, hits))})")
    warnings.warn(f"{len(unseen)} of {len(train.classes)} classes have no training sample and cannot be learned: "
                  f"{', '.join(map(repr, unseen[:10]))}{' ...' if len(unseen) > 10 else ''}"
                  + (f"; used at {'; '.join(where)}" if where else " (named only by the class list)"),
                  U2AWarning, stacklevel=3)


def build_datasets(cfg: Any, run_dir: str | Path | None = None, write_tables: bool = True) -> dict[str, ManifestDataset]:
    """The train/val/test datasets of a run config, with its missing-modality tables.

    Tables are stored in ``run_dir/missing`` (keyed by every parameter that defines them); in a
    distributed run pass ``write_tables=False`` on every rank but 0."""
    model_cfg, data_cfg = cfg.model, cfg.data
    kinds = {m.name: m.kind for m in model_cfg.modalities}
    path = resolve_manifest_path(data_cfg)
    splits = load_splits(
        path, modalities=kinds, classes=model_cfg.classes, skip_bad=bool(getattr(data_cfg, "skip_bad", False))
    )
    first = next(iter(splits.values()))
    _warn_classes_without_training_samples(splits)
    if len(first.classes) != model_cfg.num_classes:
        shown = ", ".join(map(repr, first.classes[:12])) + (" ..." if len(first.classes) > 12 else "")
        raise ConfigError(
            f"model.num_classes: is {model_cfg.num_classes}, but {path} has {len(first.classes)} classes ({shown})"
        )
    if model_cfg.classes is None:
        model_cfg.classes = list(first.classes)
    if first.multilabel != (model_cfg.task == "multilabel"):
        raise ConfigError(
            f"model.task: is {model_cfg.task!r}, but the labels of {path} are "
            f"{'multi-label' if first.multilabel else 'single-label'}"
        )
    limit = getattr(data_cfg, "limit", None)
    if limit:
        # a seeded random subset (in file order): manifests are often sorted by class
        for name, man in splits.items():
            if len(man.samples) > int(limit):
                keep = sorted(random.Random(f"limit-{name}").sample(range(len(man.samples)), int(limit)))
                man.samples = [man.samples[i] for i in keep]

    names = [m.name for m in model_cfg.modalities]
    tables = _missing_tables(cfg, {s: len(m.samples) for s, m in splits.items()}, run_dir, write_tables)
    pair = missing_pair(names) if len(names) == 2 else tuple(names[:2])
    return {
        split: ManifestDataset(man, names, tables.get(split) if tables else None, pair)
        for split, man in splits.items()
    }


def _missing_tables(cfg: Any, sizes: Mapping[str, int], run_dir: str | Path | None,
                    write: bool) -> dict[str, list[int]] | None:
    """The run's missing-modality tables (None when ``data.missing`` removes nothing), read from or
    written to ``run_dir/missing``."""
    names = [m.name for m in cfg.model.modalities]
    missing_cfg = getattr(cfg.data, "missing", None)
    specs = {}
    for split in sizes:
        s = getattr(missing_cfg, split, None) if missing_cfg is not None else None
        specs[split] = MissingSpec(float(getattr(s, "ratio", 0.0)), str(getattr(s, "type", "both"))) if s else MissingSpec()
    if not any(sp.ratio > 0 for sp in specs.values()):
        return None
    if len(names) != 2:
        raise ConfigError("data.missing: missing tables are defined for two modalities")
    folder = Path(run_dir) / "missing" if run_dir else None
    return load_or_build_tables(
        folder or ".", dict(sizes), specs, missing_pair(names),
        both_ratio=float(getattr(missing_cfg, "both_ratio", 0.5)),
        seed=int(getattr(missing_cfg, "seed", 0)),
        write=write and folder is not None,
    )


def write_missing_tables(cfg: Any, datasets: Mapping[str, ManifestDataset], run_dir: str | Path) -> None:
    """Store the missing-modality tables of datasets built with ``write_tables=False`` in
    ``run_dir/missing`` (the same tables: they are defined by the config and the split sizes)."""
    _missing_tables(cfg, {s: len(d) for s, d in datasets.items()}, run_dir, True)


def missing_pair(names: Sequence[str]) -> tuple[str, str]:
    """The modality order of table codes 1 and 2: MAP's (text, image) when those are the
    modalities, else the config order."""
    if set(names) == {"text", "image"}:
        return ("text", "image")
    return (names[0], names[1])


def data_report(datasets: dict[str, ManifestDataset]) -> dict[str, Any]:
    """Sizes and skipped bad lines (``data.skip_bad``) of a run's splits."""
    skipped = []
    for split, ds in datasets.items():
        for line, reason in getattr(ds.manifest, "skipped", []) or []:
            skipped.append({"split": split, "file": str(ds.manifest.path), "line": line, "reason": reason})
    return {"sizes": {k: len(v) for k, v in datasets.items()}, "skipped_count": len(skipped), "skipped": skipped}


def merge_skipped(report: dict[str, Any], records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add the samples that failed to load during training or validation (the Collator's
    ``skip_bad`` records, ``{"id", "modality", "file", "reason"}`` and maybe ``"where"``, tagged
    by the trainer with their ``"split"``) to a data report (as
    :func:`data_report` makes it), in place, and return it.

    They go to ``report["skipped_samples"]``, one record per split, sample and modality (a sample
    that fails again in a later epoch is not listed twice), with ``report["skipped_samples_count"]``;
    the bad manifest lines stay in ``report["skipped"]``. The trainer merges ``collator.skipped``
    (or, with DataLoader worker processes, every ``batch["skipped"]``) and rewrites
    ``RUN/data.json``."""
    listed = report.setdefault("skipped_samples", [])
    seen = {(r.get("split"), r.get("id"), r.get("modality"), r.get("file")) for r in listed}
    for r in records:
        key = (r.get("split"), r.get("id"), r.get("modality"), r.get("file"))
        if key not in seen:
            seen.add(key)
            listed.append(dict(r))
    report["skipped_samples_count"] = len(listed)
    return report


def write_data_report(datasets: dict[str, ManifestDataset], run_dir: str | Path,
                      keep_samples: bool = False) -> dict[str, Any]:
    """Write ``run_dir/data.json`` and say on stderr how many bad lines were skipped.
    ``keep_samples`` (a resumed run): the samples that an earlier session of the run skipped
    (``skipped_samples`` of the existing report) stay listed."""
    import json
    import sys

    from u2a.io import atomic_write_json

    report = data_report(datasets)
    path = Path(run_dir) / "data.json"
    if keep_samples and path.is_file():
        try:
            earlier = json.loads(path.read_text()).get("skipped_samples") or []
        except (OSError, ValueError) as e:
            import warnings

            from u2a.errors import U2AWarning

            warnings.warn(f"{path}: cannot read the run's data report ({e}); the samples that earlier "
                          "sessions of the run skipped are not listed in the new one", U2AWarning, stacklevel=2)
            earlier = []
        if earlier:
            merge_skipped(report, earlier)
    atomic_write_json(Path(run_dir) / "data.json", report)
    if report["skipped_count"]:
        print(
            f"u2a: skipped {report['skipped_count']} bad manifest lines (data.skip_bad); "
            f"listed in {Path(run_dir) / 'data.json'}",
            file=sys.stderr,
        )
    return report
