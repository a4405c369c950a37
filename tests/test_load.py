"""The front door: every kind of source, both engines, bundled names through every command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lenet5.checkpoint import CheckpointError
from lenet5.cli import main
from lenet5.data.datasets import load_split
from lenet5.inference.load import load, resolve
from lenet5.inference.predict import Predictor
from lenet5.scratch import Model as NumpyModel
from lenet5.weights import WEIGHTS_DIR, bundled_models, default_name
from tests.checkpoint_support import BUNDLED


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as ``lenet5 train --out`` leaves it, holding the bundled 1998 weights."""
    run = tmp_path / "my-run"
    run.mkdir()
    shutil.copy(BUNDLED["lenet5-1998"], run / "checkpoint.safetensors")
    rows = [{"epoch": 1, "train_error": 0.05, "test_error": 0.04},
            {"epoch": 2, "train_error": 0.03, "test_error": 0.02}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(json.dumps({"model": "lenet5-1998", "seed": 5}))
    return run


@pytest.fixture(scope="module")
def digits(data_root):
    x, y = load_split("mnist", "test", str(data_root))
    return x[:200], y[:200]


# ----------------------------------------------------------------------------- sources


def test_no_source_is_the_default_bundled_model():
    loaded = load()
    assert loaded.name == default_name() == "lenet5-robust"
    assert loaded.path == BUNDLED["lenet5-robust"] and loaded.run_dir is None
    assert not loaded.model.training  # eval mode
    assert len(loaded.history) == loaded.meta["epoch"] == 50  # the checkpoint's own copy
    assert loaded.train_config["preset"] == "robust"


def test_a_bundled_name(tmp_path, monkeypatch):
    loaded = load("lenet5-1998")
    assert (loaded.name, loaded.path, loaded.meta["head"]) == ("lenet5-1998", BUNDLED["lenet5-1998"], "rbf")
    # A file or folder of that name, where the command runs, wins over the bundled model.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lenet5-1998").mkdir()
    with pytest.raises(CheckpointError, match="lenet5-1998/checkpoint.safetensors: no checkpoint found"):
        load("lenet5-1998")


def test_a_run_directory_and_its_checkpoint_file(run_dir):
    for source in (run_dir, run_dir / "checkpoint.safetensors", str(run_dir)):
        loaded = load(source)
        assert loaded.name == "my-run" and loaded.run_dir == run_dir
        assert loaded.path == run_dir / "checkpoint.safetensors"
        assert [r["epoch"] for r in loaded.history] == [1, 2]  # metrics.jsonl, not the copy
        assert loaded.train_config == {"model": "lenet5-1998", "seed": 5}  # config.json
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "train_error": "x"}\n')
    loaded = load(run_dir)  # a damaged metrics file does not stop the model from loading
    with pytest.raises(CheckpointError, match="metrics.jsonl: history"):
        _ = loaded.history
    # A side file grown huge (sparse here: no disk used) is refused by its size, unread.
    for name in ("metrics.jsonl", "config.json"):
        with open(run_dir / name, "r+b") as f:
            f.truncate(2**31)
    loaded = load(run_dir)
    with pytest.raises(CheckpointError, match=r"metrics.jsonl: 2,147,483,648 bytes, over the"):
        _ = loaded.history
    with pytest.raises(CheckpointError, match=r"config.json: 2,147,483,648 bytes, over the"):
        _ = loaded.train_config


def test_a_bare_checkpoint_file(tmp_path):
    path = tmp_path / "mine.safetensors"
    shutil.copy(BUNDLED["lenet5-modern"], path)
    loaded = load(path)
    assert loaded.name == "mine" and loaded.run_dir is None and loaded.path == path


def test_sources_that_are_not_there(tmp_path):
    with pytest.raises(CheckpointError, match=r"no bundled model 'lenet5-2024' .*bundled: lenet5-robust, lenet5-1998, lenet5-modern"):
        load("lenet5-2024")
    with pytest.raises(CheckpointError, match=r"runs/missing: no checkpoint found \(no such file"):
        load("runs/missing")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load(tmp_path)  # a folder without checkpoint.safetensors
    with pytest.raises(ValueError, match="unknown engine 'jax'"):
        load(engine="jax")
    assert resolve("lenet5-1998").bundled and not resolve(BUNDLED["lenet5-1998"]).bundled


