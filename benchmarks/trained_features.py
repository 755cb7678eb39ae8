"""What trained runs' features hold, on the test split: per modality, the spread of its CLS feature
(the head's input slot; variance per dimension across samples), how much class information it
still carries (5-fold cross-validated logistic regression on those features), and, for the
scenario where only that modality is there, the head's accuracy, the share of its predictions
that fall in one class, and how much of the logits' spread comes from the sample's own feature
against the filled slot (placeholder or mask-token estimate). Written to find out why a run failed
on one scenario (docs/estimators.md, "Five more seeds"):

    python benchmarks/trained_features.py --out docs/results/trained_features.json RUN [RUN ...]

Runs in fp32 on the CPU; accuracies can differ from the bf16 evaluation of ``u2a experiment`` by a
sample or two.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(run: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from estimator_probes import encode
    from u2a.config import load_run_config
    from u2a.data.processing import build_collator
    from u2a.methods.base import load_model
    from u2a.pipelines.evaluate import test_datasets

    model = load_model(run / "best").eval()
    cfg = load_run_config(run / "config.yaml", warn=False)
    test = test_datasets(cfg)["test"]
    feats = encode(model, test, build_collator(model.config, train=False))
    y = np.array([int(test[i]["label"]) for i in range(len(test))])
    w = model.head.weight.detach().float()
    b = model.head.bias.detach().float()
    mods = list(model.modalities)
    out: dict = {"n": len(y)}
    for s in mods:
        own = feats.cls[s].float()
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        rec = {
            "cls_spread": float(own.var(0, unbiased=False).mean()),
            "cls_probe_cv_accuracy": float(cross_val_score(probe, own.numpy(), y, cv=5).mean()),
        }
        with torch.no_grad():
            own_logits = own @ w.T
            fill_logits = torch.zeros_like(own_logits)
            for t in mods:
                if t == s:
                    continue
                if feats.placeholder_cls:
                    fill_logits = fill_logits + (feats.placeholder_cls[t].float() @ w.T).expand_as(own_logits)
                else:
                    fill_logits = fill_logits + feats.mt[(s, t)].float() @ w.T
            pred = (own_logits + fill_logits + b).argmax(1).numpy()
        top = collections.Counter(pred.tolist()).most_common(1)[0]
        rec.update({
            f"{s}_only_accuracy": float((pred == y).mean()),
            f"{s}_only_top_class_share": top[1] / len(pred),
            "logit_spread_from_own_cls": float(own_logits.std(0).mean()),
            "logit_spread_from_filled_slots": float(fill_logits.std(0).mean()),
        })
        out[s] = rec
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="trained run folders (each with best/ and config.yaml)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result = {"command": "python benchmarks/trained_features.py" + (f" --out {args.out}" if args.out else "")
              + " " + " ".join(args.runs), "runs": {}}
    for run in args.runs:
        rec = measure(Path(run))
        result["runs"][run] = rec
        print(run, json.dumps({m: {k: round(v, 3) for k, v in r.items()} for m, r in rec.items() if m != "n"}), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
