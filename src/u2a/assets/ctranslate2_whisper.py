"""Whisper tiny.en from CTranslate2's ``model.bin`` into a transformers Whisper folder (encoder only).

CTranslate2's ``model.bin`` (binary versions 4 to 6) is, all little-endian::

    uint32 binary_version
    string spec_name                      (uint16 byte length incl. a trailing NUL, then bytes)
    uint32 spec_revision                  (version >= 2)
    uint32 num_variables
    num_variables x:
        string name
        uint8  rank
        uint32 dims[rank]
        uint8  dtype                      (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16)
        uint32 num_bytes
        bytes  data[num_bytes]            (row-major)
    uint32 num_aliases                    (version >= 3)
    num_aliases x: string alias, string target

The encoder's self-attention keeps q, k, v fused in ``linear_0`` (rows: q then k then v); the
key projection has no bias in transformers (CTranslate2 stores zeros there).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from u2a.errors import ModelError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}

# Whisper tiny.en (openai/whisper-tiny.en) hyper-parameters.
TINY_EN_CONFIG = dict(
    vocab_size=51864,
    num_mel_bins=80,
    d_model=384,
    encoder_layers=4,
    encoder_attention_heads=6,
    encoder_ffn_dim=1536,
    decoder_layers=4,
    decoder_attention_heads=6,
    decoder_ffn_dim=1536,
    max_source_positions=1500,
    max_target_positions=448,
    activation_function="gelu",
    pad_token_id=50256,
    bos_token_id=50257,
    eos_token_id=50256,
    decoder_start_token_id=50257,
)
N_FRAMES = 3000  # the stock Whisper encoder takes exactly 30 s of 10 ms mel frames
REFERENCE_FILE = "whisper-tiny-en.safetensors"
REFERENCE_SEED = 0
REFERENCE_TOKENS = 8
TOLERANCE = 5e-3  # fp16 weights; CTranslate2 computes in float32 on CPU


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize("<" + fmt)
    buf = f.read(size)
    if len(buf) != size:
        raise ModelError(f"truncated CTranslate2 file {getattr(f, 'name', '')!s}")
    return struct.unpack("<" + fmt, buf)


def _read_string(f: BinaryIO) -> str:
    (n,) = _read(f, "H")
    raw = f.read(n)
    if len(raw) != n:
        raise ModelError("truncated CTranslate2 file (string)")
    return raw.rstrip(b"\0").decode("utf-8")


def _decode(raw: bytes, dtype_id: int, dims: tuple[int, ...]) -> np.ndarray:
    if dtype_id not in DTYPES:
        raise ModelError(f"unknown CTranslate2 dtype id {dtype_id}")
    dt = DTYPES[dtype_id]
    if dt == "bfloat16":
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<"))
    if arr.size != int(np.prod(dims, dtype=np.int64)):
        raise ModelError(f"CTranslate2 variable holds {arr.size} values, shape says {dims}")
    return arr.reshape(dims).copy()


def read_ct2_model(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin``: returns (header, {name: numpy array}); aliases resolved."""
    path = Path(path)
    with open(path, "rb") as f:
        (version,) = _read(f, "I")
        if not 4 <= version <= 6:
            raise ModelError(f"{path}: CTranslate2 binary version {version} is not supported (4-6)")
        spec = _read_string(f)
        (revision,) = _read(f, "I")
        (count,) = _read(f, "I")
        tensors: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = _read_string(f)
            (rank,) = _read(f, "B")
            dims = _read(f, "I" * rank) if rank else ()
            (dtype_id,) = _read(f, "B")
            (nbytes,) = _read(f, "I")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise ModelError(f"{path}: truncated at variable {name!r}")
            tensors[name] = _decode(raw, dtype_id, tuple(dims))
        (n_alias,) = _read(f, "I")
        for _ in range(n_alias):
            alias, target = _read_string(f), _read_string(f)
            tensors[alias] = tensors[target]
    header = {"binary_version": version, "spec": spec, "spec_revision": revision}
    return header, tensors


def encoder_state_dict(tensors: dict[str, np.ndarray], n_layers: int) -> dict:
    """Map CTranslate2 Whisper encoder variables to ``WhisperEncoder`` state-dict names (float32)."""
    import torch

    def t(name: str) -> "torch.Tensor":
        if name not in tensors:
            raise ModelError(f"CTranslate2 model lacks variable {name!r}")
        return torch.from_numpy(np.asarray(tensors[name], dtype=np.float32))

    sd = {
        "conv1.weight": t("encoder/conv1/weight"),
        "conv1.bias": t("encoder/conv1/bias"),
        "conv2.weight": t("encoder/conv2/weight"),
        "conv2.bias": t("encoder/conv2/bias"),
        "embed_positions.weight": t("encoder/position_encodings/encodings"),
        "layer_norm.weight": t("encoder/layer_norm/gamma"),
        "layer_norm.bias": t("encoder/layer_norm/beta"),
    }
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        w_qkv, b_qkv = t(f"{src}/self_attention/linear_0/weight"), t(f"{src}/self_attention/linear_0/bias")
        wq, wk, wv = w_qkv.chunk(3, dim=0)
        bq, bk, bv = b_qkv.chunk(3, dim=0)
        if bk.abs().max() > 0:
            raise ModelError("CTranslate2 Whisper key bias is not zero; transformers has no key bias")
        sd.update({
            f"{dst}.self_attn.q_proj.weight": wq, f"{dst}.self_attn.q_proj.bias": bq,
            f"{dst}.self_attn.k_proj.weight": wk,
            f"{dst}.self_attn.v_proj.weight": wv, f"{dst}.self_attn.v_proj.bias": bv,
            f"{dst}.self_attn.out_proj.weight": t(f"{src}/self_attention/linear_1/weight"),
            f"{dst}.self_attn.out_proj.bias": t(f"{src}/self_attention/linear_1/bias"),
            f"{dst}.self_attn_layer_norm.weight": t(f"{src}/self_attention/layer_norm/gamma"),
            f"{dst}.self_attn_layer_norm.bias": t(f"{src}/self_attention/layer_norm/beta"),
            f"{dst}.fc1.weight": t(f"{src}/ffn/linear_0/weight"),
            f"{dst}.fc1.bias": t(f"{src}/ffn/linear_0/bias"),
            f"{dst}.fc2.weight": t(f"{src}/ffn/linear_1/weight"),
            f"{dst}.fc2.bias": t(f"{src}/ffn/linear_1/bias"),
            f"{dst}.final_layer_norm.weight": t(f"{src}/ffn/layer_norm/gamma"),
            f"{dst}.final_layer_norm.bias": t(f"{src}/ffn/layer_norm/beta"),
        })
    return {k: v.contiguous() for k, v in sd.items()}


