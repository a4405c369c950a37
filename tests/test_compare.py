"""``lenet5 compare``: the Fig. 9 table end to end on a tiny budget, its cache, its errors, the
Fig. 10 rejection measure, and the Fig. 9 models through the other front doors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lenet5 import checkpoint as ckpt
from lenet5.cli import main
from lenet5.data.transforms import Normalization
from lenet5.reporting.compare import ROW_KEYS, pick_rows, rejection


def test_rejection_measure():
    labels = np.zeros(1000, dtype=np.int64)
    probs = np.tile([[0.9, 0.1] + [0.0] * 8], (1000, 1))
    assert rejection(probs, labels) == 0.0  # no errors: nothing to reject
    probs[:20] = [0.4, 0.6] + [0.0] * 8  # 20 errors (2%), all unsure
    # Keeping the 980 right and 4 wrong: 4 / 984 <= 0.5% < 5 / 985; 16 of 1,000 rejected.
    assert rejection(probs, labels) == pytest.approx(1.6)
    probs[:20] = [0.0, 1.0] + [0.0] * 8  # 20 errors, all sure: everything goes
    assert rejection(probs, labels) == 100.0


def test_rows_are_checked(capsys):
    assert [r.key for r in pick_rows("knn,linear")] == ["linear", "knn"]  # the paper's order
    assert len(pick_rows(None)) == len(ROW_KEYS)
    assert main(["compare", "--rows", "linear,lenet7", "--out", "/nonexistent/x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lenet5: error: unknown row(s) lenet7; choose from")


@pytest.mark.slow
def test_compare_quick_end_to_end_and_cached(tmp_path, data_root, capsys):
    args = ["compare", "--quick", "--rows", "linear,knn,lenet1,lenet5,lenet5-distort,svm-poly4",
            "--out", str(tmp_path), "--data-dir", str(data_root)]
    assert main(args) == 0
    table = capsys.readouterr().out
    results = {r["key"]: r for r in json.loads((tmp_path / "fig9.json").read_text())}
    assert results["svm-poly4"]["status"].startswith("not run:")
    assert "| SVM poly 4 | not run:" in table
    assert results["linear"]["error"] < 30 and results["knn"]["error"] < 15  # 2,000 digits
    assert results["lenet5"]["status"].startswith("not run: give paper-recipe run")
    # The bundled lenet5-1998 is paper-best's (Adam): not the paper's row, so not used for it.
    assert results["lenet5-distort"]["status"] == (
        "not run: the bundled lenet5-1998 is preset paper-best's, not the paper's recipe; give "
        "paper-distort run directories (--lenet5-distort-run)")
    assert results["lenet1"]["macs"] == 100992 and results["lenet1"]["params"] == 2678
    assert results["knn"]["stored"] > 2000 * 784
    for r in ("linear", "knn", "lenet1"):
        assert 0 <= results[r]["reject"] <= 100 and not results[r]["reused"]
    assert (tmp_path / "fig9.png").stat().st_size > 1000
    assert (tmp_path / "fig10.png").stat().st_size > 1000
    # A rerun makes nothing again: every trained row comes from its run directory.
    assert main(args) == 0
    capsys.readouterr()
    again = {r["key"]: r for r in json.loads((tmp_path / "fig9.json").read_text())}
    for r in ("linear", "knn", "lenet1"):
        assert again[r]["reused"] and again[r]["error"] == results[r]["error"]
    # The rows' models are ordinary checkpoints: evaluate takes them.
    lenet1_run = results["lenet1"]["runs"][0]
    assert main(["evaluate", lenet1_run, "--data-dir", str(data_root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "lenet1"


@pytest.mark.slow
def test_fig9_models_export_to_onnx(tmp_path):
    """A fitted deslanted linear classifier and a boosted LeNet-4 (random weights) export."""
    onnx = pytest.importorskip("onnx")
    from lenet5.inference.export import export_onnx
    from lenet5.models import create_model

    norm = Normalization.make("paper")
    for name, arch in (("linear-deslant", "linear"), ("boosted-lenet4", "boosted-lenet4")):
        torch.manual_seed(0)
        model = create_model(name)
        meta = {"model": arch, "model_config": model.config.to_dict(),
                "normalization": norm.to_dict(), "head": "logits"}
        ckpt.save_checkpoint(tmp_path / name, model.state_dict(), meta)
        out = export_onnx(tmp_path / name, tmp_path / f"{name}.onnx")
        assert onnx.load(str(out)).graph.output[0].name == "output"


@pytest.mark.slow
def test_lenet5_rows_take_the_runs_they_are_given(tmp_path, data_root, capsys):
    """--lenet5-distort-run: any checkpoint stands for the row (here the bundled file itself,
    60 test errors), one seed per run given."""
    from lenet5.weights import bundled_models

    path = [m for m in bundled_models() if m["name"] == "lenet5-1998"][0]["path"]
    assert main(["compare", "--rows", "lenet5-distort", "--lenet5-distort-run", str(path),
                 "--out", str(tmp_path), "--data-dir", str(data_root)]) == 0
    capsys.readouterr()
    [row] = json.loads((tmp_path / "fig9.json").read_text())
    assert (row["status"], row["seeds"], row["runs"]) == ("ok", 1, [str(path)])
    assert row["error"] == pytest.approx(0.60, abs=1e-9)
