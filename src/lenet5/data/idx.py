"""IDX file format (the container MNIST ships in), read with full validation.

Layout (http://yann.lecun.com/exdb/mnist/): a big-endian header of magic (2 zero bytes, a
type code, the number of dimensions), then one uint32 per dimension, then the data. MNIST
uses type 0x08 (unsigned byte): magic 2049 for label files (1-D) and 2051 for image files
(3-D). Files may be gzip-compressed or raw; every check below names the file and the fault,
so a truncated or corrupt file never surfaces as a NumPy reshape traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

LABELS_MAGIC = 2049  # 0x00000801: ubyte, 1 dimension
IMAGES_MAGIC = 2051  # 0x00000803: ubyte, 3 dimensions
_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """An IDX file is missing, truncated, corrupt or not the kind expected."""


def read_bytes(path: str | Path) -> bytes:
    """Return the decompressed bytes of an IDX file (gzip detected by its magic, not the name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IDXError(f"{path}: file not found") from None
    except OSError as e:
        raise IDXError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    # zlib directly rather than gzip.decompress: it tells whether the stream really ended,
    # so a file cut short is reported as truncated instead of yielding partial data.
    parts, rest = [], raw
    try:
        while rest:
            d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            parts.append(d.decompress(rest))
            if not d.eof:
                raise IDXError(f"{path}: truncated gzip stream (ends before its trailer)")
            rest = d.unused_data
    except zlib.error as e:
        raise IDXError(f"{path}: corrupt gzip stream ({e})") from None
    return b"".join(parts)


def sha256_decompressed(path: str | Path) -> str:
    """SHA-256 of the decompressed content (mirrors differ in gzip headers, not in content)."""
    return hashlib.sha256(read_bytes(path)).hexdigest()


def parse(data: bytes, name: str = "<bytes>", expect_magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking magic, header and exact byte count."""
    if len(data) < 4:
        raise IDXError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    magic = (dtype_code << 8) | ndim
    if zero != 0 or dtype_code != 0x08:
        raise IDXError(
            f"{name}: bad magic number 0x{int.from_bytes(data[:4], 'big'):08x} "
            f"(expected {LABELS_MAGIC} for labels or {IMAGES_MAGIC} for images); not an "
            "unsigned-byte IDX file"
        )
    if expect_magic is not None and magic != expect_magic:
        kind = {LABELS_MAGIC: "labels", IMAGES_MAGIC: "images"}
        raise IDXError(
            f"{name}: magic {magic} ({kind.get(magic, 'unknown')}), expected {expect_magic} "
            f"({kind.get(expect_magic, '?')})"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{name}: truncated header ({len(data)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IDXError(
            f"{name}: {what}: header declares shape {tuple(dims)} = {expected} bytes, "
            f"file has {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Read and validate one IDX file (gzip or raw)."""
    path = Path(path)
    return parse(read_bytes(path), name=str(path), expect_magic=expect_magic)


def write_idx(path: str | Path, array: np.ndarray, compress: bool = True) -> None:
    """Write a uint8 array as IDX (used to cut test fixtures and by tests)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = head + array.tobytes()
    Path(path).write_bytes(gzip.compress(blob, mtime=0) if compress else blob)
