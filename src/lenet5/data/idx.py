"""IDX file format (the container MNIST ships in), read with full validation and bounded memory.

Layout (http://yann.lecun.com/exdb/mnist/): a big-endian header of magic (2 zero bytes, a
type code, the number of dimensions), then one uint32 per dimension, then the data. MNIST
uses type 0x08 (unsigned byte): magic 2049 for label files (1-D) and 2051 for image files
(3-D). Files may be gzip-compressed or raw (told apart by the gzip magic, not the name).

Reading is a stream: the header is inflated first and checked (against the expected shape
when the caller knows it, as the dataset specs do), then exactly the number of bytes it declares,
then one byte more to prove the content ends there. So a gzip bomb costs at most the size of
the file it pretends to be, never what it would inflate to, and every fault (truncated or
corrupt gzip, wrong magic, wrong shape, short or long content) is one :class:`IDXError` line
that names the file, never a NumPy reshape traceback or a ``MemoryError``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

LABELS_MAGIC = 2049  # 0x00000801: ubyte, 1 dimension
IMAGES_MAGIC = 2051  # 0x00000803: ubyte, 3 dimensions
_GZIP_MAGIC = b"\x1f\x8b"
_KINDS = {LABELS_MAGIC: "labels", IMAGES_MAGIC: "images"}
# The most any read inflates when the caller names no expected shape (MNIST's largest file,
# the training images, is 47 MB); callers that know the size pass it instead.
MAX_BYTES = 1 << 30
_CHUNK = 1 << 16  # what one read inflates: a few of these are all the memory beside the array


class IDXError(ValueError):
    """An IDX file is missing, truncated, corrupt, too large or not the kind expected."""


def nbytes(shape: tuple[int, ...]) -> int:
    """Size of the decompressed IDX file holding a uint8 array of ``shape`` (header included)."""
    return 4 + 4 * len(shape) + math.prod(shape)


def read_idx(path: str | Path, expect_magic: int | None = None, **checks) -> np.ndarray:
    """Read and validate one IDX file (gzip or raw); ``checks`` (``shape``, ``fewer_ok``,
    ``max_bytes``) as for :func:`read_idx_checked`."""
    return read_idx_checked(path, expect_magic, **checks)[0]


def read_idx_checked(
    path: str | Path,
    expect_magic: int | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    fewer_ok: bool = False,
    max_bytes: int = MAX_BYTES,
) -> tuple[np.ndarray, str]:
    """The array of one IDX file and the SHA-256 of its decompressed content.

    ``shape``: what the header must declare (``fewer_ok``: or fewer items along the first axis,
    e.g. a prefix of a split). ``max_bytes`` caps the decompressed size of a file read with no
    ``shape``. Raises :class:`IDXError` (one line naming the file) for anything else.
    """
    path = Path(path)
    with _open(path) as f, _decompressed(f) as stream:
        return _read(stream, str(path), expect_magic, shape, fewer_ok, max_bytes)


def parse(
    data: bytes,
    name: str = "<bytes>",
    expect_magic: int | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    fewer_ok: bool = False,
    max_bytes: int = MAX_BYTES,
) -> np.ndarray:
    """Parse IDX bytes (raw or gzip) into a uint8 array, with the checks of :func:`read_idx`."""
    with _decompressed(io.BytesIO(data)) as stream:
        return _read(stream, name, expect_magic, shape, fewer_ok, max_bytes)[0]


def sha256_decompressed(path: str | Path, max_bytes: int = MAX_BYTES) -> str:
    """SHA-256 of the decompressed content (mirrors differ in gzip headers, not in content).

    Streamed in chunks; content longer than ``max_bytes`` is refused without inflating the rest.
    """
    path = Path(path)
    digest, total = hashlib.sha256(), 0
    with _open(path) as f, _decompressed(f) as stream:
        while chunk := _read_some(stream, min(_CHUNK, max_bytes + 1 - total), str(path)):
            total += len(chunk)
            if total > max_bytes:
                raise IDXError(
                    f"{path}: decompresses to more than {max_bytes} bytes, the most this file "
                    "can hold; refused (a gzip bomb or not the expected file)"
                )
            digest.update(chunk)
    return digest.hexdigest()


def write_idx(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as IDX (used to cut test fixtures and by tests)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = head + array.tobytes()
    Path(path).write_bytes(gzip.compress(blob, mtime=0) if compress else blob)


# --- the stream ------------------------------------------------------------------------


def _open(path: Path) -> BinaryIO:
    """A regular file opened for reading (a FIFO or device would block or never end)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise IDXError(f"{path}: not a regular file")
        return open(path, "rb")
    except FileNotFoundError:
        raise IDXError(f"{path}: file not found") from None
    except OSError as e:
        raise IDXError(f"{path}: cannot read ({e.strerror or e})") from None


