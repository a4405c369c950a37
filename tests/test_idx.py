"""The IDX reader on malformed, truncated, corrupt and hostile files (gzip bombs), by example
and by property: only :class:`IDXError`, one line naming the file, and memory bounded by the
size the caller expects, never by what a file would inflate to."""

from __future__ import annotations

import gzip
import json
import re
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lenet5.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IDXError,
    nbytes,
    parse,
    read_idx,
    read_idx_checked,
    sha256_decompressed,
    write_idx,
)

MiB = 1 << 20
ZEROS_MEMBER = gzip.compress(b"\0" * MiB, compresslevel=9)  # about 1 kB that inflates to 1 MiB


def header(*dims: int) -> bytes:
    return struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


def write_bomb(path, head: bytes, mib: int) -> int:
    """``head`` then ``mib`` MiB of zeros, as a multi-member gzip (a valid stream); its size."""
    path.write_bytes(gzip.compress(head) + ZEROS_MEMBER * mib)
    return path.stat().st_size


def peak_bytes(fn) -> tuple[BaseException | None, int]:
    """(the exception ``fn`` raised, peak bytes Python allocated meanwhile)."""
    tracemalloc.start()
    try:
        fn()
        error = None
    except Exception as e:  # noqa: BLE001  (returned for the caller to check)
        error = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


# --- examples ---------------------------------------------------------------------------


def test_raw_and_gzip_read_the_same(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "a", arr, compress=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), read_idx(tmp_path / "a"))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    # The digest is of the decompressed content, whatever the container.
    digests = {read_idx_checked(tmp_path / n)[1] for n in ("a", "a.gz")}
    assert digests == {sha256_decompressed(tmp_path / "a.gz")} and len(digests) == 1


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
        parse(labels, "labels-as-images", expect_magic=IMAGES_MAGIC)


@pytest.mark.parametrize(
    "dims, shape, fewer_ok, ok",
    [
        ((3, 2, 2), (3, 2, 2), False, True),
        ((2, 2, 2), (3, 2, 2), False, False),  # fewer items: only when asked for
        ((2, 2, 2), (3, 2, 2), True, True),
        ((4, 2, 2), (3, 2, 2), True, False),  # more: never
        ((3, 2, 3), (3, 2, 2), True, False),  # other image size
        ((3, 4), (3, 2, 2), True, False),  # other rank
    ],
)
def test_expected_shape_is_checked_before_the_body(dims, shape, fewer_ok, ok):
    blob = header(*dims)  # no body at all: a wrong shape is refused before reading one
    if ok:
        with pytest.raises(IDXError, match="truncated"):
            parse(blob, "x", shape=shape, fewer_ok=fewer_ok)
    else:
        with pytest.raises(IDXError, match=r"x: header declares shape .*, expected"):
            parse(blob, "x", shape=shape, fewer_ok=fewer_ok)


def test_declared_size_over_the_limit_is_refused_before_allocating():
    blob = header(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)  # 8e28 bytes declared
    error, peak = peak_bytes(lambda: parse(blob, "huge"))
    assert isinstance(error, IDXError) and "over the" in str(error) and "huge" in str(error)
    assert peak < MiB


def _valid_gzip_idx(tmp_path):
    path = tmp_path / "broken.gz"
    write_idx(path, np.arange(1000, dtype=np.uint8).reshape(10, 10, 10))
    return path


@pytest.mark.parametrize("cut", [1, 6, 15, 200])
def test_truncated_gzip_names_the_file(tmp_path, cut):
    path = _valid_gzip_idx(tmp_path)
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(IDXError, match=r"broken.gz: (corrupt|truncated)"):
        read_idx(path)


def test_corrupt_gzip_trailer_is_caught(tmp_path):
    path = _valid_gzip_idx(tmp_path)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # a CRC byte: the content inflates, its checksum does not match
    path.write_bytes(bytes(data))
    with pytest.raises(IDXError, match="broken.gz: corrupt gzip stream .*CRC"):
        read_idx(path)


def test_garbage_gzip_names_the_file(tmp_path):
    p = tmp_path / "garbage.gz"
    p.write_bytes(b"\x1f\x8b" + b"\xff" * 50)
    with pytest.raises(IDXError, match="garbage.gz: corrupt"):
        read_idx(p)


def test_missing_file_and_fifo_are_refused(tmp_path):
    import os

    with pytest.raises(IDXError, match="nothing.gz: file not found"):
        read_idx(tmp_path / "nothing.gz")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(IDXError, match="fifo: not a regular file"):  # would block forever
        read_idx(tmp_path / "fifo")


# --- gzip bombs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, magic, shape, message",
    [
        (header(10_000), LABELS_MAGIC, (10_000,), "has trailing bytes"),  # endless body
        (header(10_000), None, None, "has trailing bytes"),  # no expectation: the header bounds it
        (header(60_000, 28, 28), IMAGES_MAGIC, (10_000, 28, 28), r"expected \(10000, 28, 28\)"),
        (b"\0\0\0\0", LABELS_MAGIC, (10_000,), "bad magic"),
    ],
)
def test_gzip_bomb_is_refused_with_bounded_memory(tmp_path, head, magic, shape, message):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    size = write_bomb(path, head, 50)  # 50 MiB of zeros in about 50 kB
    assert size < 100_000
    error, peak = peak_bytes(lambda: read_idx(path, magic, shape=shape))
    assert isinstance(error, IDXError), error
    assert str(error).startswith(str(path)) and "\n" not in str(error)
    assert re.search(message, str(error)), error
    assert peak < 2 * MiB, f"peak {peak / MiB:.1f} MiB while refusing a bomb"


