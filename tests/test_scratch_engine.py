"""``lenet5 train --engine numpy``: the NumPy engine through the shared training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenet5 import checkpoint as ckpt
from lenet5.config import resolve_config
from lenet5.scratch import from_checkpoint
from lenet5.train import train


def cfg_for(data_root, out, **kw):
    base = dict(data_dir=str(data_root), out=str(out), progress=False, threads=1, engine="numpy")
    return resolve_config(kw.pop("preset", None), overrides={**base, **kw})


def test_numpy_engine_trains_saves_and_resumes(data_root, tmp_path):
    kw = dict(model="lenet5-1998", optimizer="adam", lr=3e-3, batch_size=16, limit_train=1000,
              eval_batch_size=2000)
    row = train(cfg_for(data_root, tmp_path / "straight", epochs=2, **kw), log=lambda *a: None)
    assert row["test_error"] < 0.5  # learnt something in 2,000 patterns
    train(cfg_for(data_root, tmp_path / "split", epochs=1, **kw), log=lambda *a: None)
    train(cfg_for(data_root, tmp_path / "split", epochs=2, resume=str(tmp_path / "split"), **kw),
          log=lambda *a: None)
    straight, _, meta = ckpt.read_checkpoint(tmp_path / "straight")
    split, _, _ = ckpt.read_checkpoint(tmp_path / "split")
    assert meta["engine"] == "numpy" and meta["epoch"] == 2
    for k, v in straight.items():
        np.testing.assert_array_equal(split[k], v, err_msg=k)
    # The weights use torch's names and layouts: the PyTorch model loads them as they are.
    model, _ = ckpt.load_model(tmp_path / "straight")
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x).numpy()
    got = from_checkpoint(tmp_path / "straight").forward(x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


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


def test_threads_setting_limits_numpy_blas_and_torch(data_root, tmp_path, monkeypatch):
    """``threads`` caps the BLAS pool the NumPy engine's matmuls run on, and torch, for the
    run only: inside every step both are at 1, afterwards both are back where they were."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from lenet5.scratch_engine import NumpyEngine

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
