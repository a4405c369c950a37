"""The engine interface (``lenet5.training.engine``): what is decided once for every engine, the
factory, each engine's own evaluation, and the ``train_epoch`` hook a compiled engine overrides."""

from __future__ import annotations

import inspect
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from lenet5.config import resolve_config
from lenet5.data.loader import TensorLoader
from lenet5.data.transforms import Normalization
from lenet5.models import create_model, make_config
from lenet5.training.engine import (
    ENGINES,
    Engine,
    curvature_batch,
    engine_class,
    make_engine,
    resolve_criterion,
)
from lenet5.training.numpy_engine import NumpyEngine
from lenet5.training.torch_engine import TorchEngine


def cfg_for(data_root, **kw):
    base = dict(data_dir=str(data_root), progress=False, threads=1)
    return resolve_config(kw.pop("preset", None), overrides={**base, **kw})


def engines(cfg) -> tuple[Engine, Engine]:
    """A torch and a NumPy engine of ``cfg``'s model holding the same weights."""
    model_config = make_config(cfg.model, cfg.model_args).to_dict()
    torch.manual_seed(cfg.seed)
    ref = make_engine(replace(cfg, engine="torch"), model_config, torch.device("cpu"))
    ours = make_engine(replace(cfg, engine="numpy"), model_config, torch.device("cpu"))
    ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    return ref, ours


def test_engines_implement_the_whole_interface():
    for name in ("torch", "numpy"):
        cls = engine_class(name)
        assert issubclass(cls, Engine) and cls.name == name and not inspect.isabstract(cls)
    assert TorchEngine.supports_ddp and not NumpyEngine.supports_ddp
    with pytest.raises(ValueError, match="unknown engine 'jax'; choose from torch, numpy"):
        engine_class("jax")
    assert set(ENGINES) >= {"torch", "numpy"}


def test_criterion_is_resolved_once_for_every_engine(data_root):
    paper = cfg_for(data_root, preset="paper")
    c = resolve_criterion(paper, make_config("lenet5-1998").to_dict())
    assert (c.loss, c.map_j, c.head, c.label_smoothing) == ("map", 0.1, "rbf", 0.0)
    c = resolve_criterion(replace(paper, map_j=0.5), {"map_j": 0.1})
    assert c.map_j == 0.5
    best = cfg_for(data_root, preset="best")  # label smoothing 0.05, for cross-entropy only
    assert resolve_criterion(best, {}).label_smoothing == best.label_smoothing > 0
    assert resolve_criterion(replace(paper, label_smoothing=0.1), {}).label_smoothing == 0.0
    with pytest.raises(ValueError, match="loss 'map' needs an RBF head; lenet5-modern has logits"):
        resolve_criterion(replace(best, loss="map"), {})


def test_numpy_engine_refuses_what_only_pytorch_offers(data_root):
    cfg = cfg_for(data_root, engine="numpy")
    with pytest.raises(ValueError, match="the NumPy engine runs in one process"):
        make_engine(cfg, make_config(cfg.model).to_dict(), torch.device("cpu"), ddp=True)
    with pytest.raises(ValueError, match="--amp is a PyTorch option; the NumPy engine"):
        make_engine(replace(cfg, amp=True), make_config(cfg.model).to_dict(), torch.device("cpu"))


def test_curvature_batch_is_the_first_patterns_of_the_pass_order():
    images = torch.rand(50, 1, 32, 32)
    norm = Normalization.make("paper")
    loader = TensorLoader(images, torch.zeros(50, dtype=torch.int64), 8, norm, shuffle=True,
                          seed=3)
    loader.set_epoch(2)
    first = next(iter(loader))[0]  # the pass's first batch: its first 8 patterns
    x = curvature_batch(loader, 20)
    assert x.shape == (20, 1, 32, 32)
    torch.testing.assert_close(x[:8], first, rtol=0, atol=0)
    loader.set_epoch(3)
    assert not torch.equal(curvature_batch(loader, 20), x)  # a new sample every pass


