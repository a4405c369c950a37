"""``lenet5 report RUN``: one self-contained HTML page about a trained model.

The page holds the run's config, the model summary table, the per-epoch metrics table, the
test-set classification report and every plot of :mod:`lenet5.reporting.viz`, PNGs embedded as base64
``data:`` URIs. It loads nothing from anywhere: no scripts, no fonts, no external URLs, so it
can be mailed or archived as one file. ``RUN`` is a run directory, a checkpoint file, or the
name of a bundled model (:func:`lenet5.inference.load.load`).
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import numpy as np

from ..inference.load import Loaded, load
from ..inference.predict import Predictor
from ..models import describe
from . import viz


def split_predictions(predictor: Predictor, data_dir: str | None = None, split: str = "test",
                      limit: int | None = None) -> dict:
    """Images, labels, probabilities and predictions of ``predictor`` on a dataset split."""
    from ..data.datasets import load_split

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    dataset = predictor.meta.get("dataset", "mnist")
    images, labels = load_split(dataset, split, data_dir)
    if limit:
        images, labels = images[:limit], labels[:limit]
    probs, _ = predictor.outputs(images)
    preds = probs.argmax(1)  # the probabilities are monotone in the model's scores
    return {"dataset": dataset, "split": split, "images": images, "labels": labels.astype(np.int64),
            "probs": probs, "preds": preds, "confidence": probs[np.arange(len(preds)), preds]}


def c1_kernels(model) -> np.ndarray:
    """The first convolution's weights ``(6, 1, 5, 5)`` of any registered model."""
    import torch.nn as nn

    conv = next(m for m in model.c1.modules() if isinstance(m, nn.Conv2d))
    return conv.weight.detach().numpy()


def figures(predictor: Predictor, history: list[dict], preds: dict, metrics: dict) -> dict:
    """Every plot of the report, by title, as matplotlib figures."""
    model = describe(predictor.meta["model"], predictor.meta.get("model_config", {}))
    classes = predictor.classes
    figs = {}
    if history:
        figs["Training curves"] = viz.training_curves(history, model)
    figs["Confusion matrix"] = viz.confusion_heatmap(np.array(metrics["confusion_matrix"]), classes)
    figs["Per-class accuracy"] = viz.per_class_bars(metrics["per_class_accuracy"])
    figs["Misclassified test digits"] = viz.error_gallery(
        preds["images"], preds["labels"], preds["preds"], preds["confidence"], classes)
    figs["C1 kernels"] = viz.kernels(c1_kernels(predictor.model))
    x = preds["images"][0].astype(np.float32) / 255
    res = predictor.predict(x)[0]
    figs["Feature maps of test digit 0"] = viz.feature_maps(
        predictor.features(x), x, res["probs"],
        f"test digit 0 (label {int(preds['labels'][0])}): predicted "
        f"{res['verdict'] if res['label'] is None else res['label']}")
    if predictor.head == "rbf":
        figs["RBF prototypes"] = viz.prototypes(predictor.model.rbf.prototypes.numpy())
    return figs


