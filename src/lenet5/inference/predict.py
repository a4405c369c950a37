"""Classify digits: :class:`Predictor` wraps a model and its input normalisation.

Images are read and made MNIST-like by :mod:`.images` (re-exported here). :class:`Predictor`
applies the model's own 32x32 padding and normalisation and turns its outputs into
probabilities: softmax for a logits head; for the RBF head the MAP criterion's posterior
(Eq. 9), P(i) = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)), whose remainder is the "rubbish" class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .images import (  # noqa: F401  (re-exported: the public image API)
    BOX,
    FIELD,
    MAX_PIXELS,
    PredictError,
    center_of_mass_paste,
    load_image,
    preprocess,
    to_grey,
)

LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6")


class Predictor:
    """A model plus its input normalisation, ready to classify preprocessed 28x28 digits."""

    def __init__(self, model, meta: dict, name: str):
        from ..data.transforms import Normalization

        self.model, self.meta, self.name = model.eval(), meta, name
        self.normalization = Normalization(**meta["normalization"])
        self.head = meta.get("head", "logits")
        self.classes = list(meta.get("classes", [str(i) for i in range(10)]))
        # How probabilities are made, stated in every result.
        self.posterior = "map-rbf" if self.head == "rbf" else "softmax"

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str | None = None) -> Predictor:
        from ..checkpoint import load_model

        model, meta = load_model(path)
        return cls(model, meta, name or meta.get("bundle", {}).get("name") or str(path))

    @classmethod
    def bundled(cls, name: str | None = None) -> Predictor:
        from ..weights import get_bundled

        entry = get_bundled(name)
        return cls.from_checkpoint(entry["path"], entry["name"])

    def _input(self, x: np.ndarray):
        import torch

        from ..data.transforms import PAD

        a = np.asarray(x)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1:] != (FIELD, FIELD):
            raise PredictError(f"expected (N, 28, 28) or (28, 28) digits, got shape {np.shape(x)}")
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        t = torch.nn.functional.pad(torch.from_numpy(a)[:, None], (PAD,) * 4, value=0.0)
        return self.normalization(t)  # (N, 1, 32, 32)

    def outputs(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, raw)``: ``(N, 10)`` probabilities and the model's raw outputs."""
        import torch

        t = self._input(x)
        probs, raw = [], []
        with torch.no_grad():
            for i in range(0, t.shape[0], batch_size):
                out = self.model(t[i : i + batch_size]).float()
                raw.append(out.numpy())
                probs.append(self.model.log_probs(out).exp().numpy())
        return np.concatenate(probs), np.concatenate(raw)

    def predict(self, x: np.ndarray, top_k: int = 3) -> list[dict[str, Any]]:
        """Per digit: ``label``, ``probs`` (10), ``top_k`` ``[[label, prob], ...]``, ``posterior``.

        For the RBF head also ``distances`` (the RBF outputs) and ``rubbish``: the MAP
        posterior's remaining mass, exp(-j) / Z.
        """
        return self._results(*self.outputs(x), top_k)

    def predict_with_features(self, x: np.ndarray, top_k: int = 3) -> tuple[list[dict], dict]:
        """``predict`` and ``features`` of a batch ``(N, 28, 28)`` from one forward pass."""
        import torch

        with torch.no_grad():
            feats = self.model.features(self._input(x))
            out = feats["out"].float()
            probs = self.model.log_probs(out).exp().numpy()
        maps = {name: feats[name.lower()].numpy() for name in LAYERS}
        return self._results(probs, out.numpy(), top_k), maps

    def _results(self, probs: np.ndarray, raw: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        k = max(1, min(int(top_k), probs.shape[1]))
        results = []
        for p, r in zip(probs, raw):
            order = np.argsort(-p, kind="stable")[:k]
            res = {"label": int(order[0]), "probs": [float(v) for v in p],
                   "top_k": [[int(i), float(p[i])] for i in order], "posterior": self.posterior}
            if self.head == "rbf":
                res["distances"] = [float(v) for v in r]
                res["rubbish"] = float(max(0.0, 1.0 - p.sum()))
            results.append(res)
        return results

    def predict_image(self, src: str | Path | bytes | Image.Image | np.ndarray, top_k: int = 3) -> dict:
        """Load (if a path or bytes), preprocess and predict one image."""
        if isinstance(src, (str, Path, bytes, bytearray)):
            src = load_image(src)
        return self.predict(preprocess(src), top_k)[0]

    def features(self, x28: np.ndarray) -> dict[str, np.ndarray]:
        """Activations of C1..F6 for preprocessed digit(s); no batch axis for a single (28, 28)."""
        import torch

        with torch.no_grad():
            feats = self.model.features(self._input(x28))
        single = np.asarray(x28).ndim == 2
        return {name: feats[name.lower()][0 if single else slice(None)].numpy() for name in LAYERS}


def resolve_predictor(checkpoint: str | Path | None = None, model: str | None = None) -> Predictor:
    """A checkpoint path (run dir or file) wins; else a bundled model by name; else the default."""
    if checkpoint is not None and model is not None:
        raise PredictError("give either a checkpoint or a bundled model name, not both")
    if checkpoint is not None:
        return Predictor.from_checkpoint(checkpoint)
    return Predictor.bundled(model)
