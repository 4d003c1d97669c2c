"""A webhook receiver on loopback for the tests: a real HTTP server (http.server, in a thread) that
checks every request's signature with ``services.webhooks.signing.verify``, as a receiver would,
keeps what it received, and answers what the test tells it to. It can be down (nothing listens
on its port) and come back on the same port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from services.webhooks import signing
from tests.servers import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    problem: str | None  # why the signature was refused
    answered: int

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return self.json["event"]


class Receiver:
    """``answer(n)`` gives the status of the n-th request (from 0); default: 200 for all. A request
    whose signature does not verify is answered 400 (and kept, ``verified`` False). ``delay_s``: how
    long it thinks before answering (a slow receiver)."""

    def __init__(self, secret: str, answer: Callable[[int], int] = lambda n: 200, delay_s: float = 0.0) -> None:
        self.secret, self.answer, self.delay_s, self.port = secret, answer, delay_s, free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    signing.verify(receiver.secret, body, self.headers.get(signing.HEADER))
                    verified, problem = True, None
                except signing.InvalidSignature as err:
                    verified, problem = False, str(err)
                with receiver._lock:
                    code = receiver.answer(len(receiver.received)) if verified else 400
                    receiver.received.append(Received(self.path, dict(self.headers), body, verified, problem, code))
                time.sleep(receiver.delay_s)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                got = list(self.received)
            if predicate(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"the receiver did not get what was expected within {timeout_s} s; it got "
                             f"{[(r.event, r.answered) for r in got]}")

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
