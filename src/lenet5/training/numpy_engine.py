"""``NumpyEngine``: ``lenet5 train --engine numpy`` through the same loop as PyTorch.

It implements the methods of :class:`lenet5.training.loop.TorchEngine` on top of :mod:`lenet5.scratch`,
so the data pipeline (batches arrive as torch tensors and leave as NumPy arrays), the
learning-rate schedules, metrics and checkpoints are shared. The checkpoint's weights use the
torch names and layouts, so either engine (or ``lenet5.checkpoint.load_model``) can read them,
and the optimiser state uses the layout of :mod:`lenet5.training.optim_state`, so a run started by
either engine resumes in the other.
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import TrainConfig
from ..models import get_entry
from ..scratch import build
from ..scratch import losses as np_losses
from ..scratch.layers import Dropout
from ..scratch.optim import estimate_curvature, make_optimizer
from .losses import make_loss


class NumpyEngine:
    """Model + loss + optimiser in NumPy (float32, one process, CPU)."""

    def __init__(self, cfg: TrainConfig, model_name: str, model_config: dict):
        if cfg.amp:
            raise ValueError("--amp is a PyTorch option; the NumPy engine computes in float32")
        self.cfg = cfg
        self.model = build(model_name, model_config, np.float32, seed=cfg.seed)
        entry = get_entry(model_name)
        loss_name = cfg.loss or entry.loss
        map_j = cfg.map_j if cfg.map_j is not None else model_config.get("map_j", 0.1)
        if loss_name in ("map", "mle") and entry.head != "rbf":
            raise ValueError(f"loss {loss_name!r} needs an RBF head; {model_name} has logits")
        self.loss_fn = np_losses.make_loss(loss_name, map_j, cfg.label_smoothing)
        self.eval_loss_fn = make_loss(loss_name, map_j)  # on torch tensors, for evaluate_split
        self.optimizer = make_optimizer(cfg.optimizer, self.model.params(), cfg.lr, cfg.momentum,
                                        cfg.nesterov, cfg.weight_decay, cfg.sdlm_mu)

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr

    def begin_epoch(self, epoch: int, loader) -> None:
        # Dropout masks drawn from (seed, epoch) alone, so a resumed run replays them.
        dropouts = [layer for _, layer in self.model.layers if isinstance(layer, Dropout)]
        for i, layer in enumerate(dropouts):
            layer.rng = np.random.default_rng([self.cfg.seed, epoch, i])
        if self.cfg.optimizer != "sdlm":
            return
        # h_kk from the first `sdlm_samples` patterns of this pass, frozen for the pass.
        order = loader.order()[: self.cfg.sdlm_samples].to(loader.images.device)
        x = loader.normalization(loader.images[order]).cpu().numpy()
        self.optimizer.set_curvature(estimate_curvature(self.model, x))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One update; returns (loss summed over the batch, misclassified count)."""
        target = y.cpu().numpy().astype(np.int64)
        out = self.model.forward(x.cpu().numpy(), train=True)  # (B, 10)
        loss, dout = self.loss_fn(out, target)
        self.optimizer.step(self.model.backward(dout))
        errors = int((self.model.scores(out).argmax(1) != target).sum())
        return loss * len(target), errors

    def outputs(self, x: torch.Tensor) -> np.ndarray:
        """Eval-mode raw outputs ``(B, 10)``: RBF distances or logits."""
        return self.model.forward(x.cpu().numpy(), train=False).copy()

    predict_outputs = outputs

    def scores(self, out):
        return -out if self.model.head == "rbf" else out

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()

    def live_state(self) -> dict[str, np.ndarray]:
        """The live arrays, for a per-step weight average (no copy)."""
        return self.model.live_state()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict(state)

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        self.optimizer.load_state_dict(tensors, meta)

    def load(self, state: dict[str, np.ndarray], opt_tensors: dict[str, np.ndarray],
             opt_meta: dict) -> None:
        self.load_state_dict(state)
        self.load_optimizer_state(opt_tensors, opt_meta)
