"""``--cuda-graph`` (``lenet5.training.cuda_graph``): the device-side optimiser updates against
``torch.optim``, step by step on real MNIST, on the CPU (the graph itself is recorded and
replayed only on a GPU: ``tests/test_cuda.py``), and the refusals of what it cannot run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lenet5.cli import main
from lenet5.config import resolve_config
from lenet5.data.datasets import load_split
from lenet5.data.transforms import Normalization, to_unit
from lenet5.models import make_config
from lenet5.training.cuda_graph import GraphedStep
from lenet5.training.engine import make_engine
from lenet5.training.optim_state import torch_optimizer_state


def pair(data_root, **kw):
    """Two PyTorch engines with the same weights: torch.optim's step and the device step."""
    cfg = resolve_config(None, overrides=dict(data_dir=str(data_root), progress=False,
                                              engine="torch", **kw))
    model_config = make_config(cfg.model, cfg.model_args).to_dict()
    engines = []
    for _ in range(2):
        torch.manual_seed(0)
        engines.append(make_engine(cfg, model_config, torch.device("cpu")))
    ref, ours = engines
    ours.graphed = GraphedStep(ours, cfg.batch_size, capture=False)
    return cfg, ref, ours


@pytest.mark.parametrize("kw", [
    dict(model="lenet5-modern-bn", optimizer="sgd", momentum=0.9, nesterov=True,
         weight_decay=5e-4, label_smoothing=0.1),
    dict(model="lenet5-modern", optimizer="sgd", momentum=0.5, weight_decay=1e-3),
    dict(model="lenet5-modern", optimizer="sgd", momentum=0.0),
    dict(model="lenet5-modern-bn", optimizer="adam", weight_decay=1e-4),
    dict(model="lenet5-modern", optimizer="adamw", weight_decay=5e-2),
    dict(model="lenet5-1998", optimizer="sgd", momentum=0.9),  # the MAP criterion
], ids=["sgd-nesterov-bn", "sgd-momentum", "sgd-plain", "adam", "adamw", "map-1998"])
def test_device_update_follows_torch_optim(data_root, kw):
    cfg, ref, ours = pair(data_root, **kw)
    images, labels = load_split("mnist", "train", data_root)
    norm = Normalization.make("paper" if cfg.model == "lenet5-1998" else "standard", "mnist")
    x = norm(to_unit(images[:6 * 64]))
    y = torch.as_tensor(labels[: 6 * 64].astype(np.int64))
    lrs = [0.05, 0.02, 0.04, 0.01, 0.03, 0.02] if cfg.optimizer == "sgd" else [1e-3, 2e-3,
                                                                                5e-4, 1e-3,
                                                                                3e-3, 1e-3]
    if cfg.model == "lenet5-1998":  # its MAP gradients are ~100x larger: rates as its own
        lrs = [lr / 100 for lr in lrs]
    for i, lr in enumerate(lrs):
        xb, yb = x[64 * i: 64 * (i + 1)], y[64 * i: 64 * (i + 1)]
        if i == 5:  # a short batch, as the last one of a pass
            xb, yb = xb[:37], yb[:37]
        out = []
        for engine in (ref, ours):
            engine.set_lr(lr)
            out.append(engine.train_step(xb, yb))
        (loss_r, err_r), (loss_o, err_o) = out
        torch.testing.assert_close(loss_o, loss_r, rtol=1e-5, atol=1e-6)
        assert int(err_o) == int(err_r)
    for (name, p_r), p_o in zip(ref.module.named_parameters(), ours.module.parameters()):
        # float32 round-off of a different order of operations, grown over 6 steps
        torch.testing.assert_close(p_o, p_r, rtol=1e-4, atol=5e-5, msg=lambda m: f"{name}: {m}")
    for b_r, b_o in zip(ref.module.buffers(), ours.module.buffers()):
        torch.testing.assert_close(b_o, b_r)
    # The state a checkpoint saves is the same too (torch's names, the same values).
    t_r, m_r = torch_optimizer_state(ref.optimizer, ref.module, cfg.optimizer, ref.steps)
    t_o, m_o = torch_optimizer_state(ours.optimizer, ours.module, cfg.optimizer, ours.steps)
    assert m_o == m_r and sorted(t_o) == sorted(t_r)
    for k in t_r:
        scale = float(t_r[k].abs().max())  # gradient sums: round-off scales with them
        torch.testing.assert_close(t_o[k], t_r[k], rtol=1e-4, atol=1e-5 * scale + 1e-7)


