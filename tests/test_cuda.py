"""The CUDA path: skipped here (no GPU on the project's CPU machine), run where a device is lent
(``python benchmarks/bench_cuda.py`` runs this file first). Each test compares with the CPU, so
it can fail on a GPU machine for a real reason, not only crash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenet5.cli import main
from lenet5.data.datasets import load_split
from lenet5.data.transforms import Normalization, to_unit
from lenet5.models import create_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture
def full_float32():
    """Convolutions and matrix products in full float32, not TF32 (PyTorch lets cuDNN use
    TF32 by default: on an H200 that moved the RBF outputs by up to 2e-4 relative), for the
    comparisons with the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("name", ["lenet5-1998", "lenet5-modern-bn"])
def test_forward_and_gradients_match_the_cpu(data_root, name, full_float32):
    images, labels = load_split("mnist", "test", data_root)
    torch.manual_seed(0)
    model = create_model(name).train()
    norm = Normalization.make("paper" if name == "lenet5-1998" else "standard", "mnist")
    x, y = norm(to_unit(images[:64])), torch.as_tensor(labels[:64].astype(np.int64))
    results = []
    for device in ("cpu", "cuda"):
        m = create_model(name).train().to(device)
        m.load_state_dict(model.state_dict())
        out = m(x.to(device))
        loss = torch.nn.functional.cross_entropy(out if name != "lenet5-1998" else -out,
                                                 y.to(device))
        loss.backward()
        results.append((out.detach().cpu(), [p.grad.detach().cpu() for p in m.parameters()]))
    (out_c, grads_c), (out_g, grads_g) = results
    torch.testing.assert_close(out_g, out_c, rtol=1e-4, atol=1e-4)
    for g_g, g_c in zip(grads_g, grads_c):
        torch.testing.assert_close(g_g, g_c, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("extra", [[], ["--amp"]])
def test_lenet5_train_on_cuda_learns_and_loads_on_the_cpu(data_root, tmp_path, extra):
    from lenet5.inference.load import load

    run = tmp_path / "run"
    assert main(["train", "--device", "cuda", "--model", "lenet5-modern", "--epochs", "1",
                 "--limit-train", "5000", "--data-dir", str(data_root), "--out", str(run),
                 "--no-progress", *extra]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["engine"] == "torch" and config["device"] == "cuda"
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["test_error"] < 0.20, row  # 11.5% after this one short pass on the CPU
    loaded = load(str(run), device="cpu")  # a GPU run's checkpoint is device-neutral
    assert loaded.model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_bundled_model_predicts_alike_on_cuda_and_cpu(data_root, full_float32):
    from lenet5.inference.load import load

    images, _ = load_split("mnist", "test", data_root)
    outs = []
    for device in ("cpu", "cuda"):
        loaded = load("lenet5-1998", device=device)
        norm = Normalization(**loaded.meta["normalization"])
        with torch.no_grad():
            outs.append(loaded.model(norm(to_unit(images[:100])).to(device)).cpu())
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(outs[1].argmin(1), outs[0].argmin(1))


def fast_engines(data_root):
    """Two PyTorch engines of the fast preset on the GPU with the same initial weights:
    eager, then with ``--cuda-graph``."""
    from lenet5.config import resolve_config
    from lenet5.models import make_config
    from lenet5.training.engine import make_engine

    engines = []
    for graph in (False, True):
        cfg = resolve_config("fast", overrides=dict(data_dir=str(data_root), progress=False,
                                                    engine="torch", cuda_graph=graph))
        torch.manual_seed(0)
        engines.append(make_engine(cfg, make_config(cfg.model, cfg.model_args).to_dict(),
                                   torch.device("cuda")))
    return engines


def test_cuda_graph_steps_follow_the_eager_ones(data_root, full_float32):
    """``--cuda-graph``: full batches replayed from the graph, the short one eagerly, against
    torch.optim's eager steps on the same GPU (``tests/test_cuda_graph.py`` checks the
    arithmetic on the CPU; this, the capture and replay)."""
    images, labels = load_split("mnist", "train", data_root)
    x = Normalization.make("standard", "mnist")(to_unit(images[:6 * 64 + 37])).cuda()
    y = torch.as_tensor(labels[:6 * 64 + 37].astype(np.int64)).cuda()
    engines = fast_engines(data_root)
    ref, ours = engines
    for i, lr in enumerate([0.05, 0.1, 0.2, 0.1, 0.05, 0.02, 0.01]):
        xb, yb = x[64 * i: 64 * (i + 1)], y[64 * i: 64 * (i + 1)]  # the last: 37 images
        out = []
        for engine in (ref, ours):
            engine.set_lr(lr)
            out.append(engine.train_step(xb, yb))
        torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-4, atol=1e-4)
    assert ours.graphed.graph is not None  # the full batches were replayed
    for p_r, p_o in zip(ref.module.parameters(), ours.module.parameters()):
        torch.testing.assert_close(p_o, p_r, rtol=1e-4, atol=5e-5)
    for b_r, b_o in zip(ref.module.buffers(), ours.module.buffers()):
        torch.testing.assert_close(b_o, b_r, rtol=1e-4, atol=1e-5)


def test_lenet5_train_with_a_cuda_graph_learns(data_root, tmp_path):
    from lenet5.inference.load import load

    run = tmp_path / "run"
    assert main(["train", "--preset", "fast", "--device", "cuda", "--cuda-graph",
                 "--limit-train", "10000", "--data-dir", str(data_root), "--out", str(run),
                 "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["cuda_graph"] is True and config["engine"] == "torch"
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["test_error"] < 0.05, row  # 2.3% on the CPU (engine torch)
    loaded = load(str(run), device="cpu")
    assert loaded.model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_a_graphed_pass_is_the_eager_pass(data_root, full_float32):
    """``--cuda-graph``'s whole-pass path (batches selected, normalised and stepped inside
    the replayed graph; the short last batch eager) against one eager step per batch."""
    from lenet5.data.loader import TensorLoader
    from lenet5.training.schedules import lr_at

    images, labels = load_split("mnist", "train", data_root)
    x = to_unit(images[:20 * 64 + 37]).cuda()
    y = torch.as_tensor(labels[:20 * 64 + 37].astype(np.int64)).cuda()
    norm = Normalization.make("standard", "mnist")
    engines = fast_engines(data_root)
    results = []
    for engine in engines:
        loader = TensorLoader(x, y, 64, norm, shuffle=True, seed=1)
        totals = engine.train_epoch(loader, lambda s: lr_at("onecycle-linear", 0.4, 0, s, 21, 1))
        results.append((float(totals.loss_sum), int(totals.errors), totals.seen))
    assert engines[1].graphed.pass_graph is not None
    assert results[1][2] == results[0][2] == 20 * 64 + 37
    assert abs(results[1][0] - results[0][0]) <= 1e-3 * abs(results[0][0])
    assert abs(results[1][1] - results[0][1]) <= 3  # argmax ties may differ by rounding
    for p_r, p_o in zip(engines[0].module.parameters(), engines[1].module.parameters()):
        torch.testing.assert_close(p_o, p_r, rtol=2e-3, atol=2e-4)
