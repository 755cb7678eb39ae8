"""``u2a experiment``: several methods x several seeds on the same splits and missing tables.

For each seed k and each *variant* (a method plus config overrides: ``u2a``, ``u2a_no_mt``,
``mla``, ``ume_mma``, ... see :data:`u2a.methods.VARIANTS`, or your own ``NAME=key=value,...``),
the config is trained with ``train.seed = data.missing.seed = k`` into
``<output_dir>/<name>/<variant>/seed<k>`` (each selected on validation only), then every variant
of the seed is evaluated on the same scenarios (one encoding pass each), and the payloads of all
seeds are aggregated (mean and sample std) into one report with the methods side by side.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from u2a.config import RunConfig, load_run_config, load_saved_run_config
from u2a.errors import ConfigError
from u2a.evaluation.protocols import scenarios_for
from u2a.evaluation.report import write_outputs
from u2a.methods import VARIANTS
from u2a.pipelines.evaluate import Entry, evaluate_models, test_datasets
from u2a.pipelines.parallel import Job, parse_jobs, prefetch, train_parallel

#: report labels of the built-in variants
VARIANT_LABELS = {
    "u2a": "U2A",
    "u2a_no_mt": "U2A (no mask tokens)",
    "u2a_paper": "U2A (paper estimator)",
    "mla": "MLA",
    "ume_mma": "UME-MMA",
}


@dataclass(frozen=True)
class Variant:
    name: str
    method: str
    overrides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return VARIANT_LABELS.get(self.name, self.name)

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.name)


def parse_variants(methods: Sequence[str] | str = ("u2a",), custom: Sequence[str] = ()) -> list[Variant]:
    """Variants from names (``u2a,mla``) and custom specs ``NAME=key=value,key=value`` (method from
    a ``model.method=...`` override, else u2a)."""
    if isinstance(methods, str):
        methods = [m for m in methods.replace(" ", "").split(",") if m]
    out: list[Variant] = []
    for name in methods:
        if name not in VARIANTS:
            raise ConfigError(f"--methods: unknown method or variant {name!r}; known: {sorted(VARIANTS)} "
                              "(or define one with --variant NAME=key=value,...)")
        method, ovr = VARIANTS[name]
        out.append(Variant(name, method, tuple(ovr)))
    for spec in custom:
        if "=" not in spec:
            raise ConfigError(f"--variant {spec!r}: expected NAME=key=value[,key=value...]")
        name, rest = spec.split("=", 1)
        ovr = tuple(o.strip() for o in rest.split(",") if o.strip())
        for o in ovr:
            if "=" not in o:
                raise ConfigError(f"--variant {spec!r}: {o!r} is not key=value")
        method = next((o.split("=", 1)[1] for o in ovr if o.split("=", 1)[0] == "model.method"), "u2a")
        out.append(Variant(name.strip(), method, ovr))
    names = [v.name for v in out]
    if not out or len(set(names)) != len(names):
        raise ConfigError(f"--methods/--variant: need at least one, each once; got {names}")
    return out


def _comparable(cfg: RunConfig) -> dict[str, Any]:
    """What defines a trained run: its config without where it lives (``name``, ``output_dir``),
    the progress bars, the class names the data fills in, and the sections of the *other* methods
    (an MLA run does not change when U2A's defaults do)."""
    d = copy.deepcopy(cfg.to_dict())
    d.pop("name", None)
    d.pop("output_dir", None)
    d["model"]["classes"] = None
    d["train"]["progress"] = None
    from u2a.config import METHODS

    for other in METHODS:
        if other != d["model"].get("method"):
            d["model"].pop(other, None)
    if d["model"].get("method") == "u2a":
        # the estimator as it resolves: a preset and the same switches spelled out are one run
        u = d["model"]["u2a"]
        for k in ("estimator", "output", "stop_grad_target", "normalize_align", "one_way_attention", "token_lr",
                  "detach_estimate", "align_encoder", "source_align_weight"):
            u.pop(k, None)
        if u.get("mask_tokens", True):
            u["settings"] = dataclasses.asdict(cfg.model.u2a.settings())
        else:  # without mask tokens only the token learning rate matters (checked from the summary)
            u.pop("estimator_rank", None)
            u.pop("stats_samples", None)
    return d


def _trained_settings_match(cfg: RunConfig, summary: dict[str, Any]) -> bool:
    """A U2A run records the estimator settings it trained with (``prepare.settings`` of its
    summary); a preset that changed since must not make an older run pass for the current one.
    A setting the run did not record (it was added to the settings after the run) is judged by
    the run's config alone (:func:`_comparable`)."""
    if cfg.model.method != "u2a":
        return True
    want = cfg.model.u2a.settings()
    recorded = (summary.get("prepare") or {}).get("settings")
    if not cfg.model.u2a.mask_tokens:  # a run without mask tokens records only a token lr it used
        return float((recorded or {}).get("token_lr", 0.0)) == want.token_lr
    if recorded is None:
        return True
    now = dataclasses.asdict(want)
    return all(k in now and now[k] == v for k, v in recorded.items())


def train_or_reuse(cfg: RunConfig, run_dir: Path, overwrite: bool) -> tuple[Any, dict[str, Any]]:
    """Train ``cfg`` into ``run_dir`` with :func:`u2a.pipelines.train.train_run`; a finished run of
    the same config there is reused (evaluation only)."""
    from u2a.methods.base import load_model
    from u2a.pipelines.train import train_run

    done = (run_dir / "summary.json").is_file() and (run_dir / "best" / "adapter.safetensors").is_file()
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        same = False
        if done and (run_dir / "config.yaml").is_file():
            try:
                same = _comparable(load_saved_run_config(run_dir / "config.yaml")) == _comparable(cfg)
                same = same and _trained_settings_match(cfg, json.loads((run_dir / "summary.json").read_text()))
            except (ConfigError, ValueError):
                same = False
        if same:
            print(f"u2a: {run_dir} holds a finished run of this config: reusing it")
            return load_model(run_dir / "best"), json.loads((run_dir / "summary.json").read_text())
        raise ConfigError(
            f"{run_dir} already holds {'a run with another config' if done else 'an unfinished run'}; "
            "pass --overwrite to train it again, or pick another name (name=...)"
        )
    # --overwrite: train_run replaces the old run once the new one has read its data and built its model
    result = train_run(cfg, run_dir, score_test=False, overwrite=overwrite)
    return result.model, result.summary


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct non-negative integers, got {text!r}")
    return seeds


def _pct_or_dash(x: float | None) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}%"


