"""``--cuda-graph``: the PyTorch engine's training step captured once and replayed.

On a GPU, LeNet-5 at batch 64 is launch-bound: a step is some 60 small kernels, each costing
the host more time to launch than the device to run. A CUDA graph records the step's kernels
once and replays them in one call (``benchmarks/cuda_speedrun.py``: 0.35 s for the fast
recipe's pass on an H200 against 2.5-3.3 s eagerly, ``docs/results.md``).

For that, a step must be device work alone, with nothing read back and nothing chosen on the
host: so the optimiser update here is ``torch.optim``'s arithmetic for SGD (momentum,
Nesterov, weight decay) and Adam / AdamW written as ``torch._foreach`` ops whose learning rate
and step count are tensors on the device (:func:`sgd_update`, :func:`adam_update`, tested
against ``torch.optim`` in ``tests/test_cuda_graph.py``). Their state lives in the engine's
``torch.optim`` optimiser's ``state``, under torch's own names, so checkpoints and resuming
are unchanged.

:class:`GraphedStep` runs full batches (``batch_size`` images) as graph replays: the batch is
copied into the graph's static input, the graph replayed, its loss and error count copied
out. Any other batch (the short last one) runs the very same step eagerly. ``capture=False``
runs every step eagerly: how the tests check the arithmetic on a CPU.
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")  # what --cuda-graph can update on the device


@torch.no_grad()
def sgd_update(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
               lr: torch.Tensor, momentum: float, nesterov: bool, weight_decay: float) -> None:
    """``torch.optim.SGD.step`` (dampening 0) with ``lr`` a device scalar; ``grads`` are
    overwritten. A zero momentum buffer gives torch's first step (it starts from the gradient)."""
    if weight_decay:
        torch._foreach_add_(grads, params, alpha=weight_decay)
    if momentum:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        if nesterov:
            torch._foreach_add_(grads, bufs, alpha=momentum)
        else:
            for g, b in zip(grads, bufs):
                g.copy_(b)
    torch._foreach_mul_(grads, lr)
    torch._foreach_sub_(params, grads)


@torch.no_grad()
def adam_update(params: list[torch.Tensor], grads: list[torch.Tensor],
                exp_avg: list[torch.Tensor], exp_avg_sq: list[torch.Tensor], step: torch.Tensor,
                lr: torch.Tensor, betas: tuple[float, float], eps: float, weight_decay: float,
                decoupled: bool) -> None:
    """``torch.optim.Adam`` (``decoupled``: ``AdamW``) step, no amsgrad, with ``lr`` and the
    step count ``step`` device scalars; ``step`` is advanced here, ``grads`` overwritten."""
    b1, b2 = betas
    step.add_(1)
    if weight_decay and decoupled:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    elif weight_decay:
        torch._foreach_add_(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avg, grads, 1 - b1)
    torch._foreach_mul_(exp_avg_sq, b2)
    torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - b2)
    step_size = lr / (1 - torch.pow(b1, step))
    denom = torch._foreach_sqrt(exp_avg_sq)
    torch._foreach_div_(denom, torch.sqrt(1 - torch.pow(b2, step)))
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(exp_avg, denom)
    torch._foreach_mul_(update, step_size)
    torch._foreach_sub_(params, update)


