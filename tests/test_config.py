"""Typed config: every bad value is refused before any work, in one line naming the field.

The refusals run ``lenet5 train`` with a data directory that does not exist: had the command
got as far as reading data, it would fail there (or try to download) with a different message,
and the directory (or the run directory) would exist afterwards.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import fields, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lenet5 import checkpoint as ckpt
from lenet5.cli import build_parser, main
from lenet5.commands.train import config_from_args
from lenet5.config import (
    DATASET_NAMES,
    ENGINES,
    LOSSES,
    OPTIMIZERS,
    PRESETS,
    SCHEDULES,
    TrainConfig,
    resolve_config,
    validate,
)
from lenet5.data.datasets import DATASETS

CLI_REFUSALS = [
    (["--set", "lr=abc"], 'lr must be a finite number > 0; got "abc"'),
    (["--set", 'epochs="ten"'], 'epochs must be an integer >= 1 and <= 10000; got "ten"'),
    (["--set", "epochs=ten"], 'epochs must be an integer'),
    (["--set", "batch_size=true"], "batch_size must be an integer >= 1 and <= 65536; got true"),
    (["--set", "epochs=2.5"], "epochs must be an integer >= 1 and <= 10000; got 2.5"),
    (["--set", "save_every=0"], "save_every must be an integer >= 1 and <= 10000; got 0"),
    (["--val-split", "-5"], "--val-split must be an integer >= 0; got -5"),
    (["--set", "model_args.widths=[6,16,120,5000000]"],
     "model_args.widths must be a list of 4 items, each an integer >= 1 and <= 1024"),
    (["--set", "model_args.batchnorm=1"], "model_args.batchnorm must be true or false; got 1"),
    (["--set", "model_args.colour=1"], "unknown model option(s) model_args.colour"),
    (["--set", "model_args=[1]"], "model_args must be a table of NAME = VALUE; got [1]"),
    (["--set", "colour=red"], "unknown setting(s) colour"),
    (["--set", "lrr=0.1"], "unknown setting(s) lrr (did you mean lr?)"),
    (["--set", "noequals"], "--set expects KEY=VALUE"),
    (["--set", "lr=NaN"], "lr must be a finite number > 0; got NaN"),
    (["--set", "lr=Infinity"], "lr must be a finite number > 0; got Infinity"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr=-inf"], "--lr must be a finite number"),
    (["--set", "ema=1"], "ema must be a finite number >= 0 and < 1; got 1"),
    (["--set", "distort=1"], "distort must be true or false; got 1"),
    (["--set", "seed=-1"], "seed must be an integer >= 0"),
    (["--epochs", "2.5"], "--epochs must be an integer"),
    (["--batch-size", "true"], "--batch-size must be an integer"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
    (["--nproc", "0"], "--nproc must be an integer >= 1"),
    (["--optimizer", "rmsprop"], "--optimizer must be one of sgd, adam, adamw, sdlm"),
    (["--engine", "jax"], "--engine must be one of auto, torch, numpy, compiled"),
    (["--dataset", "cifar"], "--dataset must be one of mnist, fashion-mnist"),
    (["--model", "lenet6"], "--model must be one of "),
    (["--model", "lenet5-modern", "--loss", "map"], "loss map needs an RBF head"),
    (["--optimizer", "sdlm"], "optimizer sdlm needs a Gauss-Newton diagonal"),
    (["--engine", "numpy", "--amp"], "amp is a PyTorch option"),
    (["--optimizer", "sgd", "--momentum", "0", "--nesterov"], "nesterov needs momentum > 0"),
    (["--limit-train", "100", "--val-split", "100"], "val_split 100 leaves none"),
]

TOML_REFUSALS = [
    ('epochs = "ten"', 'epochs must be an integer >= 1 and <= 10000; got "ten"'),
    ("epochs = 2.5", "epochs must be an integer"),
    ("batch_size = true", "batch_size must be an integer"),
    ("lr = nan", "lr must be a finite number"),
    ("lr = inf", "lr must be a finite number"),
    ("[train]\nsave_every = 0", "save_every must be an integer >= 1"),
    ("val_split = -5", "val_split must be an integer >= 0"),
    ("data_dir = 5", "data_dir must be a string (or null); got 5"),
    ('colour = "red"', "unknown setting(s) colour"),
    ("model_args = 3", "model_args must be a table of NAME = VALUE; got 3"),
    ("[model_args]\nwidths = [6, 16, 120, 5000000]", "model_args.widths must be"),
    ('[model_args]\ndropout = "a lot"', "model_args.dropout must be a finite number"),
    ("train = 3", "[train] must be a table"),
    ("epochs = = 3", "invalid TOML"),
]


def refused(capsys, tmp_path, *args: str) -> str:
    """Run ``lenet5 train``; assert exit 1 with one ``lenet5: error:`` line and no work done."""
    missing, out = tmp_path / "no-data-here", tmp_path / "run"
    code = main(["train", "--data-dir", str(missing), "--out", str(out), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lenet5: error: "), err
    assert "Traceback" not in err and "no-data-here" not in err
    assert not missing.exists() and not out.exists()  # no data read, no run directory made
    return lines[0]


@pytest.mark.parametrize("args, message", CLI_REFUSALS, ids=[" ".join(a) for a, _ in CLI_REFUSALS])
def test_bad_flag_and_set_values_are_refused_before_any_work(capsys, tmp_path, args, message):
    assert message in refused(capsys, tmp_path, *args)


@pytest.mark.parametrize("text, message", TOML_REFUSALS, ids=[t for t, _ in TOML_REFUSALS])
def test_bad_toml_values_are_refused_before_any_work(capsys, tmp_path, text, message):
    file = tmp_path / "bad.toml"
    file.write_text(text + "\n")
    line = refused(capsys, tmp_path, "--config", str(file))
    assert message in line
    # Model options are checked once the model is known (any layer may name it), by model.
    assert (str(file) in line) != ("model_args." in message), line


def test_a_resumed_checkpoints_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "batch_size": True})
    with pytest.raises(ValueError, match="settings must be a table"):
        TrainConfig.from_dict([1, 2])


# ----------------------------------------------------------------------------- properties

def accepted_types(hint) -> set[type]:
    """The Python types a field declares: ``float`` takes ints too, ``bool`` is not an int."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(accepted_types(a) for a in args))
    if typing.get_origin(hint) is typing.Literal:
        return {type(a) for a in args}
    if hint is type(None):
        return {type(None)}
    if hint is float:
        return {int, float}
    return {typing.get_origin(hint) or hint}


