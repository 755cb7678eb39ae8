"""The readable summary of a ``u2a bench`` result (the JSON holds everything)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, fmt: str = "{:.3g}") -> str:
    if x is None:
        return "-"
    if isinstance(x, (int, float)):
        return fmt.format(x)
    return str(x)


def _variant_rows(title: str, res: dict[str, Any]) -> list[str]:
    rows = []
    for name, v in res.get("variants", {}).items():
        mem = v.get("memory", {})
        rows.append(f"| {title} | {name} | {_f(1000 * v['median_s'], '{:.2f}')} | {_f(v.get('samples_per_s'), '{:.1f}')} "
                    f"| {_f(v.get('ms_per_sample'), '{:.2f}')} | {_f(mem.get('peak_mib'), '{:.1f}')} "
                    f"| {_f(mem.get('saved_mib'), '{:.1f}')} |")
    return rows


def render(result: dict[str, Any]) -> str:
    meta = result.get("meta", {})
    o = meta.get("options", {})
    lines = [
        f"u2a bench: {meta.get('config', '(model)')} | batch {o.get('batch_size')} | device {meta.get('device')} "
        f"({meta.get('gpu') or meta.get('cpu')}, {meta.get('threads')} threads) | torch {meta.get('torch')} | "
        f"{o.get('repeats')} repeats after {o.get('warmup')} warm-up, medians, variants interleaved",
        "",
        "| comparison | variant | median ms/call | samples/s | ms/sample | peak MiB | saved MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    ratios: list[str] = []
    comps = result.get("comparisons", {})
    for name, c in comps.items():
        if "error" in c:
            ratios.append(f"{name}: ERROR {c['error']}")
            continue
        if name == "skip_absent":
            for sc, rec in c.get("scenarios", {}).items():
                if "train" not in rec:
                    ratios.append(f"skip_absent {sc}: {rec.get('note', 'not run')}")
                    continue
                for mode in ("train", "infer"):
                    lines += _variant_rows(f"skip_absent {sc} {mode}", rec[mode])
                chk = rec.get("logits_check", {})
                ratios.append(
                    f"skip_absent {sc} ({rec['label']}, present {rec['present']}): placeholder/skip train "
                    f"{_f(rec['train'].get('placeholder/skip'))}x, infer {_f(rec['infer'].get('placeholder/skip'))}x "
                    f"(FLOP bound train {_f(rec.get('flop_bound_train'))}x); logits equal: {chk.get('equal')} "
                    f"(max |diff| {_f(chk.get('max_abs_diff'))})")
        elif name == "precision":
            for mode in ("train", "infer"):
                lines += _variant_rows(f"precision {mode}", c[mode])
            ratios.append(f"precision ({c['scenario']}): fp32/bf16 train {_f(c['train'].get('fp32/bf16'))}x, infer "
                          f"{_f(c['infer'].get('fp32/bf16'))}x; max |logit diff| bf16 vs fp32 "
                          f"{_f(c.get('logits_max_abs_diff_bf16_vs_fp32'))} (logits up to {_f(c.get('logits_scale'))})")
        elif name == "attention":
            for dt in ("fp32", "bf16"):
                if dt not in c:
                    continue
                for mode in ("train", "infer"):
                    lines += _variant_rows(f"attention {dt} {mode}", c[dt][mode])
                ratios.append(f"attention {dt}: sdpa/eager train {_f(c[dt]['train'].get('sdpa/eager'))}x, infer "
                              f"{_f(c[dt]['infer'].get('sdpa/eager'))}x")
        elif name == "dropout":
            parts = []
            for dt in ("fp32", "bf16"):
                if dt in c:
                    lines += _variant_rows(f"dropout {dt} train", c[dt]["train"])
                    parts.append(f"{dt} {_f(c[dt]['train'].get('torch/u2a'))}x")
            ratios.append(f"dropout ({c.get('modules')} dropout modules): torch/u2a train " + ", ".join(parts))
        elif name == "compile":
            for mode in ("infer", "train"):
                rec = c.get(mode, {})
                if "error" in rec:
                    ratios.append(f"compile {mode}: {rec['error']} (first call {_f(rec.get('first_call_s'))} s)")
                    continue
                lines += _variant_rows(f"compile {mode}", rec)
                ratios.append(f"compile {mode} ({c['backend']}): eager/compiled {_f(rec.get('eager/compiled'))}x, "
                              f"compile time {_f(rec.get('compile_s'), '{:.1f}')} s")
        elif name == "lora":
            lines += _variant_rows("lora infer", c["infer"])
            ratios.append(f"lora: merged/stock {_f(c.get('merged/stock'))}x, unmerged/merged "
                          f"{_f(c.get('unmerged/merged'))}x (merged vs unmerged max |logit diff| "
                          f"{_f(c.get('logits_max_abs_diff_merged_vs_unmerged'))})")
            if "merged/merged_no_mask_tokens" in c:
                ratios.append(f"lora: the mask tokens' share: merged/merged_no_mask_tokens "
                              f"{_f(c['merged/merged_no_mask_tokens'])}x, merged_no_mask_tokens/stock "
                              f"{_f(c['merged_no_mask_tokens/stock'])}x")
        elif name == "latency":
            lines += _variant_rows("latency (batch 1)", c)
            ratios.append("latency placeholder/skip: " + ", ".join(
                f"{k.split(':')[0]} {_f(v)}x" for k, v in c.items() if k.endswith("placeholder/skip")))
        elif name == "flops":
            for sc, rec in c.get("scenarios", {}).items():
                s, p = rec["skip/train"], rec["placeholder/train"]
                ratios.append(f"flops {sc}: train step useful {_f(s['counted'] / 1e9, '{:.2f}')} GFLOP (analytic "
                              f"{_f((s.get('analytic') or 0) / 1e9, '{:.2f}')}), placeholder path executes "
                              f"{_f(p['counted'] / 1e9, '{:.2f}')} GFLOP; inference useful "
                              f"{_f(rec['skip/infer']['counted'] / 1e9, '{:.2f}')} GFLOP")
    peaks = result.get("matmul_peak", {})
    if peaks:
        ratios.append("matmul peak: " + ", ".join(f"{k} {_f(v['gflops'], '{:.0f}')} GFLOP/s (n={v['n']})"
                                                  for k, v in peaks.items()))
    util = result.get("utilisation", [])
    if util:
        best: dict[str, dict[str, Any]] = {}
        for r in util:
            if r.get("utilisation") is None:
                continue
            key = f"{r['mode']} {r['dtype']}"
            if key not in best or r["utilisation"] > best[key]["utilisation"]:
                best[key] = r
        for key, r in sorted(best.items()):
            ratios.append(f"useful-FLOP utilisation, best {key}: {100 * r['utilisation']:.1f}% of the {r['dtype']} "
                          f"peak ({r['comparison']} {r['variant']}, {r['useful_gflops_per_s']:.1f} GFLOP/s)")
    return "\n".join(lines + [""] + ratios)
