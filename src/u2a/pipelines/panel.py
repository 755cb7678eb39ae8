"""``u2a experiment --panel``: methods x seeds on every dataset of the panel, and one table.

The panel (:data:`u2a.data.builtin.PANEL`: emoji, mdi-spoken, tabler-trio) is where u2a's
defaults are chosen and checked (docs/panel.md). For each dataset its shipped recipe
(``u2a/recipes/<dataset>.yaml``) is run as an :func:`~u2a.pipelines.experiment.run_experiment`
(the same methods, seeds, protocol ``all`` and split), into ``<output_dir>/<dataset>/``; then
the results are summarised per dataset and over the panel:

- per method: complete-modality accuracy, the *missing mean* (the mean accuracy over the
  scenarios in which some modality is missing: the protocol's ``missing`` and ``absent``
  scenarios - five for two modalities, ten for three) and each of those scenarios, mean and
  standard deviation over the seeds;
- against a reference method (default: the no-mask-token ablation ``u2a_no_mt``), the paired
  difference seed by seed: mean, standard deviation and how many seeds are ahead.

Every run folder is reused when it already holds a finished run of the same config, so an
interrupted panel continues where it stopped.
"""

from __future__ import annotations

import statistics as st
import time
from pathlib import Path
from typing import Any, Sequence

from u2a.errors import ConfigError
from u2a.io import atomic_write_json, atomic_write_text

MISSING_PROTOCOLS = ("missing", "absent")


def missing_scenarios(payload: dict[str, Any]) -> list[str]:
    """The scenarios of a payload in which some modality is missing (``missing`` and ``absent``)."""
    return [s["name"] for s in payload["scenarios"] if s["protocol"] in MISSING_PROTOCOLS]


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    return {"mean": st.mean(vals), "std": st.stdev(vals) if len(vals) > 1 else None, "values": vals}


def summarise(data: dict[str, Any], reference: str | None) -> dict[str, Any]:
    """Per method (report label): per-seed accuracies of complete, each missing scenario and their
    mean; mean/std over seeds; paired differences against ``reference`` (a variant name)."""
    payloads = data["per_seed"]
    names = missing_scenarios(payloads[0])
    labels = {m["name"]: m["label"] for m in data["methods"]}
    out: dict[str, Any] = {"seeds": [p["seed"] for p in payloads], "missing_scenarios": names, "methods": {}}
    per: dict[str, dict[str, list[float]]] = {}
    for name, label in labels.items():
        rows: dict[str, list[float]] = {"complete": [], "missing mean": [], **{s: [] for s in names}}
        for p in payloads:
            res = p["results"][label]
            rows["complete"].append(100 * res["complete"]["accuracy"])
            for s in names:
                rows[s].append(100 * res[s]["accuracy"])
            rows["missing mean"].append(st.mean(100 * res[s]["accuracy"] for s in names))
        per[name] = rows
        out["methods"][name] = {"label": label, **{k: _mean_std(v) for k, v in rows.items()}}
    if reference is not None and reference in per:
        for name, rows in per.items():
            if name == reference:
                continue
            diff = {}
            for k, vals in rows.items():
                d = [a - b for a, b in zip(vals, per[reference][k])]
                diff[k] = {**_mean_std(d), "ahead": sum(x > 0 for x in d), "level": sum(x == 0 for x in d)}
            out["methods"][name]["vs_" + reference] = diff
    return out


