"""``u2a evaluate`` and ``u2a experiment``: protocols on trained runs, and multi-seed experiments.

- :func:`evaluate_models` encodes a split once per model and runs every scenario of a protocol
  (:mod:`u2a.evaluation.protocols`) plus the mask-token MSE of Figure 4; the result is a *payload*
  (a JSON-able dict).
- :func:`write_outputs` turns one payload (one run) or several (one per seed) into results.json,
  CSV tables shaped like the paper's (``mean ± std`` over seeds), figures and report.md.
- :func:`evaluate_run` loads a run folder (``config.yaml`` + ``best/``) and evaluates it;
  :func:`run_experiment` trains a config once per seed with :func:`u2a.demo.train_variant`
  (optionally also the ablation without mask tokens), evaluates each seed and aggregates.

The test split is only evaluated here: models are selected on validation by the trainer.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from u2a.config import RunConfig, load_run_config
from u2a.errors import ConfigError, ModelError
from u2a.evaluation.figures import plot_grouped_bars, plot_robustness
from u2a.evaluation.protocols import (
    TableContext,
    build_protocol,
    mask_token_mse,
    protocol_eta,
    run_protocol,
)
from u2a.evaluation.report import MAIN_METRIC, plot_sweep, write_report
from u2a.io import atomic_write_json, atomic_write_text

LABEL_U2A = "U2A"
LABEL_NO_MT = "no mask tokens"
ABLATION_DIR = "no_mask_tokens"


def table_metrics(task: str) -> list[str]:
    """The metric columns of the tables: accuracy (+ macro-F1), or F1-macro / F1-micro (Table 1)."""
    return ["f1_macro", "f1_micro"] if task == "multilabel" else ["accuracy", "f1_macro"]


def per_class_score(task: str) -> str:
    """Per-class score of Figures 3, 5, 6: recall (= per-class accuracy), or F1 for multi-label."""
    return "f1" if task == "multilabel" else "recall"


# ---- evaluation of models -------------------------------------------------------------------

def _model_label(model, run_dir: Path | None) -> str:
    return LABEL_U2A if model.config.mask_tokens else LABEL_NO_MT


def _unique_labels(entries: Sequence[tuple[Any, Path | None]]) -> list[str]:
    labels = [_model_label(m, d) for m, d in entries]
    if len(set(labels)) < len(labels):
        labels = [d.name if d is not None else lab for (_, d), lab in zip(entries, labels)]
    out: list[str] = []
    for lab in labels:
        base, i = lab, 2
        while lab in out:
            lab, i = f"{base} ({i})", i + 1
        out.append(lab)
    return out


def test_datasets(cfg: RunConfig) -> dict[str, Any]:
    """The run's datasets as the data is: the run's own missing tables are not applied (protocol
    scenarios apply theirs on top of the data)."""
    from u2a.data.datasets import build_datasets

    cfg = copy.deepcopy(cfg)
    for s in ("train", "val", "test"):
        getattr(cfg.data.missing, s).ratio = 0.0
    return build_datasets(cfg, None, write_tables=False)


def evaluate_models(
    models: Sequence[tuple[Any, Path | None]],
    cfg: RunConfig,
    protocol: str = "all",
    split: str = "test",
    eta: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
    datasets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every scenario of ``protocol`` for each (model, run folder) on ``split`` of ``cfg``'s data.

    The first model's config defines the scenarios; the availability masks (MAP tables keyed by
    ``cfg``'s missing seed) are the same for every model."""
    from u2a.data.datasets import missing_pair
    from u2a.data.processing import build_collator
    from u2a.evaluation.scenarios import encode_split

    first = models[0][0]
    names = first.modalities
    for m, d in models[1:]:
        if m.modalities != names or list(m.config.classes or []) != list(first.config.classes or []):
            raise ModelError(
                f"{d}: cannot compare: its modalities {m.modalities} / classes differ from {names} / the first run's"
            )
        if m.config.task != first.config.task:
            raise ModelError(f"{d}: cannot compare a {m.config.task} model with a {first.config.task} one")
    if len(names) != 2:
        raise ConfigError(f"the evaluation protocols are defined for two modalities, the model has {names}")
    datasets = datasets if datasets is not None else test_datasets(cfg)
    if split not in datasets:
        raise ConfigError(f"--split {split}: the data has splits {sorted(datasets)}")
    pair = missing_pair(names)
    eta_v = protocol_eta(cfg, eta)
    scenarios = build_protocol(protocol, pair, eta_v)
    sizes = {s: len(d) for s, d in datasets.items()}
    context = TableContext.from_config(cfg, sizes, split)
    seed = int(cfg.data.missing.seed)
    labels = _unique_labels(models)
    results: dict[str, Any] = {}
    mse: dict[str, Any] = {}
    info: dict[str, Any] = {}
    timing: dict[str, float] = {}
    for (model, run_dir), label in zip(models, labels):
        t0 = time.time()
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(dev)
        collate = build_collator(model.config, train=False)
        enc = encode_split(model, datasets[split], collate, batch_size=batch_size, device=dev,
                           desc=f"{split} {label}", progress=progress)
        results[label] = run_protocol(model, enc, scenarios, pair, seed=seed, context=context)
        mse[label] = mask_token_mse(enc.features, enc.labels, model.modalities, model.config.classes, model.config.task)
        info[label] = {"run": str(run_dir) if run_dir else None, "mask_tokens": bool(model.config.mask_tokens)}
        timing[label] = round(time.time() - t0, 2)
    return {
        "split": split,
        "protocol": protocol,
        "n": len(datasets[split]),
        "pair": list(pair),
        "modalities": list(names),
        "task": first.config.task,
        "classes": list(first.config.classes),
        "eta": eta_v,
        "missing_seed": seed,
        "both_ratio": float(cfg.data.missing.both_ratio),
        "scenarios": [sc.describe() for sc in scenarios],
        "models": info,
        "results": results,
        "mse": mse,
        "eval_time_s": timing,
    }


