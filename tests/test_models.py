"""Models: the paper's counts, the registry contract, losses, SDLM curvature and step sizes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lenet5.config import PRESETS
from lenet5.models import (
    build_numpy,
    canonical,
    create_model,
    describe,
    get_entry,
    list_models,
    make_config,
    nearest_name,
)
from lenet5.models.bitmaps import bitmap_strings, rbf_prototypes
from lenet5.models.lenet5_1998 import C3_TABLE, Subsampling
from lenet5.reporting.summary import layer_table
from lenet5.training.losses import map_loss, mle_loss
from lenet5.training.optim import SDLM, estimate_curvature
from lenet5.training.schedules import lr_at, paper_eta

# Every registered model and variant, the 1998 network's other subsampling, and what each
# preset trains (a variant plus options).
# The LeNet-5 family: the models both engines build (the Fig. 9 classifiers have their own
# contract test in tests/test_fig9.py).
LENET5_MODELS = [name for name in list_models() if get_entry(name).numpy is not None]
VARIANTS = list(dict.fromkeys(
    [(name, "{}") for name in LENET5_MODELS] + [("lenet5-1998", json.dumps({"subsample": "sum"}))]
    + [(p["model"], json.dumps(p.get("model_args", {}), sort_keys=True)) for p in PRESETS.values()]
))
VARIANTS = [(name, json.loads(args)) for name, args in VARIANTS]


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_paper_parameter_and_connection_counts():
    rows = {r["layer"]: r for r in layer_table(create_model("lenet5-1998"))}
    assert [rows[k]["params"] for k in ("c1", "s2", "c3", "s4", "c5", "f6", "rbf")] == [
        156, 12, 1516, 32, 48120, 10164, 0]
    assert sum(r["params"] for r in rows.values()) == 60000
    assert [rows[k]["connections"] for k in ("c1", "s2", "c3", "s4", "c5", "f6")] == [
        122304, 5880, 151600, 2000, 48120, 10164]
    assert sum(r["connections"] for r in rows.values()) == 340908


def test_c3_table_and_bitmaps():
    assert sum(len(t) for t in C3_TABLE) == 60
    protos = rbf_prototypes()
    assert protos.shape == (10, 84) and set(protos.unique().tolist()) == {-1.0, 1.0}
    assert not any(p.requires_grad for p in create_model("lenet5-1998").rbf.buffers())
    one = bitmap_strings()[1]
    assert one[-3] == ".######" and all(len(r) == 7 for r in one) and len(one) == 12


def test_c3_reads_only_its_table():
    m = create_model("lenet5-1998").double()
    x = torch.zeros(1, 6, 14, 14, dtype=torch.float64, requires_grad=True)
    out = m.c3(x)
    for k, ins in enumerate(C3_TABLE):
        (g,) = torch.autograd.grad(out[0, k].sum(), x, retain_graph=True)
        reads = {i for i in range(6) if g[0, i].abs().sum() > 0}
        assert reads == set(ins)


@pytest.mark.parametrize("name, args", VARIANTS)
def test_every_model_contract(name, args):
    torch.manual_seed(0)
    m = create_model(name, **args)
    x = torch.randn(4, 1, 32, 32)
    feats = m.features(x)
    assert list(feats) == ["c1", "s2", "c3", "s4", "c5", "f6", "out"]
    w1, w3, w5, w6 = getattr(m.config, "widths", (6, 16, 120, getattr(m.config, "f6", 84)))
    assert feats["c1"].shape == (4, w1, 28, 28) and feats["c3"].shape == (4, w3, 10, 10)
    assert feats["c5"].shape == (4, w5, 1, 1) and feats["f6"].shape == (4, w6)
    out = m(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    lp = m.log_probs(out)
    assert torch.isfinite(lp).all() and (lp.exp().sum(1) <= 1 + 1e-5).all()
    loss = (map_loss(out, torch.arange(4), 0.1) if get_entry(name).head == "rbf"
            else torch.nn.functional.cross_entropy(out, torch.arange(4)))
    loss.backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_map_loss_matches_formula_per_sample():
    y = torch.tensor([[3.0, 1.0, 2.0], [0.5, 4.0, 1.0]])
    t = torch.tensor([1, 2])
    j = 0.7
    expect = torch.stack([y[p, t[p]] + torch.log(torch.exp(torch.tensor(-j)) + torch.exp(-y[p]).sum())
                          for p in range(2)]).mean()
    assert torch.isclose(map_loss(y, t, j), expect)
    assert torch.isclose(mle_loss(y, t), torch.tensor((1.0 + 1.0) / 2))


def win_sum(x):
    return torch.nn.functional.avg_pool2d(x, 2) * 4


def brute_force_gn(model, x, layer_names):
    """The paper's recursion, from autograd Jacobians of each layer (independent of gn_backward)."""
    from lenet5.models.lenet5_1998 import squash

    acts, pre, h = [x], [], x
    for name in layer_names:
        layer = getattr(model, name)
        a = layer(h.flatten(1) if name == "f6" else h)
        pre.append(a)
        h = squash(a)
        acts.append(h)
    d2 = torch.full_like(acts[-1], 2.0)
    result = {}
    for k in reversed(range(len(layer_names))):
        name = layer_names[k]
        layer = getattr(model, name)
        a = pre[k]
        fprime = torch.autograd.functional.vjp(lambda t: 1.7159 * torch.tanh(2 / 3 * t), a, torch.ones_like(a))[1].flatten()  # elementwise: the Jacobian's diagonal
        d2a = d2.flatten() * fprime**2
        x_in = acts[k].flatten(1) if name == "f6" else acts[k]
        params = dict(layer.named_parameters())
        if isinstance(layer, Subsampling):
            # One coefficient shared by the 4 connections of each window: give every
            # connection its own copy, then sum their h (the paper's sum over V_k).
            c = p4 = layer.weight.detach()[:, None, None].expand(-1, 2, 2).clone()

            def sub(w4):
                b, ch, hh, ww = x_in.shape
                win = x_in.reshape(b, ch, hh // 2, 2, ww // 2, 2)
                taps = win * (layer.tap * w4)[None, :, None, :, None, :]
                return (taps.sum((3, 5)) + layer.bias[:, None, None]).flatten()
            jac = torch.autograd.functional.jacobian(sub, p4, vectorize=True).reshape(a.numel(), -1)
            result[f"{name}.weight"] = (d2a[:, None] * jac**2).sum(0).reshape(c.shape).sum((1, 2))
            jb = torch.autograd.functional.jacobian(
                lambda bb: (layer.weight[:, None, None] * layer.tap * win_sum(x_in) + bb[:, None, None]).flatten(),
                layer.bias, vectorize=True).reshape(a.numel(), -1)
            result[f"{name}.bias"] = (d2a[:, None] * jb**2).sum(0)
            params = {}
        for pname, p in params.items():
            def f(w, pname=pname):
                return torch.func.functional_call(layer, {**params, pname: w}, (x_in,)).flatten()
            jac = torch.autograd.functional.jacobian(f, p, vectorize=True).reshape(a.numel(), -1)
            # h_kk = sum over connections of d2E/da^2 * (da/dw_k)^2 (cross terms dropped)
            result[f"{name}.{pname}"] = (d2a[:, None] * jac**2).sum(0).reshape(p.shape)
        if k == 0:
            break  # nothing below C1 needs d2
        jx = torch.autograd.functional.jacobian(lambda t: layer(t).flatten(), x_in, vectorize=True).reshape(a.numel(), -1)
        d2 = ((jx**2) * d2a[:, None]).sum(0).reshape(acts[k].shape)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("subsample", ["sum", "average"])
def test_gauss_newton_diagonal_matches_brute_force(subsample):
    torch.manual_seed(0)
    m = create_model("lenet5-1998", subsample=subsample).double()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    fast = m.gauss_newton_diagonal(x)
    slow = brute_force_gn(m, x, m.layer_names)
    for k in slow:
        assert torch.allclose(fast[k], slow[k], rtol=1e-9, atol=1e-15), k


def test_gauss_newton_last_layer_is_exact_gn():
    """For F6 the diagonal recursion is exact: 2 * sum_o (dx_o/dw)^2."""
    torch.manual_seed(1)
    m = create_model("lenet5-1998").double()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    w = m.f6.weight

    def f6_out(weight):
        feats = m.features(x)
        return torch.func.functional_call(m.f6, {"weight": weight, "bias": m.f6.bias},
                                          (feats["c5"].flatten(1),))
    from lenet5.models.lenet5_1998 import squash

    jac = torch.autograd.functional.jacobian(lambda wt: squash(f6_out(wt)).flatten(), w).reshape(84, -1)
    exact = (2 * jac**2).sum(0).reshape(w.shape)
    assert torch.allclose(m.gauss_newton_diagonal(x)["f6.weight"], exact, rtol=1e-10)


def pass1_steps(data_root, **config) -> torch.Tensor:
    from lenet5.data.datasets import load_split
    from lenet5.data.transforms import Normalization, to_unit

    x, _ = load_split("mnist", "train", data_root)
    x = Normalization.make("paper")(to_unit(x[:500]))
    torch.manual_seed(0)
    m = create_model("lenet5-1998", **config)
    opt = SDLM(m.parameters(), lr=paper_eta(0), mu=0.02)
    opt.set_curvature(estimate_curvature(m, x))
    return torch.cat([e.flatten() for e in opt.step_sizes()]).double()


def test_sdlm_pass1_steps_in_paper_range(data_root):
    eps = pass1_steps(data_root)
    lo, hi = torch.quantile(eps, torch.tensor([0.01, 0.99], dtype=torch.double))
    # Paper (Appendix C): about 7e-5 to 0.016 in pass 1; within an order of magnitude.
    assert 7e-6 < lo < 7e-4 and 1.6e-3 < hi < 0.025
    assert eps.max() <= 0.025 + 1e-9  # eta / mu is the hard ceiling
    assert (eps > 0.9 * 0.025).double().mean() < 0.05  # almost no step pinned at the ceiling


def test_printed_init_rule_pins_steps_at_the_ceiling(data_root):
    """Why the default is 2.4/sqrt(F): with the printed 2.4/F the second derivatives vanish
    towards the input and a third of all steps sit at eta/mu, unlike the paper's range."""
    eps = pass1_steps(data_root, init="fanin")
    assert (eps > 0.9 * 0.025).double().mean() > 0.25
    assert torch.quantile(eps, 0.5) > 0.016  # the median step already exceeds the paper's top


def test_paper_schedule():
    assert [paper_eta(e) for e in range(20)] == [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8
    assert lr_at("paper", 5e-4, 4, 0, 10, 20) == pytest.approx(2e-4)
    assert lr_at("onecycle", 1.0, 0, 0, 10, 4) == pytest.approx(1 / 25)
    assert lr_at("cosine", 1.0, 2, 0, 10, 4) == pytest.approx(0.5)


def test_onecycle_linear_is_the_fast_recipes_schedule():
    """Linear warm-up from 0 over the first 20% of the steps, then linear to 0 (as
    benchmarks/fast99.py wrote it, by step: peak * step / up, then peak * (total - step) /
    (total - up)), also when the run is split into epochs."""
    total, up, peak = 1000, 200, 0.4
    for step in (0, 1, 100, 199, 200, 201, 600, 999):
        want = peak * step / up if step < up else peak * (total - step) / (total - up)
        assert lr_at("onecycle-linear", peak, 0, step, total, 1) == pytest.approx(want)
        assert lr_at("onecycle-linear", peak, step // 250, step % 250, 250, 4) == pytest.approx(want)


def test_variants_are_models_with_their_own_parameter_counts():
    counts = {name: trainable(create_model(name)) for name in LENET5_MODELS}
    assert counts == {"lenet5-1998": 60000, "lenet5-modern": 61706, "lenet5-modern-bn": 61932,
                      "lenet5-lush": 51046}
    assert canonical("lenet5-modern-bn", {"dropout": 0.1}) == (
        "lenet5-modern", {"batchnorm": True, "dropout": 0.1})
    assert make_config("lenet5-modern-bn").batchnorm and not make_config("lenet5-modern").batchnorm
    # A preset trains a variant: the model `best` trains has the bundled model's 61,932.
    best = PRESETS["best"]
    assert trainable(create_model(best["model"], **best.get("model_args", {}))) == 61932


def test_nearest_name_names_what_a_checkpoint_holds():
    bundled = {"activation": "relu", "pool": "max", "batchnorm": True, "dropout": 0.1,
               "widths": [6, 16, 120, 84]}
    assert nearest_name("lenet5-modern", bundled) == ("lenet5-modern-bn", {"dropout": 0.1})
    assert nearest_name("lenet5-modern", {}) == ("lenet5-modern", {})
    assert nearest_name("lenet5-1998", {"subsample": "sum"}) == ("lenet5-1998", {"subsample": "sum"})
    # What the training banner, the report and the curves' title show.
    assert describe(*canonical("lenet5-modern-bn", {"widths": [16, 32, 56, 84]})) == (
        "lenet5-modern-bn (widths [16, 32, 56, 84])")
    assert describe("lenet5-modern", bundled) == "lenet5-modern-bn (dropout 0.1)"
    assert describe("a-model-of-a-later-version", {"depth": 3}) == "a-model-of-a-later-version"


@pytest.mark.parametrize("name", LENET5_MODELS)
def test_numpy_builder_matches_the_torch_model(name):
    """The entry's two builders make the same parameters and buffers (names and shapes)."""
    torch_state = {k: tuple(v.shape) for k, v in create_model(name).state_dict().items()}
    numpy_state = {k: np.shape(v) for k, v in build_numpy(name, seed=0).state_dict().items()}
    assert numpy_state == torch_state


def test_registry_and_config_import_no_torch():
    code = ("import sys; from lenet5.config import resolve_config; from lenet5.models import "
            "get_entry, make_config; resolve_config('fast'); make_config('lenet5-modern-bn'); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_sizes_are_refused_before_anything_is_built():
    with pytest.raises(ValueError, match=r"model_args.widths must be .*<= 1024; got \[6, 16, 120, 5000000\]"):
        create_model("lenet5-modern", widths=[6, 16, 120, 5_000_000])
    with pytest.raises(ValueError, match="model_args.batchnorm must be true or false; got 1"):
        create_model("lenet5-modern", batchnorm=1)
    with pytest.raises(ValueError, match="model_args.dropout must be"):
        make_config("lenet5-modern-bn", {"dropout": float("nan")})


def test_models_command_shows_what_presets_and_bundled_weights_train(capsys):
    from lenet5.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "`" not in out  # no reStructuredText in a terminal
    sections = out.split("\npresets")
    models = {line.split()[0]: line for line in sections[0].splitlines()[1:] if line.strip()}
    presets, bundles = sections[1].split("\nbundled weights")
    presets = {line.split()[0]: line for line in presets.splitlines()[1:] if line.strip()}
    assert "61,932 params  lenet5-modern-bn (dropout 0.1)" in presets["best"]
    assert "61,706 params" in models["lenet5-modern"] and "61,932 params" in models["lenet5-modern-bn"]
    default = [line for line in bundles.splitlines() if line.startswith("* ")]
    assert len(default) == 1 and default[0].split()[1] == "lenet5-robust"
    assert "63,930 params  lenet5-modern-bn (widths [16, 32, 56, 84])" in default[0]
    assert "63,930 params  lenet5-modern-bn (widths [16, 32, 56, 84])" in presets["robust"]


def test_registry_errors():
    assert set(list_models()) >= {"lenet5-1998", "lenet5-modern"}
    with pytest.raises(ValueError, match="unknown model"):
        create_model("lenet6")
    with pytest.raises(ValueError, match="unknown model option"):
        create_model("lenet5-1998", colour=True)


@pytest.mark.parametrize("spec, title, params", [
    ("best", "lenet5-modern-bn (dropout 0.1) (preset best)", 61932),
    ("relu-maxpool", "lenet5-modern (preset relu-maxpool)", 61706),
    ("lenet5-modern-bn", "lenet5-modern-bn", 61932),
    ("lenet5-robust", "lenet5-modern-bn (widths [16, 32, 56, 84]) (lenet5-robust)", 63930),
])
def test_summary_shows_what_a_preset_trains(capsys, spec, title, params):
    from lenet5.cli import main

    assert main(["summary", spec, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == title and sum(r["params"] for r in doc["layers"]) == params


def test_summary_of_an_unknown_name_lists_what_it_takes(capsys):
    from lenet5.cli import main

    assert main(["summary", "lenet5-1989"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bundled model 'lenet5-1989'" in err
    assert "registered models: " in err and "lenet5-lush" in err and "presets: paper" in err
