"""Learning-rate schedules: pure functions of (epoch, step), so a resumed run needs no
scheduler state and every engine computes the same rates. No PyTorch here: the compiled engine
trains without importing it.
"""

from __future__ import annotations

import math

# The paper's global rate by pass (1-based, Section III-C): 5e-4, 2e-4, 1e-4, 5e-5, 1e-5.
PAPER_ETA = ((2, 5e-4), (5, 2e-4), (8, 1e-4), (12, 5e-5), (10**9, 1e-5))


def paper_eta(epoch: int) -> float:
    """Eta for 0-based ``epoch`` (pass ``epoch + 1``)."""
    for last_pass, eta in PAPER_ETA:
        if epoch + 1 <= last_pass:
            return eta
    raise AssertionError("unreachable")


def lr_at(schedule: str, base_lr: float, epoch: int, step: int, steps_per_epoch: int,
          epochs: int, step_size: int = 5, gamma: float = 0.5) -> float:
    """Learning rate at ``step`` (0-based, within ``epoch``) of a run of ``epochs`` epochs."""
    t = (epoch + step / max(steps_per_epoch, 1)) / max(epochs, 1)  # progress in [0, 1)
    if schedule == "none":
        return base_lr
    if schedule == "paper":  # the table, scaled so that pass 1 uses base_lr
        return base_lr * paper_eta(epoch) / PAPER_ETA[0][1]
    if schedule == "step":
        return base_lr * gamma ** (epoch // step_size)
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "onecycle":  # linear warm-up for 25% from lr/25, then cosine to lr/1e4
        warm = 0.25
        if t < warm:
            return base_lr * (1 / 25 + (1 - 1 / 25) * t / warm)
        u = (t - warm) / (1 - warm)
        return base_lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * u)))
    if schedule == "onecycle-linear":  # linear warm-up from 0 for 20%, then linear down to 0
        warm = 0.2
        return base_lr * (t / warm if t < warm else (1 - t) / (1 - warm))
    raise ValueError(f"unknown schedule {schedule!r}")
