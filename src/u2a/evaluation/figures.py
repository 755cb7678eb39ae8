"""Figures of the evaluation protocols, with mean and standard-deviation bands over seeds.

Values are given as ``(mean, std)`` pairs; ``std`` None (one run) draws no band or error bar.

- :func:`plot_robustness`: Figure 2, the metric against the share of samples that keep the swept
  modality, one panel per swept modality, one curve per model.
- :func:`plot_grouped_bars`: per-class bars, one panel per group: Figures 5-6 (per class, complete
  vs each modality alone), Figure 3 (per class, with vs without mask tokens) and Figure 4 (per
  class MSE between mask-token estimates and real CLS features, each direction).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Stat = tuple  # (mean | None, std | None)


def plot_robustness(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, float | None, float | None]]]],
    path: str | Path,
    ylabel: str,
    xlabels: Mapping[str, str] | None = None,
    percent: bool = True,
) -> Path:
    """``curves[model][swept modality]`` = [(x, mean, std), ...]: one panel per swept modality."""
    panels = list(dict.fromkeys(p for c in curves.values() for p in c))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5.5 * max(len(panels), 1), 4), squeeze=False)
    scale = 100.0 if percent else 1.0
    for ax, panel in zip(axes[0], panels):
        for model, by_panel in curves.items():
            pts = sorted((x, m, s) for x, m, s in by_panel.get(panel, []) if m is not None)
            if not pts:
                continue
            xs = np.array([p[0] for p in pts], dtype=float)
            ys = np.array([p[1] for p in pts], dtype=float) * scale
            line = ax.plot(xs, ys, marker="o", label=model)[0]
            sd = np.array([p[2] if p[2] is not None else np.nan for p in pts], dtype=float) * scale
            if np.isfinite(sd).any():
                sd = np.nan_to_num(sd)
                ax.fill_between(xs, ys - sd, ys + sd, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel((xlabels or {}).get(panel, f"% of samples with {panel}"))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_grouped_bars(
    panels: Mapping[str, Mapping[str, Mapping[str, Stat]]],
    classes: Sequence[str],
    path: str | Path,
    ylabel: str,
    percent: bool = True,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """``panels[title][series][class]`` = (mean, std): per class, one bar per series (error bar =
    std over seeds), one panel per title."""
    titles = list(panels)
    n_series = max((len(s) for s in panels.values()), default=1)
    width_in = float(np.clip(0.22 * len(classes) * max(1.0, n_series / 2) + 3, 8, 40))
    fig, axes = plt.subplots(len(titles), 1, figsize=(width_in, 3.3 * max(len(titles), 1)), squeeze=False)
    scale = 100.0 if percent else 1.0
    for ax, title in zip(axes[:, 0], titles):
        series = panels[title]
        k = max(len(series), 1)
        w = 0.8 / k
        for j, (label, vals) in enumerate(series.items()):
            xs = np.arange(len(classes)) + (j - (k - 1) / 2) * w
            means = np.array([_get(vals, c, 0) for c in classes], dtype=float) * scale
            stds = np.array([_get(vals, c, 1) for c in classes], dtype=float) * scale
            err = np.nan_to_num(stds) if np.isfinite(stds).any() else None
            ax.bar(xs, np.nan_to_num(means), width=w, yerr=err, capsize=2 if err is not None else 0, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(classes, rotation=45 if len(classes) > 12 else 30, ha="right", fontsize=7 if len(classes) > 30 else 8)
        ax.set_xlim(-0.6, len(classes) - 0.4)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(ncol=min(k, 4), fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _get(vals: Mapping[str, Stat], c: str, i: int) -> float:
    v = vals.get(c)
    if v is None or v[i] is None:
        return float("nan")
    return float(v[i])
