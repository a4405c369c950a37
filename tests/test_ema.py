"""Weight averaging (``TrainConfig.ema``): the update rule, what gets saved, exact resume."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from lenet5 import checkpoint as ckpt
from lenet5.config import resolve_config
from lenet5.training.ema import WeightAverage
from tests.train_support import train_straight_and_resumed


def test_update_rule_with_warmup():
    w = {"a": np.zeros(3, np.float32), "n": np.array(0, np.int64)}
    avg = WeightAverage(0.99, w)
    expect = np.zeros(3)
    for t in range(40):
        w["a"] += 1.0
        w["n"] += 1
        avg.update(w)
        d = min(0.99, (1 + t) / (10 + t))
        expect = d * expect + (1 - d) * w["a"]
    np.testing.assert_allclose(avg.shadow["a"], expect, rtol=1e-6)
    assert int(avg.shadow["n"]) == 40 and avg.steps == 40
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(1.0, w)


def test_cli_refuses_a_decay_outside_0_1(capsys):
    from lenet5.cli import main

    assert main(["train", "--ema", "1.5", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet5: error:") and err.count("\n") == 1, err  # one line
    assert "ema" in err and "1.5" in err, err


def cfg_for(data_root, out, **kw):
    base = dict(data_dir=str(data_root), out=str(out), progress=False, threads=2,
                limit_train=512, deterministic=True, ema=0.99, batch_size=16)
    return resolve_config(kw.pop("preset", "relu-maxpool"), overrides={**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_saved_weights_are_the_average_and_resume_is_exact(data_root, tmp_path, engine):
    train_straight_and_resumed(partial(cfg_for, data_root), tmp_path, engine=engine,
                               model_args={"batchnorm": True})
    a, opt_a, meta = ckpt.read_checkpoint(tmp_path / "straight")
    b, opt_b, _ = ckpt.read_checkpoint(tmp_path / "split")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        np.testing.assert_array_equal(opt_a["ema_live." + k], opt_b["ema_live." + k], err_msg=k)
    # The saved model is the average, not the live weights, and it is what the metrics measured.
    assert any(not np.array_equal(a[k], opt_a["ema_live." + k]) for k in a)
    assert int(opt_a["ema_steps"][0]) == 2 * 512 // 16
    row = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"raw_test_error", "test_error"} <= set(row)
    assert meta["metrics"]["test_errors"] == row["test_errors"]

    from lenet5.inference.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(tmp_path / "straight", data_dir=str(data_root))
    assert report["errors"] == row["test_errors"]