def run_experiment(
    config: str | Path,
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    methods: Sequence[str] | str = ("u2a",),
    variants: Sequence[str] = (),
    protocol: str = "all",
    split: str = "test",
    eta: float | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
    progress: bool = True,
    title: str | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
    jobs: int | str | None = 1,
) -> dict[str, Any]:
    """Train every variant once per seed and evaluate ``protocol``; aggregate over the seeds.

    ``jobs``: trainings run side by side in that many worker processes (``"auto"``: one per
    training up to one per core on a CPU, 1 with a GPU; see :mod:`u2a.pipelines.parallel`); the
    evaluation runs afterwards in this process."""
    t_start = time.time()
    overrides = list(overrides)
    chosen = parse_variants(methods, variants)
    base = load_run_config(config, overrides)
    scenarios_for(protocol, base.model.modality_names)  # fail early on an unknown protocol
    for v in chosen:  # fail early on a bad override
        load_run_config(config, [*overrides, f"model.method={v.method}", *v.overrides])
    root = base.run_dir
    payloads: list[dict[str, Any]] = []
    summaries: dict[str, Any] = {}
    timing: dict[str, float] = {}

    def run_config(v: Variant, k: int) -> RunConfig:
        cfg = load_run_config(config, [*overrides, f"model.method={v.method}", *v.overrides,
                                       f"train.seed={k}", f"data.missing.seed={k}"])
        cfg.output_dir, cfg.name = str(root / v.folder), f"seed{k}"
        cfg.train.progress = progress and cfg.train.progress
        return cfg

    pairs = [(v, k) for k in seeds for v in chosen]
    cfgs = {(v.name, k): run_config(v, k) for v, k in pairs}
    n_jobs = parse_jobs(jobs, len(pairs))
    trained: dict[tuple[str, int], dict[str, Any]] = {}  # (variant, seed) -> summary and seconds
    if n_jobs > 1:
        import torch

        prefetch(base)
        threads = max(1, torch.get_num_threads() // n_jobs)
        work = [Job(f"{v.label} seed {k}", cfgs[(v.name, k)], cfgs[(v.name, k)].run_dir, overwrite, threads)
                for v, k in pairs]
        print(f"u2a: training {len(work)} runs in {n_jobs} parallel processes ({threads} thread"
              f"{'s' if threads > 1 else ''} each)")
        t0 = time.time()
        trained = dict(zip([(v.name, k) for v, k in pairs], train_parallel(work, n_jobs, progress)))
        timing["parallel trainings (s)"] = round(time.time() - t0, 1)
    for k in seeds:
        entries: list[Entry] = []
        eval_cfg: RunConfig | None = None
        for v in chosen:
            cfg = cfgs[(v.name, k)]
            if (v.name, k) in trained:  # trained by a worker: the weights selected on validation
                from u2a.methods.base import load_model

                model, summary = load_model(cfg.run_dir / "best"), trained[(v.name, k)]["summary"]
                timing[f"{v.name}/seed{k}"] = trained[(v.name, k)]["seconds"]
            else:
                print(f"\n== seed {k}: training {v.label} ({cfg.run_dir}) ==")
                t0 = time.time()
                model, summary = train_or_reuse(cfg, cfg.run_dir, overwrite)
                timing[f"{v.name}/seed{k}"] = round(time.time() - t0, 1)
            summaries[f"{v.folder}/seed{k}"] = summary
            entries.append(Entry(model, cfg.run_dir, v.label, summary))
            if eval_cfg is None:
                eval_cfg = copy.deepcopy(cfg)
                if model.config.classes:  # the label order the model was trained with
                    eval_cfg.model.classes = list(model.config.classes)
        assert eval_cfg is not None
        payload = evaluate_models(entries, eval_cfg, protocol, split, eta, batch_size, progress,
                                  datasets=test_datasets(eval_cfg))
        payload["seed"] = k
        payload["selection"] = {e.label: {key: e.summary.get(key) for key in ("select_metric", "select_on", "best_epoch", "best_metric")}
                                for e in entries}
        payloads.append(payload)
        for e in entries:
            e.model.to("cpu")
        del entries
    name = base.name or "run"
    setup = (
        f"config `{config}` with overrides `{' '.join(overrides) or '-'}`; seeds {', '.join(map(str, seeds))} "
        f"(train.seed = data.missing.seed = seed); methods: "
        + ", ".join(f"{v.label} (`{v.method}`{': ' + ' '.join(v.overrides) if v.overrides else ''})" for v in chosen)
        + f"; run folders `{root}/<method>/seed<k>`"
        + f"\n\nrecipe: encoders {', '.join(f'{m.name}={m.encoder}' for m in base.model.modalities)}; epochs "
        f"{base.train.epochs}; batch {base.train.batch_size}; lr {base.train.lr:g}; mixed precision "
        f"{base.train.mixed_precision}; select on {base.train.select_on} ({base.train.select_metric}); data.limit "
        f"{base.data.limit}; train/val/test missing: " + ", ".join(
            f"{s} {getattr(base.data.missing, s).type} {getattr(base.data.missing, s).ratio:g}" for s in ("train", "val", "test"))
    )
    sel = "\n".join(
        f"- {run}: best epoch {s.get('best_epoch')} of {s.get('epochs')}, validation {s.get('select_metric')} "
        f"({s.get('select_on', 'complete')}) {_pct_or_dash(s.get('best_metric'))}, {s.get('train_time_s', 0):.0f} s"
        for run, s in summaries.items()
    )
    data = {
        "name": name,
        "config": str(config),
        "overrides": overrides,
        "seeds": list(seeds),
        "methods": [{"name": v.name, "label": v.label, "method": v.method, "overrides": list(v.overrides)} for v in chosen],
        "protocol": protocol,
        "split": split,
        "train": summaries,
        "timing": timing,
        "per_seed": payloads,
    }
    title = title or f"u2a experiment: {name} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}, {protocol} protocol)"
    out = write_outputs(root, payloads, title, results_json=data,
                        setup=setup + "\n\nModel selection (validation):\n\n" + sel, extra_sections=extra_sections)
    data["aggregate"] = out["aggregate"]
    data["out_dir"] = str(root)
    data["time_s"] = round(time.time() - t_start, 1)
    return data
