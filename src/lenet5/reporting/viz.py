"""Pictures of a model and its results, drawn headless with matplotlib's Agg renderer.

Every function takes plain NumPy data and returns a :class:`matplotlib.figure.Figure` built
with the object-oriented API (no pyplot, no global backend state, safe in a web server);
:func:`save` writes it as PNG or SVG and :func:`png_bytes` returns PNG bytes for embedding.

- :func:`feature_maps`: every layer's activations for one digit (C1..F6; C5's 120 units as a
  10x12 grid, F6's 84 as the 7x12 picture the RBF prototypes are drawn in, Fig. 3);
- :func:`kernels`: the learned C1 kernels; :func:`prototypes`: the RBF bitmaps;
- :func:`training_curves`: train and test error by epoch in the style of Fig. 5, with the
  paper's curve overlaid for ``lenet5-1998``;
- :func:`confusion_heatmap`, :func:`error_gallery`, :func:`per_class_bars`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

DPI = 100
# Fig. 5 of the paper (docs/lenet5-1998.md): test error % after passes 1..9, then "about 0.95"
# up to pass 20; training error 0.35% after 19 passes. Drawn only for lenet5-1998.
PAPER_TEST_ERROR = (2.67, 2.24, 1.47, 1.42, 1.42, 1.08, 1.03, 1.05, 0.97)
PAPER_PLATEAU = 0.95
PAPER_PASSES = 20
PAPER_TRAIN_ERROR_19 = 0.35


def save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` atomically (a reader never sees half a picture); the suffix
    picks the format (``.png`` or ``.svg``)."""
    from ..checkpoint import atomic_write

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"{path}: write .png or .svg")
    # No "Software" tag: it carries matplotlib's URL, and reports must hold no external URLs.
    meta = {"Software": None} if fmt == "png" else {"Creator": None}
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta))


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def mosaic(maps: np.ndarray, cols: int, gap: int = 1) -> np.ndarray:
    """``(N, H, W)`` -> one ``(rows*(H+gap)-gap, cols*(W+gap)-gap)`` image; gaps are NaN."""
    n, h, w = maps.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i, m in enumerate(maps):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = m
    return out


