"""Request body size limit, enforced while the body streams in (never by buffering it).

A request whose ``Content-Length`` is over the limit is answered 413 before a byte of its body is
read. A chunked request (no ``Content-Length``), or one whose length lies, is counted as it
arrives: once over the limit the client gets 413 at once and the application sees the client
disconnect, so it stops reading and cleans up like after any aborted upload.
"""

from __future__ import annotations

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
                 paths: tuple[str, ...] | None = None) -> None:
        self.app, self.max_bytes, self.setting, self.paths = app, max_bytes, setting, paths

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

    async def _reject(self, send: Send, what: str) -> None:
        body = json.dumps({"detail": self.detail(what)}).encode()
        await send({"type": "http.response.start", "status": 413,
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
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                self.cut_off = True
                if not self.response_started:
                    self.response_started = self.answered = True
                    await self.limit._reject(self._send, f"the request body passed {self.limit.max_bytes} bytes")
                return {"type": "http.disconnect"}
        return message

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
