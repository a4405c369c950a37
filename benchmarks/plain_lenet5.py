"""The baseline: LeNet-5 as a plain PyTorch script would write it (issue #7, runs 5 and 6).

ReLU, max-pooling, 28x28 input with padding 2 in C1, 61,706 parameters; Adam at lr 1e-3,
batch 64 (``--batch-size``), a per-batch Python loop over the training tensors shuffled every epoch (no
DataLoader, no torchvision), the whole test set evaluated after every epoch. Run on its own it
trains until the test accuracy reaches ``--target`` and prints one JSON line per event with a
wall-clock timestamp, which ``bench_time99.py`` turns into time-from-process-start:

    python benchmarks/plain_lenet5.py --data-dir ../shared/data --threads 2 --target 0.99
"""

from __future__ import annotations

import time

T_MAIN = time.time()  # before the heavy imports: what the parent's launch time is checked against

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics


def build_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 6, 14, 14)
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 5, 5)
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def load(data_dir: str | None, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 1, 28, 28)`` normalised float32 images and int64 labels."""
    from lenet5.data.datasets import load_split

    images, labels = load_split("mnist", split, data_dir)
    x = torch.from_numpy(images).float().div_(255).sub_(MEAN).div_(STD)[:, None]
    return x, torch.from_numpy(labels.astype("int64"))


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    model.train()
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
                  for i in range(0, len(x), batch))
    return correct / len(x)


def emit(event: str, **kw) -> None:
    print(json.dumps({"event": event, "t": time.time(), **kw}), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    emit("main", t_main=T_MAIN)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load(args.data_dir, "train")
    x, y = x[: args.limit_train], y[: args.limit_train]
    xt, yt = load(args.data_dir, "test")
    emit("data")
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = args.batch_size
    for epoch in range(1, args.max_epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            train_step(model, opt, x[idx], y[idx])
        emit("trained", epoch=epoch, images=len(x), seconds=time.perf_counter() - t0)
        acc = accuracy(model, xt, yt)
        emit("eval", epoch=epoch, steps=epoch * -(-len(x) // batch), test_accuracy=acc)
        if acc >= args.target:
            emit("reached", epoch=epoch, test_accuracy=acc)
            return 0
    emit("not_reached", epochs=args.max_epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