@functools.cache
def cli_parser():
    return build_parser()


def train_parser():
    return cli_parser()._subparsers._group_actions[0].choices["train"]


HINTS = typing.get_type_hints(TrainConfig)
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
    st.lists(st.integers(), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@pytest.mark.parametrize("name", [f.name for f in fields(TrainConfig)])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_value_of_the_wrong_type_is_refused(name, data):
    ok = accepted_types(HINTS[name])
    value = data.draw(ANY_VALUE.filter(lambda v: type(v) not in ok), label=name)
    with pytest.raises(ValueError, match=rf"(^|\s){name} must be "):
        TrainConfig.from_dict({name: value})
    if str not in ok:  # the command line: --set NAME=<the value as JSON>
        args = cli_parser().parse_args(["train", "--set", f"{name}={json.dumps(value)}"])
        with pytest.raises(ValueError, match=rf"--set {name} must be "):
            config_from_args(args)


@settings(max_examples=60, deadline=None)
@given(value=st.integers().filter(lambda n: not 1 <= n <= 10_000))
def test_any_epoch_count_out_of_range_is_refused(value):
    with pytest.raises(ValueError, match="epochs must be an integer >= 1 and <= 10000"):
        resolve_config(overrides={"epochs": value})


# ----------------------------------------------------------------------------- what is accepted

def from_cli(*args: str) -> TrainConfig:
    return config_from_args(cli_parser().parse_args(["train", *args]))[0]


def test_flags_and_set_values_are_read_by_their_types():
    cfg = from_cli("--set", "lr=1", "--set", 'data_dir="/x y"', "--set", "out=2024",
                   "--set", "distort=True", "--no-progress", "--epochs", "3",
                   "--set", "model_args.widths=[6, 16, 120, 10]", "--limit-train", "null")
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    assert (cfg.data_dir, cfg.out, cfg.distort, cfg.progress, cfg.epochs) == ("/x y", "2024", True, False, 3)
    assert cfg.model_args == {"widths": [6, 16, 120, 10]} and cfg.limit_train is None


def test_variant_models_are_recorded_as_their_architecture_and_options(tmp_path):
    cfg = from_cli("--model", "lenet5-modern-bn", "--set", "model_args.dropout=0.2")
    assert (cfg.model, cfg.model_args) == ("lenet5-modern", {"batchnorm": True, "dropout": 0.2})
    file = tmp_path / "c.toml"
    file.write_text("[model_args]\ndropout = 0.3\n")
    cfg = from_cli("--preset", "best", "--config", str(file))  # a file's options merge too
    assert cfg.model_args == {"batchnorm": True, "dropout": 0.3}


def test_fast_preset_is_the_fast99_recipe():
    cfg = resolve_config("fast")
    got = {k: getattr(cfg, k) for k in (
        "model", "model_args", "engine", "optimizer", "momentum", "nesterov", "weight_decay", "lr",
        "schedule", "batch_size", "label_smoothing", "epochs", "distort", "eval_train", "ema")}
    assert got == dict(model="lenet5-modern", model_args={"batchnorm": True}, engine="auto",
                       optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4, lr=0.4,
                       schedule="onecycle-linear", batch_size=64, label_smoothing=0.1, epochs=1,
                       distort=False, eval_train=False, ema=0.0)


def test_every_preset_resolves():
    for name in PRESETS:
        assert resolve_config(name).preset == name


def test_names_are_defined_once_and_feed_the_choices():
    assert DATASET_NAMES == tuple(DATASETS)
    assert "compiled" in ENGINES and "onecycle-linear" in SCHEDULES
    help_text = " ".join(train_parser().format_help().split())
    for names in (ENGINES, OPTIMIZERS, SCHEDULES, LOSSES, DATASET_NAMES):
        assert "{" + ",".join(names) + "}" in help_text


def test_help_shows_every_flag_with_help_text_and_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--lr X learning rate" in out and "(default: 0.001)" in out
    assert "--epochs N passes over the training images (default: 10)" in out
    assert "--progress, --no-progress progress bar (default: on)" in out
    options = [a for a in train_parser()._actions if a.option_strings and a.dest != "help"]
    flags = {a.dest for a in options}
    assert flags >= {f.name for f in fields(TrainConfig) if f.name != "model_args"}
    for action in options:
        assert action.help and "default" in action.help, action.option_strings


# ----------------------------------------------------------------------------- resume (trains)

@pytest.mark.slow
def test_resume_takes_the_checkpoint_file_and_resolves_a_relative_data_dir(
        data_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    from lenet5.training.loop import train

    train(resolve_config("relu-maxpool", overrides=dict(
        data_dir=str(data_root), out=str(run), epochs=1, limit_train=256, progress=False,
        threads=1)), log=lambda *a: None)
    by_dir = from_cli("--resume", str(run), "--epochs", "2")
    by_file = from_cli("--resume", str(run / ckpt.CHECKPOINT_NAME), "--epochs", "2")
    assert by_file == by_dir and by_dir.resume == str(run)
    assert (by_dir.epochs, by_dir.limit_train, by_dir.preset) == (2, 256, "relu-maxpool")

    # An older run recorded data_dir relative to where it was started.
    state, opt, meta = ckpt.read_checkpoint(run)
    meta["train_config"]["data_dir"] = "data"
    ckpt.save_checkpoint(run, state, meta, opt)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ValueError, match="relative to where it was started .* pass --data-dir"):
        from_cli("--resume", str(run), "--epochs", "2")
    assert not (elsewhere / "data").exists()  # nothing downloaded into a new folder
    assert from_cli("--resume", str(run), "--data-dir", str(data_root)).data_dir == str(data_root)
    (elsewhere / "data").symlink_to(data_root)  # where it was started: found from here
    assert from_cli("--resume", str(run)).data_dir == str(elsewhere / "data")


def test_every_defined_name_is_known_to_every_factory():
    """What validation accepts, each engine's factories build: no name is defined twice apart."""
    import torch

    from lenet5.models import build_numpy, create_model
    from lenet5.scratch import losses as np_losses
    from lenet5.scratch import optim as np_optim
    from lenet5.training import engine, losses, optim, schedules

    assert set(engine.ENGINES) | {"auto"} == set(ENGINES)  # auto resolves to one of them
    assert set(losses.LOSSES) == set(np_losses.LOSSES) == set(LOSSES)
    for name in LOSSES:
        losses.make_loss(name), np_losses.make_loss(name)
    for name in OPTIMIZERS:
        optim.make_optimizer(name, create_model("lenet5-1998").parameters(), 0.1)
        np_optim.make_optimizer(name, build_numpy("lenet5-1998", seed=0).params(), 0.1)
    for name in SCHEDULES:
        rates = [schedules.lr_at(name, 0.1, e, s, 10, 4) for e in range(4) for s in range(10)]
        assert all(0 <= r <= 0.1 for r in rates) and torch.tensor(rates).isfinite().all()


def test_float64_is_refused_where_torch_computes(data_root):
    """``precision`` is the NumPy and compiled engines' arithmetic; PyTorch's engine refuses it
    in one line rather than train in float32 under a float64 label."""
    from lenet5.training.engine import make_engine

    with pytest.raises(ValueError, match="precision float64 is the numpy and compiled"):
        resolve_config(None, overrides=dict(engine="torch", precision="float64",
                                            data_dir=str(data_root)))
    cfg = resolve_config(None, overrides=dict(engine="auto", precision="float64"))
    with pytest.raises(ValueError, match="PyTorch computes in float32"):  # auto -> torch (GPU)
        make_engine(replace(cfg, engine="torch", precision="float64"), {}, "cpu")
    validate(cfg)  # auto resolves to the compiled engine on a CPU
    with pytest.raises(ValueError, match="precision"):
        resolve_config(None, overrides=dict(precision="float16"))