@pytest.mark.slow  # a torch optimiser's first start-up alone takes seconds here
@pytest.mark.parametrize("preset", ["paper", "relu-maxpool"])
def test_each_engine_evaluates_its_own_arrays_alike(data_root, preset):
    """The NumPy engine's loss is its own (NumPy in, float out), and equals PyTorch's on the
    same weights to float32 precision; the error counts are equal."""
    from lenet5.data.datasets import load_split
    from lenet5.data.transforms import to_unit

    cfg = cfg_for(data_root, preset=preset)
    ref, ours = engines(cfg)
    assert ref.criterion == ours.criterion == resolve_criterion(cfg, ref.module.config.to_dict())
    images, labels = load_split("mnist", "test", data_root, download=False)
    x, y = to_unit(images[:500]), torch.as_tensor(labels[:500].astype(np.int64))
    norm = Normalization.make("paper" if preset == "paper" else "standard")
    out = ours.outputs(norm(x[:5]))
    assert isinstance(out, np.ndarray) and out.shape == (5, 10)
    want = ref.evaluate(x, y, norm, 200)
    got = ours.evaluate(x, y, norm, 200)
    assert got["count"] == want["count"] == 500 and got["errors"] == want["errors"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    loss, errors = ours.eval_step(norm(x[:200]), y[:200])
    assert isinstance(loss, float) and isinstance(errors, int)


@pytest.mark.slow
@pytest.mark.parametrize("kw, per_step_lr, averaged", [
    (dict(), False, False),
    (dict(schedule="onecycle"), True, False),
    (dict(ema=0.9), False, True),
])
def test_the_loop_trains_through_train_epoch(data_root, tmp_path, monkeypatch, kw, per_step_lr,
                                             averaged):
    """A compiled engine overrides ``train_epoch``: the loop asks for a per-step rate and an
    after-step hook only when the run needs them, and reads the totals it returns."""
    from lenet5.training.loop import train

    calls = []
    default = Engine.train_epoch

    def spy(self, loader, step_lr=None, after_step=None, progress=None):
        calls.append((step_lr is not None, after_step is not None, progress is not None))
        return default(self, loader, step_lr, after_step, progress)

    monkeypatch.setattr(NumpyEngine, "train_epoch", spy)
    row = train(cfg_for(data_root, engine="numpy", out=str(tmp_path / "run"), limit_train=64,
                        batch_size=32, epochs=2, eval_batch_size=5000, **kw), log=lambda *a: None)
    assert calls == [(per_step_lr, averaged, True)] * 2
    assert row["epoch"] == 2 and np.isfinite(row["train_loss"]) and 0 < row["train_error"] <= 1


# ---------------------------------------------------------------- --engine auto, --threads


@pytest.mark.parametrize("kw, device, world, want", [
    (dict(), "cpu", 1, "compiled"),  # the default model, on a CPU
    (dict(preset="paper"), "cpu", 1, "compiled"),
    (dict(model="lenet5-modern-bn"), "cpu", 1, "compiled"),  # a variant of a compiled model
    (dict(model="lenet1"), "cpu", 1, "torch"),  # no compiled kernels
    (dict(amp=True), "cpu", 1, "torch"),
    (dict(), "cuda", 1, "torch"),
    (dict(), "cpu", 2, "torch"),  # DDP
    (dict(elastic_alpha=34.0), "cpu", 1, "compiled"),  # the loader makes the pass's images
    (dict(engine="numpy"), "cpu", 1, "numpy"),  # a named engine stays as it is
    (dict(engine="torch", model="lenet5-1998"), "cpu", 1, "torch"),
])
def test_auto_engine_is_compiled_where_it_can_run_else_torch(data_root, kw, device, world, want):
    from lenet5.training.engine import resolve_engine

    cfg = cfg_for(data_root, **kw)
    assert resolve_engine(cfg, torch.device(device), world) == want


def test_compiled_engine_refuses_models_without_kernels_in_one_line(data_root):
    with pytest.raises(ValueError, match="compiled engine has no kernels for lenet1"):
        cfg_for(data_root, engine="compiled", model="lenet1")


@pytest.mark.parametrize("busy, processes, want", [(0.0, 1, 4), (0.1, 1, 4), (1.0, 1, 3),
                                                   (3.6, 1, 1), (9.0, 1, 1), (0.0, 2, 2),
                                                   (2.0, 4, 1)])
def test_auto_threads_takes_the_idle_cores(monkeypatch, busy, processes, want):
    from lenet5.training import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda sample_s=0.05: busy)
    assert threads.auto_threads(processes) == want


def test_busy_cores_is_measured_and_bounded():
    from lenet5.training.threads import busy_cores

    assert 0.0 <= busy_cores(0.02) <= (os.cpu_count() or 1) + 1e-9  # /proc/stat: a share of all


@pytest.mark.parametrize("model", ["knn", "lenet4-knn"])
def test_closed_form_models_are_refused_by_train_in_one_line(data_root, tmp_path, capsys, model):
    from lenet5.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--model", model, "--data-dir", str(data_root), "--limit-train", "100",
               "--epochs", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and err == [f"lenet5: error: {model} is fitted in closed form, not trained by "
                               "gradient descent: `lenet5 compare` fits and saves it "
                               "(docs/fig9.md)"]
    assert not out.exists()  # nothing claimed, nothing to clean up


@pytest.mark.parametrize("engine", ["torch", "numpy", "compiled"])
def test_sdlm_output_d2_scales_every_engines_curvature(data_root, engine):
    """``sdlm_output_d2`` (the paper leaves the output layer's second derivative open): h_kk
    from 4 is twice h_kk from the default 2, on real digits, in every engine; and the torch
    Gauss-Newton pass started from 4 itself gives the same numbers (the pass is linear)."""
    from lenet5.data.datasets import load_split
    from lenet5.data.transforms import to_unit

    if engine == "compiled":
        pytest.importorskip("numba")
    images, _ = load_split("mnist", "train", data_root, download=False)
    x = Normalization.make("paper")(to_unit(images[:40]))
    hs = {}
    for d2 in (2.0, 4.0):
        cfg = cfg_for(data_root, preset="paper", engine=engine, sdlm_output_d2=d2)
        torch.manual_seed(0)
        eng = make_engine(cfg, make_config(cfg.model, cfg.model_args).to_dict(),
                          torch.device("cpu"))
        eng.set_curvature(x)
        tensors, _ = eng.optimizer_state()
        hs[d2] = {k: np.asarray(v) for k, v in tensors.items() if k.endswith(".h")}
    assert hs[2.0] and hs[2.0].keys() == hs[4.0].keys()
    for k, h in hs[2.0].items():
        np.testing.assert_allclose(hs[4.0][k], 2 * h, rtol=1e-6, err_msg=k)
    if engine == "torch":  # the GN pass itself, started from 4 at every F6 output
        import lenet5.models.lenet5_1998 as m98

        torch.manual_seed(0)
        model = create_model("lenet5-1998")
        model.load_state_dict(eng.module.state_dict())
        real = torch.full_like
        patched = lambda t, v, **kw: real(t, 4.0 if v == 2.0 else v, **kw)  # noqa: E731
        m98.torch.full_like = patched
        try:
            direct = model.gauss_newton_diagonal(x)  # summed over the 40 patterns
        finally:
            m98.torch.full_like = real
        for k, v in direct.items():
            np.testing.assert_allclose(hs[4.0][k + ".h"], (v / len(x)).numpy(), rtol=1e-4,
                                       atol=1e-9, err_msg=k)
