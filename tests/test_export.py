"""ONNX export: onnxruntime reproduces PyTorch on real MNIST test digits, for both heads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx  # a hard test dependency (the dev extra): a missing one fails, never skips
import onnxruntime as ort
import pytest
import torch

from lenet5 import checkpoint as ckpt
from lenet5.cli import main
from lenet5.data.datasets import get_spec, load_split
from lenet5.data.transforms import Normalization, to_unit
from lenet5.inference.export import export_onnx, read_metadata
from lenet5.inference.load import load
from lenet5.models import create_model, get_entry, make_config
from lenet5.training.losses import make_loss
from tests.checkpoint_support import tampered

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("LENET5_DATA_DIR") or str(ROOT.parent / "shared" / "data")
N_TEST = 1000

# (model, model_args): the paper's RBF network and a modern preset with batch-norm.
CASES = {
    "lenet5-1998": ("lenet5-1998", {}),
    "batchnorm": ("lenet5-modern", {"activation": "relu", "pool": "max", "batchnorm": True}),
}


def mnist(split: str, n: int, norm: Normalization) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = load_split("mnist", split, DATA_DIR, download=False)
    return norm(to_unit(xs[:n])), torch.as_tensor(ys[:n].astype(np.int64))


def train_briefly(name: str, model_args: dict, run_dir: Path) -> Path:
    """One quick Adam pass over 2,048 real digits, saved with the meta keys train.py writes."""
    torch.manual_seed(0)
    entry = get_entry(name)
    norm = Normalization.make(entry.normalization)
    model_config = make_config(name, model_args).to_dict()
    model = create_model(name, **model_config)
    x, y = mnist("train", 2048, norm)
    loss_fn = make_loss(entry.loss)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3 if entry.head == "rbf" else 2e-3)
    model.train()  # batch-norm running statistics move away from their (0, 1) start
    for i in range(0, x.shape[0], 32):
        loss = loss_fn(model(x[i : i + 32]), y[i : i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = {
        "model": name, "model_config": model_config, "normalization": norm.to_dict(),
        "dataset": "mnist", "classes": list(get_spec("mnist").classes), "head": entry.head,
        "engine": "torch", "train_config": {}, "epoch": 2, "metrics": {}, "history": [],
    }
    return ckpt.save_checkpoint(run_dir, model.state_dict(), meta)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The test machines share few cores; one thread is much faster than contended many.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory, one_thread):
    name, model_args = CASES[request.param]
    run_dir = tmp_path_factory.mktemp(request.param)
    checkpoint = train_briefly(name, model_args, run_dir)
    return checkpoint, export_onnx(checkpoint, run_dir / "model.onnx")


@pytest.mark.slow  # trains two models briefly (about 30 s here)
def test_onnxruntime_matches_pytorch_on_mnist(exported):
    checkpoint, onnx_path = exported
    loaded = load(checkpoint)
    model, meta = loaded.model, loaded.meta
    norm = Normalization(**meta["normalization"])
    x, y = mnist("test", N_TEST, norm)
    with torch.no_grad():
        ref = model(x)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["output"], {"image": x.numpy()})[0]
    assert got.shape == (N_TEST, 10)
    assert np.abs(got - ref.numpy()).max() < 1e-4
    ours = model.scores(torch.from_numpy(got)).argmax(1)
    assert torch.equal(ours, model.scores(ref).argmax(1))
    assert (ours == y).float().mean() > 0.5  # a trained model, not a trivially agreeing one


@pytest.mark.slow
def test_dynamic_batch_and_metadata(exported):
    checkpoint, onnx_path = exported
    _, _, meta = ckpt.read_checkpoint(checkpoint)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        out = session.run(None, {"image": np.zeros((n, 1, 32, 32), np.float32)})[0]
        assert out.shape == (n, 10)
    props = read_metadata(onnx_path)
    assert props["model"] == meta["model"] and props["head"] == meta["head"]
    assert props["prediction"] == ("argmin" if meta["head"] == "rbf" else "argmax")
    assert float(props["normalization_scale"]) == meta["normalization"]["scale"]
    assert float(props["normalization_shift"]) == meta["normalization"]["shift"]
    assert props["classes"].startswith("[") and props["lenet5_version"]
    onnx.checker.check_model(onnx.load(str(onnx_path)))


def test_export_missing_checkpoint(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        export_onnx(tmp_path / "nope", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_a_name_that_is_not_onnx(tmp_path, capsys):
    """``bn.txt`` would hold ONNX under a name no tool opens as such: refused before any work."""
    from lenet5.cli import main

    assert main(["export", "lenet5-robust", str(tmp_path / "model.txt")]) == 1
    err = capsys.readouterr().err
    assert err == f"lenet5: error: {tmp_path / 'model.txt'}: lenet5 export writes ONNX; name the file .onnx\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_export(exported, tmp_path):
    checkpoint, _ = exported
    out = tmp_path / "cli.onnx"
    ok = subprocess.run([sys.executable, "-m", "lenet5", "export", str(checkpoint), str(out)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert out.is_file() and str(out) in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "lenet5", "export", str(tmp_path / "missing"),
                          str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "no checkpoint found" in bad.stderr and "Traceback" not in bad.stderr


def test_export_a_bundled_model_by_name(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "lenet5-1998", str(out)]) == 0
    props = read_metadata(out)
    assert props["model"] == "lenet5-1998" and props["prediction"] == "argmin"
    assert float(props["normalization_scale"]) == 1.275
    assert "(argmin)" in capsys.readouterr().out


@pytest.mark.parametrize("problem, edit", [
    ("head", lambda m: {**m, "head": "rbf"}),  # a logits model said to be an RBF one
    ("lacks normalization", lambda m: {k: v for k, v in m.items() if k != "normalization"}),
    ("scale", lambda m: {**m, "normalization": {**m["normalization"], "scale": 0}}),
    ("mode", lambda m: {**m, "normalization": {"shift": 0.1}}),
])
def test_export_refuses_inconsistent_metadata(tmp_path, capsys, problem, edit):
    bad = tampered(tmp_path / "bad.safetensors", "lenet5-modern", meta_fn=edit)
    out = tmp_path / "m.onnx"
    assert main(["export", str(bad), str(out)]) == 1
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # nothing written, not even a wrong file
