"""Fetch dataset files from public mirrors: resumable, retried, verified, atomically renamed.

Design, and why:

* **Mirrors in order, each with retries.** MNIST's historical host (yann.lecun.com) is often
  down or rate-limited, so every dataset lists several copies. Transient faults (connection
  errors, timeouts, HTTP 5xx/408/429, a body cut short) are retried on the same mirror with
  exponential back-off; a permanent answer (404, 403, ...) or content that fails its checksum
  moves straight on to the next mirror, since asking again would get the same answer.
* **Resume.** Bytes are written to ``<dest>.part``. A later attempt (or a later run) that finds
  a ``.part`` asks for the rest with ``Range: bytes=K-``; a server that answers ``200`` instead
  of ``206`` sends the whole file, so the ``.part`` is rewritten from zero. Mirrors may differ in
  their gzip bytes, so a resumed file that fails verification is discarded and fetched once
  more from zero before the mirror is blamed.
* **Verify, then rename.** The SHA-256 of the *decompressed* content (what ``spec.sha256``
  records, stable across mirrors' gzip headers) is checked on the ``.part``; only a verified
  file is moved into place with :func:`os.replace`, which is atomic on one filesystem. So the
  destination never holds a truncated or corrupt file, and a ``.part`` known to be corrupt is
  deleted. (A ``.part`` cut short by the network is kept on purpose: it is what resume uses.)
* **Bounded.** The decompressed size of every file is known from its spec, and a gzip of N
  bytes is never much longer than N (deflate's stored blocks add 5 bytes per 64 KiB), so a
  mirror that announces or sends more than that is cut off, and a file that inflates past its
  size is refused without inflating the rest: a hostile mirror (one is plain HTTP) costs
  neither disk nor memory beyond the real file's size.
* **Standard library only** for HTTP (:mod:`urllib.request`), every request with a timeout,
  plus :mod:`tqdm` for the progress bar.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .idx import MAX_BYTES, IDXError, sha256_decompressed

__all__ = ["DownloadError", "download_file", "max_download_bytes"]

_CHUNK = 1 << 16
_GZIP_MAGIC = b"\x1f\x8b"
# Statuses worth asking the same mirror again for; any other 4xx will not change on retry.
_RETRY_STATUS = frozenset({408, 425, 429})
_HEADERS = {
    # Some hosts refuse urllib's default agent; identity encoding keeps Range offsets in the
    # file's own bytes rather than in a transparently re-compressed stream.
    "User-Agent": "lenet5-download/0.1 (Python urllib)",
    "Accept-Encoding": "identity",
}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """No mirror produced a verified file; the message (one line) names every mirror and its
    failure."""


class _Transient(Exception):
    """Worth retrying on the same mirror (network fault, 5xx, body cut short)."""


class _MirrorFailed(Exception):
    """This mirror cannot supply the file (permanent HTTP error, corrupt content, retries spent)."""


def max_download_bytes(size: int) -> int:
    """The most bytes a gzip of ``size`` decompressed bytes can take (zlib's deflateBound is
    about ``size * 1.0003`` plus a header; the rest is margin for a mirror's gzip header)."""
    return size + size // 1000 + (64 << 10)


def download_file(
    urls: Sequence[str],
    dest: Path,
    *,
    sha256: str | None,
    size: int | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download one file from the first of ``urls`` that serves it intact; return ``dest``.

    Each url gets up to ``retries`` attempts for transient faults, sleeping
    ``backoff * 2**k`` seconds between them; ``timeout`` bounds every connect and read.
    ``sha256`` is that of the decompressed content (``None`` skips the hash but a ``.gz``
    destination must still decompress). ``size``, the decompressed size, bounds what is read
    from the network (:func:`max_download_bytes`) and what is inflated. Raises
    :class:`DownloadError` when every url fails.
    """
    if not urls:
        raise DownloadError(f"no mirrors given for {Path(dest).name}")
    if retries < 1:
        raise ValueError(f"retries must be >= 1, got {retries}")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    for url in urls:
        try:
            _from_mirror(url, part, dest.name, sha256, size, retries, backoff, timeout, progress)
        except _MirrorFailed as e:
            failures.append(f"{url}: {e}")
            continue
        os.replace(part, dest)  # atomic: dest is either absent or the verified file
        return dest
    kept = f"; the partial download {part} is kept and will be resumed" if part.exists() else ""
    raise DownloadError(
        f"could not download {dest.name} into {dest.parent} from any of {len(urls)} "
        f"mirror(s): " + "; ".join(failures) + kept
    )


def _from_mirror(
    url: str,
    part: Path,
    label: str,
    sha256: str | None,
    size: int | None,
    retries: int,
    backoff: float,
    timeout: float,
    progress: bool,
) -> None:
    """Leave a verified file at ``part`` or raise :class:`_MirrorFailed`."""
    attempts = 0
    limit = None if size is None else max_download_bytes(size)
    while True:
        try:
            resumed = _fetch(url, part, label, timeout, progress, limit)
        except _Transient as e:
            attempts += 1
            if attempts >= retries:
                raise _MirrorFailed(f"{e} (gave up after {attempts} attempt(s))") from None
            time.sleep(backoff * 2 ** (attempts - 1))
            continue
        problem = _verify(part, sha256, size, gzip_expected=label.endswith(".gz"))
        if problem is None:
            return
        part.unlink(missing_ok=True)  # known corrupt: never leave it to be resumed or used
        if not resumed:
            raise _MirrorFailed(problem)
        # The bytes kept from an earlier transfer (maybe another mirror's gzip) did not splice
        # into this one; the .part is gone now, so the next pass fetches from zero. Bounded:
        # a from-zero transfer never takes this branch.


def _fetch(
    url: str, part: Path, label: str, timeout: float, progress: bool, limit: int | None
) -> bool:
    """One GET into ``part``, resuming it if it holds bytes. True when the result was resumed.

    More than ``limit`` bytes in all (announced or sent) fails the mirror and deletes ``part``.
    """
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers=_HEADERS)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            # Nothing past `offset`: the .part is probably whole already; verification decides.
            return True
        message = f"HTTP {e.code} {e.reason}"
        if e.code >= 500 or e.code in _RETRY_STATUS:
            raise _Transient(message) from None
        raise _MirrorFailed(message) from None
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets
        if isinstance(getattr(e, "reason", None), socket.gaierror):
            # The name does not resolve (offline, no DNS): asking again a second later will not
            # help, and retrying every mirror only keeps an offline user waiting.
            raise _MirrorFailed(_describe(e)) from None
        raise _Transient(_describe(e)) from None
    with response:
        resumed = offset > 0 and response.status == 206
        if resumed and _range_start(response.headers.get("Content-Range")) != offset:
            part.unlink(missing_ok=True)  # a range we did not ask for cannot be appended
            raise _Transient(f"bad Content-Range {response.headers.get('Content-Range')!r}")
        start = offset if resumed else 0  # a 200 is the whole file: rewrite from zero
        length = _int_or_none(response.headers.get("Content-Length"))
        expected = None if length is None else start + length
        if limit is not None and expected is not None and expected > limit:
            part.unlink(missing_ok=True)
            raise _MirrorFailed(
                f"announces {expected} bytes, more than the {limit} a gzip of this file can take"
            )
        try:
            _copy(response, part, "ab" if resumed else "wb", start, expected, label, progress, limit)
        except _MirrorFailed:
            part.unlink(missing_ok=True)
            raise
    size = part.stat().st_size
    if expected is not None and size < expected:
        # http.client's read(n) returns b"" on an early close instead of raising, so count.
        raise _Transient(f"connection closed after {size} of {expected} bytes")
    return resumed


def _copy(
    response: http.client.HTTPResponse,
    part: Path,
    mode: str,
    start: int,
    total: int | None,
    label: str,
    progress: bool,
    limit: int | None,
) -> None:
    """Stream the body to ``part``; whatever arrived before a fault stays there for resume.

    Raises :class:`_MirrorFailed` as soon as more than ``limit`` bytes in all have arrived.
    """
    with open(part, mode) as f, tqdm(
        total=total,
        initial=start,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
    ) as bar:
        size = start
        try:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _MirrorFailed(
                        f"sent more than {limit} bytes, more than a gzip of this file can take; "
                        "cut off"
                    )
                f.write(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(f"transfer interrupted: {_describe(e)}") from None
        finally:
            f.flush()
            os.fsync(f.fileno())  # the bytes we verify are the bytes that survive a crash


def _verify(
    part: Path, sha256: str | None, size: int | None, *, gzip_expected: bool
) -> str | None:
    """Why ``part`` is not the published file, or None if it is."""
    if gzip_expected:
        with open(part, "rb") as f:
            head = f.read(16)
        if head[:2] != _GZIP_MAGIC:
            # Typically an HTML error or captive-portal page served with status 200.
            return f"not a gzip file (starts with {head!r})"
    try:
        got = sha256_decompressed(part, MAX_BYTES if size is None else size)
    except IDXError as e:
        return f"corrupt download: {e}"
    if sha256 is not None and got != sha256:
        return (
            f"checksum mismatch: SHA-256 of decompressed content {got[:16]}..., "
            f"expected {sha256[:16]}..."
        )
    return None


def _range_start(content_range: str | None) -> int | None:
    match = _CONTENT_RANGE.fullmatch((content_range or "").strip())
    return int(match.group(1)) if match else None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _describe(error: BaseException) -> str:
    """A one-line reason; URLError wraps the useful part (refused, timed out) in ``reason``."""
    reason = getattr(error, "reason", None)
    if isinstance(error, urllib.error.URLError) and reason is not None:
        error = reason if isinstance(reason, BaseException) else error
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text
