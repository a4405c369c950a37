"""The engine interface: what the training loop asks of PyTorch, NumPy or a compiled engine.

An engine holds a model, its criterion and its optimiser in its own arrays (torch tensors,
NumPy arrays, ...). The loop (:mod:`.loop`) holds everything else: data, learning-rate
schedules, weight averaging, metrics and checkpoints. Batches reach an engine as torch tensors
from :class:`~lenet5.data.loader.TensorLoader`, normalised and on the loop's device; the engine
converts them. Evaluation splits and an engine that takes the loader whole (the compiled one's
:meth:`Engine.train_epoch`) may get NumPy arrays instead: the loop holds its data as NumPy
arrays when the engine is not PyTorch, so the compiled engine trains without importing it. State leaves it under the torch models' names and layouts, and optimiser state in
the layout of :mod:`.optim_state`, so a run started in one engine resumes in any other.

Decided here once, for every engine:

- :func:`resolve_criterion`: the loss (the config's, else the model's), MAP's constant j, the
  head, and the refusal of MAP/MLE without an RBF head;
- :func:`curvature_batch`: the patterns SDLM estimates h_kk on before each pass (the first
  ``sdlm_samples`` of the pass's order, paper Appendix C);
- :func:`make_engine`: the engine by name (:data:`ENGINES`), and what only PyTorch offers
  (several processes, bfloat16 autocast).

A new engine subclasses :class:`Engine`, implements its abstract methods, and adds a line to
:data:`ENGINES`. To run a whole pass in one compiled kernel it overrides
:meth:`Engine.train_epoch` and falls back to the default (one :meth:`Engine.train_step` per
batch) when the loop asks for per-step work: a per-step learning rate or a weight average.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..config import TrainConfig, compiled_refusal
from ..data.loader import TensorLoader, array
from ..data.transforms import Normalization
from ..models import get_entry
from ..models.spec import scores as head_scores

if TYPE_CHECKING:
    import torch

Array = Any  # an engine's own array type: torch.Tensor, np.ndarray, ...
State = dict[str, Any]  # parameter/buffer name (torch's) -> array


# ----------------------------------------------------------------------------- shared decisions


@dataclass(frozen=True)
class Criterion:
    """The training criterion and how outputs read, decided once for every engine."""

    loss: str  # "map" | "mle" | "ce"
    map_j: float  # MAP's constant j (Eq. 9): the "rubbish" class
    head: str  # "rbf": outputs are distances, smaller is better | "logits"
    label_smoothing: float  # cross-entropy in training only; 0 otherwise


def resolve_criterion(cfg: TrainConfig, model_config: dict) -> Criterion:
    """The config's loss, else the model's own; j from the config, else the model config."""
    entry = get_entry(cfg.model)
    loss = cfg.loss or entry.loss
    map_j = cfg.map_j if cfg.map_j is not None else model_config.get("map_j", 0.1)
    if loss in ("map", "mle") and entry.head != "rbf":
        raise ValueError(f"loss {loss!r} needs an RBF head; {cfg.model} has logits")
    smoothing = cfg.label_smoothing if loss == "ce" else 0.0
    return Criterion(loss, map_j, entry.head, smoothing)


def curvature_batch(loader: TensorLoader, samples: int) -> Any:
    """SDLM's h_kk sample: the first ``samples`` patterns of this pass's order, normalised and
    undistorted, ``(n, 1, 32, 32)`` in the loader's arrays and device. Every rank takes the same
    ones."""
    return loader.normalization(loader.take(loader.order()[:samples]))


def output_scaled(h: dict, output_d2: float) -> dict:
    """h_kk as if the loss's second derivative per output unit were ``output_d2`` instead of
    the 2 every engine starts its Gauss-Newton pass from (``sdlm_output_d2``). The pass is
    linear in that start value, so this is the same as propagating ``output_d2`` itself."""
    if output_d2 == 2.0:
        return h
    return {k: v * (output_d2 / 2.0) for k, v in h.items()}


# ----------------------------------------------------------------------------- the interface


@dataclass
class PassTotals:
    """One rank's sums over a training pass (the engine's own scalars: floats or tensors)."""

    loss_sum: Any  # the criterion summed over the samples
    errors: Any  # misclassified samples
    seen: int  # samples
    compile_seconds: float = 0.0  # of the pass's wall time, spent compiling kernels (first run)


StepLr = Callable[[int], float]  # step within the pass -> learning rate
Progress = Callable[[int, PassTotals], None]  # after step i: the totals so far (may raise)


class Engine(ABC):
    """A model, its criterion and optimiser in one framework's arrays, behind the calls the
    training loop makes. Methods marked abstract are what an engine must write; the others have
    defaults built on them.

    Construction: ``Engine(cfg, model_config, device, ddp)``, through :func:`make_engine`. The
    initial weights are drawn from ``cfg.seed`` alone (PyTorch: the global generator, which the
    engine seeds).
    """

    name: ClassVar[str]  # as in ``--engine``
    label: ClassVar[str]  # in messages: "PyTorch", "NumPy", ...
    supports_ddp: ClassVar[bool] = False  # several processes under torchrun
    supports_amp: ClassVar[bool] = False  # bfloat16 autocast

    def __init__(self, cfg: TrainConfig, model_config: dict, device: torch.device | str,
                 ddp: bool = False):
        self.cfg, self.device, self.ddp = cfg, device, ddp
        self.criterion = resolve_criterion(cfg, model_config)

    # -- training
    @abstractmethod
    def set_lr(self, lr: float) -> None:
        """The optimiser's learning rate from now on."""

    @abstractmethod
    def set_curvature(self, x: torch.Tensor) -> None:
        """SDLM: estimate h_kk on the patterns ``x`` (:func:`curvature_batch`), averaged over
        them (and over the ranks), and freeze it for the coming pass."""

    @abstractmethod
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, Any]:
        """One optimiser update on a batch; returns ``(loss summed over it, errors)``."""

    def begin_epoch(self, epoch: int, loader: TensorLoader) -> None:
        """Before pass ``epoch`` (0-based): SDLM's curvature for the pass (every
        ``sdlm_every`` passes; between, the last estimate holds, and a resumed run has it from
        its checkpoint). Engines that draw their own random numbers (dropout masks) reseed them
        here from ``(seed, epoch)``."""
        if self.cfg.optimizer == "sdlm" and epoch % self.cfg.sdlm_every == 0:
            self.set_curvature(curvature_batch(loader, self.cfg.sdlm_samples))

    def train_epoch(self, loader: TensorLoader, step_lr: StepLr | None = None,
                    after_step: Callable[[], None] | None = None,
                    progress: Progress | None = None) -> PassTotals:
        """One pass over ``loader`` (already at its epoch); this rank's totals.

        ``step_lr(step)``: the rate of each step, when the schedule moves within a pass (else
        the rate set before the pass holds); ``after_step()``: after every update (the weight
        average reads :meth:`live_state`); ``progress(step, totals)``: after every step (the
        progress bar and the divergence check; it may raise). An engine that runs a pass in
        one kernel overrides this, returns to it when ``step_lr`` or ``after_step`` is given,
        and calls ``progress`` at least once: at the end, with the last step's index
        (``len(loader) - 1``).
        """
        totals = PassTotals(0.0, 0, 0)
        for step, (x, y) in enumerate(loader):
            if step_lr is not None:
                self.set_lr(step_lr(step))
            loss, errors = self.train_step(x, y)
            if after_step is not None:
                after_step()
            totals.loss_sum, totals.errors = totals.loss_sum + loss, totals.errors + errors
            totals.seen += y.shape[0]
            if progress is not None:
                progress(step, totals)
        return totals

    # -- evaluation
    @abstractmethod
    def outputs(self, x: torch.Tensor) -> Array:
        """Eval-mode raw outputs ``(B, 10)`` in the engine's arrays: distances or logits."""

    def scores(self, out: Array) -> Array:
        """Higher is better (negated RBF distances, or logits): ``argmax(1)`` predicts."""
        return head_scores(out, self.criterion.head)

    @abstractmethod
    def eval_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """Eval mode, no update: ``(criterion summed over the batch, errors)``. The criterion
        is the training one without label smoothing."""

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, norm: Normalization,
                 batch_size: int, rank: int = 0, world: int = 1) -> dict:
        """Loss and errors over a whole split (``x`` in [0, 1], unnormalised), each sample
        exactly once across ranks: rank r takes samples r, r + world, ...; ``count`` is how
        many were evaluated in all."""
        import torch

        x, y = torch.as_tensor(x), torch.as_tensor(y)
        idx = torch.arange(rank, x.shape[0], world, device=x.device)
        loss_sum = torch.zeros((), dtype=torch.float64)
        errors = torch.zeros((), dtype=torch.int64)
        for i in range(0, idx.shape[0], batch_size):
            sel = idx[i : i + batch_size]
            batch_loss, batch_errors = self.eval_step(norm(x[sel]), y[sel])
            loss_sum += batch_loss
            errors += batch_errors
        count = idx.shape[0]
        if world > 1:
            import torch.distributed as dist

            packed = torch.tensor([float(loss_sum), float(errors), float(count)],
                                  dtype=torch.float64)
            dist.all_reduce(packed)
            loss_sum, errors, count = packed[0], packed[1].long(), int(packed[2])
        return {"loss": float(loss_sum) / count, "errors": int(errors),
                "error": int(errors) / count, "count": count}

    # -- state, under the torch models' names and layouts
    @abstractmethod
    def state_dict(self) -> State:
        """Parameters and buffers, as copies (or CPU views) the engine will not write to."""

    @abstractmethod
    def live_state(self) -> State:
        """The same, without copies where the engine can: read right away, after each step
        (the per-step weight average), never kept or written to."""

    @abstractmethod
    def load_state_dict(self, state: State) -> None:
        """Copy weights in (NumPy arrays or the engine's own); names and shapes must match."""

    @abstractmethod
    def optimizer_state(self) -> tuple[State, dict]:
        """``(tensors, meta)`` in the layout of :mod:`lenet5.training.optim_state`."""

    @abstractmethod
    def load_optimizer_state(self, tensors: State, meta: dict) -> None:
        """The inverse of :meth:`optimizer_state`, from any engine's checkpoint."""


