"""Datasets: files, shapes and checksums, the data root, and the `lenet5 data` commands, on
real and broken files (the IDX reader itself: test_idx.py; downloads: test_download.py)."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from lenet5.cli import main
from lenet5.data.datasets import DataError, dataset_info, load_split, resolve_data_root
from lenet5.data.idx import write_idx

from .conftest import FIXTURES


@pytest.fixture
def tiny(tmp_path):
    """A data root whose mnist/ holds the committed 40+20-image fixture."""
    shutil.copytree(FIXTURES / "mnist-tiny", tmp_path / "mnist")
    return tmp_path


def copy_real(data_root, tmp_path, name="mnist"):
    shutil.copytree(data_root / name, tmp_path / name)
    return tmp_path


def test_fixture_reads_and_matches_real_prefix(tiny):
    x, y = load_split("mnist", "train", tiny, download=False, verify=False)
    assert x.shape == (40, 28, 28) and x.dtype == np.uint8 and y.shape == (40,)
    assert y[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]  # MNIST's famous first labels


def test_fixture_is_refused_as_the_published_split(tiny):
    # 40 images where the spec says 60,000: refused from the header, before the checksum.
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: header declares shape "
                                        r"\(40, 28, 28\), expected \(60000, 28, 28\)"):
        load_split("mnist", "train", tiny, download=False)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LENET5_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("LENET5_DATA_DIR")
    assert "lenet5" in str(resolve_data_root())


def test_missing_without_download_is_clear(tmp_path):
    with pytest.raises(DataError, match="not found.*lenet5 data download"):
        load_split("mnist", "test", tmp_path, download=False)


def test_the_dataset_folder_given_as_the_root_names_the_root_meant(data_root, tmp_path, capsys):
    """``--data-dir .../mnist`` (one folder too deep) is refused at once, naming the parent,
    never searched as ``mnist/mnist`` nor downloaded into it."""
    assert main(["data", "info", "--dataset", "mnist", "--data-dir", str(data_root / "mnist")]) == 1
    assert capsys.readouterr().err == (
        f"lenet5: error: {data_root / 'mnist'} holds the mnist files itself: --data-dir (or "
        f"$LENET5_DATA_DIR) names the folder above it, {data_root}, whose mnist/ holds them\n")
    with pytest.raises(DataError, match="names the folder above it"):
        load_split("mnist", "test", data_root / "mnist")
    assert not (data_root / "mnist" / "mnist").exists()


# --- real data --------------------------------------------------------------------------


@pytest.mark.parametrize("name, mean, std", [("mnist", 0.1307, 0.3081), ("fashion-mnist", 0.2860, 0.3530)])
def test_real_info(data_root, name, mean, std, capsys):
    assert main(["data", "info", "--dataset", name, "--data-dir", str(data_root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["all_verified"] and len(info["files"]) == 4
    assert info["splits"]["train"]["images"] == 60000 and info["splits"]["test"]["images"] == 10000
    assert round(info["splits"]["train"]["pixel_mean"], 4) == mean
    assert round(info["splits"]["train"]["pixel_std"], 4) == std
    assert sum(info["splits"]["test"]["class_counts"]) == 10000


def test_present_files_touch_no_network(data_root, monkeypatch):
    import urllib.request

    def boom(*a, **k):
        raise AssertionError("network touched")

    monkeypatch.setattr(urllib.request, "urlopen", boom)
    x, y = load_split("mnist", "test", data_root)
    assert x.shape == (10000, 28, 28)


def test_flipped_byte_is_rejected(data_root, tmp_path, capsys):
    root = copy_real(data_root, tmp_path)
    p = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[100] ^= 0x01
    p.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_split("mnist", "test", root)
    assert main(["data", "info", "--data-dir", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checksum mismatch" in err[0] and "t10k-labels" in err[0]
    # It says what to do, with commands that exist (there is no --no-verify flag).
    assert "Delete it and run `lenet5 data download --dataset mnist`" in err[0]
    assert "no-verify" not in err[0]


def test_truncated_file_is_rejected(data_root, tmp_path, capsys):
    root = copy_real(data_root, tmp_path)
    p = root / "mnist" / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: 200_000])
    assert main(["data", "info", "--data-dir", str(root)]) == 1
    assert "t10k-images" in capsys.readouterr().err


def test_label_file_from_other_split_is_rejected(data_root, tmp_path, capsys):
    root = copy_real(data_root, tmp_path)
    shutil.copy(root / "mnist" / "train-labels-idx1-ubyte.gz", root / "mnist" / "t10k-labels-idx1-ubyte.gz")
    # 60,000 labels where the test split has 10,000: refused from the header, verified or not.
    for verify in (True, False):
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: header declares shape "
                                            r"\(60000,\), expected"):
            load_split("mnist", "test", root, verify=verify)
    assert main(["data", "info", "--data-dir", str(root)]) == 1


def test_unverified_split_with_fewer_labels_than_images_is_named(data_root, tmp_path):
    root = copy_real(data_root, tmp_path)
    labels = load_split("mnist", "test", root)[1]
    write_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", labels[:9000])
    with pytest.raises(DataError, match="10000 images but 9000 labels"):
        load_split("mnist", "test", root, verify=False)


def test_test_split_never_needs_the_training_files(data_root, tmp_path, monkeypatch):
    import urllib.request

    def boom(*a, **k):
        raise AssertionError("network touched")

    monkeypatch.setattr(urllib.request, "urlopen", boom)
    (tmp_path / "mnist").mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(data_root / "mnist" / f"{stem}.gz", tmp_path / "mnist")
    x, y = load_split("mnist", "test", tmp_path)  # download=True, yet no network: all there
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)


def test_gzip_bomb_in_the_data_root_is_one_line_and_cheap(tmp_path, capsys):
    """A 2 MB file that would inflate to 2 GiB, named as MNIST's test images: refused after the
    7.8 MB the real file holds, never inflated further (the attack measured 4.4 GB here)."""
    import tracemalloc

    from .test_idx import header, write_bomb

    (tmp_path / "mnist").mkdir()
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    assert write_bomb(path, header(10000, 28, 28), 2048) < 3_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: has trailing bytes"):
            load_split("mnist", "test", tmp_path, download=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 7_840_016 + (1 << 20)  # the real file's 7.8 MB and a few small buffers
    assert main(["data", "info", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lenet5: error: ") and str(path) in err[0]


def test_info_function_reports_per_file(data_root):
    info = dataset_info("mnist", data_root)
    assert all(f["verified"] for f in info["files"].values())