def _show(ax, img: np.ndarray, title: str, cmap: str = "gray", symmetric: bool = False) -> None:
    finite = img[np.isfinite(img)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if symmetric:
        hi = max(abs(lo), abs(hi)) or 1.0
        lo = -hi
    ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1,
              interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def feature_maps(feats: dict[str, np.ndarray], image: np.ndarray, probs=None,
                 title: str = "") -> Figure:
    """The input and C1..F6 of one digit; ``probs`` (10) adds the output as bars.

    Each layer has its own grey scale, black = its lowest activation, white = its highest.
    """
    fig = Figure(figsize=(10, 7), layout="constrained")
    gs = fig.add_gridspec(3, 6)
    c = {k: np.asarray(v, np.float64) for k, v in feats.items()}
    _show(fig.add_subplot(gs[0, 0]), np.asarray(image, np.float64), "input 28x28")
    _show(fig.add_subplot(gs[0, 1:4]), mosaic(c["C1"], 6), f"C1: {len(c['C1'])} maps 28x28")
    _show(fig.add_subplot(gs[0, 4:6]), mosaic(c["S2"], 3), f"S2: {len(c['S2'])} maps 14x14")
    _show(fig.add_subplot(gs[1, 0:3]), mosaic(c["C3"], 8), f"C3: {len(c['C3'])} maps 10x10")
    _show(fig.add_subplot(gs[1, 3:6]), mosaic(c["S4"], 8), f"S4: {len(c['S4'])} maps 5x5")
    c5 = c["C5"].reshape(-1)
    c5_cols = 12 if c5.size % 12 == 0 else int(np.ceil(np.sqrt(c5.size)))
    _show(fig.add_subplot(gs[2, 0:2]), mosaic(c5[:, None, None], c5_cols, gap=0),
          f"C5: {c5.size} units")
    f6 = c["F6"].reshape(-1)
    f6_img = f6.reshape(12, 7) if f6.size == 84 else mosaic(f6[:, None, None], 12, gap=0)
    _show(fig.add_subplot(gs[2, 2]), f6_img, "F6: 84 as 7x12" if f6.size == 84 else f"F6: {f6.size}")
    if probs is not None:
        ax = fig.add_subplot(gs[2, 3:6])
        p = np.asarray(probs, np.float64)
        bars = ax.bar(range(len(p)), p, color="#999999")
        bars[int(p.argmax())].set_color("#c0392b")
        ax.set_xticks(range(len(p)))
        ax.set_ylim(0, 1)
        ax.set_title("output probabilities", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def kernels(weight: np.ndarray, title: str = "C1 kernels") -> Figure:
    """``(N, 1, k, k)`` conv weights, one shared symmetric scale (red +, blue -)."""
    w = np.asarray(weight, np.float64).reshape(len(weight), *np.shape(weight)[-2:])
    fig = Figure(figsize=(1.4 * len(w), 1.9), layout="constrained")
    vmax = float(np.abs(w).max()) or 1.0
    for i, k in enumerate(w):
        ax = fig.add_subplot(1, len(w), i + 1)
        ax.imshow(k, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"map {i}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title} (colour scale +-{vmax:.2f})", fontsize=10)
    return fig


def prototypes(protos: np.ndarray, title: str = "RBF prototypes (Fig. 3), 7x12") -> Figure:
    """``(10, 84)`` +-1 vectors as 12x7 bitmaps, ink black."""
    p = np.asarray(protos, np.float64).reshape(len(protos), 12, 7)
    fig = Figure(figsize=(8, 1.9), layout="constrained")
    for i, b in enumerate(p):
        ax = fig.add_subplot(1, len(p), i + 1)
        _show(ax, b, str(i), cmap="gray_r")
    fig.suptitle(title, fontsize=10)
    return fig


def training_curves(history: list[dict], model: str = "", title: str = "") -> Figure:
    """Error % by epoch from ``metrics.jsonl`` rows; the paper's Fig. 5 for ``lenet5-1998``."""
    if not history:
        raise ValueError("no epochs recorded (empty metrics.jsonl)")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ep = [r["epoch"] for r in history]
    if all("train_set_error" in r for r in history):  # the paper's: fixed weights, whole set
        ax.plot(ep, [100 * r["train_set_error"] for r in history], "o-", color="#2c7fb8",
                label="training-set error (after the epoch)")
    else:  # running error over the epoch's (possibly distorted) batches
        ax.plot(ep, [100 * r["train_error"] for r in history], "o-", color="#2c7fb8", label="training error")
    ax.plot(ep, [100 * r["test_error"] for r in history], "s-", color="#d95f0e", label="test error")
    if all("raw_test_error" in r for r in history):  # --ema: the live weights beside the average
        ax.plot(ep, [100 * r["raw_test_error"] for r in history], "s:", color="#d95f0e", mfc="none",
                label="test error, live weights (without the average)")
    if all("val_error" in r for r in history):
        ax.plot(ep, [100 * r["val_error"] for r in history], "^-", color="#31a354", label="validation error")
    if model == "lenet5-1998":
        n = len(PAPER_TEST_ERROR)
        ax.plot(range(1, n + 1), PAPER_TEST_ERROR, "s--", color="#7f7f7f", mfc="none",
                label="paper test error (Fig. 5)")
        ax.plot([n, PAPER_PASSES], [PAPER_TEST_ERROR[-1], PAPER_PLATEAU], ":", color="#7f7f7f",
                label=f"paper: about {PAPER_PLATEAU}% to pass {PAPER_PASSES}")
        ax.plot([19], [PAPER_TRAIN_ERROR_19], "o", color="#7f7f7f", mfc="none",
                label=f"paper training error, pass 19 ({PAPER_TRAIN_ERROR_19}%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training set iterations (epochs)")
    ax.set_ylabel("error rate (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    last = history[-1]
    ax.set_title(title or f"{model}: test error {100 * last['test_error']:.2f}% after epoch {last['epoch']}",
                 fontsize=10)
    return fig


def confusion_heatmap(cm: np.ndarray, classes: list[str], title: str = "confusion matrix") -> Figure:
    """Counts annotated; colour on a log scale so single errors show next to the diagonal."""
    cm = np.asarray(cm)
    k = len(classes)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(np.log10(1 + cm), cmap="Blues")
    fig.colorbar(im, ax=ax, label="log10(1 + count)")
    thresh = np.log10(1 + cm.max()) / 2
    for t in range(k):
        for p in range(k):
            if cm[t, p]:
                ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=7,
                        color="white" if np.log10(1 + cm[t, p]) > thresh else "black")
    ax.set_xticks(range(k), classes)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    errors, n = int(cm.sum() - np.trace(cm)), int(cm.sum())
    ax.set_title(f"{title}: {errors} errors / {n}", fontsize=10)
    return fig


def error_gallery(images: np.ndarray, y_true, y_pred, confidence, classes=None,
                  max_n: int = 60, cols: int = 10, title: str = "misclassified") -> Figure:
    """Misclassified digits titled ``true->predicted confidence``, most confident first.

    One mosaic in one axes (fast to draw), each tile labelled above.
    """
    images = np.asarray(images, np.float64)
    y_true, y_pred, confidence = map(np.asarray, (y_true, y_pred, confidence))
    wrong = np.nonzero(y_true != y_pred)[0]
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:max_n]
    name = (lambda i: classes[i]) if classes is not None else str
    cols = max(1, min(cols, len(wrong)))
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(max(5.0, cols * 0.95 + 0.3), rows * 1.1 + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    total = int((y_true != y_pred).sum())
    ax.set_title(f"{title}: {len(wrong)} of {total} (true->predicted, confidence)", fontsize=10)
    if not len(wrong):
        ax.text(0.5, 0.5, "no misclassified digits", ha="center", va="center")
        return fig
    h, w = images.shape[1:]
    gap_x, gap_y = 4, 9  # room between tiles for the labels
    tiles = images[wrong] / max(float(images[wrong].max()), 1e-12)
    canvas = np.zeros((rows * (h + gap_y) + 1, cols * (w + gap_x)))
    for n, (i, tile) in enumerate(zip(wrong, tiles)):
        r, c = divmod(n, cols)
        y0, x0 = r * (h + gap_y) + gap_y, c * (w + gap_x) + gap_x // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = tile
        ax.text(x0 + w / 2, y0 - 1.5, f"{name(int(y_true[i]))}->{name(int(y_pred[i]))} "
                f"{confidence[i]:.2f}", ha="center", va="bottom", fontsize=7, color="#c0392b")
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, lw=0.5, ec="#999999"))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    return fig


def per_class_bars(per_class: dict[str, float], title: str = "per-class accuracy") -> Figure:
    names, acc = list(per_class), 100 * np.array(list(per_class.values()), np.float64)
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(names, acc, color="#2c7fb8")
    bars[int(acc.argmin())].set_color("#d95f0e")
    for b, a in zip(bars, acc):
        ax.text(b.get_x() + b.get_width() / 2, a, f"{a:.2f}", ha="center", va="bottom", fontsize=7)
    lo = float(acc.min())
    ax.set_ylim(max(0.0, lo - max(1.0, (100 - lo) * 0.5)), 100.5)
    ax.set_ylabel("accuracy (%)")
    ax.set_xlabel("class")
    ax.set_title(f"{title} (lowest in orange)", fontsize=10)
    return fig
