"""A training step of the ablation without mask tokens (the demo recipe's model, one thread, bf16
autocast, batch 16) on batches that lack a modality entirely: every sample with both, no sample
with an image (text only), no sample with text (image only). For the text-only batch also the
placeholder image at the DINOv2 config's native 518 px, which is what such a batch got before the
placeholder took the modality's input shape (the recipe's 84 px; docs/benchmarks.md, "A
placeholder of the modality's shape").

    python benchmarks/placeholder_step.py --out docs/results/placeholder_step.json

The variants run interleaved, step by step, after warm-up; medians are reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    from step_timing import DemoStep, parse_and_set_up, report, time_interleaved

    args = parse_and_set_up(__doc__, argv)
    import torch

    batch = 16
    demo = DemoStep(["model.u2a.mask_tokens=false"], batch)
    inputs = demo.inputs
    image = demo.model.encoders["image"]
    shape = tuple(image.input_shape)
    native = (int(image.config.num_channels), int(image.config.image_size), int(image.config.image_size))

    def workload(has_image: bool, has_text: bool):
        present = torch.tensor([[has_image, has_text]] * batch)
        return {m: inputs[m] for m, keep in (("image", has_image), ("text", has_text)) if keep}, present

    variants = {
        "both modalities": (workload(True, True), shape),
        "no image in the batch": (workload(False, True), shape),
        f"no image in the batch, placeholder at {native[-1]} px (before)": (workload(False, True), native),
        "no text in the batch": (workload(True, False), shape),
    }

    def step(work, placeholder_shape):
        image.input_shape = placeholder_shape
        demo.step(*work)

    steps = {k: (lambda v=v: step(*v)) for k, v in variants.items()}
    times = time_interleaved(steps, args.warmup, args.repeats)
    image.input_shape = shape
    report("placeholder_step.py", args, batch, times,
           {"image_input_shape": list(shape), "image_native_shape": list(native)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
