"""``TorchEngine``: the PyTorch engine (``--engine torch``), on CPU or GPU, one process or many.

Under ``torchrun`` the model is wrapped in DistributedDataParallel (batch-norm synchronised over
the global batch), SDLM's curvature is averaged over the ranks, and a rank's loss is weighted so
that a short last batch split unevenly still gives the global batch's mean gradient. Checkpoints
hold the unwrapped module's state.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..models import create_model
from .engine import Engine, output_scaled
from .losses import make_loss
from .optim import estimate_curvature, make_optimizer
from .optim_state import load_torch_optimizer_state, torch_optimizer_state


class TorchEngine(Engine):
    """Model + loss + optimiser in PyTorch."""

    name, label = "torch", "PyTorch"
    supports_ddp = supports_amp = True

    def __init__(self, cfg: TrainConfig, model_config: dict, device: torch.device | str = "cpu",
                 ddp: bool = False):
        device = torch.device(device)
        super().__init__(cfg, model_config, device, ddp)
        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
        model = create_model(cfg.model, **model_config)
        if getattr(model, "closed_form", False):  # Fig. 9's fitted baselines
            raise ValueError(f"{cfg.model} is fitted in closed form, not trained by gradient "
                             "descent: `lenet5 compare` fits and saves it (docs/fig9.md)")
        if ddp:  # batch-norm statistics over the global batch, as in one process
            from .distributed import has_batchnorm, sync_batchnorm

            if has_batchnorm(model):
                model = sync_batchnorm(model, device)
        self.model = model.to(device)
        self.module = model  # the unwrapped module: what checkpoints hold
        if ddp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        c = self.criterion
        self.loss_fn = make_loss(c.loss, c.map_j)
        if c.label_smoothing:
            self.loss_fn = lambda out, y: F.cross_entropy(out, y, label_smoothing=c.label_smoothing)
        self.eval_loss_fn = make_loss(c.loss, c.map_j)
        self.optimizer = make_optimizer(cfg.optimizer, self.module.parameters(), cfg.lr,
                                        cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.sdlm_mu)
        self.amp = cfg.amp
        self.steps = 0  # optimiser updates so far (Adam's bias correction, in checkpoints)
        self.graphed = None  # --cuda-graph: the step as device work, replayed (cuda_graph.py)
        if cfg.cuda_graph:
            if device.type != "cuda":
                raise ValueError(f"--cuda-graph needs a CUDA device, not {device.type}")
            if ddp:
                raise ValueError("--cuda-graph runs in one process, not under torchrun")
            from .cuda_graph import GraphedStep

            self.graphed = GraphedStep(self, cfg.batch_size)

    # -- training
    def begin_epoch(self, epoch: int, loader) -> None:
        torch.manual_seed(self.cfg.seed * 1_000_003 + epoch + 1)  # dropout, replayable on resume
        super().begin_epoch(epoch, loader)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.graphed is not None:
            self.graphed.set_lr(lr)

    def set_curvature(self, x: torch.Tensor) -> None:
        h = estimate_curvature(self.module, x)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ws = torch.distributed.get_world_size()
            for v in h.values():
                torch.distributed.all_reduce(v)
                v.div_(ws)
        self.optimizer.set_curvature(output_scaled(h, self.cfg.sdlm_output_d2))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.graphed is not None:
            out = self.graphed(x, y)  # its step count starts from the updates before this
            self.steps += 1
            return out
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(x)
            # A rank's slice of a short last batch can be empty; its mean would be NaN.
            loss = self.loss_fn(out.float(), y) if y.shape[0] else out.float().sum()
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.rank_weight(y.shape[0]) if self.ddp else loss).backward()
        self.optimizer.step()
        self.steps += 1
        errors = (self.scores(out.detach()).argmax(1) != y).sum()
        return loss.detach() * y.shape[0], errors

    def train_epoch(self, loader, step_lr=None, after_step=None, progress=None):
        """With ``--cuda-graph`` and a plain loader (no distortion or augmentation, one
        process, no weight average), the whole pass on the device (:meth:`GraphedStep.
        train_pass`); otherwise one :meth:`train_step` per batch."""
        if (self.graphed is not None and loader.distortion is None and loader.augment is None
                and loader.world_size == 1 and after_step is None):
            totals = self.graphed.train_pass(loader, step_lr, progress)
            self.steps += len(loader)
            return totals
        return super().train_epoch(loader, step_lr, after_step, progress)

    def rank_weight(self, n: int) -> float:
        """n * world / global batch: DDP then averages to the global batch's mean gradient.

        Exactly 1.0 for full batches; it matters when the last global batch splits unevenly.
        """
        counts = torch.tensor([n, 1], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(counts)
        return n * int(counts[1]) / int(counts[0])

    # -- evaluation
    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.module(x).float()

    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        out = self.outputs(x)
        y = y.to(out.device)
        loss = float(self.eval_loss_fn(out, y)) * y.shape[0]
        return loss, int((self.scores(out).argmax(1) != y).sum())

    # -- state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Detached and on the CPU: views of the live weights there, copies from a GPU."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    live_state = state_dict  # already without copies on the CPU

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})

    def optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return torch_optimizer_state(self.optimizer, self.module, self.cfg.optimizer, self.steps)

    def load_optimizer_state(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        self.steps = load_torch_optimizer_state(self.optimizer, self.module, self.cfg.optimizer,
                                                tensors, meta)
