"""Connection deadlines: no client holds a connection by sending slowly or not at all.

uvicorn closes a keep-alive connection that stays idle after an answer, but nothing else: a
connection that never sends a byte, headers sent a byte at a time (slowloris) and a chunked
body that never ends were all held forever. An ASGI middleware cannot help with the first two
(the app is only called once the headers are complete), so the deadlines live in uvicorn's
HTTP protocol, one timer per connection, re-armed when the connection changes phase:

- waiting for a request (a new connection, or after an answer): closed after ``idle`` seconds
  with no byte; once bytes arrive, its headers must be complete ``header`` seconds after the
  wait began, else ``408 Request Timeout`` and closed;
- reading a body (headers complete, body not): all of it within ``body`` seconds of the
  headers, else 408 and closed (the app sees the client disconnect);
- the app at work: no deadline here (its work is bounded by the app's own limits).

The headers themselves are bounded too: more than ``header_bytes`` before they end is
``431 Request Header Fields Too Large`` (uvicorn's h11 parser has its own limit of 16 kB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

try:  # what uvicorn's "auto" picks: the C parser when installed
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - httptools is in the serve extra
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base


@dataclass(frozen=True)
class Timeouts:
    """Seconds a client may take (see the module docstring), and the headers' byte limit."""

    idle: float = 5.0
    header: float = 10.0
    body: float = 30.0
    header_bytes: int = 64 * 1024

    def __post_init__(self):
        for name in ("idle", "header", "body"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"the {name} timeout must be a positive number of seconds, got {v!r}")


def _reply(status: bytes, text: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: " + str(len(text)).encode() + b"\r\n\r\n" + text)


REQUEST_TIMEOUT = _reply(b"408 Request Timeout", b"request not received in time\n")
HEADERS_TOO_LARGE = _reply(b"431 Request Header Fields Too Large", b"request headers too large\n")


class DeadlineProtocol(_Base):
    """uvicorn's HTTP protocol with the deadlines above (pass ``timeouts=``)."""

    def __init__(self, *args, timeouts: Timeouts | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeouts = timeouts or Timeouts()
        self._timer = None
        self._phase: tuple | None = None  # ("request" | "body", the cycle it belongs to)
        self._phase_start = 0.0
        self._phase_bytes = 0
        # Bytes read since a request began, until its headers end (from the read it began in).
        self._header_bytes: int | None = None

    # -- uvicorn's hooks, each followed by a look at the phase

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._phase is not None and self._phase[0] == "request":
            self._phase_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._header_bytes is not None:  # a request began and its headers have not ended
            self._header_bytes += len(data)
            if self._header_bytes > self.timeouts.header_bytes:
                self._close(HEADERS_TOO_LARGE)
                return
        self._watch()

    def on_message_begin(self) -> None:  # httptools: a request's first byte
        super().on_message_begin()
        self._header_bytes = 0

    def on_headers_complete(self) -> None:  # httptools
        self._header_bytes = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._watch()

    def connection_lost(self, exc) -> None:
        self._cancel()
        super().connection_lost(exc)

    # -- the deadline

    def _current(self) -> tuple | None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return ("request", cycle)
        if cycle.more_body:
            return ("body", cycle)
        return None

    def _deadline(self) -> float | None:
        if self._phase is None:
            return None
        if self._phase[0] == "body":
            return self._phase_start + self.timeouts.body
        wait = self.timeouts.header if self._phase_bytes else self.timeouts.idle
        return self._phase_start + wait

    def _watch(self) -> None:
        phase = self._current()
        if phase != self._phase:  # (tuples of the cycle itself: compared by identity)
            self._phase, self._phase_start, self._phase_bytes = phase, self.loop.time(), 0
        deadline = self._deadline()
        if deadline is None:
            self._cancel()
        elif self._timer is None or self._timer.when() != deadline:
            self._cancel()
            self._timer = self.loop.call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        phase = self._current()
        if phase != self._phase:
            self._watch()  # it moved on just now
            return
        deadline = self._deadline()
        if self.loop.time() < deadline:  # bytes arrived: the wait became the header deadline
            self._timer = self.loop.call_at(deadline, self._expired)
            return
        cycle = phase[1]
        started = phase[0] == "body" or self._phase_bytes > 0
        answered = cycle is not None and cycle.response_started and phase[0] == "body"
        self._close(REQUEST_TIMEOUT if started and not answered else None)

    def _close(self, reply: bytes | None) -> None:
        self._cancel()
        if reply is not None:
            self.transport.write(reply)
        self.transport.close()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
