"""Opening checkpoints: every kind of tampering is one CheckpointError line, never a traceback,
never a silent wrong answer, never gigabytes allocated; saving fails cleanly on a full disk.

Tampered files are real bundled checkpoints rewritten with ``safetensors.numpy.save_file``.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lenet5 import checkpoint as ckpt
from lenet5.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from lenet5.cli import main
from lenet5.inference.load import load
from tests.checkpoint_support import BUNDLED, read_raw, tampered, write_raw

MODERN = "lenet5-modern"  # batch-norm LeNet-5: float weights and int64 counters


def drop(*keys):
    return lambda m: {k: v for k, v in m.items() if k not in keys}


def put(**values):
    return lambda m: {**m, **values}


def refused(path, match: str, engine: str = "torch") -> str:
    with pytest.raises(CheckpointError, match=match) as e:
        load(path, engine=engine)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    return str(e.value)


# ----------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("header, match", [
    ("[1, 2, 3]", "must be a JSON object, not list"),
    ("42", "must be a JSON object, not int"),
    ('"lenet5"', "must be a JSON object, not str"),
    ("null", "must be a JSON object, not NoneType"),
    ("{not json", "corrupt metadata"),
    ("[" * 100_000 + "]" * 100_000, "corrupt metadata"),  # deeper than Python's recursion
])
def test_metadata_that_is_not_an_object(tmp_path, header, match):
    tensors, _ = read_raw(BUNDLED[MODERN])
    refused(write_raw(tmp_path / "m.safetensors", tensors, header=header), match)


@pytest.mark.parametrize("edit, match", [
    (drop("model"), "lacks model"),
    (drop("normalization"), "lacks normalization"),
    (drop("format"), "lacks format"),
    (put(format="lenet5-checkpoint/0"), "format is 'lenet5-checkpoint/0'"),
    (put(model=5), "model must be a non-empty string"),
    (put(model="lenet6"), "unknown model 'lenet6'"),
    (put(epoch="15"), "epoch must be a whole number"),
    (put(epoch=True), "epoch must be a whole number"),
    (put(epoch=-1), "epoch must be a whole number"),
    (put(train_config=[1]), "train_config must be a JSON object"),
    (put(model_config=[6, 16]), "model_config must be a JSON object"),
    (put(classes=["0", "1"]), "classes must be a list of 10"),
    (put(dataset="cifar"), "unknown dataset 'cifar'"),
    (put(history=[{"epoch": 1, "train_error": "low", "test_error": 0.1}]), "train_error must be a number"),
    (put(history=[{"epoch": 1}]), "lacks train_error or test_error"),
    (put(optimizer=[]), "optimizer must be a JSON object"),
    (put(optimizer={"type": "adam", "lr": "fast", "steps": 1}), "lr must be a finite number"),
    (put(bundle="x"), "bundle must be"),
])
def test_missing_keys_and_wrong_types(tmp_path, edit, match):
    refused(tampered(tmp_path / "m.safetensors", MODERN, edit), match)


@pytest.mark.parametrize("norm, match", [
    ("x", "normalization must be a JSON object"),
    ({"mode": "standard", "shift": 0.1}, "scale must be a finite number > 0"),
    ({"mode": "standard", "shift": float("nan"), "scale": 3.2}, "shift must be a finite number"),
    ({"mode": "standard", "shift": 0.1, "scale": float("inf")}, "scale must be a finite number"),
    ({"mode": "standard", "shift": 0.1, "scale": -3.2}, "scale must be a finite number > 0"),
    ({"mode": "fancy", "shift": 0.1, "scale": 3.2}, "mode must be one of"),
])
def test_invalid_normalization(tmp_path, norm, match):
    refused(tampered(tmp_path / "m.safetensors", MODERN, put(normalization=norm)), match)


@pytest.mark.parametrize("name, head", [(MODERN, "rbf"), ("lenet5-1998", "logits"), (MODERN, 3)])
def test_head_must_be_the_models(tmp_path, name, head):
    refused(tampered(tmp_path / "m.safetensors", name, put(head=head)), "head")


@pytest.mark.parametrize("config, match", [
    ({"widths": [6, 16, 120, 5_000_000]}, "widths"),
    ({"widths": [6, 16, 120, "84"]}, "widths"),
    ({"widths": [6, 16, 120]}, "widths"),
    ({"batchnorm": "yes"}, "batchnorm"),
    ({"dropout": "0.1"}, "dropout"),
    ({"activation": "gelu"}, "activation"),
    ({"depth": 7}, "depth"),
    ({"widths": [6, 16, 120, 1000]}, r"f6.0.weight has shape \[84, 120\]; .* needs \[1000, 120\]"),
    ({"batchnorm": False}, "unexpected c1.1.bias"),
])
def test_model_config_must_fit_the_model_and_the_tensors(tmp_path, config, match):
    edit = lambda m: {**m, "model_config": {**m["model_config"], **config}}  # noqa: E731
    refused(tampered(tmp_path / "m.safetensors", MODERN, edit), match)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("widths", [[6, 16, 120, 5_000_000], [1024, 1024, 1024, 1024]])
def test_declared_huge_widths_are_refused_before_allocating(tmp_path, widths):
    """Out of bounds, or in bounds but not what the tensors hold: refused from the metadata and
    the file's header, the model never built (the second would be 1024 x 1024 x 5 x 5 floats
    twice, 200 MB, before a single shape was compared)."""
    config = {"activation": "relu", "pool": "max", "batchnorm": True, "dropout": 0.1, "widths": widths}
    path = tampered(tmp_path / "m.safetensors", MODERN, put(model_config=config))
    before = peak_rss_mb()
    refused(path, "widths|has shape")
    assert peak_rss_mb() - before < 100


# ----------------------------------------------------------------------------- tensors


def cast(key, dtype):
    return lambda t: {**t, key: t[key].astype(dtype)}


@pytest.mark.parametrize("edit, match", [
    (cast("c1.0.weight", np.int32), "c1.0.weight has dtype I32; lenet5-modern needs a float"),
    (cast("head.weight", np.int64), "head.weight has dtype I64"),
    (cast("head.bias", bool), "head.bias has dtype BOOL"),
    (cast("c1.1.num_batches_tracked", np.float32), "num_batches_tracked has dtype F32; .* integer"),
    (lambda t: {**t, "c3.0.weight": np.where(np.arange(2400).reshape(16, 6, 5, 5) == 7, np.nan,
                                             t["c3.0.weight"]).astype(np.float32)}, "NaN or infinite"),
    (lambda t: {**t, "head.bias": np.full(10, np.inf, np.float32)}, "NaN or infinite"),
    (lambda t: {**t, "f6.1.running_var": -t["f6.1.running_var"]}, "negative variances"),
    (lambda t: {k: v for k, v in t.items() if k != "head.bias"}, "missing head.bias"),
    (lambda t: {**t, "extra.weight": np.zeros(3, np.float32)}, "unexpected extra.weight"),
    (lambda t: {**t, "head.weight": t["head.weight"][:, :80].copy()}, r"head.weight has shape \[10, 80\]"),
])
def test_weight_tensors_of_the_wrong_kind(tmp_path, edit, match):
    path = tampered(tmp_path / "m.safetensors", MODERN, tensors_fn=edit)
    refused(path, match)
    refused(path, match, engine="numpy")


def test_finite_weights_that_overflow_are_refused(tmp_path):
    def huge(t):
        return {**t, "head.weight": np.full_like(t["head.weight"], 3e38)}

    refused(tampered(tmp_path / "m.safetensors", MODERN, tensors_fn=huge), "non-finite outputs")


def test_old_one_element_counters_still_load():
    """The bundled files keep num_batches_tracked as (1,), as torch wrote them once."""
    tensors, _ = read_raw(BUNDLED[MODERN])
    assert tensors["c1.1.num_batches_tracked"].shape == (1,)
    assert load(MODERN).meta["model"] == MODERN


# ----------------------------------------------------------------------------- files


def test_files_that_are_not_checkpoints(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    refused(junk, "not a readable safetensors file")
    good = BUNDLED[MODERN].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good[: len(good) // 2])
    refused(cut, "not a readable safetensors file")
    lying = tmp_path / "lying.safetensors"  # a header that claims 2**40 bytes of tensors
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 38], "data_offsets": [0, 1 << 40]}})
    lying.write_bytes(struct.pack("<Q", len(header)) + header.encode())
    refused(lying, "not a readable safetensors file")
    bare = tmp_path / "bare.safetensors"
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(bare))
    refused(bare, "without lenet5 metadata")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_not_opened(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    refused(fifo, "not a regular file")  # opening it would block forever


def test_tampered_checkpoints_are_one_line_in_every_command(tmp_path, capsys):
    bad = tampered(tmp_path / "run" / "checkpoint.safetensors", MODERN, put(head="rbf"))
    image = tmp_path / "d.png"
    from PIL import Image

    Image.new("L", (28, 28), 255).save(image)
    for argv in (["evaluate", str(bad)], ["predict", str(image), "--model", str(bad)],
                 ["export", str(bad), str(tmp_path / "m.onnx")], ["report", str(bad)],
                 ["viz", "kernels", "--model", str(bad), "--out", str(tmp_path / "k.png")],
                 ["bundle", str(bad), "x", "--out-dir", str(tmp_path / "w")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("lenet5: error: ") and err.count("\n") == 1, (argv, err)
        assert "head" in err, (argv, err)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- purposes


def run_checkpoint(path, **meta_changes):
    """A checkpoint as a run leaves it: weights, Adam moments and the optimiser's meta."""
    tensors, meta = read_raw(BUNDLED[MODERN])
    moments = {f"{k}.exp_avg": np.zeros_like(v) for k, v in tensors.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    meta = {**meta, "optimizer": {"type": "adamw", "lr": 1e-3, "steps": 7, "beta1": 0.9,
                                  "beta2": 0.999, "eps": 1e-8, "weight_decay": 5e-4},
            **meta_changes}
    meta.pop("bundle")
    return save_checkpoint(path, tensors, meta, moments)


def test_what_a_resume_needs(tmp_path):
    path = run_checkpoint(tmp_path / "run")
    state, opt, meta = read_checkpoint(path, purpose="resume")
    assert meta["optimizer"]["steps"] == 7 and "head.weight.exp_avg" in opt
    with pytest.raises(CheckpointError, match="lacks optimizer"):
        read_checkpoint(BUNDLED[MODERN], purpose="resume")
    with pytest.raises(CheckpointError, match="steps must be a whole number"):
        read_checkpoint(run_checkpoint(tmp_path / "a", optimizer={"type": "adamw", "lr": 1e-3,
                                                                  "steps": "7"}), purpose="resume")
    tensors, meta = read_raw(path)
    tensors["optimizer/c9.weight.exp_avg"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointError, match="optimizer tensor c9.weight.exp_avg"):
        read_checkpoint(write_raw(tmp_path / "b.safetensors", tensors, meta), purpose="resume")
    tensors, meta = read_raw(path)
    tensors["optimizer/head.weight.exp_avg"] = np.full((10, 84), np.nan, np.float32)
    with pytest.raises(CheckpointError, match="NaN"):
        read_checkpoint(write_raw(tmp_path / "c.safetensors", tensors, meta), purpose="resume")
    # A bundle needs its train config and epoch; a model does not.
    slim = tampered(tmp_path / "d.safetensors", MODERN, drop("train_config", "epoch"))
    assert load(slim).meta["model"] == MODERN
    with pytest.raises(CheckpointError, match="lacks train_config, epoch"):
        read_checkpoint(slim, purpose="bundle")


@pytest.mark.parametrize("edit, match", [
    (drop("optimizer"), "lacks optimizer"),
    (drop("epoch"), "lacks epoch"),
    (put(epoch="1"), "epoch must be a whole number"),
    (put(optimizer={"type": "adamw", "lr": 1e-3, "steps": -3}), "steps must be a whole number"),
    (put(model_config={"widths": [6, 16, 120, 5_000_000]}), "widths"),
])
def test_train_resume_refuses_tampered_checkpoints_in_one_line(tmp_path, capsys, edit, match):
    run = tmp_path / "run"
    path = run_checkpoint(run)
    tensors, meta = read_raw(path)
    meta["train_config"].update(data_dir=str(tmp_path / "no-data"), epochs=20)
    write_raw(path, tensors, edit(meta))
    assert main(["train", "--resume", str(run), "--epochs", "20"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lenet5: error: ") and err.count("\n") == 1 and match in err, err


# ----------------------------------------------------------------------------- saving


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import safetensors.numpy
    from safetensors import SafetensorError

    run = tmp_path / "run"
    path = run_checkpoint(run)
    before = path.read_bytes()
    tensors, meta = read_raw(path)

    for error in (SafetensorError("Error while serializing: IoError(No space left on device)"),
                  OSError(errno.ENOSPC, "No space left on device")):
        def full_disk(tensors, filename, metadata=None, error=error):
            with open(filename, "wb") as f:
                f.write(b"\x00" * 1000)  # half a file, then the disk is full
            raise error

        monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
        with pytest.raises(CheckpointError, match="could not save the checkpoint") as e:
            save_checkpoint(run, tensors, meta)
        assert "No space left on device" in str(e.value) and "\n" not in str(e.value)
        assert "previous checkpoint is unchanged" in str(e.value)
        assert path.read_bytes() == before
        assert sorted(p.name for p in run.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]


# ----------------------------------------------------------------------------- properties

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = sorted(ckpt.FIELDS) + ["widths", "shift", "scale", "mode", "batchnorm", "epoch"]


def mutate(meta, data) -> object:
    """One random edit somewhere in the document: drop a key, or replace a value (at the top
    or one level down) by random JSON."""
    target = data.draw(st.sampled_from(["top", "nested", "whole"]))
    if target == "whole" or not isinstance(meta, dict):
        return data.draw(JSON)
    meta = json.loads(json.dumps(meta))
    holder = meta
    if target == "nested":
        key = data.draw(st.sampled_from(["model_config", "normalization", "optimizer", "bundle"]))
        if not isinstance(meta.get(key), dict):
            meta[key] = {}
        holder = meta[key]
    key = data.draw(st.sampled_from(KEYS + sorted(holder)))
    if data.draw(st.booleans()) and key in holder:
        del holder[key]
    else:
        holder[key] = data.draw(JSON)
    return meta


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("property")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_metadata_opens_or_is_a_checkpoint_error(scratch, data):
    name = data.draw(st.sampled_from(sorted(BUNDLED)))
    tensors, meta = read_raw(BUNDLED[name])
    model = meta["model"]  # what the weights are (a bundle's name may differ: lenet5-robust)
    for _ in range(data.draw(st.integers(1, 3))):
        meta = mutate(meta, data)
    path = write_raw(scratch / "m.safetensors", tensors, header=json.dumps(meta))
    engine = data.draw(st.sampled_from(["torch", "numpy"]))
    try:
        loaded = load(path, engine=engine)
    except CheckpointError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("opened")
    assert loaded.meta["model"] == model  # what opens is what the file holds


DTYPES = [np.bool_, np.int8, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_tensor_dtypes_open_or_are_a_checkpoint_error(scratch, data):
    name = data.draw(st.sampled_from(sorted(BUNDLED)))
    tensors, meta = read_raw(BUNDLED[name])
    keys = data.draw(st.lists(st.sampled_from(sorted(tensors)), min_size=1, max_size=4, unique=True))
    changed = {}
    for key in keys:
        dtype = data.draw(st.sampled_from(DTYPES))
        with np.errstate(all="ignore"):
            changed[key] = tensors[key].astype(dtype)
        if data.draw(st.booleans()):  # and sometimes another shape
            changed[key] = changed[key].reshape(-1)[: data.draw(st.integers(0, changed[key].size))].copy()
    path = write_raw(scratch / "t.safetensors", {**tensors, **changed}, meta)
    try:
        loaded = load(path, engine=data.draw(st.sampled_from(["torch", "numpy"])))
    except CheckpointError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("opened")
    # What opens holds floats where the model has floats (a float16/64 copy is still the model).
    for key, v in changed.items():
        assert np.issubdtype(v.dtype, np.floating) == np.issubdtype(tensors[key].dtype, np.floating)
    assert loaded.meta["model"] == meta["model"]  # the architecture the bundle holds


def test_atomic_writes_get_the_mode_of_a_plain_new_file(tmp_path):
    """``mkstemp`` creates its files 0600; what lands at the final name is readable as any new
    file the user makes (the umask decides), and a file it replaces is replaced, mode too."""
    mask = os.umask(0o022)
    os.umask(mask)
    assert ckpt.FILE_MODE == 0o666 & ~mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = tmp_path / "config.json"
    target.write_text("{}")
    target.chmod(0o600)
    ckpt.atomic_write_text(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == ckpt.FILE_MODE
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_atomic_writes_name_the_file_asked_for_in_their_errors(tmp_path, monkeypatch):
    """A directory where the file should go, or a full disk while writing: the error names the
    path the user gave, and no temporary file is left."""
    with pytest.raises(IsADirectoryError) as e:
        ckpt.atomic_write_text(tmp_path, "x")
    assert e.value.filename == str(tmp_path)

    def full(p):
        raise OSError(errno.ENOSPC, "No space left on device", str(p))

    target = tmp_path / "model.onnx"
    with pytest.raises(OSError) as e:
        ckpt.atomic_write(target, full)
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(target))
    assert list(tmp_path.iterdir()) == []
