"""Bottou's Lush lenet5 (preset ``lush``, model ``lenet5-lush``; issue 15): the net as its
sources build it, MSE to +-1 targets as the MLE criterion, the curvature once per set of
passes, and a short real training run that must learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lenet5.config import resolve_config
from lenet5.models import canonical, create_model, make_config
from lenet5.scratch import build as build_numpy


def test_lush_net_is_lushs():
    m = create_model("lenet5-lush")
    # C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 + 120 -> 10 outputs 1,210
    assert sum(p.numel() for p in m.parameters()) == 51_046
    assert m.f6.weight.shape == (10, 120) and m.rbf.prototypes.shape == (10, 10)
    assert torch.equal(m.rbf.prototypes, 2 * torch.eye(10) - 1)  # +1 for the class, -1 else
    # (forget 1 2): biases 0, subsampling coefficients 1/sqrt(4), weights within 1/sqrt(F)
    assert torch.all(m.s2.weight == 0.5) and torch.all(m.s4.weight == 0.5)
    assert all(torch.all(getattr(m, n).bias == 0) for n in ("c1", "s2", "c3", "s4", "c5", "f6"))
    assert m.c1.weight.abs().max() <= 1 / 5 and m.c5.weight.abs().max() <= 1 / 20
    assert m.c1.weight.abs().max() > 0.9 / 5  # drawn over the whole range
    assert m.s2.mode == "sum"


def test_distance_to_a_onehot_prototype_is_the_squared_error_and_argmin_is_argmax():
    m = create_model("lenet5-lush").eval()
    x = torch.rand(16, 1, 32, 32) * 2.55
    with torch.no_grad():
        feats = m.features(x)
    outputs, dist = feats["f6"], feats["out"]
    targets = 2 * torch.eye(10) - 1
    sq = ((outputs[:, None, :] - targets[None]) ** 2).sum(-1)  # (B, 10) MSE to +-1 targets
    assert torch.allclose(dist, sq, atol=1e-5)
    assert torch.equal(dist.argmin(1), outputs.argmax(1))  # Lush's max-classer


def test_numpy_and_compiled_start_from_the_same_lush_weights():
    from lenet5.compiled.model import CompiledModel

    name, args = canonical("lenet5-lush", {})
    ref = build_numpy(name, args, np.float32, 3)
    comp = CompiledModel(name, args, np.float32, seed=3)
    x = (np.random.default_rng(0).random((4, 1, 32, 32)) * 2.55).astype(np.float32)
    assert np.abs(comp.forward(x) - ref.forward(x)).max() < 1e-4
    h1, h2 = comp.gauss_newton_diagonal(x), ref.gauss_newton_diagonal(x)
    assert max(np.abs(h1[k] - h2[k]).max() / (np.abs(h2[k]).max() + 1e-12) for k in h1) < 1e-4
    images = (np.random.default_rng(1).random((5, 28, 28)) * 255).astype(np.uint8)
    out = comp.evaluate_images(images, normalization=(0.0, 2.55))  # the exact-kernel path
    field = np.pad(images / 255.0, ((0, 0), (2, 2), (2, 2)))[:, None] * 2.55
    assert np.abs(out - ref.forward(field.astype(np.float32))).max() < 1e-4


def test_lush_preset_is_the_published_protocol():
    cfg = resolve_config("lush")
    assert (cfg.loss, cfg.normalization, cfg.optimizer, cfg.batch_size) == ("mle", "lush", "sdlm", 1)
    assert (cfg.epochs, cfg.sdlm_samples, cfg.sdlm_every, cfg.shuffle) == (30, 1000, 10, False)
    from lenet5.training.schedules import lr_at

    rates = [lr_at(cfg.schedule, cfg.lr, e, 0, 1, cfg.epochs, cfg.step_size, cfg.gamma)
             for e in range(30)]
    assert np.allclose(rates, [1e-4] * 10 + [1e-5] * 10 + [1e-6] * 10)
    assert make_config(cfg.model, cfg.model_args).f6 == 10


def test_curvature_is_estimated_once_per_set(data_root):
    """sdlm_every=10: pass 2 keeps pass 1's h_kk; sdlm_every=1 re-estimates it."""
    from lenet5.training import loop

    kept = {}
    for every in (10, 1):
        cfg = resolve_config("lush", overrides=dict(
            engine="numpy", limit_train=120, sdlm_samples=20, sdlm_every=every,
            data_dir=str(data_root), epochs=2))
        norm = loop.Normalization.make(cfg.normalization)
        train_xy, _, _ = loop.load_data(cfg, norm, torch.device("cpu"))
        engine, _ = loop.build_engine(cfg, make_config(cfg.model, cfg.model_args).to_dict(),
                                      None, torch.device("cpu"), 1)
        loader = loop.make_loader(cfg, train_xy, norm, 0, 1)
        hs = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            engine.begin_epoch(epoch, loader)
            hs.append(engine.optimizer_state()[0]["c5.weight.h"].copy())
            engine.train_epoch(loader)
        kept[every] = np.array_equal(hs[0], hs[1])
    assert kept == {10: True, 1: False}


@pytest.mark.slow
def test_lush_preset_learns_in_the_compiled_engine(tmp_path, data_root):
    """2,000 patterns in file order, one pass: well under 20% test error (chance is 90%)."""
    from lenet5.training.loop import train

    cfg = resolve_config("lush", overrides=dict(
        engine="compiled", limit_train=2000, epochs=1, threads=1, progress=False,
        data_dir=str(data_root), out=str(tmp_path / "run")))
    row = train(cfg, log=lambda *a: None)
    assert row["test_error"] < 0.20
    assert row["train_loss"] < 2.0  # squared error to +-1 targets, 10 at the start
