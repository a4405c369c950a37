"""Bundled weights: listed, small, carded, and as accurate as their cards say."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lenet5.checkpoint import read_checkpoint
from lenet5.cli import main
from lenet5.config import resolve_config
from lenet5.inference.bundle import make_bundle, reproduce_command
from lenet5.inference.evaluate import evaluate_checkpoint
from lenet5.inference.predict import Predictor
from lenet5.training.loop import train
from lenet5.weights import bundled_models, default_name

BUNDLED = bundled_models()
CARD_KEYS = {"name", "model", "preset", "command", "seed", "commit", "test", "per_class_accuracy",
             "history", "train_config", "sha256", "bytes"}


def test_robust_weights_are_bundled_and_default():
    names = [b["name"] for b in BUNDLED]
    assert {"lenet5-modern", "lenet5-1998", "lenet5-robust"} <= set(names)
    assert default_name() == "lenet5-robust"  # weights.DEFAULT_BUNDLE (issue #17)
    assert names[0] == default_name()  # the default is listed first (serve's first model)
    assert Predictor.load().name == "lenet5-robust"


@pytest.mark.parametrize("entry", BUNDLED, ids=lambda b: b["name"])
def test_bundle_is_small_and_carded(entry):
    path, card = entry["path"], entry["card"]
    assert path.stat().st_size < 1_000_000 and card["bytes"] == path.stat().st_size
    assert CARD_KEYS <= set(card), CARD_KEYS - set(card)
    assert card["command"].startswith("lenet5 train") and card["reproduce"].startswith("lenet5 train")
    assert len(card["per_class_accuracy"]) == 10
    t = card["test"]
    assert t["accuracy"] == pytest.approx(1 - t["errors"] / t["n"])
    assert path.with_suffix(".md").read_text().count(f"{t['errors']} errors") == 1
    state, opt, meta = read_checkpoint(path)
    assert not opt and meta["model"] == card["model"]  # no optimiser state shipped


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "numpy"])
@pytest.mark.parametrize("entry", BUNDLED, ids=lambda b: b["name"])
def test_bundled_accuracy_matches_card(entry, engine, data_root):
    """57 errors for lenet5-modern, 60 for lenet5-1998, 42 for lenet5-robust, on either
    engine, by bundled name."""
    card = entry["card"]
    m = evaluate_checkpoint(entry["name"], card["dataset"], "test", str(data_root), engine=engine)
    assert m["checkpoint"] == str(entry["path"])
    assert m["n"] == card["test"]["n"] == 10000
    assert m["errors"] == card["test"]["errors"] == {"lenet5-modern": 57, "lenet5-1998": 60,
                                                       "lenet5-robust": 42}[entry["name"]]
    assert m["per_class_accuracy"] == card["per_class_accuracy"]


def test_models_command_lists_bundled(capsys):
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {b["name"] for b in doc["bundled"]} == {b["name"] for b in BUNDLED}
    assert sum(b["default"] for b in doc["bundled"]) == 1
    assert main(["models"]) == 0
    assert "* lenet5-robust" in capsys.readouterr().out


def test_reproduce_command_resolves_to_the_same_config():
    from lenet5.commands.train import parse_sets

    cfg = resolve_config("best", overrides={"seed": 3, "epochs": 2, "model_args": {"dropout": 0.2}})
    cmd = reproduce_command(cfg.to_dict(), "runs/x").split()
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    assert cmd[cmd.index("--preset") + 1] == "best" and cmd[cmd.index("--seed") + 1] == "3"
    again = resolve_config("best", overrides={"seed": 3, **parse_sets(sets)})
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.slow
def test_bundle_command_from_a_run(data_root, tmp_path):
    run = tmp_path / "run"
    cfg = resolve_config("relu-maxpool", overrides=dict(
        data_dir=str(data_root), out=str(run), epochs=1, limit_train=1000, progress=False, threads=1))
    train(cfg, log=lambda *a: None)
    out = tmp_path / "weights"
    assert main(["bundle", str(run), "tiny", "--data-dir", str(data_root), "--out-dir", str(out),
                 "--command", "lenet5 train --preset relu-maxpool ..."]) == 0
    [entry] = bundled_models(out)
    card = entry["card"]
    assert card["command"] == "lenet5 train --preset relu-maxpool ..." and card["seed"] == 0
    assert card["test"]["errors"] == read_checkpoint(run)[2]["metrics"]["test_errors"]
    assert card["epochs"] == 1 and len(card["history"]) == 1
    # The bundled file predicts exactly like the run's checkpoint.
    x = np.random.default_rng(0).random((8, 28, 28)).astype(np.float32)
    a = Predictor.load(run).predict(x)
    b = Predictor.load(entry["path"]).predict(x)
    assert a == b
    with pytest.raises(ValueError, match="bundle name"):
        make_bundle(run, "../evil", str(data_root), out_dir=out)
