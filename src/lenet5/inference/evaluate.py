"""Evaluation: accuracy, per-class accuracy, confusion matrix and the classification report.

Everything is computed from the full split (no dropped remainder) by direct counting, in the
layout of scikit-learn's ``classification_report`` (precision, recall, F1 and support per
class, then macro and support-weighted averages).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def model_outputs(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Raw outputs of ``model`` in eval mode over ``x``, in batches, on ``x``'s device."""
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        outs = [model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(outs).float()


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[t, p]`` = number of samples of true class t predicted as p."""
    idx = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(y_true, y_pred, class_names: list[str] | tuple[str, ...]) -> dict:
    """All the numbers ``lenet5 evaluate`` reports, JSON-ready."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    n = int(support.sum())
    weights = support / max(n, 1)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(class_names)
    }
    errors = int(n - tp.sum())
    return {
        "n": n,
        "errors": errors,
        "accuracy": float(tp.sum() / max(n, 1)),
        "error_rate": float(errors / max(n, 1)),
        "per_class_accuracy": {name: float(recall[i]) for i, name in enumerate(class_names)},
        "confusion_matrix": cm.tolist(),
        "report": per_class,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                      "f1": float(f1.mean()), "support": n},
        "weighted_avg": {"precision": float(precision @ weights), "recall": float(recall @ weights),
                         "f1": float(f1 @ weights), "support": n},
    }


def format_report(m: dict, title: str = "") -> str:
    """Human-readable: headline, classification report and confusion matrix."""
    names = list(m["report"])
    width = max(12, max(len(s) for s in names) + 2)
    lines = [title] if title else []
    lines.append(f"accuracy {m['accuracy'] * 100:.2f}%  ({m['errors']} errors / {m['n']})")
    lines.append("")
    lines.append(f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}")
    for name, r in m["report"].items():
        lines.append(f"{name:>{width}} {r['precision']:9.4f} {r['recall']:9.4f} {r['f1']:9.4f} {r['support']:9d}")
    lines.append("")
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        r = m[key]
        lines.append(f"{label:>{width}} {r['precision']:9.4f} {r['recall']:9.4f} {r['f1']:9.4f} {r['support']:9d}")
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    k = len(names)
    lines.append("      " + "".join(f"{j:>6d}" for j in range(k)))
    for i, row in enumerate(m["confusion_matrix"]):
        lines.append(f"{i:>6d}" + "".join(f"{v:>6d}" for v in row))
    return "\n".join(lines)


def evaluate_checkpoint(
    source: str | Path | None = None,
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
    engine: str = "torch",
    batch_size: int = 1000,
) -> dict:
    """Evaluate a model on a split: the metrics dict plus context. ``source`` is anything
    :func:`lenet5.inference.load.load` accepts (a run, a checkpoint file, a bundled name)."""
    from ..data.datasets import get_spec, load_split
    from ..data.transforms import Normalization, to_unit, unit_array
    from ..models import describe
    from .load import load

    loaded = load(source, engine=engine)
    meta, model = loaded.meta, loaded.model
    dataset = dataset or meta["dataset"]
    images, labels = load_split(dataset, split, data_dir)
    norm = Normalization(**meta["normalization"])
    if engine == "numpy":  # NumPy only, no PyTorch import: the same float32 values
        preds = model.predict(norm(unit_array(images)), batch_size)
    else:
        preds = model.scores(model_outputs(model, norm(to_unit(images)), batch_size)).argmax(1).numpy()
    metrics = classification_metrics(labels, preds, get_spec(dataset).classes)
    metrics.update(checkpoint=str(loaded.path), name=loaded.name, model=meta["model"],
                   model_label=describe(meta["model"], meta.get("model_config", {})),
                   dataset=dataset, split=split, engine=engine)
    return metrics
