"""The one report stack of u2a: figures, CSV tables, results.json and report.md of evaluated
scenarios, for one run or several seeds, one model or several methods side by side (used by
``u2a evaluate``, ``u2a experiment`` and ``u2a demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from u2a.evaluation.figures import plot_grouped_bars, plot_robustness
from u2a.evaluation.tables import (
    MAIN_METRIC,
    TABLE_TITLES,
    aggregate,
    build_tables,
    csv_text,
    markdown_table,
    per_class_score,
)
from u2a.io import atomic_write_json, atomic_write_text


def write_report(path: str | Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """report.md from (heading, markdown body) sections."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    atomic_write_text(path, "\n".join(parts))
    return Path(path)


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
        curves = {lab: {m: [(s["sweep"][1], res[lab][s["name"]][main]["mean"], res[lab][s["name"]][main]["std"])
                            for s in sweep if s["sweep"][0] == m] for m in swept} for lab in labels}
        ylabel = f"{main} (%)" + (f", mean ± std over {len(payloads)} seeds" if len(payloads) > 1 else "")
        figs["fig2_sweep"] = plot_robustness(curves, out_dir / "fig2_sweep.png", ylabel,
                                             {m: f"% of samples with {m} (100% {other[m]})" for m in swept})
    pc_scen = [s for s in ("complete", *[a["name"] for a in absent]) if s in scen]
    if pc_scen:
        panels = {lab: {s: _pc(res[lab][s], score) for s in pc_scen} for lab in labels}
        figs["fig5_per_class"] = plot_grouped_bars(panels, classes, out_dir / "fig5_per_class.png", score_name, ylim=(0, 105))
    if len(labels) > 1 and absent:
        def dropped(a):
            return a.get("drop") or [a["drop_all"]]

        panels = {f"available: {' + '.join(m for m in mods if m not in dropped(a))}, missing: "
                  f"{' + '.join(dropped(a))}":
                  {lab: _pc(res[lab][a["name"]], score) for lab in labels} for a in absent}
        figs["fig3_mask_tokens"] = plot_grouped_bars(panels, classes, out_dir / "fig3_mask_tokens.png", score_name, ylim=(0, 105))
    mse = agg.get("mse", {})
    if any(mse.values()):
        panels = {f"{lab}: MSE(estimate from MT(s->t), CLS(t)) on complete samples": {
            d: {c: (v["mean"], v["std"]) for c, v in dv["per_class"].items()} for d, dv in dirs.items()}
            for lab, dirs in mse.items() if dirs}
        figs["fig4_mse"] = plot_grouped_bars(panels, classes, out_dir / "fig4_mse.png", "MSE", percent=False)
    return figs


# ---- outputs ----------------------------------------------------------------------------

def write_outputs(
    out_dir: str | Path,
    payloads: Sequence[Mapping[str, Any]],
    title: str,
    results_json: Mapping[str, Any] | None = None,
    setup: str = "",
    extra_sections: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """results.json, one CSV per table, the figures and report.md in ``out_dir`` (one payload per
    seed; every payload holds the same models and scenarios)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(payloads)
    tables = build_tables(payloads[0], agg)
    for old in [*out_dir.glob("table[0-9]_*.csv"), *out_dir.glob("fig[0-9]_*.csv"), *out_dir.glob("fig[0-9]_*.png"),
                *out_dir.glob("methods.csv")]:
        old.unlink()  # outputs of an earlier evaluation with another protocol must not linger
    figs = write_figures(out_dir, payloads, agg)
    for name, (head, rows) in tables.items():
        atomic_write_text(out_dir / f"{name}.csv", csv_text(head, rows))
    p0 = payloads[0]
    n_seeds = len(payloads)
    lines = [
        f"- split: {p0['split']} ({p0['n']} samples); protocol: {p0['protocol']}; "
        + (f"modality pair (table codes 1, 2): {', '.join(p0['pair'])}" if len(p0["modalities"]) == 2 else
           f"modalities: {', '.join(p0['modalities'])} (missing tables: u2a.data.missing.drop_table)"),
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
    fig_for = {"fig2_sweep": ["fig2_sweep"], "fig5_per_class": ["fig5_per_class"],
               "fig3_mask_tokens": ["fig3_mask_tokens"], "fig4_mse": ["fig4_mse"]}
    for name, (head, rows) in tables.items():
        body = markdown_table(head, rows) + f"\n\n(`{name}.csv`)"
        for f in fig_for.get(name, []):
            if f in figs:
                body += f"\n\n![{f}]({figs[f].name})"
        sections.append((TABLE_TITLES.get(name, name), body))
    sections.extend(extra_sections)
    write_report(out_dir / "report.md", title, sections)
    data = dict(results_json) if results_json is not None else {}
    if n_seeds > 1:
        data.setdefault("aggregate", agg)
    data["files"] = sorted([f"{n}.csv" for n in tables] + [p.name for p in figs.values()] + ["report.md"])
    atomic_write_json(out_dir / "results.json", data)
    return {"tables": tables, "figures": figs, "aggregate": agg, "out_dir": out_dir}


