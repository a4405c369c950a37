"""One digit swept through a transformation, frame by frame: ``lenet5 viz animate``.

The 1993 LeNet-1 animations (and the paper's Fig. 13) showed a digit moving, growing,
turning, thickening or drowning in noise while the network's answer stayed put. Each frame
here shows the transformed digit, C1 and C3 (the first two convolution layers' maps, each
layer on one grey scale for the whole film so that frames compare), and the answer with its
probabilities; :func:`gif` writes the frames as an animated GIF with Pillow.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from ..data import corruptions as C
from .viz import mosaic

# The sweep of each transformation: severity as a function of t in [0, 1). Two-sided ones
# swing from clean to one side, back through clean to the other and home.
SWEEPS = {
    "rotate": ("degrees", lambda t: 45 * np.sin(2 * np.pi * t)),
    "shift": ("pixels, vertical", lambda t: 7 * np.sin(2 * np.pi * t)),
    "scale": ("factor", lambda t: 2 ** (np.sin(2 * np.pi * t))),  # half to twice the size
    "squeeze": ("q", lambda t: 0.45 * np.sin(2 * np.pi * t)),
    "stroke": ("steps (- thin, + thick)", lambda t: np.where(
        np.sin(2 * np.pi * t) < 0, 0.8, 2.5) * np.sin(2 * np.pi * t)),
    "noise": ("std", lambda t: 0.6 * np.sin(np.pi * t)),
    "saltpepper": ("share", lambda t: 0.25 * np.sin(np.pi * t)),
    "blur": ("sigma", lambda t: 2.5 * np.sin(np.pi * t)),
}


def transform(x: np.ndarray, kind: str, severity: float, seed: int = 0) -> np.ndarray:
    """``(28, 28)`` digit in [0, 1] at ``severity`` of ``kind`` (see :data:`SWEEPS`)."""
    if kind not in SWEEPS:
        raise ValueError(f"unknown transformation {kind!r}; choose from {', '.join(SWEEPS)}")
    if kind == "shift":
        return C.affine(x[None], ty=-float(severity))[0]  # up first, as a pen would move
    if kind == "stroke":
        return C.corrupt(x, "thicken" if severity >= 0 else "thin", abs(float(severity)))
    return C.corrupt(x, kind, float(severity), seed)


MAX_FRAMES = 360  # a degree a frame for a whole turn; each frame is a figure drawn


def check(kind: str, n: int) -> None:
    """What :func:`frames` refuses, said before any model is loaded."""
    if kind not in SWEEPS:
        raise ValueError(f"unknown transformation {kind!r}; choose from {', '.join(SWEEPS)}")
    if not 2 <= n <= MAX_FRAMES:
        raise ValueError(f"an animation has 2 to {MAX_FRAMES} frames, got {n}")


def frames(predictor, x: np.ndarray, kind: str, n: int = 36, seed: int = 0) -> list[dict]:
    """``n`` frames: ``severity``, ``image``, ``result`` (predictor's answer), ``maps``."""
    check(kind, n)
    sweep = SWEEPS[kind][1]
    sev = [float(sweep(i / n)) for i in range(n)]
    # Noise keeps its draw from frame to frame (only its strength changes): no flicker.
    imgs = np.stack([transform(x, kind, s, seed) for s in sev])
    results, maps = predictor.predict_with_features(imgs)
    return [{"severity": s, "image": imgs[i], "result": results[i],
             "maps": {k: v[i] for k, v in maps.items()}} for i, s in enumerate(sev)]


def frame_figure(f: dict, kind: str, scales: dict, classes: list[str], name: str) -> Figure:
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    gs = fig.add_gridspec(2, 5)
    ax = fig.add_subplot(gs[:, 0])
    ax.imshow(f["image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"{kind} {f['severity']:+.2f}", fontsize=9)
    ax.set_xlabel(SWEEPS[kind][0], fontsize=8)
    for col, layer, cols in ((1, "C1", 3), (3, "C3", 4)):
        a = fig.add_subplot(gs[0, col : col + 2])
        lo, hi = scales[layer]
        a.imshow(np.ma.masked_invalid(mosaic(np.asarray(f["maps"][layer]), cols)), cmap="gray",
                 vmin=lo, vmax=hi, interpolation="nearest")
        a.set_title(f"{layer}: {len(f['maps'][layer])} maps", fontsize=9)
    for a in fig.axes:
        a.set_xticks([])
        a.set_yticks([])
    r = f["result"]
    probs = np.asarray(r["digit_probs"] if "digit_probs" in r else r["probs"])
    bars = fig.add_subplot(gs[1, 1:5])
    colours = ["#999999"] * len(probs)
    if r["label"] is not None:
        colours[int(r["label"])] = "#c0392b"
    bars.bar(range(len(probs)), probs, color=colours)
    bars.set_xticks(range(len(probs)), classes, fontsize=8)
    bars.set_ylim(0, 1)
    bars.tick_params(labelsize=7)
    answer = "no digit" if r["label"] is None else classes[int(r["label"])]
    fig.suptitle(f"{name}: {answer}  ({probs.max() * 100:.0f}%)", fontsize=12)
    return fig


def gif(predictor, x: np.ndarray, kind: str, n: int = 36, ms: int = 120, seed: int = 0) -> bytes:
    """The animated GIF of ``x`` swept through ``kind`` (``n`` frames, ``ms`` each), looping."""
    fs = frames(predictor, x, kind, n, seed)
    scales = {}
    for layer in ("C1", "C3"):
        vals = np.concatenate([np.ravel(f["maps"][layer]) for f in fs])
        scales[layer] = (float(vals.min()), float(vals.max()) if vals.max() > vals.min() else 1.0)
    images = []
    for f in fs:
        buf = io.BytesIO()
        frame_figure(f, kind, scales, predictor.classes, predictor.name).savefig(
            buf, format="png", dpi=80, metadata={"Software": None})
        images.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    out = io.BytesIO()
    first, *rest = [im.quantize(colors=64, method=Image.Quantize.MEDIANCUT) for im in images]
    first.save(out, format="GIF", save_all=True, append_images=rest, duration=ms, loop=0,
               optimize=False)
    return out.getvalue()
