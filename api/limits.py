"""Request body size limit, enforced while the body streams in (never by buffering it), and a
body that stalls: no bytes for ``idle_timeout_s`` is answered 408 (slow-body attacks hold a
connection and a handler; an honest client's upload never pauses that long).

A request whose ``Content-Length`` is over the limit is answered 413 before a byte of its body is
read. A chunked request (no ``Content-Length``), or one whose length lies, is counted as it
arrives: once over the limit the client gets 413 at once and the application sees the client
disconnect, so it stops reading and cleans up like after any aborted upload.
"""

from __future__ import annotations

import asyncio
import json
import logging
from fnmatch import fnmatchcase

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class UploadLimitMiddleware:
    """Pure ASGI middleware: 413 for any HTTP request body over ``max_bytes``.

    paths: only requests to paths matching these shell patterns (default: all) — e.g. a tighter
    limit for /models/*/segment,
    whose form FastAPI parses before the auth dependency runs."""

    def __init__(self, app: ASGIApp, max_bytes: int, setting: str = "STRATA_MAX_UPLOAD_BYTES",
                 paths: tuple[str, ...] | None = None, idle_timeout_s: float | None = None) -> None:
        self.app, self.max_bytes, self.setting, self.paths = app, max_bytes, setting, paths
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.paths is not None and not _matches(scope["path"], self.paths)):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, f"the request body is {declared} bytes")
            return
        await _LimitedRequest(self, receive, send).run(scope)

    def detail(self, what: str) -> str:
        return f"{what}, over the upload limit of {self.max_bytes} bytes ({self.setting})"

    async def _reject(self, send: Send, what: str, status: int = 413) -> None:
        body = json.dumps({"detail": self.detail(what) if status == 413 else what}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _LimitedRequest:
    """One request: counts body bytes, and once over the limit answers 413 and plays disconnect."""

    def __init__(self, limit: UploadLimitMiddleware, receive: Receive, send: Send) -> None:
        self.limit, self._receive, self._send = limit, receive, send
        self.received = 0
        self.response_started = False
        self.cut_off = False  # the body went over the limit: the app sees a disconnect from now on
        self.answered = False  # ... and the client got our 413 (the app's own response is dropped)
        self.body_done = False  # after the last body chunk, receive() only waits for a disconnect

    async def run(self, scope: Scope) -> None:
        try:
            await self.limit.app(scope, self.receive, self.send)
        except Exception:
            if not self.cut_off:
                raise
            # The app failed because we cut its body off (e.g. ClientDisconnect): already answered.
            log.debug("request body over the limit; the application stopped reading", exc_info=True)

    async def receive(self) -> Message:
        if self.cut_off:
            return {"type": "http.disconnect"}
        message = await self._next_message()
        if message is None:  # the body stalled: 408, and the app sees the client go
            return await self._cut_off(408, f"the request body sent nothing for {self.limit.idle_timeout_s:g} s "
                                            "(STRATA_BODY_TIMEOUT_S)")
        if message["type"] == "http.request":
            self.body_done = not message.get("more_body", False)
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                return await self._cut_off(413, f"the request body passed {self.limit.max_bytes} bytes")
        return message

    async def _next_message(self) -> Message | None:
        """The next message; None when a body still due sent nothing within the idle timeout."""
        if self.body_done or self.limit.idle_timeout_s is None:
            return await self._receive()
        try:
            return await asyncio.wait_for(self._receive(), self.limit.idle_timeout_s)
        except TimeoutError:
            return None

    async def _cut_off(self, status: int, what: str) -> Message:
        self.cut_off = True
        if not self.response_started:
            self.response_started = self.answered = True
            await self.limit._reject(self._send, what, status)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.answered:
            return  # the client already has its 413
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(path, p) for p in patterns)


class HeaderLimitMiddleware:
    """Pure ASGI middleware: 431 for a request whose request line and headers exceed ``max_bytes``.

    uvicorn refuses headers over its limit only while they are incomplete (a slow sender); headers
    that arrive whole in one read are checked here, so the limit holds for every client."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(
                len(name) + len(value) + 4 for name, value in scope.get("headers", []))
            if size > self.max_bytes:
                body = json.dumps({"detail": f"the request's headers are {size} bytes, over the limit of "
                                             f"{self.max_bytes} (STRATA_MAX_HEADER_BYTES)"}).encode()
                await send({"type": "http.response.start", "status": 431,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