# ----------------------------------------------------------------------------- engines


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_both_engines_give_the_same_answers(name, digits):
    x, y = digits
    torch_p, numpy_p = Predictor.load(name), Predictor.load(name, engine="numpy")
    assert torch_p.engine == "torch" and numpy_p.engine == "numpy"
    assert isinstance(numpy_p.model, NumpyModel)
    a, b = torch_p.predict(x), numpy_p.predict(x)
    assert [r["label"] for r in a] == [r["label"] for r in b]
    # Real answers, not agreeing noise (the best guess also where the reject option refuses).
    assert np.mean([r["top_k"][0][0] for r in a] == y) > 0.97
    np.testing.assert_allclose([r["probs"] for r in a], [r["probs"] for r in b], atol=2e-5)
    assert a[0]["posterior"] == b[0]["posterior"] == ("map-rbf" if name == "lenet5-1998" else "softmax")
    fa, fb = torch_p.features(x[0]), numpy_p.features(x[0])
    for layer in fa:
        assert fa[layer].shape == fb[layer].shape
        np.testing.assert_allclose(fa[layer], fb[layer], atol=1e-4)
    preds, maps = numpy_p.predict_with_features(x[:5])
    c1 = getattr(numpy_p.model.config, "widths", (6,))[0]
    assert preds == numpy_p.predict(x[:5]) and maps["C1"].shape == (5, c1, 28, 28)


# ----------------------------------------------------------------------------- commands


def test_the_default_is_the_same_everywhere(capsys, digits):
    assert bundled_models()[0]["name"] == default_name() == "lenet5-robust"
    assert Predictor.load().name == default_name()
    assert main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in doc["bundled"] if b["default"]] == [default_name()]


def digit_file(tmp_path, digits) -> str:
    path = tmp_path / "seven.png"
    Image.fromarray(255 - np.kron(digits[0][0], np.ones((4, 4), np.uint8))).save(path)
    return str(path)


def test_bundled_names_in_predict_and_viz(tmp_path, capsys, digits):
    image = digit_file(tmp_path, digits)
    assert main(["predict", image, "--model", "lenet5-1998", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "lenet5-1998" and doc["results"][0]["label"] == 7
    assert main(["predict", image, "--model", "lenet5-1998", "--engine", "numpy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["label"] == 7
    assert main(["viz", "kernels", "--model", "lenet5-1998", "--out", str(tmp_path / "k.png")]) == 0
    assert main(["viz", "curves", "--checkpoint", "lenet5-1998", "--out", str(tmp_path / "c.png")]) == 0
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("k.png", "c.png"))


@pytest.mark.parametrize("argv", [
    ["evaluate", "no-such-model"],
    ["predict", "IMAGE", "--model", "no-such-model"],
    ["viz", "kernels", "--model", "no-such-model"],
    ["report", "no-such-model"],
    ["export", "no-such-model", "m.onnx"],
    ["bundle", "no-such-model", "x", "--out-dir", "w"],
])
def test_an_unknown_name_is_one_clear_line_in_every_command(argv, tmp_path, capsys, monkeypatch, digits):
    monkeypatch.chdir(tmp_path)
    image = digit_file(tmp_path, digits)
    argv = [image if a == "IMAGE" else a for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet5: error: no bundled model 'no-such-model'") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seven.png"]  # nothing written


@pytest.mark.slow
def test_bundled_names_in_evaluate_report_export_and_bundle(tmp_path, capsys, data_root):
    assert main(["evaluate", "lenet5-modern", "--json", "--data-dir", str(data_root)]) == 0
    m = json.loads(capsys.readouterr().out)
    assert (m["name"], m["errors"], m["n"]) == ("lenet5-modern", 57, 10000)
    assert main(["evaluate", "--engine", "numpy", "--json", "--data-dir", str(data_root)]) == 0
    assert json.loads(capsys.readouterr().out)["errors"] == 42  # the default (lenet5-robust), numpy
    out = tmp_path / "r.html"
    assert main(["report", "lenet5-1998", "--limit", "100", "--out", str(out),
                 "--data-dir", str(data_root)]) == 0
    assert "RBF prototypes" in out.read_text()
    assert main(["export", "lenet5-modern", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 100_000
    assert main(["bundle", "lenet5-1998", "again", "--out-dir", str(tmp_path / "w"),
                 "--data-dir", str(data_root)]) == 0
    [entry] = bundled_models(tmp_path / "w")
    assert entry["card"]["test"]["errors"] == 60


def test_bundle_refuses_the_package_folder_without_force(capsys):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in WEIGHTS_DIR.iterdir())
    assert main(["bundle", "lenet5-modern", "lenet5-modern"]) == 1
    err = capsys.readouterr().err
    assert "installed package's weights" in err and "--force" in err and err.count("\n") == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in WEIGHTS_DIR.iterdir()) == before


def test_viz_confusion_needs_only_the_test_split(tmp_path, data_root, monkeypatch):
    """A data root holding the test split alone: no training file is read or fetched."""
    (tmp_path / "mnist").mkdir()
    for stem in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / "mnist" / stem).symlink_to(data_root / "mnist" / stem)
    monkeypatch.delenv("LENET5_DATA_DIR", raising=False)
    out = tmp_path / "cm.png"
    assert main(["viz", "confusion", "--data-dir", str(tmp_path), "--limit", "300", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
