"""Data-parallel training (torchrun, gloo on CPU) against one process: same weights.

Every rank draws the same permutation and takes its slice of each global batch, and DDP
averages the ranks' gradients, so 2 ranks at batch b take exactly the steps one process takes
at batch 2b; only float summation order differs (tolerance 1e-6). Ranks are real processes on
127.0.0.1 started by ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet5.checkpoint import read_checkpoint
from lenet5.training.distributed import free_port, strip_nproc, torchrun_command

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("LENET5_DATA_DIR") or str(ROOT.parent / "shared" / "data")

# Calls train() with a JSON TrainConfig; the same file runs alone or as each torchrun rank.
RUNNER = """\
import json, sys
from lenet5.config import TrainConfig
from lenet5.training.loop import train
train(TrainConfig.from_dict(json.loads(sys.argv[1])))
"""

# Plain SGD + momentum on the modern net without batch-norm or dropout: per-sample terms only,
# so the global-batch gradient is a plain mean over samples whichever rank holds them.
SGD = dict(model="lenet5-modern", model_args={}, optimizer="sgd", lr=0.05, momentum=0.9,
           limit_train=512, epochs=1, eval_batch_size=2000)


def config(out: Path, **kw) -> dict:
    base = dict(data_dir=DATA_DIR, device="cpu", engine="torch", deterministic=True, threads=1,
                seed=0, progress=False, out=str(out))  # DDP is torch's: compare torch with torch
    return {**base, **kw}


def run_train(tmp: Path, cfg: dict, nproc: int) -> Path:
    """Train in one process or in ``nproc`` torchrun ranks; the run directory."""
    script = tmp / "runner.py"
    script.write_text(RUNNER)
    launcher = [] if nproc == 1 else [
        "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, *launcher, str(script), json.dumps(cfg)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Path(cfg.get("resume") or cfg["out"])


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, _, ma = read_checkpoint(a)
    wb, _, mb = read_checkpoint(b)
    assert ma["epoch"] == mb["epoch"] and sorted(wa) == sorted(wb)
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=0, atol=atol, err_msg=k)


def test_strip_nproc_and_command():
    assert strip_nproc(["--nproc", "2", "--epochs", "3", "--nproc=4"]) == ["--epochs", "3"]
    cmd = torchrun_command(2, ["--preset", "paper", "--nproc", "2"], port=29555)
    assert cmd[1:] == ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                       "127.0.0.1", "--master-port", "29555", "-m", "lenet5", "train",
                       "--preset", "paper"]
    with pytest.raises(ValueError):
        torchrun_command(0, [])


@pytest.fixture(scope="module")
def ddp_sgd(tmp_path_factory) -> Path:
    """2 ranks x batch 16, one epoch of 512 images (32 steps), checkpoint after epoch 1."""
    tmp = tmp_path_factory.mktemp("ddp_sgd")
    return run_train(tmp, config(tmp / "run", **SGD, batch_size=16), nproc=2)


@pytest.mark.slow
def test_ddp_matches_single_process(ddp_sgd, tmp_path):
    single = run_train(tmp_path, config(tmp_path / "run", **SGD, batch_size=32), nproc=1)
    assert_same_weights(ddp_sgd, single, atol=1e-6)


@pytest.mark.slow
def test_ddp_uneven_last_batch(tmp_path):
    """488 = 15 x 32 + 8: rank 0 holds all 8 of the last batch, rank 1 an empty slice."""
    cfg = {**SGD, "limit_train": 488}
    ddp = run_train(tmp_path, config(tmp_path / "ddp", **cfg, batch_size=16), nproc=2)
    single = run_train(tmp_path, config(tmp_path / "one", **cfg, batch_size=32), nproc=1)
    assert_same_weights(ddp, single, atol=1e-6)


@pytest.mark.slow
def test_ddp_batchnorm_uses_global_batch_statistics(tmp_path):
    """Batch-norm under DDP: 2 ranks x 16 == 1 process x 32, weights and running statistics.

    Each rank's layers normalise with the statistics of the whole global batch (synchronised
    batch-norm), so the steps are the one-process steps; with per-rank statistics they differ
    at the first step. 488 = 15 x 32 + 8 also covers a last batch that rank 1 has no part of.
    tanh and average pooling rather than ReLU and max: with ReLU and max-pool this run's path
    forks on rounding alone (one process with 1 or 2 threads ends 0.14 apart after 15 steps,
    the 2-rank run 2e-6 from the 2-thread one), which would hide what is tested here.
    Measured: 1.1e-6 apart after 16 steps.
    """
    cfg = {**SGD, "model_args": {"batchnorm": True, "activation": "tanh", "pool": "avg"},
           "limit_train": 488}
    ddp = run_train(tmp_path, config(tmp_path / "ddp", **cfg, batch_size=16), nproc=2)
    single = run_train(tmp_path, config(tmp_path / "one", **cfg, batch_size=32), nproc=1)
    assert_same_weights(ddp, single, atol=1e-5)
    state, _, _ = read_checkpoint(ddp)
    assert int(state["c1.1.num_batches_tracked"]) == 16


@pytest.mark.slow
def test_ddp_resume(ddp_sgd, tmp_path):
    """2 epochs straight == 1 epoch, then --resume to 2 epochs (both 2 ranks): bit for bit."""
    straight = run_train(tmp_path, config(tmp_path / "straight", **{**SGD, "epochs": 2},
                                          batch_size=16), nproc=2)
    resumed = tmp_path / "resumed"
    shutil.copytree(ddp_sgd, resumed)
    run_train(tmp_path, config(resumed, **{**SGD, "epochs": 2}, batch_size=16,
                               resume=str(resumed)), nproc=2)
    assert_same_weights(straight, resumed, atol=0)
    _, opt_a, _ = read_checkpoint(straight)
    _, opt_b, _ = read_checkpoint(resumed)
    for k in opt_a:  # the momentum buffers travel through the checkpoint too
        np.testing.assert_array_equal(opt_a[k], opt_b[k], err_msg=k)


@pytest.mark.slow
def test_ddp_sdlm_curvature_is_the_single_process_estimate(tmp_path):
    """SDLM's h_kk under DDP equals, bit for bit, one process's estimate on the same patterns.

    Before each pass every rank estimates h on the first ``sdlm_samples`` patterns of the
    epoch's permutation, which all ranks share, with identical weights (DDP broadcasts rank 0's
    at start and keeps them in step), then the ranks all-reduce and divide by world size. The
    per-rank estimates are therefore equal, and their average (h + h) / 2 is exactly h in
    floating point (doubling and halving are exact), so after one epoch the optimiser's stored
    ``h`` - estimated from the initial weights, which do not depend on the world size - must
    equal the single-process run's exactly. (The weights are not compared here: with steps of up
    to lr / mu = 0.025 on a fresh network, SDLM amplifies summation-order rounding to ~1e-3
    within 16 steps even in one process; the SGD test covers weight equivalence.)
    """
    sdlm = dict(model="lenet5-1998", optimizer="sdlm", lr=5e-4, schedule="none",
                limit_train=32, sdlm_samples=16, epochs=1, eval_batch_size=2000)
    ddp = run_train(tmp_path, config(tmp_path / "ddp", **sdlm, batch_size=1), nproc=2)
    single = run_train(tmp_path, config(tmp_path / "one", **sdlm, batch_size=2), nproc=1)
    _, h_ddp, _ = read_checkpoint(ddp)
    _, h_one, _ = read_checkpoint(single)
    keys = sorted(k for k in h_one if k.endswith(".h"))
    assert keys and keys == sorted(k for k in h_ddp if k.endswith(".h"))
    for k in keys:
        assert np.array_equal(h_ddp[k], h_one[k]), k
        assert (h_one[k] >= 0).all() and h_one[k].any()


@pytest.mark.slow
def test_cli_nproc_2_trains_logs_and_writes_once(tmp_path):
    """``lenet5 train --nproc 2``: torchrun starts 2 real ranks (gloo, 127.0.0.1).

    Rank 0 alone logs (one header, one epoch line) and writes one run directory; the test-set
    evaluation, split across the ranks, counts all 10,000 images once, and its error count is
    what one process finds for the saved weights.
    """
    from lenet5.inference.evaluate import evaluate_checkpoint

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lenet5", "train", "--nproc", "2", "--model", "lenet5-modern",
           "--limit-train", "256", "--batch-size", "32", "--epochs", "1", "--device", "cpu",
           "--threads", "1", "--data-dir", DATA_DIR, "--out", str(out), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-3000:]
    assert logs.count("world 2)") == 1 and logs.count("epoch   1/1") == 1, logs[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.json", "checkpoint.safetensors", "config.json", "metrics.jsonl"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["test_count"] == 10_000
    _, _, meta = read_checkpoint(out)
    assert meta["epoch"] == 1 and meta["metrics"]["test_count"] == 10_000
    # 2 ranks x batch 32 over 256 images: 4 global steps
    assert meta["optimizer"]["steps"] == 4
    m = evaluate_checkpoint(str(out), data_dir=DATA_DIR)
    assert m["n"] == 10_000 and m["errors"] == rows[0]["test_errors"]
