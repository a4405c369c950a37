"""Time to 99% with the data in device memory: the ``fast`` recipe as one resident loop.

``lenet5 train --preset fast --device cuda`` spends most of a GPU's time launching kernels
(batch 64: ~60 small kernels a step, 937 steps). This is the same recipe (lenet5-modern-bn,
SGD Nesterov 0.9, weight decay 5e-4, peak rate 0.4 on the one-cycle-linear schedule, label
smoothing 0.1, batch 64, one pass) written so that a whole training step is device work alone:
the batch is an ``index_select`` of the resident split by a step counter held on the device,
the learning rate a lookup in a table on the device, the update ``--cuda-graph``'s device-side
SGD (``lenet5.training.cuda_graph.sgd_update``), so the step can be captured once as a CUDA
graph and replayed (``graph=True``); ``lenet5 train --cuda-graph`` does the same inside the
usual loop, its order drawn on the host and each batch copied into the graph's input. Without a graph
the same step runs eagerly; on a CPU that is how its smoke test checks it learns.

The last short batch is dropped (static shapes), so a pass is 937 steps of 64.

Run by ``bench_cuda.py``; alone: ``python benchmarks/cuda_speedrun.py --data-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

from lenet5.data.datasets import load_split
from lenet5.data.transforms import Normalization, to_unit
from lenet5.models import create_model
from lenet5.training.cuda_graph import sgd_update
from lenet5.training.schedules import lr_at

FAST = dict(model="lenet5-modern-bn", batch=64, lr=0.4, epochs=1, momentum=0.9,
            weight_decay=5e-4, label_smoothing=0.1, schedule="onecycle-linear")


def resident(data_dir: str | None, device: torch.device, split: str):
    """(train x, train y, eval x, eval y) normalised on ``device``. ``split="test"``: all 60,000
    training images and the test set; ``split="val"``: the first 50,000 and the last 10,000."""
    norm = Normalization.make("standard", "mnist")
    xs, ys = load_split("mnist", "train", data_dir)
    x = norm(to_unit(xs)).to(device)
    y = torch.as_tensor(ys.astype(np.int64)).to(device)
    if split == "val":
        return x[:50_000], y[:50_000], x[50_000:], y[50_000:]
    xt, yt = load_split("mnist", "test", data_dir)
    return x, y, norm(to_unit(xt)).to(device), torch.as_tensor(yt.astype(np.int64)).to(device)


class Run:
    """One training run of the fast recipe, its whole state on the device."""

    def __init__(self, data, *, seed: int, batch: int, lr: float, epochs: int, amp: bool = False,
                 model: str = FAST["model"]):
        self.x, self.y, self.x_eval, self.y_eval = data
        self.device = self.x.device
        torch.manual_seed(seed)
        self.model = create_model(model).to(self.device).train()
        self.params = [p for p in self.model.parameters()]
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.batch, self.epochs, self.amp = batch, epochs, amp
        self.steps_per_epoch = self.x.shape[0] // batch
        total = self.steps_per_epoch * epochs
        self.lrs = torch.tensor([lr_at(FAST["schedule"], lr, e, s, self.steps_per_epoch, epochs)
                                 for e in range(epochs) for s in range(self.steps_per_epoch)],
                                dtype=torch.float32, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        n = self.x.shape[0]
        self.order = torch.stack([torch.randperm(n, device=self.device, generator=gen)
                                  [: self.steps_per_epoch * batch].view(-1, batch)
                                  for _ in range(epochs)]).view(total, batch)
        self.t = torch.zeros(1, dtype=torch.int64, device=self.device)  # the step counter
        self.graph: torch.cuda.CUDAGraph | None = None

    def step(self) -> None:
        """One update, device work only (no host sync): capturable."""
        idx = self.order.index_select(0, self.t).view(-1)
        xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
        # No autocast weight cache: a captured graph must not hold casts made outside it.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp,
                            cache_enabled=False):
            out = self.model(xb)
        loss = F.cross_entropy(out.float(), yb, label_smoothing=FAST["label_smoothing"])
        grads = list(torch.autograd.grad(loss, self.params))
        lr = self.lrs.index_select(0, self.t).view(())
        sgd_update(self.params, grads, self.bufs, lr, FAST["momentum"], True, FAST["weight_decay"])
        self.t.add_(1)

    def capture(self) -> None:
        """Warm up on a side stream (cuDNN and cuBLAS pick their kernels), put the state back,
        then record one step as a CUDA graph."""
        state = [t.detach().clone() for t in self.state_tensors()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step()
        with torch.no_grad():
            for t, s in zip(self.state_tensors(), state):
                t.copy_(s)

    def state_tensors(self) -> list[torch.Tensor]:
        return [*self.params, *self.bufs, *self.model.buffers(), self.t]

    @torch.no_grad()
    def accuracy(self) -> float:
        self.model.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            hits = sum(int((self.model(xb).argmax(1) == yb).sum())
                       for xb, yb in zip(self.x_eval.split(10_000), self.y_eval.split(10_000)))
        self.model.train()
        return hits / self.x_eval.shape[0]

    def train(self) -> dict:
        """Every pass then an evaluation; seconds from the first step (device synchronised)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        evals = []
        for epoch in range(self.epochs):
            for _ in range(self.steps_per_epoch):
                self.graph.replay() if self.graph is not None else self.step()
            sync()
            train_s = time.perf_counter() - t0
            acc = self.accuracy()
            evals.append({"epoch": epoch + 1, "train_s": train_s, "s": time.perf_counter() - t0,
                          "accuracy": acc})
        return {"evals": evals, "accuracy": evals[-1]["accuracy"],
                "seconds_to_99": next((e["s"] for e in evals if e["accuracy"] >= 0.99), None)}


def one(data, *, graph: bool, **kw) -> dict:
    run = Run(data, **kw)
    started = time.perf_counter()
    if graph:
        run.capture()
    capture_s = time.perf_counter() - started
    return {**kw, "graph": graph, "capture_s": capture_s, **run.train()}


# (label, split, graph, settings): the fast recipe on the test set as chosen on a CPU's
# validation split; larger batches are explored on the validation split only.
PLAN = [
    *[("fast, eager", "test", False, dict(seed=s, batch=64, lr=0.4, epochs=1)) for s in range(3)],
    *[("fast, graph", "test", True, dict(seed=s, batch=64, lr=0.4, epochs=1)) for s in range(3)],
    *[("fast, graph, bf16", "test", True, dict(seed=s, batch=64, lr=0.4, epochs=1, amp=True))
      for s in range(3)],
    *[(f"val: graph, batch {b}, lr {lr}, {e} pass", "val", True,
       dict(seed=0, batch=b, lr=lr, epochs=e))
      for b, lr, e in [(64, 0.4, 1), (128, 0.4, 1), (128, 0.6, 1), (256, 0.8, 1), (256, 0.8, 2),
                       (512, 1.0, 2), (512, 1.0, 3)]],
]


def main(argv: list[str] | None = None, rows: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--json")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    data = {s: resident(args.data_dir, device, s) for s in ("test", "val")}
    rows = [] if rows is None else rows  # bench_cuda.py passes a list to collect them
    for label, split, graph, kw in PLAN:
        if graph and device.type != "cuda":
            continue
        try:
            r = one(data[split], graph=graph, **kw)
        except Exception as e:  # noqa: BLE001 - one variant failing must not lose the others
            r = {**kw, "graph": graph, "error": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc()[-2000:]}
        rows.append({"label": label, "split": split, **r})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "traceback"}), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
