"""How accuracy falls as digits are corrupted: the curves of ``lenet5 viz robustness``.

:func:`curves` reads the same test digits through each model at every severity of
:data:`lenet5.data.corruptions.CURVES`; :func:`probe` scores the suite's ten strong settings
(:data:`~lenet5.data.corruptions.PROBE`) and their mean; :func:`figure` draws one panel per
corruption, one line per model, as the paper's invariance demos do in motion (Fig. 13).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..data.corruptions import CURVES, PROBE, UNITS, corrupt


def accuracy(predictor, x: np.ndarray, labels: np.ndarray) -> float:
    probs, _ = predictor.outputs(x)
    return float((probs.argmax(1) == labels).mean())


def curves(predictors: list, x: np.ndarray, labels: np.ndarray,
           kinds: dict[str, tuple[float, ...]] | None = None, seed: int = 0,
           progress: bool = False) -> dict:
    """``{model: {corruption: [[severity, accuracy], ...]}}`` on digits ``x`` in [0, 1];
    ``progress``: a bar on stderr, one step per corruption and severity."""
    from tqdm import tqdm

    kinds = CURVES if kinds is None else kinds
    out: dict[str, dict] = {p.name: {} for p in predictors}
    steps = [(name, s) for name, severities in kinds.items() for s in severities]
    for name, s in tqdm(steps, desc="corrupting", unit="setting", leave=False,
                        disable=not progress):
        xc = corrupt(x, name, s, seed)
        for p in predictors:
            out[p.name].setdefault(name, []).append([float(s), accuracy(p, xc, labels)])
    return out


def probe(predictor, x: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict:
    """Accuracy clean, at each of the ten strong settings, and their ``mean``."""
    rows = {f"{n} {s:g}": accuracy(predictor, corrupt(x, n, s, seed), labels) for n, s in PROBE}
    return {"clean": accuracy(predictor, x, labels), "settings": rows,
            "mean": float(np.mean(list(rows.values())))}


def figure(results: dict, title: str = "") -> Figure:
    """One panel per corruption (accuracy % against severity), a line per model."""
    kinds = list(next(iter(results.values())))
    cols = 3
    rows = -(-len(kinds) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    for i, kind in enumerate(kinds):
        ax = fig.add_subplot(rows, cols, i + 1)
        for model, per_kind in results.items():
            pts = sorted(per_kind[kind])
            ax.plot([s for s, _ in pts], [a * 100 for _, a in pts], "o-", ms=3, label=model)
        ax.set_title(kind, fontsize=10)
        ax.set_xlabel(UNITS.get(kind, "severity"), fontsize=8)
        ax.set_ylabel("accuracy %", fontsize=8)
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if i == 0:
            ax.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title)
    return fig


def probe_table(probes: dict[str, dict]) -> list[list]:
    """Rows ``[setting, acc % per model...]`` for a table: clean, the ten, the mean."""
    models = list(probes)
    settings = ["clean", *probes[models[0]]["settings"], "mean of the ten"]

    def value(m: str, s: str) -> float:
        p = probes[m]
        return p["clean"] if s == "clean" else p["mean"] if s.startswith("mean") else p["settings"][s]

    return [[s, *(f"{value(m, s) * 100:.2f}" for m in models)] for s in settings]
