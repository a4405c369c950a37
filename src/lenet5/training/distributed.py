"""What data-parallel training needs beyond torch itself: the ``--nproc`` launcher and
batch-norm over the global batch.

``lenet5 train --nproc N`` re-runs the same command under torchrun on this machine. No process
pool of our own: torchrun (``python -m torch.distributed.run``) starts the N ranks, sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, and kills the survivors when one
rank fails. :func:`lenet5.training.loop.train` reads those variables, wraps the model in
DistributedDataParallel (gloo on CPU, NCCL on GPUs) and shards every global batch.

Batch-norm layers are converted to synchronised ones (:func:`sync_batchnorm`) so that N ranks
at batch b normalise with the statistics of the whole global batch N*b, as one process would.
``torch.nn.SyncBatchNorm`` does that on GPUs but refuses CPU tensors, so on CPU (gloo) the
layers become :class:`SyncBatchNorm` below.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it) for the rendezvous store."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``, so the ranks do not launch again."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(nproc: int, argv: list[str], port: int | None = None) -> list[str]:
    """The command line that runs ``lenet5 train <argv>`` in ``nproc`` local ranks."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", LOCALHOST, "--master-port", str(port or free_port()),
        "-m", "lenet5", "train", *strip_nproc(argv),
    ]


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Run ``lenet5 train <argv>`` (``--nproc`` removed) in ``nproc`` ranks; torchrun's status."""
    return subprocess.run(torchrun_command(nproc, argv), check=False).returncode


# ----------------------------------------------------------------------------- batch-norm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the ranks' upstream gradients the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch-norm (1d or 2d input) whose training statistics are the global batch's.

    Each rank sums its part, ``all_reduce`` adds the parts, and the mean and the (biased)
    variance follow in two passes, as in plain batch-norm, rather than from E[x^2] - E[x]^2.
    The all-reduce is differentiable (:func:`all_reduce_sum`): its backward sums
    the upstream gradients of every rank, so each rank's gradient includes what its samples
    contribute to the other ranks' losses through the shared statistics, and DDP's average then
    equals the one-process gradient. A rank with an empty slice of a short last batch takes
    part with zero counts. Same parameters, buffers and ``state_dict`` as ``nn.BatchNorm2d``;
    outside training, or without a process group of two or more, it is plain batch-norm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected 2D, 3D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        out_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):  # statistics in float32 under autocast
            x = x.float()
        dims = [0, *range(2, x.dim())]  # every axis but the channel's
        shape = [1, -1] + [1] * (x.dim() - 2)  # a (C,) vector broadcast over x
        local_count = x.new_full((1,), x.numel() // x.shape[1])
        totals = all_reduce_sum(torch.cat([x.sum(dims), local_count]))  # (C + 1,)
        count = totals[-1]
        if count <= 1:
            raise ValueError("Expected more than 1 value per channel when training")
        mean = totals[:-1] / count  # (C,)
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / count  # (C,), biased
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var * count / (count - 1), alpha=m)
        return y.to(out_dtype)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every batch-norm layer synchronised across ranks (weights, running
    statistics and training mode carried over; ``state_dict`` keys unchanged). On CUDA,
    torch's own ``SyncBatchNorm``; elsewhere :class:`SyncBatchNorm`."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, sync_batchnorm(child, device))
    return out
