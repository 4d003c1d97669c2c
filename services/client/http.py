"""A small typed client of Strata's REST API, on ``httpx``: what ``strata submit``, ``tasks``,
``versions``, ``promote``, ``compare``, ``segment``, ``export`` and ``demo`` use, and what scripts
can import::

    from services.client import Strata

    with Strata() as strata:                     # STRATA_URL, STRATA_API_KEY or the config file
        task = strata.submit("north", "north1.zip", {"classes": ["bicycle"]})
        task = strata.wait(task.id)              # polls until it ends
        print(strata.compare("north", b=task.model_version))

Retries are handled here: a call that is safe to repeat (every read, alias moves, segmenting, and
a submission, which carries an ``Idempotency-Key`` so that the server answers a repeat with the
task it already made) is retried with exponential backoff when the server cannot be reached, or
answers 502/503/504 (its ``Retry-After`` is honoured). Other calls are retried only when the
request never left (a refused connection). Errors are ``ApiError`` (the server refused: its status
and ``detail``) or ``ServerUnreachable``.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from services.client.config import ClientConfig, load_config
from services.client.schemas import AliasMoved, Comparison, Download, Model, Task, Version
from services.client.uploads import upload_file
from services.errors import StrataError, Unavailable

RETRY_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_AFTER_S = 30.0
Progress = Callable[[int, int], None]  # (bytes so far, total bytes)


class ApiError(StrataError):
    """The server answered with an error: ``status`` and its ``detail`` (what is wrong, and where)."""

    def __init__(self, status: int, detail: str, method: str, path: str) -> None:
        super().__init__(detail)
        self.status, self.detail, self.method, self.path = status, detail, method, path


class ServerUnreachable(Unavailable):
    """No answer from the server after the retries."""


class Strata:
    """One server, one key. ``url``/``api_key`` default to the configuration (``load_config``)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, config: ClientConfig | None = None,
                 timeout: float = 60.0, retries: int = 4, backoff_s: float = 0.5,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.config = config or load_config(url, api_key)
        headers = {"User-Agent": "strata-client"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        self.retries, self.backoff_s = retries, backoff_s
        self.http = httpx.Client(base_url=self.config.url, headers=headers, transport=transport,
                                 timeout=httpx.Timeout(timeout, connect=10.0))

    def __enter__(self) -> Strata:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # --- models ------------------------------------------------------------------------------------
    def models(self) -> list[Model]:
        return [Model.model_validate(m) for m in self._json("GET", "/models")]

    def model(self, name: str) -> Model:
        return Model.model_validate(self._json("GET", f"/models/{name}"))

    def create_model(self, name: str, description: str = "") -> Model:
        return Model.model_validate(self._json("POST", "/models", idempotent=False,
                                               json={"name": name, "description": description}))

    # --- tasks -------------------------------------------------------------------------------------
    def submit(self, model: str, source: str | Path, spec: Mapping[str, Any], *, idempotency_key: str | None = None,
               on_upload: Progress | None = None) -> Task:
        """Register a task of ``model``: ``source`` is a zip (images/ + masks/, or an annotation tool's
        export) or a folder, zipped on the way. Retried safely under one ``Idempotency-Key``."""
        key = idempotency_key or str(uuid.uuid4())
        with upload_file(Path(source)) as (path, name):
            def send() -> httpx.Response:  # a fresh file and count for every attempt
                with path.open("rb") as f:
                    body = _Counting(f, path.stat().st_size, on_upload)
                    return self.http.post(f"/models/{model}/tasks", headers={"Idempotency-Key": key},
                                          data={"spec": json.dumps(dict(spec))},
                                          files={"archive": (name, body, "application/zip")})
            return Task.model_validate(self._checked("POST", f"/models/{model}/tasks", send, idempotent=True).json())

    def task(self, task_id: str) -> Task:
        return Task.model_validate(self._json("GET", f"/tasks/{task_id}"))

    def tasks(self, model: str | None = None, status: str | None = None, limit: int | None = None) -> list[Task]:
        params = {k: v for k, v in (("status", status), ("limit", limit)) if v is not None}
        path = f"/models/{model}/tasks" if model else "/tasks"
        return [Task.model_validate(t) for t in self._json("GET", path, params=params)]

    def cancel(self, task_id: str) -> Task:
        return Task.model_validate(self._json("POST", f"/tasks/{task_id}/cancel", idempotent=False))

    def wait(self, task_id: str, *, on_update: Callable[[Task], None] | None = None, poll_s: float = 1.0,
             timeout_s: float | None = None) -> Task:
        """Poll the task until it ends (or ``timeout_s`` passes: TimeoutError); returns its last state."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            task = self.task(task_id)
            if on_update is not None:
                on_update(task)
            if task.finished:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} is still {task.status} after {timeout_s:g} s")
            time.sleep(poll_s)

    # --- versions ----------------------------------------------------------------------------------
    def versions(self, model: str) -> list[Version]:
        return [Version.model_validate(v) for v in self._json("GET", f"/models/{model}/versions")]

    def version(self, model: str, version: int | str) -> dict[str, Any]:
        """One version in full (per-class IoU, forgetting, promotion decision), as the API answers it."""
        return self._json("GET", f"/models/{model}/versions/{version}")

    def promote(self, model: str, version: int, alias: str = "production") -> AliasMoved:
        """Move ``alias`` (default: production, i.e. promote; an older version: roll back)."""
        return AliasMoved.model_validate(self._json("PUT", f"/models/{model}/aliases/{alias}", json={"version": version}))

    def compare(self, model: str, a: int | str | None = None, b: int | str | None = None) -> Comparison:
        """Version ``b`` (default latest) beside ``a`` (default production), class by class."""
        params = {k: v for k, v in (("a", a), ("b", b)) if v is not None}
        return Comparison.model_validate(self._json("GET", f"/models/{model}/compare", params=params))

    # --- serving and files ---------------------------------------------------------------------------
    def segment(self, model: str, image: str | Path, *, version: int | str | None = None, overlay: bool = False,
                alpha: float | None = None) -> httpx.Response:
        """The mask of ``image`` as an index PNG (``overlay``: the image with the classes' colours)."""
        params: dict[str, Any] = {"render": "overlay"} if overlay else {"format": "png"}
        if alpha is not None:
            params["alpha"] = alpha
        if version is not None:
            params["version"] = version
        path = Path(image)

        def send() -> httpx.Response:
            with path.open("rb") as f:
                return self.http.post(f"/models/{model}/segment", params=params, files={"image": (path.name, f)})
        return self._checked("POST", f"/models/{model}/segment", send, idempotent=True)

    def export(self, model: str, version: int | str, format: str, output: str | Path, *,
               on_download: Progress | None = None) -> Download:
        """Download the version as ``format`` (onnx, torchscript, triton) to ``output`` (a file, or a folder to
        write the server's file name into), checked against the server's sha256."""
        url = f"/models/{model}/versions/{version}/export"
        with self._stream("GET", url, params={"format": format}) as response:
            target = Path(output)
            if target.is_dir():
                target = target / _attachment_name(response, f"{model}-v{version}.{format}")
            total = int(response.headers.get("content-length") or 0)
            digest, done = hashlib.sha256(), 0
            partial = target.with_name(target.name + ".part")
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if on_download is not None:
                        on_download(done, total)
            expected = response.headers.get("x-content-sha256")
            if expected and digest.hexdigest() != expected:
                partial.unlink()
                raise ServerUnreachable(f"the download of {url} was corrupted (sha256 differs); try again")
            partial.replace(target)
        return Download(path=str(target), bytes=done, sha256=digest.hexdigest(),
                        model_version=int(response.headers.get("x-model-version") or 0) or None)

    # --- the transport -------------------------------------------------------------------------------
    def _json(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        idempotent = method in ("GET", "PUT", "DELETE") if idempotent is None else idempotent
        response = self._checked(method, path, lambda: self.http.request(method, path, **kwargs), idempotent=idempotent)
        return response.json() if response.content else None

    @contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer, retried like ``_checked`` until its headers arrive (not once the caller reads)."""
        for attempt in range(self.retries + 1):
            request = self.http.build_request(method, path, **kwargs)
            try:
                response = self.http.send(request, stream=True)
            except httpx.TransportError as err:
                if attempt >= self.retries:
                    raise ServerUnreachable(f"{self.config.url} did not answer {method} {path}: {err}") from None
                self._pause(attempt)
                continue
            try:
                if response.status_code in RETRY_STATUSES and attempt < self.retries:
                    self._pause(attempt, response)
                    continue
                if response.is_error:
                    response.read()
                    raise _api_error(response, method, path)
                yield response
                return
            finally:
                response.close()

    def _checked(self, method: str, path: str, send: Callable[[], httpx.Response], *, idempotent: bool) -> httpx.Response:
        """``send()`` with retries (see the module's doc); an error answer raises ApiError."""
        for attempt in range(self.retries + 1):
            try:
                response = send()
            except httpx.TransportError as err:
                never_sent = isinstance(err, httpx.ConnectError)
                if attempt >= self.retries or not (idempotent or never_sent):
                    raise ServerUnreachable(f"{self.config.url} did not answer {method} {path}: "
                                            f"{type(err).__name__}: {err}") from None
                self._pause(attempt)
                continue
            if response.status_code in RETRY_STATUSES and idempotent and attempt < self.retries:
                self._pause(attempt, response)
                continue
            if response.is_error:
                raise _api_error(response, method, path)
            return response
        raise AssertionError("unreachable")

    def _pause(self, attempt: int, response: httpx.Response | None = None) -> None:
        delay = self.backoff_s * 2 ** attempt * random.uniform(0.8, 1.2)
        if response is not None:
            try:
                delay = max(delay, min(float(response.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S))
            except ValueError:  # an HTTP date: our server sends seconds
                pass
        time.sleep(delay)


class _Counting:
    """A file whose reads report progress; everything else (fileno, seek, tell: the upload's
    Content-Length) is the file's own."""

    def __init__(self, f: BinaryIO, total: int, report: Progress | None) -> None:
        self._f, self._total, self._report, self._done = f, total, report, 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._done += len(data)
        if self._report is not None:
            self._report(self._done, self._total)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _api_error(response: httpx.Response, method: str, path: str) -> ApiError:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = response.text.strip()[:500] or response.reason_phrase
    return ApiError(response.status_code, detail, method, path)


def _attachment_name(response: httpx.Response, fallback: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "filename" and value:
            return Path(value.strip('"')).name
    return fallback