def _decompressed(f: BinaryIO) -> BinaryIO:
    """``f`` itself, or a gzip reader over it: ``read(n)`` never inflates more than ``n``."""
    head = f.read(2)
    f.seek(0)
    return gzip.GzipFile(fileobj=f, mode="rb") if head == _GZIP_MAGIC else _NoClose(f)


class _NoClose(io.BufferedIOBase):
    """A raw file behind the same ``with`` as a gzip reader (the caller closes the file)."""

    def __init__(self, f: BinaryIO):
        self._f = f

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def _read_some(stream: BinaryIO, n: int, name: str) -> bytes:
    """Up to ``n`` decompressed bytes (fewer only at the end); gzip faults as one-line errors."""
    try:
        return stream.read(n)
    except EOFError:
        raise IDXError(f"{name}: truncated gzip stream (ends before its trailer)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise IDXError(f"{name}: corrupt gzip stream ({e})") from None
    except OSError as e:
        raise IDXError(f"{name}: cannot read ({e.strerror or e})") from None


def _read_exactly(stream: BinaryIO, n: int, name: str) -> bytes:
    parts, got = [], 0
    while got < n and (chunk := _read_some(stream, n - got, name)):
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _read(
    stream: BinaryIO,
    name: str,
    expect_magic: int | None,
    shape: tuple[int, ...] | None,
    fewer_ok: bool,
    max_bytes: int,
) -> tuple[np.ndarray, str]:
    """Header, checks, then exactly the declared body and proof that nothing follows it."""
    head = _read_exactly(stream, 4, name)
    if len(head) < 4:
        raise IDXError(f"{name}: too short for an IDX header ({len(head)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", head)
    magic = (dtype_code << 8) | ndim
    if zero != 0 or dtype_code != 0x08:
        raise IDXError(
            f"{name}: bad magic number 0x{int.from_bytes(head, 'big'):08x} "
            f"(expected {LABELS_MAGIC} for labels or {IMAGES_MAGIC} for images); not an "
            "unsigned-byte IDX file"
        )
    if expect_magic is not None and magic != expect_magic:
        raise IDXError(
            f"{name}: magic {magic} ({_KINDS.get(magic, 'unknown')}), expected {expect_magic} "
            f"({_KINDS.get(expect_magic, '?')})"
        )
    header = 4 + 4 * ndim
    dims_raw = _read_exactly(stream, header - 4, name)
    if len(dims_raw) < header - 4:
        raise IDXError(f"{name}: truncated header ({4 + len(dims_raw)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    _check_shape(name, dims, shape, fewer_ok)
    size = math.prod(dims)
    if header + size > max_bytes:
        raise IDXError(
            f"{name}: header declares shape {dims} = {header + size} bytes, over the "
            f"{max_bytes}-byte limit; refused"
        )
    digest = hashlib.sha256(head + dims_raw)
    body = np.empty(size, dtype=np.uint8)
    view, got = memoryview(body), 0
    while got < size and (chunk := _read_some(stream, min(_CHUNK, size - got), name)):
        view[got : got + len(chunk)] = chunk
        digest.update(chunk)
        got += len(chunk)
    if got < size:
        raise IDXError(
            f"{name}: truncated: header declares shape {dims} = {header + size} bytes, "
            f"content has {header + got}"
        )
    if _read_some(stream, 1, name):  # also reads a gzip trailer: its CRC and length are checked
        raise IDXError(
            f"{name}: has trailing bytes: header declares shape {dims} = {header + size} bytes, "
            "the content goes on (refused without inflating the rest)"
        )
    return body.reshape(dims), digest.hexdigest()


def _check_shape(
    name: str, dims: tuple[int, ...], shape: tuple[int, ...] | None, fewer_ok: bool
) -> None:
    if shape is None or dims == tuple(shape):
        return
    if fewer_ok and len(dims) == len(shape) and dims[1:] == tuple(shape[1:]) and dims[0] <= shape[0]:
        return
    limit = f"at most {shape[0]} items of {tuple(shape[1:])}" if fewer_ok else f"{tuple(shape)}"
    raise IDXError(f"{name}: header declares shape {dims}, expected {limit}")