def evaluate_run(
    run: str | Path,
    protocol: str = "all",
    split: str = "test",
    compare: str | Path | None = None,
    out: str | Path | None = None,
    eta: float | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """``u2a evaluate``: load RUN (and RUN2) from their ``best/`` models, evaluate, write outputs."""
    from u2a.model import U2AModel

    run = Path(run)
    cfg_file = run / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"{run}: no config.yaml there (is it a u2a run folder?)")
    cfg = load_run_config(cfg_file)
    entries = [(U2AModel.from_pretrained(run / "best"), run)]
    if compare is not None:
        compare = Path(compare)
        entries.append((U2AModel.from_pretrained(compare / "best"), compare))
    # the saved config may predate the class names the data filled in: take the model's
    cfg.model.classes = list(entries[0][0].config.classes or []) or None
    payload = evaluate_models(entries, cfg, protocol, split, eta, batch_size, progress)
    payload["run"] = str(run)
    summary = run / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        payload["selection"] = {k: s.get(k) for k in ("select_metric", "best_epoch", "best_metric", "selected_on")}
    out_dir = Path(out) if out else run / "eval" / (protocol if split == "test" else f"{protocol}-{split}")
    title = f"u2a evaluate: {run.name} ({protocol} protocol, {split} split)"
    write_outputs(out_dir, [payload], title, results_json={**payload})
    return payload, out_dir


# ---- aggregation over seeds -------------------------------------------------------------

def stat(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof = 1; None for a single value) of the non-None values."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    arr = np.asarray(vals, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "n": len(vals), "values": vals}


