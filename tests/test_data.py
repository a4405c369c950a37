"""IDX reading, dataset checksums and the `lenet5 data` commands, on real and broken files."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

from lenet5.cli import main
from lenet5.data.datasets import DataError, dataset_info, load_split, resolve_data_root
from lenet5.data.idx import IDXError, parse, read_idx, write_idx

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


def test_fixture_fails_checksum_with_clear_error(tiny):
    with pytest.raises(DataError, match="checksum mismatch"):
        load_split("mnist", "train", tiny, download=False)


def test_raw_and_gzip_read_the_same(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "a", arr, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), read_idx(tmp_path / "a"))


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x0d\x03" + b"\x00" * 12, "bad magic"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02" * 2, "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05" + b"\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01" + b"\x01\x02", "trailing bytes"),
    ],
)
def test_parse_rejects_malformed_headers(blob, message):
    with pytest.raises(IDXError, match=message):
        parse(blob, "x")


def test_parse_rejects_wrong_kind():
    labels = b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"
    with pytest.raises(IDXError, match="expected 2051"):
        parse(labels, "labels-as-images", expect_magic=2051)


@pytest.mark.parametrize("cut", [6, 15])
def test_truncated_gzip_names_the_file(tmp_path, cut):
    p = tmp_path / "broken.gz"
    full = gzip.compress(b"\x00" * 1000)
    p.write_bytes(full[:-cut])
    with pytest.raises(IDXError, match="broken.gz: (corrupt|truncated)"):
        read_idx(p)


def test_garbage_gzip_names_the_file(tmp_path):
    p = tmp_path / "garbage.gz"
    p.write_bytes(b"\x1f\x8b" + b"\xff" * 50)
    with pytest.raises(IDXError, match="garbage.gz: corrupt"):
        read_idx(p)


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LENET5_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv("LENET5_DATA_DIR")
    assert "lenet5" in str(resolve_data_root())


def test_missing_without_download_is_clear(tmp_path):
    with pytest.raises(DataError, match="not found.*lenet5 data download"):
        load_split("mnist", "test", tmp_path, download=False)


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


def test_truncated_file_is_rejected(data_root, tmp_path, capsys):
    root = copy_real(data_root, tmp_path)
    p = root / "mnist" / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[: 200_000])
    assert main(["data", "info", "--data-dir", str(root)]) == 1
    assert "t10k-images" in capsys.readouterr().err


def test_label_file_from_other_split_is_rejected(data_root, tmp_path, capsys):
    root = copy_real(data_root, tmp_path)
    shutil.copy(root / "mnist" / "train-labels-idx1-ubyte.gz", root / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError):
        load_split("mnist", "test", root)
    # Unverified, the count mismatch itself is still caught and named.
    with pytest.raises(DataError, match="10000 images but 60000 labels"):
        load_split("mnist", "test", root, verify=False)
    assert main(["data", "info", "--data-dir", str(root)]) == 1


def test_info_function_reports_per_file(data_root):
    info = dataset_info("mnist", data_root)
    assert all(f["verified"] for f in info["files"].values())
