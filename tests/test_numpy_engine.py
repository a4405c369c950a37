"""``lenet5 train --engine numpy``: the NumPy engine through the shared training loop."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from lenet5 import checkpoint as ckpt
from lenet5.config import resolve_config
from lenet5.inference.load import load
from lenet5.training.loop import train
from tests.train_support import train_straight_and_resumed


def cfg_for(data_root, out, **kw):
    base = dict(data_dir=str(data_root), out=str(out), progress=False, threads=1, engine="numpy")
    return resolve_config(kw.pop("preset", None), overrides={**base, **kw})


@pytest.mark.slow
def test_numpy_engine_trains_saves_and_resumes(data_root, tmp_path):
    kw = dict(model="lenet5-1998", optimizer="adam", lr=3e-3, batch_size=16, limit_train=1000,
              eval_batch_size=2000)
    *_, row = train_straight_and_resumed(partial(cfg_for, data_root), tmp_path, **kw)
    assert row["test_error"] < 0.5  # learnt something in 2,000 patterns
    straight, _, meta = ckpt.read_checkpoint(tmp_path / "straight")
    split, _, _ = ckpt.read_checkpoint(tmp_path / "split")
    assert meta["engine"] == "numpy" and meta["epoch"] == 2
    for k, v in straight.items():
        np.testing.assert_array_equal(split[k], v, err_msg=k)
    # The weights use torch's names and layouts: the PyTorch model loads them as they are.
    model = load(tmp_path / "straight").model
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x).numpy()
    got = load(tmp_path / "straight", engine="numpy").model.forward(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("preset, extra", [
    ("batchnorm", dict(model_args={"activation": "relu", "pool": "max", "batchnorm": True,
                                   "dropout": 0.1})),
    ("paper", dict(batch_size=4, sdlm_samples=100)),
])
def test_numpy_engine_runs_presets(data_root, tmp_path, preset, extra):
    cfg = cfg_for(data_root, tmp_path / "run", preset=preset, epochs=1, limit_train=200,
                  eval_batch_size=5000, **extra)
    row = train(cfg, log=lambda *a: None)
    assert np.isfinite(row["train_loss"]) and 0 <= row["test_error"] <= 1
    _, opt, meta = ckpt.read_checkpoint(tmp_path / "run")
    assert meta["optimizer"]["type"] == cfg.optimizer and opt


@pytest.mark.slow
def test_threads_setting_limits_numpy_blas_and_torch(data_root, tmp_path, monkeypatch):
    """``threads`` caps the BLAS pool the NumPy engine's matmuls run on, and torch, for the
    run only: inside every step both are at 1, afterwards both are back where they were."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from lenet5.training.numpy_engine import NumpyEngine

    seen, step = [], NumpyEngine.train_step

    def spy(self, x, y):
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        seen.append((blas, torch.get_num_threads()))
        return step(self, x, y)

    monkeypatch.setattr(NumpyEngine, "train_step", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        torch.set_num_threads(2)
        train(cfg_for(data_root, tmp_path / "run", model="lenet5-modern", limit_train=64,
                      batch_size=32, epochs=1, eval_batch_size=5000), log=lambda *a: None)
        after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    assert seen and all(blas and set(blas) == {1} and n == 1 for blas, n in seen), seen
    assert set(after) == {2} and torch.get_num_threads() == 2


# ---------------------------------------------------------------- optimiser state interchange


def engine_for(data_root, engine: str, model: str, model_args: dict, **kw):
    from lenet5.models import make_config
    from lenet5.training.engine import make_engine

    cfg = cfg_for(data_root, None, engine=engine, model=model, model_args=model_args,
                  batch_size=32, **kw)
    torch.manual_seed(cfg.seed)
    return make_engine(cfg, make_config(model, model_args).to_dict(), torch.device("cpu"),
                       ddp=False)


def first_batches(data_root, model: str, n: int = 64):
    from lenet5.data.datasets import load_split
    from lenet5.data.loader import TensorLoader
    from lenet5.data.transforms import Normalization, to_unit
    from lenet5.models import get_entry

    images, labels = load_split("mnist", "train", data_root, download=False)
    norm = Normalization.make(get_entry(model).normalization)
    loader = TensorLoader(to_unit(images[:n]), torch.as_tensor(labels[:n].astype(np.int64)), 32,
                          norm)
    return loader, list(loader)


INTERCHANGE = [
    ("lenet5-1998", {}, dict(optimizer="adam", lr=1e-3)),
    ("lenet5-1998", {}, dict(optimizer="adamw", lr=1e-3, weight_decay=1e-2)),
    ("lenet5-1998", {}, dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                             weight_decay=1e-3)),
    ("lenet5-1998", {}, dict(optimizer="sdlm", lr=5e-4, sdlm_samples=64)),
    ("lenet5-modern", {"batchnorm": True}, dict(optimizer="adam", lr=1e-3)),
]