def aggregate(payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per model, scenario and metric (and per class and score, and per MSE direction and class):
    mean and std over the payloads (seeds)."""
    first = payloads[0]
    res: dict[str, Any] = {}
    for label, by_sc in first["results"].items():
        res[label] = {}
        for sc, metrics in by_sc.items():
            runs = [p["results"][label][sc] for p in payloads]
            entry: dict[str, Any] = {}
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    entry[k] = stat([r.get(k) for r in runs])
            entry["available"] = {m: stat([r["available"][m] for r in runs])["mean"] for m in metrics.get("available", {})}
            if "per_class" in metrics:
                entry["per_class"] = {
                    c: {s: stat([r["per_class"][c][s] for r in runs]) for s in ("precision", "recall", "f1")}
                    | {"support": metrics["per_class"][c]["support"]}
                    for c in metrics["per_class"]
                }
            res[label][sc] = entry
    mse: dict[str, Any] = {}
    for label, dirs in first.get("mse", {}).items():
        mse[label] = {}
        for d, v in dirs.items():
            runs = [p["mse"][label][d] for p in payloads]
            mse[label][d] = {
                "mean": stat([r["mean"] for r in runs]),
                "per_class": {c: stat([r["per_class"][c]["mse"] for r in runs]) for c in v["per_class"]},
            }
    return {"seeds": len(payloads), "results": res, "mse": mse}


# ---- tables -----------------------------------------------------------------------------

def fmt(s: Mapping[str, Any] | None, percent: bool = True) -> str:
    """``94.47`` for one run, ``94.47 ± 0.13`` over seeds; MSE (``percent=False``) in 4 digits."""
    if not s or s.get("mean") is None:
        return "-"
    if percent:
        m = f"{100 * s['mean']:.2f}"
        return m if s.get("std") is None else f"{m} ± {100 * s['std']:.2f}"
    m = f"{s['mean']:.4g}"
    return m if s.get("std") is None else f"{m} ± {s['std']:.2g}"


def _num(x: float) -> str:
    return f"{x:g}"


def build_tables(payload: Mapping[str, Any], agg: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The CSV/Markdown tables (header, rows) of the scenarios that were evaluated."""
    res = agg["results"]
    labels = list(res)
    task = payload["task"]
    metrics = table_metrics(task)
    main = MAIN_METRIC[task]
    mods = payload["modalities"]
    classes = payload["classes"]
    scen = {s["name"]: s for s in payload["scenarios"]}
    by_proto: dict[str, list[dict]] = {}
    for s in payload["scenarios"]:
        by_proto.setdefault(s["protocol"], []).append(s)
    metric_cols = [f"{lab} {m}" if len(labels) > 1 else m for lab in labels for m in metrics]
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}

    def cells(sc: str, ms: Sequence[str]) -> list[str]:
        return [fmt(res[lab].get(sc, {}).get(m)) for lab in labels for m in ms]

    if "complete" in scen:
        tables["table1_complete"] = (["model", *metrics], [[lab, *[fmt(res[lab]["complete"].get(m)) for m in metrics]] for lab in labels])
    if "missing" in by_proto:
        rows = []
        for s in by_proto["missing"]:
            rows.append([f"{_num(100 * payload['eta'])}%", *[_num(s["percent"][m]) for m in mods], *cells(s["name"], metrics)])
        tables["table3_missing"] = (["missing rate", *[f"{m} (%)" for m in mods], *metric_cols], rows)
    if "absent" in by_proto:
        rows = []
        for s in by_proto["absent"]:
            avail = [m for m in mods if m != s["drop_all"]][0]
            rows.append([avail, s["drop_all"], *cells(s["name"], metrics)])
        if "complete" in scen:
            rows.append([" + ".join(mods), "-", *cells("complete", metrics)])
        tables["table4_absent"] = (["available", "missing", *metric_cols], rows)
    if "sweep" in by_proto:
        rows = []
        for s in by_proto["sweep"]:
            m, x = s["sweep"]
            other = [o for o in mods if o != m][0]
            rows.append([m, _num(x), f"100% {other} + {x}% {m}", *cells(s["name"], [main])])
        tables["fig2_sweep"] = (["swept", "x (%)", "setting", *([f"{lab} {main}" for lab in labels] if len(labels) > 1 else [main])], rows)
    score = per_class_score(task)
    pc_scen = [s for s in ("complete", *[s["name"] for s in by_proto.get("absent", [])]) if s in scen]
    if pc_scen:
        head = ["class", *[f"{lab}: {s}" if len(labels) > 1 else s for lab in labels for s in pc_scen]]
        rows = [[c, *[fmt(res[lab][s]["per_class"][c][score]) for lab in labels for s in pc_scen]] for c in classes]
        tables["fig5_per_class"] = (head, rows)
    absent = [s["name"] for s in by_proto.get("absent", [])]
    if len(labels) > 1 and absent:
        head = ["class", *[f"{s}: {lab}" for s in absent for lab in labels]]
        rows = [[c, *[fmt(res[lab][s]["per_class"][c][score]) for s in absent for lab in labels]] for c in classes]
        tables["fig3_mask_tokens"] = (head, rows)
    mse = agg.get("mse", {})
    cols = [(lab, d) for lab in mse for d in mse[lab]]
    if cols:
        head = ["class", *[f"{lab}: {d}" if len(mse) > 1 else d for lab, d in cols]]
        rows = [[c, *[fmt(mse[lab][d]["per_class"][c], percent=False) for lab, d in cols]] for c in classes]
        rows.append(["all samples", *[fmt(mse[lab][d]["mean"], percent=False) for lab, d in cols]])
        tables["fig4_mse"] = (head, rows)
    return tables


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


