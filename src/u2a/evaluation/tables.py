"""Tables of evaluated scenarios: aggregation over seeds (mean and sample std), the paper-shaped
tables (Table 1 complete, Tables 3/6 missing at eta, Table 4 one modality absent, Figure 2 sweep,
per-class Figures 3/5/6, mask-token MSE Figure 4), a method comparison table (learnable
parameters, training time), and their CSV / Markdown text."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Mapping, Sequence

import numpy as np

MAIN_METRIC = {"multiclass": "accuracy", "multilabel": "f1_macro"}

def table_metrics(task: str) -> list[str]:
    """The metric columns of the tables: accuracy (+ macro-F1), or F1-macro / F1-micro (Table 1)."""
    return ["f1_macro", "f1_micro"] if task == "multilabel" else ["accuracy", "f1_macro"]


def per_class_score(task: str) -> str:
    """Per-class score of Figures 3, 5, 6: recall (= per-class accuracy), or F1 for multi-label."""
    return "f1" if task == "multilabel" else "recall"


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
                "constant": stat([r.get("constant") for r in runs]),
                "per_class": {c: stat([r["per_class"][c]["mse"] for r in runs]) for c in v["per_class"]},
            }
    methods: dict[str, Any] = {}
    for label, info in first.get("models", {}).items():
        runs = [p["models"][label] for p in payloads]
        methods[label] = {
            "method": info.get("method"),
            "learnable": info.get("learnable"),
            "total": info.get("total"),
            "train_time_s": stat([r.get("train_time_s") for r in runs]),
            "best_val": stat([r.get("best_val") for r in runs]),
        }
    return {"seeds": len(payloads), "results": res, "mse": mse, "methods": methods}


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
            dropped = s.get("drop") or [s["drop_all"]]
            rows.append([" + ".join(m for m in mods if m not in dropped), " + ".join(dropped),
                         *cells(s["name"], metrics)])
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
    methods = agg.get("methods", {})
    if methods:
        rows = []
        for lab, m in methods.items():
            rows.append([lab, m.get("method", "-"), f"{m['learnable']:,}" if m.get("learnable") is not None else "-",
                         f"{m['total']:,}" if m.get("total") is not None else "-",
                         fmt(m.get("train_time_s"), percent=False), fmt(m.get("best_val"))])
        tables["methods"] = (["model", "method", "learnable parameters", "total parameters", "training time (s)",
                              "validation score (selection)"], rows)
    mse = agg.get("mse", {})
    cols = [(lab, d) for lab in mse for d in mse[lab]]
    if cols:
        head = ["class", *[f"{lab}: {d}" if len(mse) > 1 else d for lab, d in cols]]
        rows = [[c, *[fmt(mse[lab][d]["per_class"][c], percent=False) for lab, d in cols]] for c in classes]
        rows.append(["all samples", *[fmt(mse[lab][d]["mean"], percent=False) for lab, d in cols]])
        rows.append(["constant (mean CLS), all samples",
                     *[fmt(mse[lab][d].get("constant"), percent=False) for lab, d in cols]])
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


TABLE_TITLES = {
    "table1_complete": "Complete modalities (Table 1 / Table 2)",
    "table3_missing": "Missing modalities at eta (Tables 3 and 6: % of samples that keep each modality)",
    "table4_absent": "One modality absent for every sample (Table 4)",
    "fig2_sweep": "Robustness sweep (Figure 2)",
    "fig5_per_class": "Per-class performance by available modality (Figures 5-6)",
    "fig3_mask_tokens": "Per-class performance of each model with one modality absent (Figure 3: with and without mask tokens)",
    "fig4_mse": "Per-class MSE between mask-token estimates and real CLS features (Figure 4)",
    "methods": "Methods: learnable parameters, training time, validation score",
}


