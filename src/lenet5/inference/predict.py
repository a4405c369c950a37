"""Classify digits: :class:`Predictor` wraps a model and its input normalisation.

Images are read and made MNIST-like by :mod:`.images` (re-exported here). :class:`Predictor`
applies the model's own 32x32 padding and normalisation and turns its outputs into
probabilities: softmax for a logits head; for the RBF head the MAP criterion's posterior
(Eq. 9), P(i) = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)), whose remainder is the "rubbish" class.
Either engine runs the model: ``Predictor.load(source, engine="torch" | "numpy")``, where
``source`` is anything :func:`lenet5.inference.load.load` accepts.

Every result also has ``digit_probs``, the probabilities over the ten digits alone (for the RBF
head, the posterior without its rubbish mass, which is shown apart). When the model has a
reject calibration (:mod:`.reject`) and ``reject`` is on, an image that shows no digit, or no
clear one, gets ``"label": None``, a ``verdict`` ("no digit" or "unsure"), a ``reason`` and the
model's ``guess``.
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
    BlankImage,
    PredictError,
    center_of_mass_paste,
    load_image,
    preprocess,
    to_grey,
)

LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6")


class Predictor:
    """A model plus its input normalisation, ready to classify preprocessed 28x28 digits.

    ``engine`` is ``"torch"`` for an ``nn.Module``, ``"numpy"`` for a :class:`lenet5.scratch.Model`
    (by default: whichever ``model`` is).
    """

    def __init__(self, model, meta: dict, name: str, engine: str | None = None, rejector=None):
        from ..data.transforms import Normalization
        from ..scratch import Model as NumpyModel

        self.engine = engine or ("numpy" if isinstance(model, NumpyModel) else "torch")
        self.model, self.meta, self.name = model.train(False), meta, name
        self.normalization = Normalization(**meta["normalization"])
        self.head = meta.get("head", "logits")
        self.classes = list(meta.get("classes", [str(i) for i in range(10)]))
        # How probabilities are made, stated in every result.
        self.posterior = "map-rbf" if self.head == "rbf" else "softmax"
        self.rejector = rejector  # a reject.Rejector, or None: every image gets a digit

    @classmethod
    def load(cls, source: str | Path | None = None, *, engine: str = "torch",
             name: str | None = None, reject: bool = True) -> Predictor:
        """The model ``source`` names (a run, a checkpoint file, a bundled name; None: the
        default bundled model), through :func:`lenet5.inference.load.load`; with its reject
        calibration when it has one and ``reject`` is on."""
        from .load import load

        return cls.from_loaded(load(source, engine=engine), name, reject)

    @classmethod
    def from_loaded(cls, loaded, name: str | None = None, reject: bool = True) -> Predictor:
        """From what :func:`lenet5.inference.load.load` returned."""
        from .reject import Rejector, path_for

        file = path_for(loaded.path, loaded.run_dir)
        rejector = Rejector.from_file(file) if reject and file.is_file() else None
        return cls(loaded.model, loaded.meta, name or loaded.name, loaded.engine, rejector)

    def _input(self, x: np.ndarray) -> np.ndarray:
        """``(N, 1, 32, 32)`` float32: the digits padded by the paper's 2 pixels, normalised."""
        from ..data.transforms import PAD

        a = np.asarray(x)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3 or a.shape[1:] != (FIELD, FIELD):
            raise PredictError(f"expected (N, 28, 28) or (28, 28) digits, got shape {np.shape(x)}")
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        a = np.pad(a[:, None], ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
        if self.engine == "numpy":
            return self.normalization(a).astype(np.float32)
        import torch

        return self.normalization(torch.from_numpy(a))  # the same float32 arithmetic in torch

    def _forward(self, t, features: bool = False):
        """The model's raw outputs ``(N, 10)`` float32 and their probabilities, as NumPy; with
        ``features``, also every stage's activations (``c1 .. f6``)."""
        if self.engine == "numpy":
            feats = self.model.features(t) if features else {"out": self.model.forward(t)}
            out = np.asarray(feats["out"], np.float32)
            probs = np.exp(self.model.log_probs(out))
            maps = {k: np.asarray(v) for k, v in feats.items()}
        else:
            import torch

            with torch.no_grad():
                feats = self.model.features(t) if features else {"out": self.model(t)}
                out_t = feats["out"].float()
                probs = self.model.log_probs(out_t).exp().numpy()
            out, maps = out_t.numpy(), {k: v.numpy() for k, v in feats.items()}
        if not (np.isfinite(out).all() and np.isfinite(probs).all()):
            raise PredictError(f"{self.name}: the model's outputs are not finite for this input")
        return out, probs, maps

    def outputs(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, raw)``: ``(N, 10)`` probabilities and the model's raw outputs."""
        t = self._input(x)
        probs, raw = [], []
        for i in range(0, t.shape[0], batch_size):
            out, p, _ = self._forward(t[i : i + batch_size])
            raw.append(out)
            probs.append(p)
        return np.concatenate(probs), np.concatenate(raw)

    def predict(self, x: np.ndarray, top_k: int = 3) -> list[dict[str, Any]]:
        """Per digit: ``label``, ``probs`` (10), ``top_k`` ``[[label, prob], ...]``, ``posterior``.

        For the RBF head also ``distances`` (the RBF outputs) and ``rubbish``: the MAP
        posterior's remaining mass, exp(-j) / Z.
        """
        if self.rejector is not None:
            return self.predict_with_features(x, top_k)[0]
        return self._results(*self.outputs(x), top_k)

    def predict_with_features(self, x: np.ndarray, top_k: int = 3) -> tuple[list[dict], dict]:
        """``predict`` and ``features`` of a batch ``(N, 28, 28)`` from one forward pass."""
        out, probs, feats = self._forward(self._input(x), features=True)
        maps = {name: feats[name.lower()] for name in LAYERS}
        verdicts = None
        if self.rejector is not None:
            from .reject import digit_probs, evidence

            ev = evidence(np.asarray(x, np.float32).reshape(-1, FIELD, FIELD), probs, out, maps,
                          self.head)
            verdicts = self.rejector.decide(ev, digit_probs(probs))
        return self._results(probs, out, top_k, verdicts), maps

    def evidence(self, x: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """What the reject option reads, ``(N, D)``, and the digit probabilities ``(N, 10)``
        of preprocessed digits ``(N, 28, 28)`` in [0, 1]."""
        from .reject import digit_probs, evidence

        evs, dps = [], []
        for i in range(0, len(x), batch_size):
            xb = np.asarray(x[i : i + batch_size], np.float32)
            out, probs, feats = self._forward(self._input(xb), features=True)
            maps = {name: feats[name.lower()] for name in LAYERS}
            evs.append(evidence(xb, probs, out, maps, self.head))
            dps.append(digit_probs(probs))
        return np.concatenate(evs), np.concatenate(dps)

    def _results(self, probs: np.ndarray, raw: np.ndarray, top_k: int,
                 verdicts: list | None = None) -> list[dict[str, Any]]:
        k = max(1, min(int(top_k), probs.shape[1]))
        results = []
        for n, (p, r) in enumerate(zip(probs, raw)):
            order = np.argsort(-p, kind="stable")[:k]
            digits = p / max(float(p.sum()), 1e-30)
            res = {"label": int(order[0]), "probs": [float(v) for v in p],
                   "top_k": [[int(i), float(p[i])] for i in order], "posterior": self.posterior,
                   "digit_probs": [float(v) for v in digits]}
            if self.head == "rbf":
                res["distances"] = [float(v) for v in r]
                res["rubbish"] = float(max(0.0, 1.0 - p.sum()))
            if verdicts is not None and verdicts[n][0] is not None:
                res.update(label=None, guess=int(order[0]), verdict=verdicts[n][0],
                           reason=verdicts[n][1])
            results.append(res)
        return results

    def predict_image(self, src: str | Path | bytes | Image.Image | np.ndarray, top_k: int = 3) -> dict:
        """Load (if a path or bytes), preprocess and predict one image."""
        if isinstance(src, (str, Path, bytes, bytearray)):
            src = load_image(src)
        return self.predict(self.digit_from(src), top_k)[0]

    def digit_from(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """:func:`preprocess`, except that a blank image (no ink) gives the empty 28x28 field
        when the model can refuse it, so it is answered "no digit" rather than raising
        :class:`BlankImage` (which it still does without a reject option)."""
        try:
            return preprocess(img)
        except BlankImage:
            if self.rejector is None:
                raise
            return np.zeros((FIELD, FIELD), np.float32)

    def features(self, x28: np.ndarray) -> dict[str, np.ndarray]:
        """Activations of C1..F6 for preprocessed digit(s); no batch axis for a single (28, 28)."""
        _, _, feats = self._forward(self._input(x28), features=True)
        single = np.asarray(x28).ndim == 2
        return {name: feats[name.lower()][0 if single else slice(None)] for name in LAYERS}