# ---- figures ----------------------------------------------------------------------------

def _pc(entry: Mapping[str, Any], score: str) -> dict[str, tuple]:
    return {c: (v[score]["mean"], v[score]["std"]) for c, v in entry["per_class"].items()}


def write_figures(out_dir: Path, payloads: Sequence[Mapping[str, Any]], agg: Mapping[str, Any]) -> dict[str, Path]:
    p0 = payloads[0]
    res = agg["results"]
    labels = list(res)
    task = p0["task"]
    main = MAIN_METRIC[task]
    mods, classes = p0["modalities"], p0["classes"]
    score = per_class_score(task)
    score_name = "per-class F1 (%)" if score == "f1" else "per-class accuracy (%)"
    scen = {s["name"]: s for s in p0["scenarios"]}
    sweep = [s for s in p0["scenarios"] if s["protocol"] == "sweep"]
    absent = [s for s in p0["scenarios"] if s["protocol"] == "absent"]
    figs: dict[str, Path] = {}
    if sweep:
        swept = list(dict.fromkeys(s["sweep"][0] for s in sweep))
        other = {m: [o for o in mods if o != m][0] for m in swept}
        if len(payloads) == 1:
            single = {lab: p0["results"][lab] for lab in labels}
            for m in swept:
                figs[f"fig2_sweep_{m}"] = plot_sweep(single, main, m, out_dir / f"fig2_sweep_{m}.png",
                                                     f"% of samples with {m} (100% {other[m]})")
        else:
            curves = {lab: {m: [(s["sweep"][1], res[lab][s["name"]][main]["mean"], res[lab][s["name"]][main]["std"])
                                for s in sweep if s["sweep"][0] == m] for m in swept} for lab in labels}
            figs["fig2_sweep"] = plot_robustness(
                curves, out_dir / "fig2_sweep.png", f"{main} (%), mean ± std over {len(payloads)} seeds",
                {m: f"% of samples with {m} (100% {other[m]})" for m in swept})
    pc_scen = [s for s in ("complete", *[a["name"] for a in absent]) if s in scen]
    if pc_scen:
        panels = {lab: {s: _pc(res[lab][s], score) for s in pc_scen} for lab in labels}
        figs["fig5_per_class"] = plot_grouped_bars(panels, classes, out_dir / "fig5_per_class.png", score_name, ylim=(0, 105))
    if len(labels) > 1 and absent:
        panels = {f"available: {[m for m in mods if m != a['drop_all']][0]}, missing: {a['drop_all']}":
                  {lab: _pc(res[lab][a["name"]], score) for lab in labels} for a in absent}
        figs["fig3_mask_tokens"] = plot_grouped_bars(panels, classes, out_dir / "fig3_mask_tokens.png", score_name, ylim=(0, 105))
    mse = agg.get("mse", {})
    if any(mse.values()):
        panels = {f"{lab}: MSE(MT(s->t), CLS(t)) on complete samples": {
            d: {c: (v["mean"], v["std"]) for c, v in dv["per_class"].items()} for d, dv in dirs.items()}
            for lab, dirs in mse.items() if dirs}
        figs["fig4_mse"] = plot_grouped_bars(panels, classes, out_dir / "fig4_mse.png", "MSE", percent=False)
    return figs


# ---- outputs ----------------------------------------------------------------------------

TABLE_TITLES = {
    "table1_complete": "Complete modalities (Table 1 / Table 2)",
    "table3_missing": "Missing modalities at eta (Tables 3 and 6: % of samples that keep each modality)",
    "table4_absent": "One modality absent for every sample (Table 4)",
    "fig2_sweep": "Robustness sweep (Figure 2)",
    "fig5_per_class": "Per-class performance by available modality (Figures 5-6)",
    "fig3_mask_tokens": "Per-class performance with and without mask tokens (Figure 3)",
    "fig4_mse": "Per-class MSE between mask-token estimates and real CLS features (Figure 4)",
}


