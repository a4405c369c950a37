"""The paper's Fig. 9 classifiers: sizes, the model contract, deslanting, k-NN against brute
force, the boosted model's early exit, and the closed-form fits on real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lenet5.data.datasets import load_split
from lenet5.data.deslant import deslant, deslant_images, moments
from lenet5.data.transforms import Normalization, to_unit
from lenet5.models import create_model, get_entry, list_models
from lenet5.models.baselines import PCAQuadratic, RBFNetwork, Retina
from lenet5.models.fig9_spec import LENET1_C3, lenet4_c3, lenet4_c5
from lenet5.models.lenet4 import LeNet4KNN
from lenet5.reporting.summary import layer_table

FIG9_MODELS = [name for name in list_models() if get_entry(name).numpy is None]
NORM = Normalization.make("paper")


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def totals(name: str) -> tuple[int, int, int]:
    rows = layer_table(create_model(name))
    return tuple(sum(r[k] for r in rows) for k in ("params", "connections", "macs"))


@pytest.fixture(scope="module")
def digits(data_root):
    xs, ys = load_split("mnist", "train", data_root)
    xt, yt = load_split("mnist", "test", data_root)
    return xs[:3000], ys[:3000].astype(np.int64), xt[:500], yt[:500].astype(np.int64)


# ----------------------------------------------------------------------------- sizes


def test_lenet1_and_lenet4_sizes():
    # LeNet-1: 4 maps (104), S2 (8), C3 12 maps x 2 kernels (612), S4 (24), 192 -> 10 (1,930).
    assert totals("lenet1") == (2678, 104842, 100992)  # paper: about 3k weights, 100k mult-adds
    # LeNet-4: C1 104, S2 16, C3 16 x 4 kernels 1,616, S4 32, C5 120 x 5 kernels 15,120, 1,210.
    assert totals("lenet4") == (18098, 269306, 262472)  # paper: about 17k and 260k
    assert trainable(create_model("boosted-lenet4")) == 3 * 18098
    assert trainable(create_model("lenet4", c5_inputs=16)) == 18098 - 15120 + 120 * 401
    assert sorted(len(ins) for ins in LENET1_C3) == [2] * 12
    assert len(set(lenet4_c3(4))) == 16 and all(len(ins) == 4 for ins in lenet4_c3(4))
    assert all(len(ins) == 5 for ins in lenet4_c5(120, 5))


def test_baseline_sizes():
    assert trainable(create_model("linear")) == 7850
    assert trainable(create_model("pairwise-linear")) == 45 * 785
    assert trainable(create_model("mlp-300")) == 784 * 300 + 300 + 3010
    assert trainable(create_model("mlp-500-150")) == 784 * 500 + 500 + 500 * 150 + 150 + 1510
    assert trainable(create_model("mlp-20x20-300-deslant")) == 400 * 300 + 300 + 3010
    assert trainable(create_model("pca-quadratic")) == 10 * (40 + 820 + 1)
    assert totals("knn")[2] == 60000 * 784  # one multiply-add per stored pixel


@pytest.mark.parametrize("name", FIG9_MODELS)
def test_every_fig9_model_contract(name):
    torch.manual_seed(0)
    small = {"knn": {"n_train": 20}, "lenet4-knn": {"n_train": 20}, "rbf-network": {"units": 20},
             "pca-quadratic": {"components": 5}}
    model = create_model(name, **small.get(get_entry(name).architecture, {}))
    if isinstance(model, (PCAQuadratic, RBFNetwork, LeNet4KNN)):  # zero until fitted
        model.fit(NORM(torch.rand(20, 1, 32, 32)), torch.arange(20) % 10)
    x = NORM(torch.rand(4, 1, 32, 32))
    feats = model.features(x)
    assert list(feats)[-1] == "out"
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    lp = model.log_probs(out)
    assert torch.isfinite(lp).all() and torch.allclose(lp.exp().sum(1), torch.ones(4), atol=1e-5)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params:
        F.cross_entropy(out, torch.arange(4)).backward()
        for pname, p in params:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_unknown_fig9_options_are_refused():
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("lenet4", c6_inputs=3)
    with pytest.raises(ValueError, match="c5_inputs must be"):
        create_model("lenet4", c5_inputs=17)
    with pytest.raises(ValueError, match="multiple of 10"):
        create_model("rbf-network", units=15)


# ----------------------------------------------------------------------------- deslanting


def shear(x: torch.Tensor, k: float) -> torch.Tensor:
    """out(x, y) = in(x - k (y - cy), y): ink at row y moves right by k (y - cy)."""
    _, cy, _ = moments(x)
    h, w = x.shape[-2:]
    ys = torch.arange(h, dtype=x.dtype)[None, :, None]
    xs = torch.arange(w, dtype=x.dtype)[None, None, :]
    src = xs - k * (ys - cy[:, :, None])
    grid = torch.stack([src * 2 / (w - 1) - 1, ys.expand_as(src) * 2 / (h - 1) - 1], -1)
    return F.grid_sample(x, grid, align_corners=True)


@pytest.fixture(scope="module")
def upright(data_root):
    xs, _ = load_split("mnist", "test", data_root)
    return deslant(to_unit(xs[:16]))  # (16, 1, 32, 32), slant removed


@settings(max_examples=25, deadline=None)
@given(i=st.integers(0, 15), k=st.floats(-0.5, 0.5))
def test_deslant_removes_a_shear(upright, i, k):
    x = upright[i : i + 1]
    slanted = shear(x, k)
    assert abs(float(moments(slanted)[2]) - k) < 0.1  # the shear is measured as the slant
    straight = deslant(slanted)
    assert abs(float(moments(straight)[2])) < 0.03
    assert abs(float(moments(deslant(straight))[2])) < 0.03  # deslanting again: still upright
    # The same shear whatever the intensities' offset and scale (raw pixels or model inputs).
    assert torch.allclose(NORM(deslant(slanted)), deslant(NORM(slanted)), atol=1e-4)


def test_deslant_of_blank_and_uint8_digits(upright):
    blank = torch.full((2, 1, 32, 32), -0.1)
    assert torch.equal(deslant(blank), blank)
    digits = (upright[:4, 0] * 255).round().to(torch.uint8).numpy()
    out = deslant_images(digits)
    assert out.dtype == np.uint8 and out.shape == digits.shape
    assert np.abs(out.astype(int) - digits).max() <= 40  # already upright: little moves
    with pytest.raises(ValueError, match="expects"):
        deslant(torch.zeros(32, 32))


def test_retina_windows_on_real_digits(digits):
    xs, _, _, _ = digits
    x = NORM(to_unit(xs[:300]))  # (300, 1, 32, 32)
    centre = Retina(20, box="centre")(x).view(-1, 20, 20)
    assert torch.equal(centre, x[:, 0, 6:26, 6:26])  # rows and columns 4-23 of the 28x28 field
    ink = Retina(20, box="ink")(x).view(-1, 20, 20)
    # MNIST's digit boxes are at most 20x20: the ink window keeps all the ink, the centre not.
    whole = (x + 0.1).sum((1, 2, 3))
    assert torch.allclose((ink + 0.1).sum((1, 2)), whole, rtol=1e-5)
    assert ((centre + 0.1).sum((1, 2)) < 0.99 * whole).float().mean() > 0.3
    # The digit box placed elsewhere in a blank field: the same window is found again (but
    # where the box was clamped to the field's edge, the ink is not centred in it).
    moved = torch.full_like(x, -0.1)
    moved[:, 0, 4:24, 9:29] = ink  # rows 2-21, columns 7-26 of the 28x28 field
    found = Retina(20, box="ink")(moved).view(-1, 20, 20)
    assert (found == ink).flatten(1).all(1).float().mean() > 0.95
    blank = torch.full((2, 1, 32, 32), -0.1)
    assert torch.equal(Retina(20, box="ink")(blank), Retina(20, box="centre")(blank))
    with pytest.raises(ValueError, match="box must be"):
        create_model("mlp", box="corner")


# ----------------------------------------------------------------------------- k-NN


def test_knn_equals_brute_force(digits):
    xs, ys, xt, yt = digits
    n = 700
    model = create_model("knn", n_train=n)
    model.fit(NORM(to_unit(xs[:n])), torch.as_tensor(ys[:n]))
    q = NORM(to_unit(xt[:40]))
    with torch.no_grad():
        d, idx = model.head.nearest(model.retina(q))
        votes = model(q)
    lo, step = model.head.levels.tolist()
    stored = (lo + step * model.head.patterns.double()).numpy()
    queries = model.retina(q).double().numpy()
    for b in range(len(queries)):
        dist = [float(((queries[b] - s) ** 2).sum()) for s in stored]
        want = np.argsort(dist, kind="stable")[:3]
        assert np.allclose(np.sort(np.array(dist)[want]), d[b].double().numpy(), rtol=1e-4)
        labels = ys[:n][want]
        counts = np.bincount(labels, minlength=10).astype(float)
        counts[labels[0]] += 0.5
        assert np.array_equal(np.floor(2 * votes[b].numpy()) / 2, counts)  # + closeness < 0.25
        assert votes[b].argmax() == counts.argmax()
    # Stored in 8 bits: within half a level of the patterns it was given.
    given_ = model.retina(NORM(to_unit(xs[:n]))).numpy()
    assert np.abs(stored - given_).max() <= step / 2 + 1e-6


def test_linear_ridge_option_shrinks_the_fit(digits):
    xs, ys, _, _ = digits
    x, y = NORM(to_unit(xs[:500])), torch.as_tensor(ys[:500])
    norms = {}
    for ridge in (1e-3, 10.0):
        model = create_model("linear", ridge=ridge)
        model.fit(x, y)
        norms[ridge] = float(model.head.weight.detach().norm())
    assert norms[10.0] < 0.5 * norms[1e-3]
    assert create_model("pairwise-linear").config.ridge == 1e-3  # its fit as before


@pytest.mark.slow
def test_closed_form_fits_learn(digits):
    xs, ys, xt, yt = digits
    x, y = NORM(to_unit(xs)), torch.as_tensor(ys)
    errors = {}
    for name in ("linear", "pairwise-linear-deslant", "pca-quadratic"):
        model = create_model(name)
        model.fit(x, y)
        with torch.no_grad():
            pred = model(NORM(to_unit(xt))).argmax(1).numpy()
        errors[name] = float(np.mean(pred != yt))
    # 3,000 training digits: far from chance (90%), roughly where such classifiers land.
    assert errors["linear"] < 0.25 and errors["pairwise-linear-deslant"] < 0.2
    assert errors["pca-quadratic"] < 0.15


# ----------------------------------------------------------------------------- boosted


def test_boosted_early_exit_uses_net1_alone():
    torch.manual_seed(0)
    model = create_model("boosted-lenet4", exit_confidence=0.5)
    x = NORM(torch.rand(8, 1, 32, 32))
    with torch.no_grad():
        sharp = model.net1.head.weight.mul_(40)  # net 1 now very sure of itself
        feats = model.features(x)
    assert sharp.abs().max() > 0
    alone = model.exits(feats["net1"])
    assert alone.any()
    assert torch.allclose(feats["out"][alone], feats["net1"][alone])
    mixed = torch.logsumexp(torch.stack([feats[n] for n in ("net1", "net2", "net3")]), 0) - np.log(3)
    assert torch.allclose(feats["out"][~alone], mixed[~alone])
