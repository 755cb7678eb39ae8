"""The seeded, stratified train/val/test split of the built-in datasets."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def grouped_split(groups_by_class: Mapping[str, Mapping[str, Sequence[str]]], seed: int) -> dict[str, str]:
    """``{sample id: split}`` from ``{class: {group: [sample ids]}}``.

    Samples of one group (an icon and its outline / off / numbered variants, say) always share a
    split, so no test sample has a near-copy in training. Per class (classes in sorted order, one
    ``random.Random(seed)``), the groups (sorted, then shuffled) go in turn to test if they fit in
    what test still lacks of ``round(0.2 n)`` of the class's n samples, else to val if they fit
    there, else to train (a group larger than a fifth of its class is always in train). With
    groups of one sample this is a plain stratified split: ``round(0.2 n)`` samples to test and to
    val, so a class of 1 or 2 samples is all in train."""
    rng = random.Random(seed)
    out: dict[str, str] = {}
    for c in sorted(groups_by_class):
        groups = groups_by_class[c]
        order = sorted(groups)
        rng.shuffle(order)
        n = sum(len(groups[g]) for g in order)
        n_test = math.floor(n * FRACTIONS["test"] + 0.5)
        n_val = math.floor(n * FRACTIONS["val"] + 0.5)
        counts = {"test": 0, "val": 0}
        for g in order:
            size = len(groups[g])
            split = ("test" if counts["test"] + size <= n_test else
                     "val" if counts["val"] + size <= n_val else "train")
            if split != "train":
                counts[split] += size
            for sid in groups[g]:
                out[sid] = split
    return out
