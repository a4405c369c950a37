"""The compiled engine (``lenet5.compiled``) against the NumPy engine (``lenet5.scratch``).

Both start from the same weights (the compiled model copies ``scratch.build``'s). On real MNIST
batches, in float64 the outputs, every parameter's gradient and the Gauss-Newton diagonal agree
to 1e-10 (relative to the largest value), in float32 to 1e-5, for LeNet-5 (1998) and the modern
variants. A whole compiled pass (batch 1, SGD and SDLM; batch 8 for the modern model) ends at
the same weights as the same steps taken one by one with the NumPy engine. The compiled
distortion matches torch's ``apply_affine`` given the same parameters. A slow test trains one
pass of the paper's recipe on 10,000 images and checks the test accuracy.

The first run compiles the kernels (minutes); Numba caches them, later runs take seconds.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from lenet5.compiled import build, make_optimizer, seed_dropout
from lenet5.compiled import inputs as CI
from lenet5.scratch import build as np_build
from lenet5.scratch import losses as NL
from lenet5.scratch import optim as NO
from lenet5.scratch.layers import Dropout
from tests.test_scratch_model import VARIANTS  # the architectures both parity suites cover

SHIFT, SCALE = 0.1 / 1.275, 1.275  # the paper's normalisation: background -0.1, ink 1.175
TOL = {np.float64: 1e-10, np.float32: 1e-5}


@pytest.fixture(autouse=True)
def _one_thread():
    """The NumPy references and torch on one thread: on a small machine their thread pools
    (OpenBLAS, torch's OpenMP) otherwise spin against each other and Numba."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def mnist(data_root):
    from lenet5.data import load_split

    train = load_split("mnist", "train", data_root, download=False)
    test = load_split("mnist", "test", data_root, download=False)
    return train[0], train[1].astype(np.int64), test[0], test[1].astype(np.int64)


def normalise(images: np.ndarray, dtype=np.float64) -> np.ndarray:
    """``(N, 28, 28) uint8 -> (N, 1, 32, 32)``: /255, padded with 0, then (u - shift) * scale."""
    u = np.zeros((len(images), 1, 32, 32), dtype)
    u[:, 0, 2:30, 2:30] = images.astype(dtype) / dtype(255)
    return (u - dtype(SHIFT)) * dtype(SCALE)


def rel(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def pair(name: str, config: dict, dtype, seed: int = 0):
    return build(name, config, dtype, seed), np_build(name, config, dtype, seed)


# ---------------------------------------------------------------- one batch


def test_state_dict_and_init_match_numpy():
    for name, config in VARIANTS:
        ours, ref = pair(name, config, np.float32, seed=5)
        got, want = ours.state_dict(), ref.state_dict()
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
        assert list(ours.params()) == list(ref.params())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, config", VARIANTS)
def test_forward_backward_match_numpy(mnist, name, config, dtype):
    images, labels = mnist[0][:12], mnist[1][:12]
    x = normalise(images, dtype)
    ours, ref = pair(name, config, dtype, seed=1)
    want = ref.forward(x, train=True)
    got = ours.forward(x, train=True)
    assert got.dtype == dtype
    assert rel(got, want) <= TOL[dtype]
    loss = NL.map_loss if ref.head == "rbf" else NL.cross_entropy
    _, dout = loss(want, labels)
    want_g, got_g = ref.backward(dout), ours.backward(dout)
    for k in want_g:
        assert rel(got_g[k], want_g[k]) <= TOL[dtype], k
    for k, v in ref.state_dict().items():  # batch-norm running statistics
        assert rel(ours.state_dict()[k].astype(np.float64), v.astype(np.float64)) <= TOL[dtype], k
    assert rel(ours.forward(x), ref.forward(x)) <= TOL[dtype]  # eval mode
    assert rel(ours.evaluate_images(images, normalization=(SHIFT, SCALE)), ref.forward(x)) <= (
        TOL[dtype] if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, config", VARIANTS[:2])
def test_gauss_newton_diagonal_matches_numpy(mnist, name, config, dtype):
    images = mnist[0][100:116]
    x = normalise(images, dtype)
    ours, ref = pair(name, config, dtype, seed=2)
    want, got = ref.gauss_newton_diagonal(x), ours.gauss_newton_diagonal(x)
    for k in want:
        assert rel(got[k], want[k]) <= TOL[dtype], k
    mean_want = NO.estimate_curvature(ref, x)
    mean_got = ours.curvature(images, np.arange(len(images)), (SHIFT, SCALE))
    for k in mean_want:
        assert rel(mean_got[k], mean_want[k]) <= TOL[dtype], k


def test_modern_dropout_masks_are_applied_like_numpy(mnist):
    """Train-mode dropout: with the compiled pass's masks put into the NumPy model, outputs
    and gradients agree; about half the units are dropped and the rest scaled by 2."""
    images, labels = mnist[0][:16], mnist[1][:16]
    x = normalise(images)
    ours, ref = pair("lenet5-modern", {"dropout": 0.5}, np.float64, seed=3)
    seed_dropout(7)
    got = ours.forward(x, train=True)
    w = ours._work
    masks = iter([w.m5[:16].T.copy(), w.m6[:16].T.copy()])
    for _, layer in ref.layers:
        if isinstance(layer, Dropout):
            mask = next(masks)
            assert set(np.unique(mask)) <= {0.0, 2.0} and 0.3 < (mask == 0).mean() < 0.7

            def fixed(h, layer=layer, mask=mask):
                layer.mask = mask
                return h * mask

            layer.forward = fixed
    want = ref.forward(x, train=True)
    assert rel(got, want) <= 1e-10
    _, dout = NL.cross_entropy(want, labels)
    want_g, got_g = ref.backward(dout), ours.backward(dout)
    for k in want_g:
        assert rel(got_g[k], want_g[k]) <= 1e-10, k


def bundled_pair():
    """The bundled lenet5-1998 in the NumPy engine, and a compiled model holding its weights."""
    from lenet5.inference.load import load

    ref = load("lenet5-1998", engine="numpy").model
    ours = build("lenet5-1998", ref.config.to_dict(), np.float32)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", [
    {}, {"batchnorm": True}, {"activation": "tanh", "pool": "avg", "batchnorm": True},
    {"widths": (4, 11, 50, 20), "batchnorm": True},  # maps past the kernels' blocks of 6 and 2
])
def test_modern_evaluation_kernel_matches_numpy(mnist, config, dtype):
    """The modern eval kernel (:mod:`lenet5.compiled.infer_modern`: images in SIMD lanes,
    batch-norm folded into the layer before it) against the NumPy engine's eval forward, with
    running statistics far from their initial values, on real digits: float64 to 1e-10,
    float32 to 1e-5, the same predictions; 21 images, not a multiple of the block."""
    from lenet5.compiled import kernels_modern as KM

    ours, ref = pair("lenet5-modern", config, dtype, seed=3)
    if ours.bn:
        rng = np.random.default_rng(0)
        for k in range(4):
            mean, var = KM.stat_views(ours.stats, ours.widths, k)
            mean[:] = rng.standard_normal(mean.shape) * 0.3
            var[:] = rng.uniform(0.3, 2.0, var.shape)
        ref.load_state_dict(ours.state_dict())
    images = mnist[2][:21]
    want = ref.forward(normalise(images, dtype))
    got = ours.evaluate_images(images, normalization=(SHIFT, SCALE))
    assert got.dtype == dtype and np.abs(want).std() > 1e-3  # outputs that vary
    assert rel(got, want) <= TOL[dtype]
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_evaluation_of_the_bundled_model_matches_numpy(mnist):
    """The eval-only kernels (fused multiply-adds, :mod:`lenet5.compiled.infer_1998`) on
    trained weights and real test digits: the NumPy engine's outputs to 1e-5, the same
    predictions; a batch that is not a multiple of the kernels' block of images."""
    ours, ref = bundled_pair()
    images = mnist[2][:501]
    want = ref.forward(normalise(images, np.float32))
    got = ours.evaluate_images(images, normalization=(SHIFT, SCALE))
    assert got.dtype == np.float32
    assert rel(got, want) <= 1e-5
    assert np.array_equal(got.argmin(1), want.argmin(1))
    idx = np.array([500, 3, 3, 0])  # any order, repeats allowed
    assert np.array_equal(ours.evaluate_images(images, idx, (SHIFT, SCALE)), got[idx])


@pytest.mark.slow
def test_bundled_model_predicts_the_test_set_as_numpy(mnist):
    """All 10,000 test digits: the same predictions as the NumPy engine (60 errors)."""
    ours, ref = bundled_pair()
    images, labels = mnist[2], mnist[3]
    got = ours.evaluate_images(images, normalization=(SHIFT, SCALE))
    want = np.concatenate([ref.forward(normalise(images[i:i + 1000], np.float32))
                           for i in range(0, len(images), 1000)])
    assert rel(got, want) <= 1e-5
    assert np.array_equal(got.argmin(1), want.argmin(1))
    assert int((got.argmin(1) != labels).sum()) == 60


# ---------------------------------------------------------------- inputs


def test_normalisation_and_padding_match_the_data_pipeline(mnist):
    from lenet5.data.transforms import Normalization, to_unit

    images = mnist[0][:20]
    want = Normalization.make("paper")(to_unit(images)).numpy()  # float32, as the loader
    ours = build("lenet5-1998", {}, np.float32, seed=0)
    out = np.zeros((20, 32 * 32), np.float32)
    tmp = np.zeros(32 * 32, np.float32)
    for i in range(20):
        CI.load_pattern(images, i, 255.0, SHIFT, SCALE, np.zeros(0), tmp, out[i])
    assert np.abs(out.reshape(want.shape) - want).max() <= 1e-6
    assert ours.evaluate_images(images).shape == (20, 10)


@pytest.mark.parametrize("params", [
    dict(tx=1.5, ty=-2.0, scale=1.1, squeeze=0.0, shear=0.0, rotate=0.0),
    dict(tx=0.3, ty=0.7, scale=0.92, squeeze=0.08, shear=-0.15, rotate=0.0),
    dict(tx=-1.2, ty=0.4, scale=1.05, squeeze=-0.05, shear=0.2, rotate=12.0),
])
def test_warp_matches_torch_affine(mnist, params):
    import torch

    from lenet5.data.transforms import apply_affine, to_unit

    unit = to_unit(mnist[0][7:8])  # (1, 1, 32, 32) in [0, 1]
    want = apply_affine(unit.double(), {k: torch.tensor([v]) for k, v in params.items()})
    src = np.zeros(CI.TMP_SIZE)
    box = CI.unit_image(mnist[0][7:8], 0, 255.0, src, CI.BORDER)
    got = np.zeros(32 * 32)
    p = params
    CI.warp(src, box, p["tx"], p["ty"], p["scale"], p["squeeze"], p["shear"], p["rotate"], got)
    assert np.abs(got - want.numpy().ravel()).max() <= 1e-5  # torch builds theta in float32


def test_distorted_pass_is_seeded_and_changes_the_steps(mnist):
    images, labels = mnist[0], mnist[1]
    order = np.arange(64)
    results = []
    for seed, distortion in ((0, (2.0, 0.1, 0.1, 0.2, 5.0)), (0, (2.0, 0.1, 0.1, 0.2, 5.0)),
                             (1, (2.0, 0.1, 0.1, 0.2, 5.0)), (0, None)):
        model = build("lenet5-1998", {}, np.float32, seed=0)
        opt = make_optimizer(model, "sgd", 0.01, momentum=0.0)
        loss, _, k = model.train_pass(images, labels, order, opt, distortion=distortion, seed=seed)
        assert k == 64
        results.append((loss, model.theta.copy()))
    assert np.array_equal(results[0][1], results[1][1])
    assert not np.array_equal(results[0][1], results[2][1])
    assert not np.array_equal(results[0][1], results[3][1])


# ---------------------------------------------------------------- whole passes


def numpy_steps(ref, opt, x, labels, order, batch, loss_fn, lr):
    """The NumPy engine's loop: forward, loss, backward, step, for each batch of ``order``."""
    total, errors = 0.0, 0
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        out = ref.forward(x[idx], train=True)
        loss, dout = loss_fn(out, labels[idx])
        opt.lr = lr
        opt.step(ref.backward(dout))
        total += loss * len(idx)
        errors += int((ref.scores(out).argmax(1) != labels[idx]).sum())
    return total, errors


@pytest.mark.parametrize("optimizer", ["sgd", "sdlm", "adam"])
def test_pass_1998_equals_numpy_steps(mnist, optimizer):
    images, labels = mnist[0][:300], mnist[1][:300]
    x = normalise(images)
    order = np.random.default_rng(4).permutation(300)
    ours, ref = pair("lenet5-1998", {}, np.float64, seed=4)
    # SDLM at the paper's pass-3 rate: at 5e-4 these first steps from the initial weights are
    # chaotic (rounding differences of 1e-16 grow tenfold every ~5 patterns), at 2e-4 not.
    lr = {"sgd": 0.01, "sdlm": 2e-4, "adam": 1e-3}[optimizer]
    opt = make_optimizer(ours, optimizer, lr, momentum=0.9)
    ref_opt = NO.make_optimizer(optimizer, ref.params(), lr, momentum=0.9)
    if optimizer == "sdlm":
        ref_opt.set_curvature(NO.estimate_curvature(ref, x[order[:100]]))
        opt.set_curvature(ours.curvature(images, order[:100], (SHIFT, SCALE)))
    want = numpy_steps(ref, ref_opt, x, labels, order, 1, NL.map_loss, lr)
    loss, errors, k = ours.train_pass(images, labels, order, opt, lr, normalization=(SHIFT, SCALE))
    assert k == 300 and opt.steps == ref_opt.steps == 300
    assert errors == want[1] and abs(loss - want[0]) <= 1e-9 * abs(want[0])
    for name, v in ref.params().items():
        assert rel(ours.params()[name], v) <= 1e-9, name
    got_state, got_meta = opt.state_dict()
    want_state, want_meta = ref_opt.state_dict()
    assert got_meta == want_meta and sorted(got_state) == sorted(want_state)
    for key, v in want_state.items():  # the latest gradients: more cancellation than weights
        assert rel(got_state[key], v) <= 1e-7, key


@pytest.mark.parametrize("config", [{}, {"batchnorm": True, "activation": "tanh"}])
def test_pass_modern_equals_numpy_steps(mnist, config):
    images, labels = mnist[0][:203], mnist[1][:203]  # the last batch is short
    x = normalise(images)
    order = np.random.default_rng(5).permutation(203)
    ours, ref = pair("lenet5-modern", config, np.float64, seed=5)
    opt = make_optimizer(ours, "sgd", 0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    ref_opt = NO.make_optimizer("sgd", ref.params(), 0.05, momentum=0.9, nesterov=True,
                                weight_decay=1e-4)
    want = numpy_steps(ref, ref_opt, x, labels, order, 8, NL.cross_entropy, 0.05)
    loss, errors, k = ours.train_pass(images, labels, order, opt, batch_size=8,
                                      normalization=(SHIFT, SCALE))
    assert k == 26 and errors == want[1] and abs(loss - want[0]) <= 1e-9 * abs(want[0])
    got, ref_state = ours.state_dict(), ref.state_dict()
    for name, v in ref_state.items():
        assert rel(got[name].astype(np.float64), v.astype(np.float64)) <= 1e-9, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("w1, w3, n", [(6, 16, 64), (5, 7, 13), (8, 3, 1)])
def test_c3_in_lanes_matches_the_per_pattern_kernels(mnist, dtype, w1, w3, n):
    """:mod:`lenet5.compiled.conv_lanes` (blocks of patterns in SIMD lanes, the modern model's C3
    in training) against the per-pattern convolution of :mod:`lenet5.compiled.layers`, with
    widths that leave partial blocks of maps and of patterns."""
    from lenet5.compiled import blocks, conv_lanes
    from lenet5.compiled.kernels_modern import _pairs
    from lenet5.compiled.layers import PAD

    rng = np.random.default_rng(w1 * 100 + n)
    p1 = rng.standard_normal((n, w1, 196)).astype(dtype)
    weight = rng.standard_normal((w3 * w1, 25)).astype(dtype)
    bias = rng.standard_normal(w3).astype(dtype)
    pairs = _pairs(w3, w1)
    valid = np.zeros(140, bool)
    valid[[y * 14 + x for y in range(10) for x in range(10)]] = True
    want, got = np.zeros((n, w3, 140), dtype), np.full((n, w3, 140), 7, dtype)
    blocks.conv_forward_batch(p1, 14, weight, bias, *pairs, want, n)
    conv_lanes.conv3_forward(p1, weight, bias, got, n)
    assert rel(got[..., valid], want[..., valid]) <= TOL[dtype] and not got[..., ~valid].any()
    d = np.zeros((n, w3, PAD + 140 + PAD), dtype)  # zero in the junk columns and pads
    d[:, :, PAD:PAD + 140][..., valid] = rng.standard_normal((n, w3, 100))
    want = np.zeros_like(weight), np.zeros_like(bias), np.zeros_like(p1)
    got = np.ones_like(weight), np.ones_like(bias), np.full_like(p1, 5)  # += , += , =
    blocks.conv_backward_batch(p1, 14, weight, d, *pairs, *want, n)
    conv_lanes.conv3_backward(p1, weight, d, *got, n)
    assert rel(got[0] - 1, want[0]) <= TOL[dtype] and rel(got[1] - 1, want[1]) <= TOL[dtype]
    assert rel(got[2], want[2]) <= TOL[dtype]


@pytest.mark.parametrize("config", [{"batchnorm": True, "dropout": 0.2}, {"pool": "avg"}])
def test_modern_pass_is_the_same_on_one_thread_or_two(mnist, config):
    """The modern model's batch-wide kernels run on Numba's threads, with every sum in one
    order whatever their number: a pass ends at the same weights, bit for bit."""
    import numba

    images, labels = mnist[0][:300], mnist[1][:300]
    order = np.random.default_rng(7).permutation(300)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            seed_dropout(11)
            model = build("lenet5-modern", config, np.float32, seed=4)
            opt = make_optimizer(model, "sgd", 0.05, momentum=0.9, nesterov=True)
            totals = model.train_pass(images, labels, order, opt, batch_size=64,
                                      normalization=(SHIFT, SCALE))
            results.append((totals, model.theta.copy(), model.evaluate_images(mnist[2][:200])))
    finally:
        numba.set_num_threads(before)
    (t1, theta1, out1), (t2, theta2, out2) = results
    assert t1 == t2 and np.array_equal(theta1, theta2) and np.array_equal(out1, out2)
    assert np.isfinite(theta1).all() and not np.array_equal(theta1, build(
        "lenet5-modern", config, np.float32, seed=4).theta)  # it trained


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_per_update_rates_follow_numpy(mnist, dtype):
    """One rate per update. float64: the same weights; float32: the runs drift apart only as
    float32 rounding allows (rounding differences grow over the steps, so the bound is loose)."""
    images, labels = mnist[0][:100], mnist[1][:100]
    x = normalise(images, dtype)
    ours, ref = pair("lenet5-1998", {}, dtype, seed=6)
    lrs = np.linspace(0.002, 0.0005, 100)  # at 0.01 these first steps are chaotic
    opt = make_optimizer(ours, "sgd", 0.0, momentum=0.0)
    ref_opt = NO.make_optimizer("sgd", ref.params(), 0.0, momentum=0.0)
    want = 0.0
    for i in range(100):
        out = ref.forward(x[i:i + 1], train=True)
        loss, dout = NL.map_loss(out, labels[i:i + 1])
        ref_opt.lr = lrs[i]
        ref_opt.step(ref.backward(dout))
        want += loss
    loss, _, _ = ours.train_pass(images, labels, np.arange(100), opt, lrs,
                                 normalization=(SHIFT, SCALE))
    tol = 1e-9 if dtype == np.float64 else 1e-2
    assert abs(loss - want) <= tol * want
    for name, v in ref.params().items():
        assert rel(ours.params()[name], v) <= tol, name


# ---------------------------------------------------------------- the engine


def engine_cfg(data_root, **kw):
    from lenet5.config import resolve_config

    base = dict(data_dir=str(data_root), progress=False, threads=1, engine="compiled")
    return resolve_config(kw.pop("preset", None), overrides={**base, **kw})


def test_compiled_engine_implements_the_interface():
    import inspect

    from lenet5.training.engine import Engine, engine_class

    cls = engine_class("compiled")
    assert issubclass(cls, Engine) and cls.name == "compiled" and not inspect.isabstract(cls)
    assert not cls.supports_ddp and not cls.supports_amp


@pytest.mark.parametrize("batch_size", [1, 16])
def test_compiled_engine_pass_tracks_the_numpy_engine(mnist, data_root, batch_size):
    """One shuffled pass through ``train_epoch`` (SDLM, the paper's recipe at a lower rate),
    against the NumPy engine's step-by-step default: float32, so equal up to rounding."""
    import torch

    from lenet5.data.loader import TensorLoader
    from lenet5.data.transforms import Normalization, to_unit
    from lenet5.models import make_config
    from lenet5.training.engine import make_engine

    cfg = engine_cfg(data_root, preset="paper", lr=1e-4, batch_size=batch_size)
    model_config = make_config(cfg.model, cfg.model_args).to_dict()
    ours = make_engine(cfg, model_config, torch.device("cpu"))
    ref = make_engine(replace(cfg, engine="numpy"), model_config, torch.device("cpu"))
    loader = TensorLoader(to_unit(mnist[0][:96]), torch.as_tensor(mnist[1][:96]), batch_size,
                          Normalization.make("paper"), shuffle=True, seed=3)
    seen = []
    totals = []
    for engine in (ours, ref):
        engine.begin_epoch(0, loader)
        totals.append(engine.train_epoch(loader, progress=lambda i, t: seen.append(i)))
    assert seen[0] == len(loader) - 1 and totals[0].seen == totals[1].seen == 96
    assert totals[0].errors == totals[1].errors
    assert totals[0].loss_sum == pytest.approx(totals[1].loss_sum, rel=1e-4)
    want = ref.state_dict()
    for k, v in ours.state_dict().items():
        assert rel(v, want[k]) <= 1e-4, k
    x, y = to_unit(mnist[2][:300]), torch.as_tensor(mnist[3][:300])
    norm = loader.normalization
    got, want = ours.evaluate(x, y, norm, 100), ref.evaluate(x, y, norm, 100)
    assert got["count"] == 300 and got["errors"] == want["errors"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    tensors, meta = ours.optimizer_state()
    want_tensors, want_meta = ref.optimizer_state()
    assert meta == want_meta and sorted(tensors) == sorted(want_tensors)


@pytest.mark.slow
def test_compiled_engine_trains_and_resumes_through_the_loop(data_root, tmp_path):
    """``lenet5 train --engine compiled``: distorted, two passes straight and one + one resumed
    end at the same weights (the pass's draws come from (seed, epoch) alone)."""
    from functools import partial

    from lenet5 import checkpoint as ckpt
    from tests.train_support import train_straight_and_resumed

    def make_cfg(out, **kw):
        return engine_cfg(data_root, out=str(out), **kw)

    kw = dict(preset="paper", limit_train=2000, eval_batch_size=2000, distort=True)
    *_, row = train_straight_and_resumed(partial(make_cfg), tmp_path, **kw)
    assert row["test_error"] < 0.2
    straight, _, meta = ckpt.read_checkpoint(tmp_path / "straight")
    split, _, _ = ckpt.read_checkpoint(tmp_path / "split")
    assert meta["engine"] == "compiled" and meta["epoch"] == 2
    for k, v in straight.items():
        np.testing.assert_array_equal(split[k], v, err_msg=k)


# ---------------------------------------------------------------- accuracy


@pytest.mark.slow
def test_one_paper_pass_on_10k_images_reaches_95_percent(mnist):
    """The paper's recipe, pass 1: MAP loss, SDLM (eta 5e-4, mu 0.02, h_kk from 500 patterns),
    one update per pattern, on 10,000 shuffled training images."""
    train_x, train_y, test_x, test_y = mnist
    model = build("lenet5-1998", {}, np.float32, seed=0)
    opt = make_optimizer(model, "sdlm", 5e-4, mu=0.02)
    order = np.random.default_rng(0).permutation(len(train_x))[:10_000]
    opt.set_curvature(model.curvature(train_x, order[:500]))
    model.train_pass(train_x, train_y, order, opt)
    out = model.evaluate_images(test_x)
    accuracy = float((model.scores(out).argmax(1) == test_y).mean())
    assert accuracy >= 0.95, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [("numpy", "compiled"), ("compiled", "numpy")])
def test_run_resumes_across_engines_like_staying_put(data_root, tmp_path, first, then):
    """The paper's recipe (MAP, SDLM, batch 1) for two passes of 400 patterns: pass 1 in one
    engine and pass 2 resumed in the other ends where staying in the first engine does (same
    checkpoint layout and optimiser state; float32 rounding apart, at a rate where the
    per-pattern dynamics do not amplify it)."""
    from lenet5 import checkpoint as ckpt
    from lenet5.training.loop import train

    kw = dict(preset="paper", limit_train=400, eval_batch_size=5000, lr=2e-4)
    quiet = dict(log=lambda *a: None)
    train(engine_cfg(data_root, out=str(tmp_path / "stay"), engine=first, epochs=2, **kw), **quiet)
    train(engine_cfg(data_root, out=str(tmp_path / "mix"), engine=first, epochs=1, **kw), **quiet)
    row = train(engine_cfg(data_root, out=str(tmp_path / "mix"), engine=then, epochs=2,
                           resume=str(tmp_path / "mix"), **kw), **quiet)
    want, _, _ = ckpt.read_checkpoint(tmp_path / "stay")
    got, _, meta = ckpt.read_checkpoint(tmp_path / "mix")
    assert meta["engine"] == then and meta["epoch"] == 2
    for k, v in want.items():
        assert np.abs(got[k] - v).max() <= 1e-4 * max(1.0, np.abs(v).max()), k
    stay = [json.loads(line) for line in (tmp_path / "stay" / "metrics.jsonl").read_text().splitlines()]
    assert abs(row["test_errors"] - stay[-1]["test_errors"]) <= 2


def test_float64_precision_trains_through_the_loop(data_root, tmp_path):
    """``--set precision=float64`` (issue 15's float32-versus-float64 row): the compiled engine
    keeps its weights, optimiser state and sums in float64 through the loop and checkpoints."""
    from lenet5 import checkpoint as ckpt
    from lenet5.training.loop import train

    cfg = engine_cfg(data_root, preset="paper", precision="float64", limit_train=300, epochs=1,
                     out=str(tmp_path / "run"))
    row = train(cfg, log=lambda *a: None)
    assert row["test_error"] < 0.9  # 300 patterns of one pass: learning, not chance
    state, opt, meta = ckpt.read_checkpoint(tmp_path / "run", purpose="resume")
    assert meta["train_config"]["precision"] == "float64"
    assert {v.dtype for v in state.values()} == {np.dtype(np.float64)}
    assert {v.dtype for k, v in opt.items() if k.endswith(".h")} == {np.dtype(np.float64)}


def test_clean_passes_train_as_a_run_without_distortions(data_root, tmp_path):
    """``--clean-epochs``: a run whose every pass is clean (the loader's augmentations and the
    compiled engine's own affine warps both off) ends at the weights of a run that never asked
    for them."""
    from lenet5 import checkpoint as ckpt
    from lenet5.training.loop import train

    kw = dict(model="lenet5-modern", optimizer="adam", lr=1e-3, batch_size=64, epochs=1,
              limit_train=512, eval_batch_size=5000)
    quiet = dict(log=lambda *a: None)
    train(engine_cfg(data_root, out=str(tmp_path / "plain"), **kw), **quiet)
    train(engine_cfg(data_root, out=str(tmp_path / "clean"), distort=True, elastic_alpha=34.0,
                     clean_epochs=1, **kw), **quiet)
    train(engine_cfg(data_root, out=str(tmp_path / "warped"), distort=True, **kw), **quiet)
    plain, clean, warped = (ckpt.read_checkpoint(tmp_path / name)[0]
                            for name in ("plain", "clean", "warped"))
    for k, v in plain.items():
        np.testing.assert_array_equal(clean[k], v, err_msg=k)
    assert any(not np.array_equal(warped[k], v) for k, v in plain.items())


def test_compile_timer_counts_compiling_not_running():
    """The first run's epoch line separates the kernels' compile time from the pass's speed:
    ``compile_timer`` sees a fresh compile (outermost only) and nothing once compiled."""
    from numba import njit

    from lenet5.compiled.jit import compile_timer

    @njit(cache=False)
    def inner(x):
        return x * 2.0

    @njit(cache=False)
    def outer(x):
        return inner(x) + 1.0

    with compile_timer() as first:
        assert outer(1.0) == 3.0
    with compile_timer() as again:
        assert outer(2.0) == 5.0
    assert 0 < first[0] < 60 and again[0] == 0.0