def panel_table(summary: dict[str, Any], methods: Sequence[str], reference: str | None) -> str:
    """Markdown: one row per dataset and method: complete, missing mean, difference to the reference."""
    head = ["dataset", "method", "complete", "missing mean"]
    if reference:
        head += [f"missing mean - {reference} (paired)", "seeds ahead"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]

    def ms(x: dict[str, Any]) -> str:
        return f"{x['mean']:.2f}" + (f" ± {x['std']:.2f}" if x.get("std") is not None else "")

    for ds, s in summary["datasets"].items():
        for m in methods:
            r = s["methods"].get(m)
            if r is None:
                continue
            row = [ds, r["label"], ms(r["complete"]), ms(r["missing mean"])]
            if reference:
                d = r.get("vs_" + reference, {}).get("missing mean")
                row += [("%+.2f" % d["mean"]) + (f" ± {d['std']:.2f}" if d["std"] is not None else ""),
                        f"{d['ahead']}/{len(d['values'])}"] if d else ["-", "-"]
            lines.append("| " + " | ".join(row) + " |")
    avg = summary.get("panel_mean", {})
    for m in methods:
        if m in avg:
            row = ["panel mean", summary["datasets"][next(iter(summary["datasets"]))]["methods"][m]["label"],
                   f"{avg[m]['complete']:.2f}", f"{avg[m]['missing mean']:.2f}"]
            if reference:
                d = avg[m].get("vs_" + reference)
                row += [("%+.2f" % d) if d is not None else "-", "-"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_panel(
    seeds: Sequence[int],
    methods: Sequence[str] | str = ("u2a", "u2a_no_mt", "mla", "ume_mma"),
    variants: Sequence[str] = (),
    datasets: Sequence[str] | None = None,
    split: str = "test",
    output_dir: str | Path = "runs/panel",
    overrides: Sequence[str] = (),
    reference: str | None = "u2a_no_mt",
    overwrite: bool = False,
    progress: bool = True,
    jobs: int | str | None = "auto",
) -> dict[str, Any]:
    """Run the experiment of every panel dataset and summarise them (module docstring); writes
    ``<output_dir>/panel.json`` and ``panel.md`` and returns the summary."""
    from u2a.data.builtin import PANEL, get_builtin
    from u2a.pipelines.demo import recipe_path
    from u2a.pipelines.experiment import parse_variants, run_experiment

    t0 = time.time()
    datasets = list(datasets or PANEL)
    for ds in datasets:
        get_builtin(ds)  # an unknown name fails before any training
    chosen = parse_variants(methods, variants)
    names = [v.name for v in chosen]
    if reference is not None and reference not in names:
        reference = None
    out = Path(output_dir)
    summary: dict[str, Any] = {"split": split, "seeds": list(seeds), "methods": names, "reference": reference,
                               "overrides": list(overrides), "datasets": {}}
    for ds in datasets:
        recipe = recipe_path(get_builtin(ds).recipe)
        if not recipe.is_file():
            raise ConfigError(f"the panel dataset {ds!r} has no recipe {recipe}")
        print(f"\n== panel: {ds} ({recipe.name}) ==")
        data = run_experiment(recipe, seeds, [f"output_dir={out}", f"name={ds}", *overrides], methods=methods,
                              variants=variants, protocol="all", split=split, overwrite=overwrite, progress=progress,
                              jobs=jobs)
        summary["datasets"][ds] = {**summarise(data, reference), "report": str(Path(data["out_dir"]) / "report.md")}
    avg: dict[str, Any] = {}
    for m in names:
        rows = [s["methods"][m] for s in summary["datasets"].values() if m in s["methods"]]
        if len(rows) != len(datasets):
            continue
        avg[m] = {"complete": st.mean(r["complete"]["mean"] for r in rows),
                  "missing mean": st.mean(r["missing mean"]["mean"] for r in rows)}
        if reference and m != reference:
            avg[m]["vs_" + reference] = st.mean(r["vs_" + reference]["missing mean"]["mean"] for r in rows)
    summary["panel_mean"] = avg
    summary["time_s"] = round(time.time() - t0, 1)
    table = panel_table(summary, names, reference)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "panel.json", summary)
    atomic_write_text(out / "panel.md", f"# u2a panel ({split} split, seeds {', '.join(map(str, seeds))})\n\n"
                                        f"{table}\n\nPer-dataset reports: "
                      + ", ".join(f"[{ds}]({Path(s['report']).relative_to(out)})"
                                  for ds, s in summary["datasets"].items()) + "\n")
    summary["table"] = table
    return summary
