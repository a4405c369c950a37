"""The reject option: "no digit" and "unsure" instead of a confident wrong answer.

A classifier trained on ten digits answers a digit for anything: a page of noise, a stray
dot, a scribble. The paper's Fig. 10 reports what a reader gains by refusing its least certain
answers (error on the rest against the share rejected); the 1998 model's MAP criterion gives a
"rubbish" class for the same reason (Section II-C). Here, two questions are asked in turn:

1. **no digit**: does the image look like any digit at all? A small network (one hidden layer
   of ``HIDDEN`` units) reads what the digit model already computes (its F6 and C5
   activations, the log-sum-exp of its outputs, its top probability) and three facts of the
   ink (share of the field covered, mean stroke width, share of grey pixels), and scores
   "not a digit". It is fitted on held-out training digits against generated non-digits
   (:mod:`lenet5.data.nondigits`), and its threshold is set on *other* held-out digits so that
   a chosen share of them (``target``) is refused.
2. **unsure**: is the answer clear? The top probability of the ten digits (normalised over the
   ten, so the 1998 model's rubbish mass does not count against it) below a threshold set the
   same way.

A :class:`Rejector` is a few thousand numbers stored as JSON beside the model
(``NAME.reject.json`` for a bundled model, ``reject.json`` in a run directory), written by
``benchmarks/bench_reject.py``; a model without one answers every image.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HIDDEN = 32
INK = 0.3  # a pixel this bright is ink (for coverage and stroke width)


def ink_facts(x: np.ndarray) -> np.ndarray:
    """``(N, 3)``: share of the 28x28 field that is ink, mean stroke width in pixels
    (2 area / boundary) and the share of lit pixels that are grey rather than ink."""
    m = x > INK
    p = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    interior = p[:, 1:-1, 1:-1] & p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:]
    cover = m.mean((1, 2))
    width = 2 * m.sum((1, 2)) / np.maximum((m & ~interior).sum((1, 2)), 1)
    lit = x > 0.05
    grey = (lit & (x < 0.6)).sum((1, 2)) / np.maximum(lit.sum((1, 2)), 1)
    return np.stack([cover, width, grey], 1).astype(np.float64)


def digit_probs(probs: np.ndarray) -> np.ndarray:
    """Probabilities renormalised over the ten digits (the RBF posterior's rubbish removed)."""
    return probs / np.maximum(probs.sum(1, keepdims=True), 1e-30)


def evidence(x: np.ndarray, probs: np.ndarray, raw: np.ndarray, maps: dict,
             head: str) -> np.ndarray:
    """``(N, D)``: what the "no digit" score reads (see the module docstring)."""
    n = x.shape[0]
    z = -raw if head == "rbf" else raw  # RBF outputs are distances: small means likely
    zmax = z.max(1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(1))
    return np.concatenate([ink_facts(x), maps["F6"].reshape(n, -1), maps["C5"].reshape(n, -1),
                           lse[:, None], digit_probs(probs).max(1, keepdims=True)], 1)


BLANK_REASON = "no digit: nothing stands out from the background"


@dataclass
class Rejector:
    """The fitted score and its two thresholds, with the facts of the calibration."""

    mean: list
    std: list
    w1: list  # (D, HIDDEN)
    b1: list
    w2: list  # (HIDDEN,)
    b2: float
    no_digit: float  # score above this: "no digit"
    unsure: float  # top digit probability below this: "unsure"
    calibration: dict  # where the thresholds come from (shares, counts, seeds)

    def score(self, ev: np.ndarray) -> np.ndarray:
        z = (ev - np.asarray(self.mean)) / np.asarray(self.std)
        h = np.maximum(z @ np.asarray(self.w1) + np.asarray(self.b1), 0)
        return h @ np.asarray(self.w2) + self.b2

    def set_thresholds(self, ev: np.ndarray, dprobs: np.ndarray, no_digit_share: float,
                       unsure_share: float) -> None:
        """Thresholds that refuse ``no_digit_share`` of the digits ``ev`` as "no digit" and
        ``unsure_share`` of the rest as "unsure"."""
        s = self.score(ev)
        self.no_digit = float(np.quantile(s, 1 - no_digit_share))
        self.unsure = float(np.quantile(dprobs[s <= self.no_digit].max(1), unsure_share))

    def refused(self, ev: np.ndarray, dprobs: np.ndarray) -> np.ndarray:
        """Per image: refused, as "no digit" or "unsure" (the ink-free field aside)."""
        return (self.score(ev) > self.no_digit) | (dprobs.max(1) < self.unsure)

    def decide(self, ev: np.ndarray, dprobs: np.ndarray) -> list[tuple[str | None, str | None]]:
        """Per image ``(verdict, reason)``: ``("no digit" | "unsure", why)`` or ``(None, None)``."""
        out = []
        for s, f, p in zip(self.score(ev), ev, dprobs):
            if f[0] <= 0:  # not one pixel of ink: an empty field, whatever the score says
                out.append(("no digit", BLANK_REASON))
            elif s > self.no_digit:
                out.append(("no digit", _why_no_digit(f, self.calibration)))
            elif p.max() < self.unsure:
                order = np.argsort(-p)
                out.append(("unsure", f"unsure: {order[0]} at {p[order[0]] * 100:.0f}% or "
                                      f"{order[1]} at {p[order[1]] * 100:.0f}% (answers below "
                                      f"{self.unsure * 100:.0f}% are withheld)"))
            else:
                out.append((None, None))
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_file(cls, path: str | Path) -> Rejector:
        try:
            d = json.loads(Path(path).read_text())
            r = cls(**d)
            np.asarray(r.w1, np.float64).reshape(len(r.mean), HIDDEN)
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a reject calibration ({type(e).__name__}: {e})") from None
        return r


def _why_no_digit(f: np.ndarray, cal: dict) -> str:
    cover, width, grey = f[:3]
    bounds = cal.get("digit_ink", {})
    if cover > bounds.get("cover_max", 1):
        return f"no digit: ink covers {cover * 100:.0f}% of the field (digits: at most " \
               f"{bounds['cover_max'] * 100:.0f}%)"
    if width > bounds.get("width_max", 1e9):
        return f"no digit: strokes {width:.1f} px wide (digits: at most {bounds['width_max']:.1f})"
    if grey > bounds.get("grey_max", 1):
        return f"no digit: {grey * 100:.0f}% of the marks are grey, like noise"
    return "no digit: the marks look like none of the ten digits"


def path_for(model_path: str | Path, run_dir: str | Path | None = None) -> Path:
    """Where the calibration of the model in ``model_path`` lives."""
    if run_dir is not None:
        return Path(run_dir) / "reject.json"
    p = Path(model_path)
    return p.with_name(p.stem + ".reject.json")


def fit(ev_digits: np.ndarray, ev_none: np.ndarray, seed: int = 0, steps: int = 1500,
        ) -> tuple[list, list, list, list, list, float]:
    """The "no digit" score fitted (binary cross-entropy, Adam, weight decay) on digits (0) and
    non-digits (1); returns ``mean, std, w1, b1, w2, b2``."""
    import torch

    x = np.concatenate([ev_digits, ev_none])
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.cat([torch.zeros(len(ev_digits)), torch.ones(len(ev_none))])
    # Each class weighs the same, however many of each there are.
    wt = torch.where(yt > 0, len(x) / (2 * len(ev_none)), len(x) / (2 * len(ev_digits)))
    g = torch.Generator().manual_seed(seed)
    l1, l2 = torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.Linear(HIDDEN, 1)
    with torch.no_grad():
        for p in (*l1.parameters(), *l2.parameters()):
            p.uniform_(-1, 1, generator=g).mul_(1 / np.sqrt(p.shape[-1]))
    params = [*l1.parameters(), *l2.parameters()]
    opt = torch.optim.Adam(params, 3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        logit = l2(torch.relu(l1(xt)))[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, yt, weight=wt)
        loss.backward()
        opt.step()
    return (mean.tolist(), std.tolist(), l1.weight.detach().T.tolist(), l1.bias.detach().tolist(),
            l2.weight.detach()[0].tolist(), float(l2.bias.detach()[0]))


def calibrate(ev_fit: np.ndarray, ev_none: np.ndarray, ev_cal: np.ndarray,
              dprobs_cal: np.ndarray, no_digit_share: float = 0.004,
              unsure_share: float = 0.002, seed: int = 0, facts: dict | None = None) -> Rejector:
    """Fit the score on ``ev_fit`` (digits) and ``ev_none``, then set the thresholds on the
    other held-out digits ``ev_cal``: ``no_digit_share`` of them score above the first, and
    ``unsure_share`` of the rest have a top probability below the second."""
    r = Rejector(*fit(ev_fit, ev_none, seed), 0.0, 0.0, {})
    r.set_thresholds(ev_cal, dprobs_cal, no_digit_share, unsure_share)
    ink = ev_cal[:, :3]  # clean held-out digits: the bounds a reason quotes
    r.calibration = {
        "no_digit_share": no_digit_share, "unsure_share": unsure_share, "seed": seed,
        "fit_digits": len(ev_fit), "fit_non_digits": len(ev_none), "calibration_digits": len(ev_cal),
        "digit_ink": {"cover_max": float(ink[:, 0].max()), "width_max": float(ink[:, 1].max()),
                      "grey_max": float(ink[:, 2].max())},
        **(facts or {}),
    }
    return r
