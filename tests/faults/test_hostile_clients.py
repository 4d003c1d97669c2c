"""Clients that hold connections open: unauthenticated uploads, bodies and headers that never come,
headers too large. Against the API process as it is deployed (uvicorn, our protocol, real sockets)."""

from __future__ import annotations

import socket
import time

import pytest

from services.auth import create_key
from services.cli.run import prepare
from services.db.session import make_engine, make_session_factory, session_scope
from services.registry.models import create_model
from tests.servers import ApiProcess

TIMEOUTS = {"header_timeout_s": 2.0, "body_timeout_s": 2.0}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One API process for the module (embedded flavour), with 2 s header and body timeouts."""
    from services.config import load_settings

    settings = load_settings(data_dir=tmp_path_factory.mktemp("hostile") / "var")
    prepare(settings)
    engine = make_engine(settings)
    with session_scope(make_session_factory(engine)) as s:
        create_model(s, "m")
        _, key = create_key(s, "hostile test admin", ["admin", "infer"])
    engine.dispose()
    with ApiProcess(settings, settings.data_dir / "api.log", **TIMEOUTS) as running:
        running.key = key
        yield running


def connect(api) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", api.port), timeout=15)
    return s


def read_answer(s: socket.socket) -> bytes:
    """One response (headers and a content-length body), or what came before the server closed
    the connection (or 15 s passed)."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            if not (chunk := s.recv(65536)):
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                       if line.startswith(b"content-length:")), 0)
        while len(body) < length and (chunk := s.recv(65536)):
            body += chunk
        return head + b"\r\n\r\n" + body
    except TimeoutError:
        return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def promise_body(path: str, key: str | None, length: int = 10_000_000) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@pytest.mark.parametrize("path", ["/models/m/segment", "/models/m/tasks"])
def test_no_key_is_401_before_any_body_byte(api, path):
    """The client declares 10 MB and sends none of it: the key is checked first, at once."""
    with connect(api) as s:
        started = time.monotonic()
        s.sendall(promise_body(path, key=None))
        answer = read_answer(s)
    assert status_of(answer) == 401, answer[:300]
    assert time.monotonic() - started < 1.5  # not after the body timeout
    assert b"missing Authorization header" in answer


@pytest.mark.parametrize("path", ["/models/m/segment", "/models/m/tasks"])
def test_a_body_that_stalls_is_408_after_the_body_timeout(api, path):
    with connect(api) as s:
        s.sendall(promise_body(path, key=api.key) + b"--b\r\nContent-Disposition: form-data; name=\"image\"")
        started = time.monotonic()
        answer = read_answer(s)
    assert status_of(answer) == 408, answer[:300]
    assert 1.5 < time.monotonic() - started < 8
    assert b"STRATA_BODY_TIMEOUT_S" in answer


@pytest.mark.parametrize("sent", [b"", b"POST /models/m/segment HTTP/1.1\r\nHost: t\r\nX-Slow: "])
def test_headers_that_never_finish_are_cut_after_the_header_timeout(api, sent):
    with connect(api) as s:
        s.sendall(sent)
        started = time.monotonic()
        answer = read_answer(s)  # the server closes the connection
    assert 1.5 < time.monotonic() - started < 8
    assert answer == b"" or status_of(answer) == 408, answer[:300]


def test_a_keep_alive_connection_gets_the_same_header_deadline(api):
    with connect(api) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status_of(read_answer(s)) == 200
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # the second request's headers never end
        started = time.monotonic()
        answer = read_answer(s)
    assert time.monotonic() - started < 8 and (answer == b"" or status_of(answer) == 408)


def test_headers_over_the_limit_are_refused_whole_or_dribbled(api):
    with connect(api) as s:  # in one piece: the application's check
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = read_answer(s)
    assert status_of(answer) == 431 and b"STRATA_MAX_HEADER_BYTES" in answer, answer[:300]
    with connect(api) as s:  # never ending: uvicorn's, before the header deadline
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000)
        answer = read_answer(s)
    assert status_of(answer) == 400, answer[:300]


def test_the_api_still_answers_after_all_that(api):
    import httpx

    assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