def test_resumed_state_is_picked_up(data_root):
    """After a resume the optimiser's loaded buffers, not fresh zeros, carry on."""
    cfg, ref, ours = pair(data_root, model="lenet5-modern", optimizer="adam")
    images, labels = load_split("mnist", "train", data_root)
    x = Normalization.make("standard", "mnist")(to_unit(images[:128]))
    y = torch.as_tensor(labels[:128].astype(np.int64))
    ref.set_lr(1e-3)
    ref.train_step(x[:64], y[:64])
    tensors, meta = ref.optimizer_state()
    ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    ours.load_optimizer_state({k: v.numpy() for k, v in tensors.items()}, meta)
    for engine in (ref, ours):
        engine.set_lr(1e-3)
        engine.train_step(x[64:], y[64:])
    for p_r, p_o in zip(ref.module.parameters(), ours.module.parameters()):
        torch.testing.assert_close(p_o, p_r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw, message", [
    (dict(cuda_graph=True, engine="numpy"), "cuda_graph is a PyTorch option"),
    (dict(cuda_graph=True, model="lenet5-1998", optimizer="sdlm"), "not sdlm"),
    (dict(cuda_graph=True, nproc=2), "one process"),
])
def test_what_it_cannot_run_is_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(None, overrides=kw)


def test_cuda_graph_without_a_gpu_is_one_clear_line(data_root, tmp_path, capsys):
    rc = main(["train", "--cuda-graph", "--device", "cpu", "--epochs", "1", "--limit-train",
               "64", "--data-dir", str(data_root), "--out", str(tmp_path / "run"),
               "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "--cuda-graph needs a CUDA device" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_auto_engine_is_torch_with_a_graph(data_root):
    cfg = resolve_config(None, overrides=dict(cuda_graph=True))
    from lenet5.training.engine import resolve_engine

    assert resolve_engine(cfg, torch.device("cuda")) == "torch"
    assert resolve_engine(replace(cfg, cuda_graph=False), torch.device("cpu")) == "compiled"
    json.dumps(cfg.to_dict())  # config.json records it


@pytest.mark.parametrize("optimizer, batch", [("sgd", 64), ("adam", 50)])
def test_a_pass_on_the_device_is_the_loaders_pass(data_root, optimizer, batch):
    """The whole-pass path (order and rates looked up on the device, the short last batch
    eager) takes the loader's own batches in its order, at the schedule's rate of each step:
    the same pass as one ``train_step`` per batch."""
    from lenet5.data.loader import TensorLoader
    from lenet5.training.schedules import lr_at

    cfg, ref, ours = pair(data_root, model="lenet5-modern-bn", optimizer=optimizer,
                          batch_size=batch, nesterov=optimizer == "sgd", weight_decay=5e-4)
    images, labels = load_split("mnist", "train", data_root)
    x = to_unit(images[:5 * batch + 21])
    y = torch.as_tensor(labels[: 5 * batch + 21].astype(np.int64))
    norm = Normalization.make("standard", "mnist")
    peak = 0.1 if optimizer == "sgd" else 2e-3
    for epoch in range(2):
        results = []
        for engine in (ref, ours):
            loader = TensorLoader(x, y, batch, norm, shuffle=True, seed=3, epoch=epoch)
            steps = len(loader)
            seen = []
            engine.set_lr(peak / 10)
            totals = engine.train_epoch(
                loader, lambda s: lr_at("onecycle-linear", peak, epoch, s, steps, 2),
                progress=lambda i, t: seen.append((i, t.seen)))
            results.append((totals, seen))
        (t_r, seen_r), (t_o, seen_o) = results
        assert seen_o == seen_r and t_o.seen == t_r.seen == 5 * batch + 21
        torch.testing.assert_close(torch.as_tensor(t_o.loss_sum), torch.as_tensor(t_r.loss_sum),
                                   rtol=1e-5, atol=1e-4)
        assert int(t_o.errors) == int(t_r.errors)
    assert ours.steps == ref.steps == 12
    assert ours.optimizer.param_groups[0]["lr"] == ref.optimizer.param_groups[0]["lr"]
    for (name, p_r), p_o in zip(ref.module.named_parameters(), ours.module.parameters()):
        torch.testing.assert_close(p_o, p_r, rtol=1e-4, atol=5e-5, msg=lambda m: f"{name}: {m}")
    for b_r, b_o in zip(ref.module.buffers(), ours.module.buffers()):
        torch.testing.assert_close(b_o, b_r, rtol=1e-4, atol=1e-5)
