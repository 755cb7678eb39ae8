"""Serving an exported U2A model with onnxruntime, any subset of modalities per request.

::

    from u2a.export import ExportedModel
    model = ExportedModel("exported/")
    model.predict({"text": "a red heart"})             # the image encoder does not run
    model.predict({"image": "heart.png", "text": "a red heart"})

Per request only the encoders of the modalities given run (their sessions are even created on
first use); the head graph takes every modality's features plus the availability mask and fills
the missing slots from the mask-token estimates of the modalities that are there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from u2a.errors import DataError, ModelError
from u2a.export.exporter import load_manifest

_NP = {"float": np.float32, "int64": np.int64, "bool": np.bool_, "int32": np.int32, "double": np.float64}


class ExportedModel:
    def __init__(self, directory: str | Path, providers: Sequence[str] | None = None, threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ModelError("serving an exported model needs onnxruntime: pip install 'u2a[export]'") from e
        self.directory = Path(directory)
        self.manifest = load_manifest(self.directory)
        self.modalities = [m["name"] for m in self.manifest["modalities"]]
        self.kinds = {m["name"]: m["kind"] for m in self.manifest["modalities"]}
        self.classes = list(self.manifest["classes"])
        self.task = self.manifest["task"]
        self.dim = int(self.manifest["dim"])
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        self._processors: dict[str, Any] = {}
        #: the encoders the last call ran (a text-only request: ["text"])
        self.last_encoders_run: list[str] = []

    # ---- sessions ---------------------------------------------------------------------
    def session(self, name: str):
        """The onnxruntime session of ``encoder_<m>`` (name = m) or of the head (name = "head")."""
        if name not in self._sessions:
            import onnxruntime as ort

            graph = self.manifest["graphs"]["head"] if name == "head" else self.manifest["graphs"]["encoders"][name]
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if self.threads:
                opts.intra_op_num_threads = int(self.threads)
                opts.inter_op_num_threads = 1
            self._sessions[name] = ort.InferenceSession(str(self.directory / graph["file"]), opts,
                                                        providers=self.providers)
        return self._sessions[name]

    def input_names(self, m: str) -> list[str]:
        return [i["name"] for i in self.manifest["graphs"]["encoders"][m]["inputs"]]

    # ---- the model on arrays ----------------------------------------------------------
    def encode(self, m: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Modality m's encoder graph on its own inputs (rows = the samples that have m):
        ``{"cls": (n, D), "est_to_<t>": (n, D), ...}``."""
        graph = self.manifest["graphs"]["encoders"][m]
        feed = {}
        for spec in graph["inputs"]:
            name = spec["name"]
            if name not in inputs:
                raise DataError(f"modality {m!r}: the exported encoder needs input {name!r} (got {sorted(inputs)})")
            feed[name] = np.ascontiguousarray(np.asarray(inputs[name]), dtype=_NP.get(spec["dtype"], np.float32))
        outs = self.session(m).run(None, feed)
        self.last_encoders_run.append(m)
        return dict(zip([o["name"] for o in graph["outputs"]], outs))

    def run(self, inputs: Mapping[str, Mapping[str, Any]], present: Any) -> np.ndarray:
        """Logits (B, C) of a batch: ``present`` (B, M) bool in the manifest's modality order,
        ``inputs[m]`` holding one row per sample that has m (in batch order)."""
        present = np.asarray(present, dtype=bool)
        if present.ndim != 2 or present.shape[1] != len(self.modalities):
            raise DataError(f"present must be (batch, {len(self.modalities)}) for modalities {self.modalities}")
        if not present.any(axis=1).all():
            raise DataError("a sample has no modality at all; a prediction needs at least one")
        b = present.shape[0]
        self.last_encoders_run = []
        feats: dict[str, np.ndarray] = {}
        for i, m in enumerate(self.modalities):
            rows = np.nonzero(present[:, i])[0]
            feats[f"cls_{m}"] = np.zeros((b, self.dim), np.float32)
            for t in self.modalities:
                if t != m and self.manifest["mask_tokens"]:
                    feats[f"est_{m}_to_{t}"] = np.zeros((b, self.dim), np.float32)
            if rows.size == 0:
                continue  # this encoder does not run
            if m not in inputs:
                raise DataError(f"{rows.size} sample(s) have modality {m!r} but no inputs were given")
            out = self.encode(m, inputs[m])
            n = out["cls"].shape[0]
            if n != rows.size:
                raise DataError(f"modality {m!r}: {n} input rows, but {rows.size} samples have it")
            feats[f"cls_{m}"][rows] = out["cls"]
            for key, val in out.items():
                if key.startswith("est_to_"):
                    feats[f"est_{m}_to_{key[len('est_to_'):]}"][rows] = val
        head = self.session("head")
        feed = {"available": present.astype(np.float32)}
        for spec in self.manifest["graphs"]["head"]["inputs"][1:]:
            feed[spec["name"]] = feats[spec["name"]]
        return head.run(None, feed)[0]

    # ---- raw inputs -------------------------------------------------------------------
    def processor(self, m: str):
        """The preprocessing of modality m, as training did it (u2a.data.processing)."""
        if m not in self._processors:
            info = self.manifest["preprocessing"][m]
            if not info.get("available"):
                raise ModelError(f"modality {m!r}: the export holds no preprocessing ({info.get('reason')}); "
                                 "pass preprocessed arrays to run()")
            from u2a.data import processing as P

            folder = str(self.directory / info["folder"])
            kind = info["kind"]
            if kind == "text":
                from transformers import AutoTokenizer

                proc = P.TextProcessor(AutoTokenizer.from_pretrained(folder), int(info["max_length"]))
            elif kind in ("image", "video"):
                from transformers import AutoImageProcessor

                ip = AutoImageProcessor.from_pretrained(folder)
                proc = (P.VideoProcessor(ip, info.get("image_size"), int(info["frames"])) if kind == "video"
                        else P.ImageProcessor(ip, info.get("image_size")))
            else:
                from transformers import AutoFeatureExtractor

                proc = P.AudioProcessor(AutoFeatureExtractor.from_pretrained(folder), info.get("max_length"))
            self._processors[m] = proc
        return self._processors[m]

    def preprocess(self, m: str, raws: Sequence[Any]) -> dict[str, np.ndarray]:
        proc = self.processor(m)
        loaded = [proc.load(r, f"#{i}", False) if isinstance(r, (str, Path)) or self.kinds[m] == "text" else r
                  for i, r in enumerate(raws)]
        return {k: v.numpy() for k, v in proc(loaded).items() if k in self.input_names(m)}

    def predict_batch(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Logits of raw samples (``{modality: text, or an image / audio path, or absent/None}``)."""
        unknown = sorted({k for s in samples for k in s if k not in self.modalities})
        if unknown:
            raise DataError(f"unknown modalities {unknown}; the model has {self.modalities}")
        present = np.array([[s.get(m) is not None for m in self.modalities] for s in samples], dtype=bool)
        inputs = {}
        for i, m in enumerate(self.modalities):
            raws = [s[m] for s in samples if s.get(m) is not None]
            if raws:
                inputs[m] = self.preprocess(m, raws)
        return self.run(inputs, present)

    def predict(self, sample: Mapping[str, Any], top_k: int = 5) -> dict[str, Any]:
        """The top classes of one raw sample; modalities not given are estimated."""
        logits = self.predict_batch([sample])[0]
        if self.task == "multilabel":
            probs = 1.0 / (1.0 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max())
            probs = e / e.sum()
        order = np.argsort(-probs)[: max(1, min(top_k, len(self.classes)))]
        return {"top": [{"class": self.classes[i], "prob": float(probs[i])} for i in order],
                "given": [m for m in self.modalities if sample.get(m) is not None],
                "estimated": [m for m in self.modalities if sample.get(m) is None],
                "encoders_run": list(self.last_encoders_run), "logits": logits.tolist()}