def write_outputs(
    out_dir: str | Path,
    payloads: Sequence[Mapping[str, Any]],
    title: str,
    results_json: Mapping[str, Any] | None = None,
    setup: str = "",
) -> dict[str, Any]:
    """results.json, one CSV per table, the figures and report.md in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(payloads)
    tables = build_tables(payloads[0], agg)
    for old in [*out_dir.glob("table[0-9]_*.csv"), *out_dir.glob("fig[0-9]_*.csv"), *out_dir.glob("fig[0-9]_*.png")]:
        old.unlink()  # outputs of an earlier evaluation with another protocol must not linger
    figs = write_figures(out_dir, payloads, agg)
    for name, (head, rows) in tables.items():
        atomic_write_text(out_dir / f"{name}.csv", csv_text(head, rows))
    p0 = payloads[0]
    n_seeds = len(payloads)
    lines = [
        f"- split: {p0['split']} ({p0['n']} samples); protocol: {p0['protocol']}; modality pair (table codes 1, 2): "
        f"{', '.join(p0['pair'])}",
        "- models: " + "; ".join(
            f"{lab} ({v['run']})" if n_seeds == 1 else f"{lab} ({', '.join(str(p['models'][lab]['run']) for p in payloads)})"
            for lab, v in p0["models"].items()),
        "- scenario tables (MAP algorithm) seeded with the run's data.missing.seed"
        + (f"; missing protocol: eta {100 * p0['eta']:g}%, both_ratio {p0['both_ratio']:g}, chained after the "
           "run's train and val tables" if any(s["protocol"] == "missing" for s in p0["scenarios"]) else ""),
        "- values in %: " + ("one run" if n_seeds == 1 else f"mean ± sample std (ddof = 1) over {n_seeds} seeds"),
        "- the data is used as it is (a run's own test missing table is not applied); the models were "
        "selected on validation, the test split is only evaluated",
    ]
    sections = [("Setup", (setup + "\n\n" if setup else "") + "\n".join(lines))]
    fig_for = {"fig2_sweep": [k for k in figs if k.startswith("fig2_sweep")], "fig5_per_class": ["fig5_per_class"],
               "fig3_mask_tokens": ["fig3_mask_tokens"], "fig4_mse": ["fig4_mse"]}
    for name, (head, rows) in tables.items():
        body = markdown_table(head, rows) + f"\n\n(`{name}.csv`)"
        for f in fig_for.get(name, []):
            if f in figs:
                body += f"\n\n![{f}]({figs[f].name})"
        sections.append((TABLE_TITLES.get(name, name), body))
    write_report(out_dir / "report.md", title, sections)
    data = dict(results_json) if results_json is not None else {}
    if n_seeds > 1:
        data.setdefault("aggregate", agg)
    data["files"] = sorted([f"{n}.csv" for n in tables] + [p.name for p in figs.values()] + ["report.md"])
    atomic_write_json(out_dir / "results.json", data)
    return {"tables": tables, "figures": figs, "aggregate": agg, "out_dir": out_dir}


# ---- experiments over seeds ---------------------------------------------------------------

def _comparable(cfg: RunConfig) -> dict[str, Any]:
    d = copy.deepcopy(cfg.to_dict())
    d["model"]["classes"] = None
    d["train"]["progress"] = None
    return d


def _train_or_reuse(cfg: RunConfig, overwrite: bool, progress: bool):
    """Train ``cfg`` into its run folder with :func:`u2a.demo.train_variant`; a finished run of the
    same config there is reused (evaluation only)."""
    from u2a.demo import train_variant
    from u2a.model import U2AModel

    run_dir = cfg.run_dir
    done = (run_dir / "summary.json").is_file() and (run_dir / "best" / "adapter.safetensors").is_file()
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        same = False
        if done and (run_dir / "config.yaml").is_file():
            try:
                same = _comparable(load_run_config(run_dir / "config.yaml")) == _comparable(cfg)
            except ConfigError:
                same = False
        if same:
            print(f"u2a: {run_dir} holds a finished run of this config: reusing it")
            model = U2AModel.from_pretrained(run_dir / "best")
            return model, json.loads((run_dir / "summary.json").read_text())
        raise ConfigError(
            f"{run_dir} already holds {'a run with another config' if done else 'an unfinished run'}; "
            "pass --overwrite to train it again, or pick another name (name=...)"
        )
    if overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    model, summary, _ = train_variant(cfg, run_dir, progress)
    return model, summary


def _pct_or_dash(x: float | None) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}%"


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).replace(" ", "").split(",") if s != ""]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct non-negative integers, got {text!r}")
    return seeds


def run_experiment(
    config: str | Path,
    seeds: Sequence[int],
    overrides: Sequence[str] = (),
    protocol: str = "all",
    ablation: bool = False,
    split: str = "test",
    eta: float | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config`` once per seed (train.seed = data.missing.seed = seed; run folder
    ``<output_dir>/<name>/seed<k>``; the ablation in ``<output_dir>/<name>/no_mask_tokens/seed<k>``),
    evaluate ``protocol`` on each, and aggregate mean and std over the seeds."""
    t_start = time.time()
    overrides = list(overrides)
    base = load_run_config(config, overrides)
    build_protocol(protocol, ("a", "b"))  # fail early on an unknown protocol
    root = base.run_dir
    payloads: list[dict[str, Any]] = []
    summaries: dict[str, Any] = {}
    for k in seeds:
        cfg = load_run_config(config, [*overrides, f"train.seed={k}", f"data.missing.seed={k}"])
        cfg.output_dir, cfg.name = str(root), f"seed{k}"
        cfg.train.progress = progress and cfg.train.progress
        print(f"\n== seed {k}: training {LABEL_U2A if cfg.model.mask_tokens else LABEL_NO_MT} ({cfg.run_dir}) ==")
        model, summary = _train_or_reuse(cfg, overwrite, progress)
        if model.config.classes:  # the label order the model was trained with
            cfg.model.classes = list(model.config.classes)
        entries = [(model, cfg.run_dir)]
        summaries[f"seed{k}"] = summary
        if ablation and cfg.model.mask_tokens:
            cfg_a = copy.deepcopy(cfg)
            cfg_a.model.mask_tokens = False
            cfg_a.output_dir = str(root / ABLATION_DIR)
            print(f"\n== seed {k}: training {LABEL_NO_MT} ({cfg_a.run_dir}) ==")
            model_a, summary_a = _train_or_reuse(cfg_a, overwrite, progress)
            entries.append((model_a, cfg_a.run_dir))
            summaries[f"{ABLATION_DIR}/seed{k}"] = summary_a
        payload = evaluate_models(entries, cfg, protocol, split, eta, batch_size, progress)
        payload["seed"] = k
        payload["run"] = str(cfg.run_dir)
        run_summaries = [summary] + ([summaries[f"{ABLATION_DIR}/seed{k}"]] if len(entries) > 1 else [])
        payload["selection"] = {lab: {key: s.get(key) for key in ("select_metric", "best_epoch", "best_metric")}
                                for lab, s in zip(payload["models"], run_summaries)}
        eval_dir = cfg.run_dir / "eval" / (protocol if split == "test" else f"{protocol}-{split}")
        write_outputs(eval_dir, [payload], f"{cfg.name}: {protocol} protocol, {split} split", results_json=payload)
        payloads.append(payload)
    name = base.name or "run"
    setup = (
        f"config `{config}` with overrides `{' '.join(overrides) or '-'}`; seeds {', '.join(map(str, seeds))} "
        f"(train.seed = data.missing.seed = seed); run folders `{root}/seed<k>`"
        + (f" and `{root / ABLATION_DIR}/seed<k>`" if ablation else "")
        + f"\n\nrecipe: encoders {', '.join(f'{m.name}={m.encoder}' for m in base.model.modalities)}; epochs "
        f"{base.train.epochs}; batch {base.train.batch_size}; lr {base.train.lr:g}; data.limit {base.data.limit}; "
        f"train/val/test missing: " + ", ".join(
            f"{s} {getattr(base.data.missing, s).type} {getattr(base.data.missing, s).ratio:g}" for s in ("train", "val", "test"))
    )
    sel = "\n".join(
        f"- {run}: best epoch {s.get('best_epoch')} of {s.get('epochs')}, validation {s.get('select_metric')} "
        f"{_pct_or_dash(s.get('best_metric'))}"
        for run, s in summaries.items()
    )
    data = {
        "name": name,
        "config": str(config),
        "overrides": overrides,
        "seeds": list(seeds),
        "protocol": protocol,
        "split": split,
        "ablation": ablation,
        "train": summaries,
        "per_seed": payloads,
    }
    out = write_outputs(root, payloads, f"u2a experiment: {name} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}, {protocol} protocol)",
                        results_json=data, setup=setup + "\n\nModel selection (validation):\n\n" + sel)
    data["aggregate"] = out["aggregate"]
    data["out_dir"] = str(root)
    data["time_s"] = round(time.time() - t_start, 1)
    return data