def test_sha256_of_a_bomb_stops_at_the_limit(tmp_path):
    path = tmp_path / "bomb.gz"
    write_bomb(path, header(10_000), 50)
    error, peak = peak_bytes(lambda: sha256_decompressed(path, max_bytes=nbytes((10_000,))))
    assert isinstance(error, IDXError) and "decompresses to more than 10008 bytes" in str(error)
    assert peak < 2 * MiB


def test_a_one_gib_bomb_costs_a_fresh_process_little_memory(tmp_path):
    """Measured from outside (peak resident set of a fresh process), as the attack measured it:
    1 GiB of zeros in about 1 MB, read as MNIST's test labels."""
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    write_bomb(path, header(10_000), 1024)
    code = (
        "import json, resource, sys\n"
        "from lenet5.data.idx import IDXError, read_idx\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_idx(sys.argv[1], 2049, shape=(10000,))\n"
        "    error = None\n"
        "except IDXError as e:\n"
        "    error = str(e)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'error': error, 'growth_kib': peak - base}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    result = json.loads(out)
    assert "has trailing bytes" in result["error"]
    assert result["growth_kib"] < 20 * 1024, result  # KiB: far below the 1 GiB it inflates to


# --- properties -------------------------------------------------------------------------

LIMIT = 4096  # max_bytes in the properties: no example may allocate more than this


def _check_outcome(data: bytes, shape=None, fewer_ok=False) -> None:
    """Only IDXError; a success is exactly what its header declares, within the limit."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        array = parse(data, "prop", shape=shape, fewer_ok=fewer_ok, max_bytes=LIMIT)
    except IDXError as e:
        message = str(e)
        assert message.startswith("prop: ") and "\n" not in message
    else:
        assert array.dtype == np.uint8 and nbytes(array.shape) <= LIMIT
        if shape is not None:
            assert array.shape[1:] == tuple(shape[1:]) and array.shape[0] <= shape[0]
    # What one parse allocated at its peak: the body (<= LIMIT) plus bounded buffers, not
    # anything a header or a gzip stream claims.
    assert tracemalloc.get_traced_memory()[1] - before <= LIMIT + 2 * len(data) + 256 * 1024


@pytest.fixture(scope="module")
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


_settings = settings(max_examples=100, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_settings
@given(data=st.binary(max_size=256), gz=st.booleans())
def test_property_random_bytes(traced, data, gz):
    _check_outcome(gzip.compress(data) if gz else data)


@st.composite
def mutated_idx(draw):
    """A valid IDX file (raw or gzip) of a small random shape, then bytes flipped, cut or
    added, header included."""
    ndim = draw(st.integers(1, 3))
    dims = tuple(draw(st.lists(st.integers(0, 12), min_size=ndim, max_size=ndim)))
    blob = bytearray(header(*dims) + bytes(draw(st.binary(min_size=int(np.prod(dims)),
                                                          max_size=int(np.prod(dims))))))
    if draw(st.booleans()):
        blob = bytearray(gzip.compress(bytes(blob), mtime=0))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "add", "dim"]))
        if action == "flip" and blob:
            i = draw(st.integers(0, len(blob) - 1))
            blob[i] ^= draw(st.integers(1, 255))
        elif action == "cut" and blob:
            del blob[draw(st.integers(0, len(blob) - 1)):]
        elif action == "add":
            blob += draw(st.binary(min_size=1, max_size=64))
        elif action == "dim" and len(blob) >= 8:  # a huge or odd dimension in the header
            blob[4:8] = struct.pack(">I", draw(st.sampled_from([0, 1, 2**16, 2**31, 2**32 - 1])))
    return dims, bytes(blob)


@_settings
@given(case=mutated_idx(), expect=st.booleans(), fewer_ok=st.booleans())
def test_property_mutated_valid_files(traced, case, expect, fewer_ok):
    dims, blob = case
    _check_outcome(blob, shape=dims if expect else None, fewer_ok=fewer_ok)


@_settings
@given(dims=st.lists(st.integers(0, 9), min_size=1, max_size=3), gz=st.booleans(),
       fewer=st.integers(0, 3))
def test_property_valid_files_round_trip(tmp_path_factory, dims, gz, fewer):
    dims = tuple(dims)
    rng = np.random.default_rng(sum(dims))
    array = rng.integers(0, 256, dims, dtype=np.uint8)
    path = tmp_path_factory.mktemp("rt") / ("a.gz" if gz else "a")
    write_idx(path, array, compress=gz)
    np.testing.assert_array_equal(read_idx(path, shape=dims), array)
    bigger = (dims[0] + fewer, *dims[1:])  # a prefix of a larger split, when allowed
    np.testing.assert_array_equal(read_idx(path, shape=bigger, fewer_ok=True), array)
