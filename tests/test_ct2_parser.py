"""The CTranslate2 ``model.bin`` reader and the Whisper encoder mapping, on files written here."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from u2a.assets.ctranslate2_whisper import encoder_state_dict, read_ct2_model
from u2a.errors import ModelError

_DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
              np.dtype(np.int32): 3, np.dtype(np.float16): 4}


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path, variables: dict, aliases: dict | None = None, version: int = 6, spec: str = "WhisperSpec",
              bfloat16: dict | None = None) -> None:
    """Write variables in CTranslate2's binary layout (see u2a.assets.ctranslate2_whisper)."""
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", 3)]
    items = [(k, np.array(v, order="C"), _DTYPE_IDS[np.asarray(v).dtype]) for k, v in variables.items()]
    for k, v in (bfloat16 or {}).items():  # bf16: the upper 16 bits of float32
        items.append((k, (np.asarray(v, np.float32).view(np.uint32) >> 16).astype("<u2"), 5))
    out.append(struct.pack("<I", len(items)))
    for name, arr, dtype_id in items:
        out += [_string(name), struct.pack("<B", arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape),
                struct.pack("<BI", dtype_id, arr.nbytes), arr.astype(arr.dtype.newbyteorder("<")).tobytes()]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))


def test_reads_every_dtype_scalars_and_aliases(tmp_path):
    rng = np.random.default_rng(0)
    variables = {
        "a/f32": rng.standard_normal((3, 4)).astype(np.float32),
        "a/f16": rng.standard_normal((2, 3, 5)).astype(np.float16),
        "b/i8": np.array([-3, 7], dtype=np.int8),
        "b/scalar_i16": np.array(6, dtype=np.int16),
        "b/i32": np.arange(5, dtype=np.int32),
    }
    bf = np.array([1.5, -2.0, 0.25], dtype=np.float32)  # exactly representable in bf16
    path = tmp_path / "model.bin"
    write_ct2(path, variables, aliases={"c/alias": "a/f32"}, bfloat16={"a/bf16": bf})
    header, tensors = read_ct2_model(path)
    assert header == {"binary_version": 6, "spec": "WhisperSpec", "spec_revision": 3}
    for name, arr in variables.items():
        assert tensors[name].dtype == arr.dtype and tensors[name].shape == arr.shape
        np.testing.assert_array_equal(tensors[name], arr)
    assert tensors["b/scalar_i16"].shape == () and int(tensors["b/scalar_i16"]) == 6
    np.testing.assert_array_equal(tensors["a/bf16"], bf)
    np.testing.assert_array_equal(tensors["c/alias"], variables["a/f32"])


def test_truncated_and_unsupported_files_raise(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, {"x": np.ones((4, 4), np.float32)})
    data = path.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-20])
    with pytest.raises(ModelError, match="truncated"):
        read_ct2_model(tmp_path / "cut.bin")
    write_ct2(tmp_path / "old.bin", {"x": np.ones(2, np.float32)}, version=2)
    with pytest.raises(ModelError, match="version 2"):
        read_ct2_model(tmp_path / "old.bin")


def test_encoder_mapping_reproduces_a_tiny_whisper_encoder(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    cfg = WhisperConfig(num_mel_bins=4, d_model=8, encoder_layers=2, encoder_attention_heads=2,
                        encoder_ffn_dim=16, max_source_positions=6, decoder_layers=1,
                        decoder_attention_heads=2, decoder_ffn_dim=16, vocab_size=10)
    original = WhisperEncoder(cfg).eval()
    with torch.no_grad():
        for p in original.parameters():
            p.normal_(0, 0.5)
    sd = {k: v.numpy().astype(np.float16) for k, v in original.state_dict().items()}
    ct2 = {
        "encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
        "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
        "encoder/position_encodings/encodings": sd["embed_positions.weight"],
        "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"],
        "encoder/num_heads": np.array(2, np.int16),
    }
    for i in range(2):
        a, c = f"layers.{i}.", f"encoder/layer_{i}/"
        ct2[c + "self_attention/linear_0/weight"] = np.concatenate(
            [sd[a + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        ct2[c + "self_attention/linear_0/bias"] = np.concatenate(
            [sd[a + "self_attn.q_proj.bias"], np.zeros(8, np.float16), sd[a + "self_attn.v_proj.bias"]])
        for ours, theirs in [("self_attn.out_proj", "self_attention/linear_1"), ("fc1", "ffn/linear_0"),
                             ("fc2", "ffn/linear_1")]:
            ct2[c + theirs + "/weight"] = sd[a + ours + ".weight"]
            ct2[c + theirs + "/bias"] = sd[a + ours + ".bias"]
        for ours, theirs in [("self_attn_layer_norm", "self_attention/layer_norm"), ("final_layer_norm", "ffn/layer_norm")]:
            ct2[c + theirs + "/gamma"] = sd[a + ours + ".weight"]
            ct2[c + theirs + "/beta"] = sd[a + ours + ".bias"]
    write_ct2(tmp_path / "model.bin", ct2)
    _, tensors = read_ct2_model(tmp_path / "model.bin")
    rebuilt = WhisperEncoder(cfg).eval()
    rebuilt.load_state_dict(encoder_state_dict(tensors, 2), strict=True)
    with torch.no_grad():
        for p in original.parameters():  # the reference sees the same fp16-rounded weights
            p.copy_(p.half().float())
        x = torch.randn(1, 4, 12)
        np.testing.assert_allclose(rebuilt(x).last_hidden_state.numpy(),
                                   original(x).last_hidden_state.numpy(), atol=1e-5)


def test_nonzero_key_bias_is_refused():
    tensors = {f"encoder/{n}": np.zeros(1, np.float32) for n in
               ["conv1/weight", "conv1/bias", "conv2/weight", "conv2/bias", "position_encodings/encodings",
                "layer_norm/gamma", "layer_norm/beta"]}
    tensors["encoder/layer_0/self_attention/linear_0/weight"] = np.zeros((6, 2), np.float32)
    tensors["encoder/layer_0/self_attention/linear_0/bias"] = np.array([0, 0, 1, 0, 0, 0], np.float32)
    with pytest.raises(ModelError, match="key bias"):
        encoder_state_dict(tensors, 1)