@pytest.mark.parametrize("first, second", [("torch", "numpy"), ("numpy", "torch")])
@pytest.mark.parametrize("model, model_args, opt", INTERCHANGE,
                         ids=[f"{m}-{o['optimizer']}" for m, _, o in INTERCHANGE])
def test_optimizer_state_resumes_in_the_other_engine(data_root, tmp_path, first, second, model,
                                                     model_args, opt):
    """One step in ``first``, checkpoint, one more step in ``second`` == two steps in ``first``.

    The second step uses the saved momentum buffer / Adam moments and step count / SDLM
    curvature, so a wrong name, layout or count shows as a different second step. float32,
    weights within 1e-5 of the largest weight of the tensor.
    """
    loader, (b1, b2) = first_batches(data_root, model)
    ref = engine_for(data_root, first, model, model_args, **opt)
    ref.begin_epoch(0, loader)  # SDLM: h_kk on the first 64 patterns
    ref.train_step(*b1)
    opt_tensors, opt_meta = ref.optimizer_state()
    path = ckpt.save_checkpoint(tmp_path, ref.state_dict(), {"optimizer": opt_meta}, opt_tensors)
    state, saved_opt, meta = ckpt.read_checkpoint(path)

    other = engine_for(data_root, second, model, model_args, **opt)
    other.load_state_dict(state)
    other.load_optimizer_state(saved_opt, meta["optimizer"])  # no begin_epoch: mid-pass resume
    other.train_step(*b2)
    ref.train_step(*b2)

    want, got = ref.state_dict(), other.state_dict()
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        v, g = np.asarray(v, np.float64), np.asarray(got[k], np.float64)
        assert np.abs(g - v).max() <= 1e-5 * max(1.0, np.abs(v).max()), k
    (want_t, want_m), (got_t, got_m) = ref.optimizer_state(), other.optimizer_state()
    assert sorted(got_t) == sorted(want_t) and got_t
    assert {**got_m, "lr": 0} == {**want_m, "lr": 0} and got_m["steps"] == 2
    assert got_m["lr"] == pytest.approx(want_m["lr"])
    # The buffers hold gradients, which through batch-norm agree only to ~1e-4 in float32;
    # a wrong name or layout would be off by the buffers' own size.
    for k, v in want_t.items():
        v, g = np.asarray(v, np.float64), np.asarray(got_t[k], np.float64)
        assert np.abs(g - v).max() <= 1e-3 * max(np.abs(v).max(), 1e-12), k


@pytest.mark.slow
def test_cli_train_and_evaluate_with_the_numpy_engine(data_root, tmp_path, capsys):
    """``lenet5 train --engine numpy`` then ``lenet5 evaluate RUN --engine numpy``: the NumPy
    engine's evaluation of all 10,000 test images equals PyTorch's on the same checkpoint,
    and the error count equals the one the training run logged."""
    import json

    from lenet5.cli import main

    run = tmp_path / "run"
    assert main(["train", "--engine", "numpy", "--model", "lenet5-1998", "--optimizer", "adam",
                 "--lr", "3e-3", "--batch-size", "16", "--limit-train", "1000", "--epochs", "1",
                 "--threads", "1", "--data-dir", str(data_root), "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    reports = {}
    for engine in ("numpy", "torch"):
        assert main(["evaluate", str(run), "--engine", engine, "--data-dir", str(data_root),
                     "--json"]) == 0
        reports[engine] = json.loads(capsys.readouterr().out)
    got, want = reports["numpy"], reports["torch"]
    assert got["engine"] == "numpy" and got["n"] == 10_000
    assert got["errors"] < 5_000  # learnt something
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert got["errors"] == ckpt.read_checkpoint(run)[2]["metrics"]["test_errors"]


@pytest.mark.slow
def test_train_resume_switches_engine(data_root, tmp_path):
    """Epoch 1 in PyTorch, ``--resume`` epoch 2 in NumPy == 2 epochs in PyTorch (Adam, 2
    steps an epoch, float32; 1e-5 of each tensor's largest weight)."""
    kw = dict(model="lenet5-1998", optimizer="adam", lr=1e-3, batch_size=32, limit_train=64,
              eval_batch_size=5000)
    quiet = dict(log=lambda *a: None)
    train(cfg_for(data_root, tmp_path / "torch", engine="torch", epochs=2, **kw), **quiet)
    train(cfg_for(data_root, tmp_path / "mixed", engine="torch", epochs=1, **kw), **quiet)
    train(cfg_for(data_root, tmp_path / "mixed", engine="numpy", epochs=2,
                  resume=str(tmp_path / "mixed"), **kw), **quiet)
    want, _, _ = ckpt.read_checkpoint(tmp_path / "torch")
    got, _, meta = ckpt.read_checkpoint(tmp_path / "mixed")
    assert meta["engine"] == "numpy" and meta["epoch"] == 2 and meta["optimizer"]["steps"] == 4
    for k, v in want.items():
        assert np.abs(got[k] - v).max() <= 1e-5 * max(1.0, np.abs(v).max()), k
