"""Is it the shared head or the features? For trained runs, where only one modality is there
(image only, text only): the test accuracy of the run's own head (one head for every availability
case, as trained) against a linear head fitted for that case alone on the same frozen slot features
(the sum of the filled slots the head reads: the modality's CLS feature plus the estimate or the
placeholder of the other one). The case head is a multinomial logistic regression on the training
split's features (standardised), its C chosen on the validation split (docs/estimators.md, "What a
model made for the remaining modality reaches").

    python benchmarks/case_heads.py --out docs/results/case_heads.json RUN [RUN ...]

Encodes in bf16 under autocast at batch 32, as ``u2a experiment`` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


@torch.no_grad()
def measure(run: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from u2a.data.processing import build_collator
    from u2a.evaluation.predict import only_modality
    from u2a.evaluation.scenarios import encode_split
    from u2a.model.runtime import configure
    from u2a.pipelines.evaluate import load_run, test_datasets

    cfg, entry = load_run(run)
    model = entry.model
    configure(model, cfg.train.attention, cfg.train.mixed_precision, "cpu")
    datasets = test_datasets(cfg)
    collate = build_collator(model.config, train=False)
    dtype = torch.bfloat16 if cfg.train.mixed_precision == "bf16" else None
    enc = {s: encode_split(model, datasets[s], collate, batch_size=32, progress=False, autocast_dtype=dtype)
           for s in ("train", "val", "test")}
    out: dict = {}
    for j, m in enumerate(model.modalities):
        case = f"{m} only"
        feats, y = {}, {}
        for s, e in enc.items():
            avail = only_modality(j)(e.features.present)
            o = model.select(e.features, avail)
            feats[s] = o.fused.float().numpy()
            y[s] = e.labels.numpy()
            if s == "test":
                shared = float((o.logits.argmax(1) == e.labels).float().mean())
        best = None
        for c in CS:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
            clf.fit(feats["train"], y["train"])
            v = float(clf.score(feats["val"], y["val"]))
            if best is None or v > best[0]:
                best = (v, c, clf)
        out[case] = {"shared_head_test": shared, "case_head_test": float(best[2].score(feats["test"], y["test"])),
                     "case_head_C": best[1], "case_head_val": best[0]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    res = {}
    for run in args.runs:
        res[str(run)] = r = measure(run)
        print(run, {k: {kk: round(100 * vv, 2) if kk != "case_head_C" else vv for kk, vv in v.items()} for k, v in r.items()})
    if args.out:
        args.out.write_text(json.dumps({"command": "python benchmarks/case_heads.py" + f" --out {args.out} "
                                        + " ".join(map(str, args.runs)), "runs": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
