"""Client errors and how they are answered: always 4xx JSON ``{"error": ..., "status": ...}``.

Every error a request can cause (bad JSON, wrong shape, not an image, unknown model, no such
route, bad query value) is answered with a 4xx JSON body that says what was wrong; only a bug
in the server gives a 5xx.

The body-size limit is enforced before a body is read whole, by a pure ASGI middleware: a
``Content-Length`` over the limit is answered 413 at once, without the app reading a byte of the
body; a body that arrives without one (chunked) or lies about it is counted as it streams in,
and the first chunk past the limit raises :class:`BodyTooLarge`, which the handler installed by
:func:`install_error_handlers` turns into the same 413.

Closing a connection while the client is still sending makes the kernel reset it, and the
client then loses the 413 it was sent. So a declared body up to ``DRAIN_FACTOR`` times the
limit keeps the connection open: the HTTP server (uvicorn) discards the rest as it arrives,
never storing it, and the client reads its answer. Anything larger, or a chunked body, is cut
off with ``Connection: close``.
"""

from __future__ import annotations

import json

MAX_BODY_BYTES = 2 * 1024 * 1024
DRAIN_FACTOR = 8


class APIError(Exception):
    """A client error: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class BodyTooLarge(APIError):
    def __init__(self, limit: int, declared: int | None = None, read: int | None = None):
        if declared is not None:
            msg = f"request body of {declared:,} bytes is over the {limit:,}-byte limit"
        else:
            msg = f"request body is over the {limit:,}-byte limit (stopped reading at {read:,} bytes)"
        super().__init__(413, msg)


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()


class BodySizeLimit:
    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                n = -1
            if n < 0:
                await self._reject(send, APIError(400, f"invalid Content-Length {declared!r}"), True)
                return
            if n > self.max_bytes:
                close = n > DRAIN_FACTOR * self.max_bytes
                await self._reject(send, BodyTooLarge(self.max_bytes, declared=n), close)
                return

        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes, read=seen)
            return message

        await self.app(scope, counting_receive, send)

    @staticmethod
    async def _reject(send, err: APIError, close: bool) -> None:
        body = error_body(err.status, err.message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": err.status,
                    "headers": headers + [(b"connection", b"close")] * close})
        await send({"type": "http.response.body", "body": body})


def install_error_handlers(app) -> None:
    """Answer APIError, HTTPException (404, 405, ...) and validation errors in one JSON shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    def reply(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "status": status}, status, headers=headers)

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        # A 413 mid-stream (chunked) leaves an unknown amount of body unread: cut it off.
        return reply(exc.status, exc.message, {"connection": "close"} if exc.status == 413 else None)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request, exc: ClientDisconnect):
        # The connection is closed (the client left, or a deadline closed it): nobody reads this.
        return reply(400, "the client disconnected before the request was complete")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return reply(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return reply(422, "; ".join(parts) or "invalid request")
