"""Tables, figures and report.md of evaluated scenarios."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from u2a.io import atomic_write_text  # noqa: E402

MAIN_METRIC = {"multiclass": "accuracy", "multilabel": "f1_macro"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def scenario_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]], metrics: Sequence[str], scenarios: Sequence[str] | None = None) -> str:
    """A Markdown table: one row per scenario, one column per (model, metric)."""
    models = list(results)
    scenarios = list(scenarios or next(iter(results.values())).keys())
    head = ["scenario"] + [f"{m} {k}" for m in models for k in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for sc in scenarios:
        row = [sc] + [_pct(results[m].get(sc, {}).get(k)) for m in models for k in metrics]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_sweep(results: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str, prefix: str, path: str | Path, xlabel: str) -> Path:
    """The robustness curve: ``metric`` against the percentage in scenarios named ``prefix X%``."""
    pat = re.compile(rf"^{re.escape(prefix)} (\d+)%$")
    fig, ax = plt.subplots(figsize=(6, 4))
    for model, res in results.items():
        pts = sorted((int(m.group(1)), v[metric]) for k, v in res.items() if (m := pat.match(k)))
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=model)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_per_class(results: Mapping[str, Mapping[str, Mapping[str, Any]]], scenarios: Sequence[str], path: str | Path, score: str = "recall") -> Path:
    """Per-class ``score`` (recall = per-class accuracy) for each scenario, one panel per model."""
    models = list(results)
    classes = list(next(iter(results.values()))[scenarios[0]]["per_class"].keys())
    fig, axes = plt.subplots(len(models), 1, figsize=(max(8, 0.9 * len(classes) + 3), 3.2 * len(models)), squeeze=False)
    width = 0.8 / len(scenarios)
    for ax, model in zip(axes[:, 0], models):
        for j, sc in enumerate(scenarios):
            pc = results[model][sc]["per_class"]
            xs = [i + (j - (len(scenarios) - 1) / 2) * width for i in range(len(classes))]
            ax.bar(xs, [100 * pc[c][score] for c in classes], width=width, label=sc)
        ax.set_title(model)
        ax.set_ylabel(f"per-class {'accuracy' if score == 'recall' else score} (%)")
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(classes, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.legend(handles, labels, ncol=len(scenarios), fontsize=8, loc="upper center")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """report.md from (heading, markdown body) sections."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    atomic_write_text(path, "\n".join(parts))
    return Path(path)