def load_whisper_encoder(folder: str | Path):
    """Load the ``WhisperEncoder`` (weights under ``encoder.`` in model.safetensors) from a u2a folder.

    Every encoder weight must be present; decoder weights, if any, are ignored.
    """
    from safetensors.torch import load_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    folder = Path(folder)
    config = WhisperConfig.from_pretrained(folder)
    encoder = WhisperEncoder(config)
    state = load_file(str(folder / "model.safetensors"))
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    missing, unexpected = encoder.load_state_dict(enc, strict=False)
    if missing or unexpected:
        raise ModelError(f"{folder}: Whisper encoder weights do not match: missing {missing}, unexpected {unexpected}")
    return encoder.eval()


def reference_input() -> np.ndarray:
    """The fixed log-mel input: 1 x 80 x 3000, uniform in [-1, 1) (Whisper's normalised log-mel range)."""
    rng = np.random.default_rng(REFERENCE_SEED)
    return rng.uniform(-1.0, 1.0, size=(1, TINY_EN_CONFIG["num_mel_bins"], N_FRAMES)).astype(np.float32)


def summarize(hidden: np.ndarray) -> dict[str, np.ndarray]:
    """What is compared: the first frames in full and the mean over all frames."""
    hidden = np.asarray(hidden, dtype=np.float32)
    return {"first": hidden[0, :REFERENCE_TOKENS].copy(), "mean": hidden[0].mean(axis=0)}


def runtime_output(ct2_dir: str | Path) -> np.ndarray | None:
    """CTranslate2's encoder output on :func:`reference_input`, or None if ctranslate2 is not installed."""
    try:
        import ctranslate2
    except ImportError:
        return None
    model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    out = model.encode(ctranslate2.StorageView.from_array(reference_input()), to_cpu=True)
    return np.array(out, dtype=np.float32)


def convert(ct2_dir: str | Path, out_dir: str | Path) -> dict:
    """Write config.json, model.safetensors (``encoder.*``) and preprocessor_config.json to ``out_dir``."""
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    header, tensors = read_ct2_model(ct2_dir / "model.bin")
    if header["spec"] != "WhisperSpec":
        raise ModelError(f"{ct2_dir}: expected a WhisperSpec model, found {header['spec']}")
    cfg = dict(TINY_EN_CONFIG)
    n_layers = sum(1 for k in tensors if k.startswith("encoder/layer_") and k.endswith("ffn/linear_0/weight"))
    if n_layers != cfg["encoder_layers"] or tensors["encoder/conv1/weight"].shape[0] != cfg["d_model"]:
        raise ModelError(f"{ct2_dir}: not Whisper tiny ({n_layers} encoder layers)")
    config = WhisperConfig(**cfg, architectures=["WhisperModel"])
    config.save_pretrained(out_dir)
    sd = encoder_state_dict(tensors, n_layers)
    save_file({f"encoder.{k}": v for k, v in sd.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    WhisperFeatureExtractor(feature_size=cfg["num_mel_bins"], sampling_rate=16000).save_pretrained(out_dir)
    ct2_config = ct2_dir / "config.json"
    if ct2_config.is_file():  # alignment heads, suppress ids: useful to keep, tiny
        (out_dir / "ctranslate2_config.json").write_text(ct2_config.read_text())
    return {"source_header": header, "encoder_params": int(sum(v.numel() for v in sd.values()))}


def rebuilt_output(folder: str | Path) -> np.ndarray:
    import torch

    encoder = load_whisper_encoder(folder)
    with torch.no_grad():
        return encoder(torch.from_numpy(reference_input())).last_hidden_state.numpy()


def write_reference(ct2_dir: str | Path, path: str | Path) -> None:
    """Regenerate the stored reference (needs ``pip install ctranslate2``)."""
    from safetensors.numpy import save_file

    out = runtime_output(ct2_dir)
    if out is None:
        raise ModelError("regenerating the Whisper reference needs ctranslate2 (pip install ctranslate2)")
    save_file(summarize(out), str(path), metadata={
        "source": "ctranslate2 Whisper.encode, compute_type=float32, cpu",
        "input": f"numpy default_rng({REFERENCE_SEED}).uniform(-1, 1, (1, 80, {N_FRAMES})) float32",
        "ctranslate2": __import__("ctranslate2").__version__,
    })