def build_report(run: str | Path | None, data_dir: str | None = None, limit: int | None = None) -> str:
    """The HTML text of the report (evaluated on the whole test split unless ``limit``)."""
    from ..inference.evaluate import classification_metrics
    from .summary import layer_table

    loaded = load(run)
    predictor = Predictor.from_loaded(loaded)
    history, config = loaded.history, loaded.train_config
    preds = split_predictions(predictor, data_dir, "test", limit)
    metrics = classification_metrics(preds["labels"], preds["preds"], predictor.classes)
    figs = figures(predictor, history, preds, metrics)
    images = {title: base64.b64encode(viz.png_bytes(fig)).decode("ascii") for title, fig in figs.items()}
    meta = predictor.meta
    e = html.escape
    subset = f" (first {metrics['n']:,} images only)" if limit else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lenet5 report: {e(predictor.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{e(predictor.name)}: {e(describe(meta['model'], meta.get('model_config', {})))}</h1>",
        f"<p class=headline>{preds['dataset']} {preds['split']}{e(subset)}: "
        f"<b>{metrics['accuracy'] * 100:.2f}% accuracy, {metrics['errors']} errors</b> in "
        f"{metrics['n']:,} images. {meta.get('epoch', '?')} epochs; {e(predictor.posterior)} "
        f"probabilities. Generated {time.strftime('%Y-%m-%d %H:%M')} by <code>lenet5 report</code>.</p>",
        "<h2>Plots</h2>",
    ]
    for title, b64 in images.items():
        parts.append(f'<figure><img alt="{e(title)}" src="data:image/png;base64,{b64}">'
                     f"<figcaption>{e(title)}</figcaption></figure>")
    parts += robustness_section(predictor, preds)
    parts += ["<h2>Metrics by epoch</h2>", metrics_table(history),
              "<h2>Classification report</h2>", classification_table(metrics),
              "<h2>Model</h2>", summary_table(layer_table(predictor.model)),
              "<h2>Config</h2>",
              f"<pre>{e(json.dumps(config, indent=2))}</pre>",
              "<h2>Checkpoint</h2>",
              f"<pre>{e(json.dumps(_checkpoint_facts(loaded, run), indent=2))}</pre>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


ROBUST_N = 1000  # test digits the robustness curves are drawn on


def robustness_section(predictor: Predictor, preds: dict) -> list[str]:
    """Accuracy against the corruption suite's severities (:mod:`.robustness`) and the ten
    strong settings, on the first ``ROBUST_N`` test images of the report."""
    from ..data.corruptions import PROBE
    from . import robustness

    x = preds["images"][:ROBUST_N].astype(np.float32) / 255
    y = preds["labels"][:ROBUST_N]
    n = len(x)
    fig = robustness.figure(robustness.curves([predictor], x, y))
    b64 = base64.b64encode(viz.png_bytes(fig)).decode("ascii")
    probe = robustness.probe(predictor, x, y)
    rows = robustness.probe_table({predictor.name: probe})
    return [
        "<h2>Robustness</h2>",
        f"<p>Accuracy on the first {n:,} test images, each corrupted with no re-centring "
        f"(<code>lenet5 viz robustness</code>); the table gives one strong setting of each of "
        f"the {len(PROBE)} corruptions and their mean: <b>{probe['mean'] * 100:.2f}%</b>.</p>",
        f'<figure><img alt="Robustness curves" src="data:image/png;base64,{b64}">'
        "<figcaption>Accuracy against corruption severity</figcaption></figure>",
        _table(["setting", "accuracy %"], rows),
    ]


def write_report(run: str | Path | None, out: str | Path | None = None, data_dir: str | None = None,
                 limit: int | None = None) -> Path:
    """Write the report to ``out``: by default ``RUN/report.html`` for a run directory, else
    ``NAME-report.html`` here (NAME: the run's or the bundled model's name)."""
    from ..checkpoint import atomic_write_text
    from ..inference.load import resolve

    if out is None:
        is_dir = run is not None and Path(run).is_dir()
        out = Path(run) / "report.html" if is_dir else Path(f"{resolve(run).name}-report.html")
    return atomic_write_text(out, build_report(run, data_dir, limit))


def _checkpoint_facts(loaded: Loaded, run: str | Path | None) -> dict:
    keep = ("model", "model_config", "normalization", "dataset", "head", "engine", "epoch", "versions", "bundle")
    source = loaded.run_dir or (run if run is not None else loaded.name)
    return {"source": str(source), **{k: loaded.meta[k] for k in keep if k in loaded.meta}}


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def metrics_table(history: list[dict]) -> str:
    if not history:
        return "<p>No per-epoch metrics recorded.</p>"
    cols = [c for c in ("epoch", "lr", "train_loss", "train_error", "test_loss", "test_error",
                        "test_errors", "val_error", "images_per_s", "epoch_seconds")
            if any(c in r for r in history)]

    def fmt(c, v):
        if v is None or v == "":
            return ""
        if c.endswith("_error"):
            return f"{100 * v:.2f}%"
        if c in ("epoch", "test_errors"):
            return str(v)
        if c == "images_per_s":
            return f"{v:,.0f}"
        return f"{v:.4g}"

    return _table(cols, [[fmt(c, r.get(c, "")) for c in cols] for r in history], "num")


def classification_table(m: dict) -> str:
    rows = [[name, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"]]
            for name, r in m["report"].items()]
    for key, label in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        r = m[key]
        rows.append([label, f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"]])
    return _table(["class", "precision", "recall", "f1-score", "support"], rows, "num")


def summary_table(rows: list[dict]) -> str:
    body = [[r["layer"], "x".join(map(str, r["output"])), f"{r['params']:,}", f"{r['connections']:,}",
             f"{r['macs']:,}"] for r in rows]
    body.append(["total", "", *(f"{sum(r[k] for r in rows):,}" for k in ("params", "connections", "macs"))])
    return _table(["layer", "output", "params", "connections", "mult-adds"], body, "num")


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
.headline { font-size: 1.05em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { text-align: center; font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #eee; }
table.num td { text-align: right; } table.num td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""