# ----------------------------------------------------------------------------- by name

class ArrayEngine(Engine):
    """The state calls of an engine whose ``model`` keeps its arrays under the torch names
    (``state_dict``, ``live_state``, ``load_state_dict``, as :class:`lenet5.scratch.Model`
    does) and whose ``optimizer`` has an ``lr`` and ``state_dict``/``load_state_dict`` in the
    layout of :mod:`.optim_state`: the NumPy and compiled engines."""

    model: Any  # forward(x, train), backward(dout) -> grads, state calls
    optimizer: Any  # step(grads), set_curvature(h), lr, state calls

    def __init__(self, cfg: TrainConfig, model_config: dict, device: torch.device | str,
                 ddp: bool = False):
        from ..scratch import losses as np_losses

        super().__init__(cfg, model_config, device, ddp)
        self.dtype = np.dtype(cfg.precision)  # the model's arithmetic; inputs are cast to it
        c = self.criterion  # (out, target) -> (batch mean, d loss / d out); eval: no smoothing
        self.loss_fn = np_losses.make_loss(c.loss, c.map_j, c.label_smoothing)
        self.eval_loss_fn = np_losses.make_loss(c.loss, c.map_j, grad=False)

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = lr

    def set_curvature(self, x: torch.Tensor) -> None:
        from ..scratch.optim import estimate_curvature

        self.optimizer.set_curvature(output_scaled(
            estimate_curvature(self.model, self.inputs(x)), self.cfg.sdlm_output_d2))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One update; returns (loss summed over the batch, misclassified count)."""
        target = array(y).astype(np.int64)
        out = self.model.forward(self.inputs(x), train=True)  # (B, 10)
        loss, dout = self.loss_fn(out, target)
        self.optimizer.step(self.model.backward(dout))
        errors = int((self.scores(out).argmax(1) != target).sum())
        return loss * len(target), errors

    def inputs(self, x) -> np.ndarray:
        """A batch as a NumPy array in the model's precision."""
        return array(x).astype(self.dtype, copy=False)

    def eval_step(self, x, y) -> tuple[float, int]:
        out = self.outputs(x)
        target = array(y).astype(np.int64)
        loss, _ = self.eval_loss_fn(out, target)
        return loss * len(target), int((self.scores(out).argmax(1) != target).sum())

    def state_dict(self) -> State:
        return self.model.state_dict()

    def live_state(self) -> State:
        return self.model.live_state()

    def load_state_dict(self, state: State) -> None:
        self.model.load_state_dict(state)

    def optimizer_state(self) -> tuple[State, dict]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, tensors: State, meta: dict) -> None:
        self.optimizer.load_state_dict(tensors, meta)