class GraphedStep:
    """A :class:`~lenet5.training.torch_engine.TorchEngine`'s training step as device work
    alone, replayed from a CUDA graph for full batches (``capture=True``) or run eagerly."""

    def __init__(self, engine, batch_size: int, capture: bool = True):
        cfg = engine.cfg
        if cfg.optimizer not in OPTIMIZERS:
            raise ValueError(f"--cuda-graph updates with {', '.join(OPTIMIZERS)}, "
                             f"not {cfg.optimizer}")
        self.engine, self.batch_size, self.capture = engine, batch_size, capture
        self.device = engine.device
        self.params = [p for g in engine.optimizer.param_groups for p in g["params"]]
        self.lr = torch.tensor(float(cfg.lr), dtype=torch.float32, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.state: list[list[torch.Tensor]] | None = None
        self.step_count: torch.Tensor | None = None

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)  # a device write, no synchronisation

    # -- the step
    def _optimizer_state(self) -> None:
        """The update's state tensors, in the optimiser's ``state`` under torch's names:
        created as zeros where a fresh run has none yet, taken as they are after a resume."""
        e, cfg = self.engine, self.engine.cfg
        group = e.optimizer.param_groups[0]
        names = (["exp_avg", "exp_avg_sq"] if cfg.optimizer != "sgd"
                 else ["momentum_buffer"] if group["momentum"] else [])  # as torch keeps
        state = e.optimizer.state
        for p in self.params:
            for name in names:
                buf = state[p].get(name)
                if buf is None or buf.device != p.device:
                    state[p][name] = (torch.zeros_like(p) if buf is None
                                      else buf.to(p.device))
        self.state = [[state[p][name] for p in self.params] for name in names]
        self.step_count = torch.tensor(float(e.steps), dtype=torch.float32, device=self.device)

    def run(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward and update, nothing read back: ``(loss sum, errors)`` tensors."""
        e, cfg = self.engine, self.engine.cfg
        e.model.train()
        # No autocast weight cache: a graph must not keep casts made outside it.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=e.amp,
                            cache_enabled=False):
            out = e.model(x)
            loss = e.loss_fn(out.float(), y)
        grads = list(torch.autograd.grad(loss, self.params))
        group = e.optimizer.param_groups[0]
        if cfg.optimizer == "sgd":
            sgd_update(self.params, grads, self.state[0] if self.state else [], self.lr,
                       group["momentum"],
                       group["nesterov"], group["weight_decay"])
        else:
            adam_update(self.params, grads, self.state[0], self.state[1], self.step_count,
                        self.lr, group["betas"], group["eps"], group["weight_decay"],
                        decoupled=cfg.optimizer == "adamw")
        errors = (e.scores(out.detach().float()).argmax(1) != y).sum()
        return loss.detach() * y.shape[0], errors

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.state is None:
            self._optimizer_state()
        if not self.capture or x.shape[0] != self.batch_size:
            return self.run(x, y)
        if self.graph is None:
            self._record(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss.clone(), self.errors.clone()

    def _record(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.clone(), y.clone()

        def step():
            self.loss, self.errors = self.run(self.x, self.y)

        self.graph = self._capture(step)

    def _capture(self, fn, extra: tuple[torch.Tensor, ...] = ()) -> torch.cuda.CUDAGraph:
        """Warm ``fn`` up on a side stream (cuDNN picks its kernels, autograd its buffers), put
        every tensor the warm-up changed back as it was, then record ``fn`` as a graph."""
        live = [*self.params, *[t for ts in self.state for t in ts], self.step_count,
                *self.engine.module.buffers(), *extra]
        saved = [t.detach().clone() for t in live]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        with torch.no_grad():
            for t, s in zip(live, saved):
                t.copy_(s)
        return graph

    # -- a whole pass: batches and rates looked up on the device
    def train_pass(self, loader, step_lr, progress):
        """One pass of a plain loader (no distortion, no augmentation, one process) with the
        batches of its own order: the order and the pass's rates go to the device once, and
        each full batch is a replay that selects its images, normalises them, steps and adds
        to the running totals, with no work on the host but the replay. The short last batch
        runs eagerly. Returns :class:`~lenet5.training.engine.PassTotals` of device scalars."""
        from .engine import PassTotals

        b, n = loader.batch_size, loader.images.shape[0]
        steps, full = len(loader), n // b
        lrs = [step_lr(i) if step_lr is not None else float(self.lr) for i in range(steps)]
        order = torch.from_numpy(loader.order()).to(self.device)
        if self.state is None:
            self._optimizer_state()
        key = (loader.images.data_ptr(), loader.labels.data_ptr(), b, full, loader.normalization)
        if getattr(self, "pass_key", None) != key:  # new split or shape: new buffers, new graph
            self.pass_key, self.pass_graph = key, None
            self.images, self.labels, self.norm = loader.images, loader.labels, loader.normalization
            self.order = torch.empty(full, b, dtype=torch.int64, device=self.device)
            self.lrs = torch.empty(full, dtype=torch.float32, device=self.device)
            self.t = torch.zeros(1, dtype=torch.int64, device=self.device)
            self.loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
            self.error_sum = torch.zeros((), dtype=torch.int64, device=self.device)
        self.order.copy_(order[: full * b].view(full, b))
        self.lrs.copy_(torch.tensor(lrs[:full], dtype=torch.float32))
        for t in (self.t, self.loss_sum, self.error_sum):
            t.zero_()
        if self.capture and self.pass_graph is None and full:
            self.pass_graph = self._capture(self._pass_step,
                                            (self.t, self.loss_sum, self.error_sum))
        totals = PassTotals(self.loss_sum, self.error_sum, 0)
        for i in range(full):
            self.pass_graph.replay() if self.capture else self._pass_step()
            totals.seen += b
            if progress is not None:
                progress(i, totals)
        if steps > full:  # the short last batch (the loader's drop_last is off)
            rest = order[full * b:]
            self.engine.set_lr(lrs[-1])
            loss, errors = self.run(self.norm(self.images[rest]), self.labels[rest])
            self.loss_sum.add_(loss)
            self.error_sum.add_(errors)
            totals.seen += rest.shape[0]
            if progress is not None:
                progress(steps - 1, totals)
        self.engine.set_lr(lrs[-1])  # the optimiser group too, for the checkpoint
        return PassTotals(self.loss_sum.clone(), self.error_sum.clone(), totals.seen)

    def _pass_step(self) -> None:
        """Step ``t`` of the pass: its batch and rate by the step counter, all on the device."""
        idx = self.order.index_select(0, self.t).view(-1)
        x = self.norm(self.images.index_select(0, idx))
        y = self.labels.index_select(0, idx)
        self.lr.copy_(self.lrs.index_select(0, self.t).view(()))
        loss, errors = self.run(x, y)
        self.loss_sum.add_(loss)
        self.error_sum.add_(errors)
        self.t.add_(1)
