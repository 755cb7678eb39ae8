"""How U2A and its no-mask-token ablation compare with dedicated single-modality models where a
modality is missing (docs/estimators.md, "What one modality alone reaches").

The experiment folder must hold, per seed k, four runs of the demo recipe trained by
``u2a experiment`` (the command is in the docs): ``u2a/seed<k>``, ``u2a_no_mt/seed<k>``, and two
single-modality models, ``image_alone/seed<k>`` and ``text_alone/seed<k>`` (the ablation's model
trained and selected with the other modality missing from every sample, so that it is an image
or a text classifier: LoRA, CLS token and head, with a constant in the other slot).

For each seed and each scenario of the ``missing`` and ``absent`` protocols (the same MAP tables
as ``u2a experiment``: those of the U2A run's config) it reports the test accuracy of U2A, of the
ablation, and of **specialists**: every sample that keeps both modalities predicted by U2A, every
sample left with the image by the image model, every sample left with the text by the text
model. Where the specialists score above U2A, a dedicated unimodal model knows more about the
label than U2A's filled-in slot lets its head use; where U2A is level with them, no estimate of the
missing slot can add more than a separately trained classifier of the modality that is there.

    python benchmarks/specialists.py runs/unimodal --seeds 0,1,2 --out docs/results/specialists.json

Encodes in bf16 under autocast, at batch 32, as ``u2a experiment`` does; its U2A and ablation
accuracies equal the experiment's.
"""

from __future__ import annotations

import argparse
import json
import statistics as st
import sys
from pathlib import Path

import torch

MISSING = ["image only", "text only", "missing both 70%", "missing text 70%", "missing image 70%"]
MODELS = ("u2a", "u2a_no_mt", "image_alone", "text_alone")


@torch.no_grad()
def seed_accuracies(folder: Path, seed: int, batch_size: int = 32) -> dict:
    from u2a.data.datasets import missing_pair
    from u2a.data.processing import build_collator
    from u2a.evaluation.protocols import TableContext, availability, build_protocol
    from u2a.evaluation.scenarios import encode_split
    from u2a.model.runtime import configure
    from u2a.pipelines.evaluate import load_run, test_datasets

    cfg = None
    logits_of: dict[str, dict[str, torch.Tensor]] = {}
    scenarios = avails = labels = None
    for name in MODELS:
        run = folder / name / f"seed{seed}"
        run_cfg, entry = load_run(run)
        model = entry.model
        if cfg is None:  # the U2A run's config defines the data and the missing tables
            cfg = run_cfg
            if model.config.classes:
                cfg.model.classes = list(model.config.classes)
            datasets = test_datasets(cfg)
            pair = missing_pair(model.modalities)
            scenarios = [sc for sc in build_protocol("all", pair, 0.7) if sc.name in MISSING + ["complete"]]
            context = TableContext.from_config(cfg, {s: len(d) for s, d in datasets.items()}, "test")
            modalities = list(model.modalities)
        configure(model, cfg.train.attention, cfg.train.mixed_precision, "cpu")
        enc = encode_split(model, datasets["test"], build_collator(model.config, train=False), batch_size=batch_size,
                           desc=f"{name} seed {seed}", progress=False,
                           autocast_dtype=torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None)
        if avails is None:
            labels = enc.labels
            avails = {sc.name: availability(sc, enc.features.present, modalities, pair, int(cfg.data.missing.seed), context)
                      for sc in scenarios}
        elif not torch.equal(enc.labels, labels):
            raise SystemExit(f"{run}: its test labels differ from the U2A run's")
        logits_of[name] = {k: model.select(enc.features, a).logits.float() for k, a in avails.items()}
        del model
    i_img, i_txt = modalities.index("image"), modalities.index("text")
    out: dict = {}
    for k, a in avails.items():
        pred = {n: logits_of[n][k].argmax(1) for n in MODELS}
        both = a[:, i_img] & a[:, i_txt]
        img_only = a[:, i_img] & ~a[:, i_txt]
        spec = torch.where(both, pred["u2a"], torch.where(img_only, pred["image_alone"], pred["text_alone"]))
        acc = {n: float((pred[n] == labels).float().mean()) for n in ("u2a", "u2a_no_mt")}
        acc["specialists"] = float((spec == labels).float().mean())
        acc["samples"] = {"both": int(both.sum()), "image only": int(img_only.sum()),
                          "text only": int((a[:, i_txt] & ~a[:, i_img]).sum())}
        out[k] = acc
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="an experiment folder with u2a, u2a_no_mt, image_alone, text_alone runs")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {s: seed_accuracies(args.folder, s) for s in seeds}
    cols = ("u2a", "u2a_no_mt", "specialists")

    def ms(v):
        return f"{st.mean(v):.2f} ± {st.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"

    rows = ["complete"] + MISSING
    summary: dict = {}
    print("| scenario | " + " | ".join(cols) + " | U2A - specialists, seed by seed |")
    print("|---|" + "---:|" * len(cols) + "---|")
    for r in rows + ["mean of the 5 missing scenarios"]:
        if r in rows:
            vals = {c: [100 * per_seed[s][r][c] for s in seeds] for c in cols}
        else:
            vals = {c: [st.mean(100 * per_seed[s][k][c] for k in MISSING) for s in seeds] for c in cols}
        d = [x - y for x, y in zip(vals["u2a"], vals["specialists"])]
        summary[r] = {c: {"mean": st.mean(v), "std": st.stdev(v) if len(v) > 1 else 0.0, "per_seed": v} for c, v in vals.items()}
        print(f"| {r} | " + " | ".join(ms(vals[c]) for c in cols) + " | " + ", ".join(f"{x:+.2f}" for x in d) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "python benchmarks/specialists.py " + " ".join(sys.argv[1:]),
                                        "seeds": seeds, "per_seed": per_seed, "summary": summary}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