# --engine name -> (module, class), imported on first use (the compiled engine needs Numba);
# "auto" is resolved to one of them first (resolve_engine).
ENGINES: dict[str, tuple[str, str]] = {
    "torch": ("lenet5.training.torch_engine", "TorchEngine"),
    "numpy": ("lenet5.training.numpy_engine", "NumpyEngine"),
    "compiled": ("lenet5.training.compiled_engine", "CompiledEngine"),
}


def engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    module, cls = ENGINES[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"the {name} engine is not available here ({e})") from None


def device_type(device: torch.device | str) -> str:
    """``"cpu"``, ``"cuda"``, ...: the kind of a device given as a ``torch.device`` or a string."""
    return str(device).split(":")[0]


def resolve_engine(cfg: TrainConfig, device: torch.device | str, world: int = 1) -> str:
    """The engine ``--engine auto`` means for this run; any other name as it is.

    The compiled engine wherever it can run the run: one process on a CPU, no bfloat16
    autocast and a model it has kernels for
    (:func:`lenet5.config.compiled_refusal`). It is the fastest there (``docs/results.md``:
    3-15x the NumPy engine per pattern, 1.3-1.4x at batch 64-256, about 2x a plain PyTorch
    script) and single-threaded, so a busy machine slows it at most about 2x. Otherwise
    PyTorch: GPUs, DDP, amp and every other model."""
    if cfg.engine != "auto":
        return cfg.engine
    if (device_type(device) != "cpu" or world > 1 or cfg.nproc > 1 or cfg.amp or cfg.cuda_graph
            or compiled_refusal(cfg)):
        return "torch"
    return "compiled"


def make_engine(cfg: TrainConfig, model_config: dict, device: torch.device | str,
                ddp: bool = False) -> Engine:
    """The engine ``cfg.engine`` names (``auto``: :func:`resolve_engine`), with a freshly
    initialised model."""
    cls = engine_class(resolve_engine(cfg, device, 2 if ddp else 1))
    if ddp and not cls.supports_ddp:
        raise ValueError(f"the {cls.label} engine runs in one process; "
                         "use --engine torch with torchrun")
    if cfg.amp and not cls.supports_amp:
        raise ValueError(f"--amp is a PyTorch option; the {cls.label} engine computes in float32")
    if cfg.precision != "float32" and cls.name == "torch":
        raise ValueError(f"precision {cfg.precision} is the numpy and compiled engines'; "
                         "PyTorch computes in float32 here")
    return cls(cfg, model_config, device, ddp)
