"""The object store, on both backends: files under tmp_path and S3 served by moto."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from services.storage import (
    FilesystemStore,
    IntegrityError,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StorageUnavailable,
    open_store,
)
from services.storage.streams import CHUNK_SIZE
from tests.conftest import free_port

MiB = 1024 * 1024
PART = 5 * MiB  # the S3 minimum part size: the smallest memory bound minio allows


def make_s3(endpoint: str, **kwargs) -> S3Store:
    bucket = f"strata-{uuid.uuid4().hex[:10]}"
    return S3Store(endpoint, "testing", "testing", bucket, "us-east-1", part_size=PART, **kwargs)


def raw_client(store: S3Store) -> Minio:
    """A plain minio client on the same bucket, to look behind the store's back."""
    return Minio(store.endpoint.split("://")[1], "testing", "testing", secure=False, region="us-east-1")


@pytest.fixture(params=["fs", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "fs":
        s: ObjectStore = FilesystemStore(tmp_path / "objects")
    else:
        s = make_s3(request.getfixturevalue("s3_endpoint"))
    s.ensure_ready()
    yield s
    if isinstance(s, S3Store):  # moto keeps objects in memory for the whole session
        for info in s.list():
            s.delete(info.key)


class Generated(io.RawIOBase):
    """A deterministic byte stream of a given size, never held whole in memory: byte ``p`` is
    ``PATTERN[p % len(PATTERN)]`` whatever the read sizes.  Reads return at most 256 KiB, like
    a socket, so consumers must loop."""

    PATTERN = random.Random(7).randbytes(MiB + 7)  # odd length: parts never line up with it

    def __init__(self, size: int, fail_after: int | None = None) -> None:
        self.size = size
        self.pos = 0
        self.fail_after = fail_after

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise ConnectionResetError("client went away mid-upload")
        n = 256 * 1024 if n is None or n < 0 else min(n, 256 * 1024)
        n = min(n, self.size - self.pos)
        start = self.pos % len(self.PATTERN)
        chunk = self.PATTERN[start : start + n]
        if len(chunk) < n:
            chunk += self.PATTERN[: n - len(chunk)]
        self.pos += n
        return chunk


def sha256_of_stream(stream: io.RawIOBase) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


# --- round trips ----------------------------------------------------------------------------
def test_bytes_round_trip_and_overwrite(store: ObjectStore) -> None:
    info = store.put_bytes("datasets/1/images/a.jpg", b"hello world")
    assert (info.key, info.size) == ("datasets/1/images/a.jpg", 11)
    with store.open("datasets/1/images/a.jpg") as f:
        assert f.read(5) == b"hello"
        assert f.read() == b" world"
        assert f.read(5) == b""
    assert store.exists("datasets/1/images/a.jpg")

    store.put_bytes("datasets/1/images/a.jpg", b"second")
    with store.open("datasets/1/images/a.jpg") as f:
        assert f.read() == b"second"
    assert store.stat("datasets/1/images/a.jpg").size == 6

    empty = store.put_bytes("empty", b"")
    assert empty.size == 0 and empty.sha256 == hashlib.sha256(b"").hexdigest()
    with store.open("empty") as f:
        assert f.read() == b""


def test_sha256_is_computed_while_streaming_and_kept_for_files(store: ObjectStore, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(3 * MiB + 17)
    expected = hashlib.sha256(data).hexdigest()

    streamed = store.put("checkpoints/3/train-state/epoch-1.pt", io.BytesIO(data), len(data))
    assert streamed.sha256 == expected and streamed.size == len(data)

    path = tmp_path / "model.pt"
    path.write_bytes(data)
    put = store.put_file("checkpoints/3/model.pt", path)
    assert put.sha256 == expected
    stat = store.stat("checkpoints/3/model.pt")
    assert (stat.size, stat.sha256) == (len(data), expected)
    assert stat.last_modified is not None and stat.last_modified.tzinfo is not None
    with store.open("checkpoints/3/model.pt") as f:
        assert f.info.sha256 == expected
        assert sha256_of_stream(f) == expected


def test_put_with_known_sha256_is_verified_before_commit(store: ObjectStore) -> None:
    data = b"x" * 1000
    good = hashlib.sha256(data).hexdigest()
    assert store.put("k", io.BytesIO(data), sha256=good.upper()).sha256 == good
    assert store.stat("k").sha256 == good

    with pytest.raises(IntegrityError, match="expected"):
        store.put("k", io.BytesIO(b"y" * 1000), sha256=good)
    with store.open("k") as f:
        assert f.read() == data  # the previous object is untouched
    with pytest.raises(ValueError, match="64 hex"):
        store.put("k", io.BytesIO(data), sha256="abc")


# --- streaming and memory -------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_process() -> Iterator[str]:
    """An S3 endpoint in another process, so tracemalloc counts only the client's memory
    (the session's ThreadedMotoServer shares our process and buffers whole objects)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("moto server process did not start")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# Run in a fresh interpreter: tracemalloc counts every thread of a process, and the test process
# has others (the session's moto server, clients of earlier tests) allocating at the same time.
_MEASURE_PUT = """
import json, sys, tracemalloc
from tests.services.test_storage import Generated, make_s3
from services.storage import FilesystemStore
backend, where, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = FilesystemStore(where) if backend == "fs" else make_s3(where)
store.ensure_ready()
tracemalloc.start()
info = store.put("uploads/tmp/big.zip", Generated(size), length=None)
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({"peak": peak, "size": info.size, "sha256": info.sha256, "bucket": getattr(store, "bucket", None)}))
"""


@pytest.mark.parametrize("backend", ["fs", "s3"])
def test_streamed_put_of_unknown_length_keeps_memory_bounded(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # 40 MiB: S3's floor is ~3 parts of 5 MiB held by minio at once, so the object must be
    # well above that for "bounded" to be distinguishable from "whole object in memory".
    size = 40 * MiB
    where = str(tmp_path / "objects") if backend == "fs" else request.getfixturevalue("moto_process")
    bound = 4 * CHUNK_SIZE if backend == "fs" else 4 * PART
    proc = subprocess.run([sys.executable, "-c", _MEASURE_PUT, backend, where, str(size)], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.strip().splitlines()[-1])

    # A bound set by the chunk / part size, not by the object: and well below the object.
    peak = measured["peak"]
    assert peak < bound and peak < size // 2, f"peak Python allocation {peak / MiB:.1f} MiB"
    assert measured["size"] == size
    assert measured["sha256"] == sha256_of_stream(Generated(size))
    if backend == "fs":
        store: ObjectStore = FilesystemStore(where)
    else:
        store = S3Store(where, "testing", "testing", measured["bucket"], "us-east-1", part_size=PART)
        etag = raw_client(store).stat_object(store.bucket, "uploads/tmp/big.zip").etag
        assert etag.endswith(f"-{size // PART}")  # a multipart ETag ends in -<number of parts>
    assert store.stat("uploads/tmp/big.zip").size == size
    with store.open("uploads/tmp/big.zip") as f:
        assert sha256_of_stream(f) == measured["sha256"]


def test_failed_stream_leaves_previous_object_and_no_debris(store: ObjectStore) -> None:
    store.put_bytes("datasets/2/masks/a.png", b"old")
    # Fails after more than one S3 part, so a multipart upload is under way and must be aborted.
    with pytest.raises(ConnectionResetError):
        store.put("datasets/2/masks/a.png", Generated(12 * MiB, fail_after=7 * MiB))
    with store.open("datasets/2/masks/a.png") as f:
        assert f.read() == b"old"
    assert [i.key for i in store.list()] == ["datasets/2/masks/a.png"]
    if isinstance(store, FilesystemStore):
        assert list((store.root / ".strata" / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    ("data", "length", "message"),
    [(b"abc", 5, "ended after 3 of the declared 5"), (b"abcdef", 4, "more than the declared 4")],
)
def test_declared_length_is_enforced(store: ObjectStore, data: bytes, length: int, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        store.put("k", io.BytesIO(data), length)
    assert not store.exists("k")


def test_text_streams_are_rejected(store: ObjectStore) -> None:
    with pytest.raises(TypeError, match="binary stream"):
        store.put("k", io.StringIO("text"))
    assert not store.exists("k")


# --- download ---------------------------------------------------------------------------------
def corrupt(store: ObjectStore, key: str) -> None:
    """Change an object's bytes while the store still believes the old sha256."""
    if isinstance(store, FilesystemStore):
        path = store.root / key
        st = path.stat()
        with open(path, "r+b") as f:  # same inode, same size, same mtime: the sidecar is trusted
            f.write(b"X")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        assert isinstance(store, S3Store)
        good = store.stat(key).sha256
        raw_client(store).put_object(
            store.bucket, key, io.BytesIO(b"Xorrupted"), 9, metadata={"sha256": good}
        )


def test_download_is_atomic(store: ObjectStore, tmp_path: Path) -> None:
    dest_dir = tmp_path / "cache" / "sub"
    dest_dir.mkdir(parents=True)
    target = dest_dir / "model.pt"
    target.write_bytes(b"previous")

    with pytest.raises(ObjectNotFound):
        store.download("checkpoints/9/model.pt", target)
    assert target.read_bytes() == b"previous"
    assert os.listdir(dest_dir) == ["model.pt"]

    data = random.Random(3).randbytes(2 * MiB + 5)
    src = tmp_path / "src.pt"
    src.write_bytes(data)
    store.put_file("checkpoints/9/model.pt", src)
    corrupt(store, "checkpoints/9/model.pt")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.download("checkpoints/9/model.pt", target)
    assert target.read_bytes() == b"previous"
    assert os.listdir(dest_dir) == ["model.pt"]

    store.put_file("checkpoints/9/model.pt", src)
    info = store.download("checkpoints/9/model.pt", target)
    assert target.read_bytes() == data
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert os.listdir(dest_dir) == ["model.pt"]
    assert store.download("checkpoints/9/model.pt", tmp_path / "new" / "dir" / "m.pt").size == len(data)


# --- listing and deleting -------------------------------------------------------------------
def test_list_is_recursive_sorted_and_prefix_filtered(store: ObjectStore) -> None:
    keys = ["b", "a/c/d", "ab", "a/b", "a-c", "datasets/7/images/x.jpg", "datasets/70/images/y.jpg"]
    for i, key in enumerate(keys):
        store.put_bytes(key, b"x" * i)
    # '-' (0x2d) sorts before '/' (0x2f): key order, not directory-walk order.
    assert [i.key for i in store.list()] == sorted(keys)
    assert [i.key for i in store.list("a/")] == ["a/b", "a/c/d"]
    assert [i.key for i in store.list("a")] == ["a-c", "a/b", "a/c/d", "ab"]
    assert [i.key for i in store.list("datasets/7/")] == ["datasets/7/images/x.jpg"]
    assert [i.key for i in store.list("datasets/7")] == ["datasets/7/images/x.jpg", "datasets/70/images/y.jpg"]
    assert list(store.list("nothing/here/")) == []
    sizes = {i.key: i.size for i in store.list()}
    assert sizes == {key: i for i, key in enumerate(keys)}


def test_delete_and_delete_prefix(store: ObjectStore) -> None:
    for key in ["datasets/7/images/1.jpg", "datasets/7/masks/1.png", "datasets/70/images/1.jpg", "other"]:
        store.put_bytes(key, b"data")
    store.delete("other")
    store.delete("other")  # idempotent
    assert not store.exists("other")
    with pytest.raises(ObjectNotFound):
        store.stat("other")

    assert store.delete_prefix("datasets/7/") == 2
    assert [i.key for i in store.list()] == ["datasets/70/images/1.jpg"]
    assert store.delete_prefix("datasets/7/") == 0
    with pytest.raises(InvalidKey, match="empty prefix"):
        store.delete_prefix("")
    assert store.exists("datasets/70/images/1.jpg")


def test_missing_objects_raise_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("dir/file", b"1")
    for key in ["missing", "dir", "dir/file/deeper"]:
        with pytest.raises(ObjectNotFound, match=repr(key)):
            store.stat(key)
        with pytest.raises(ObjectNotFound, match=repr(key)):
            with store.open(key):
                pass
        with pytest.raises(ObjectNotFound):
            store.download(key, tmp_path / "out")
        assert not store.exists(key)
        store.delete(key)
    assert store.exists("dir/file")


# --- keys -------------------------------------------------------------------------------------
BAD_KEYS = {
    "": "empty",
    "/etc/passwd": "relative",
    "a//b": "empty path segments",
    "a/": "empty path segments",
    "../x": "'..'",
    "a/../../b": "'..'",
    "./a": "'.'",
    "a\\b": "backslash",
    "a\x00b": "control",
    "a\nb": "control",
    "x" * 901: "901 characters",
    "a/" + "y" * 256: "longer than 255 bytes",
    ".strata/tmp/x": "reserved",
}


@pytest.mark.parametrize("key", list(BAD_KEYS), ids=lambda k: repr(k)[:30])
def test_invalid_keys_are_rejected_by_every_operation(store: ObjectStore, key: str, tmp_path: Path) -> None:
    rule = BAD_KEYS[key]
    operations = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put(key, io.BytesIO(b"x")),
        lambda: store.stat(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.open(key).__enter__(),
        lambda: store.download(key, tmp_path / "out"),
    ]
    for op in operations:
        with pytest.raises(InvalidKey, match=rule):
            op()
    assert list(store.list()) == []


def test_key_and_prefix_edge_cases(store: ObjectStore) -> None:
    with pytest.raises(InvalidKey, match="must be a str"):
        store.stat(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey, match="prefix"):
        store.list("../")
    with pytest.raises(InvalidKey, match="prefix"):
        store.delete_prefix("/abs/")
    odd = "datasets/1/images/ümlaut und space (1).jpg"
    store.put_bytes(odd, b"ok")
    assert [i.key for i in store.list("datasets/1/images/ü")] == [odd]


# --- readiness --------------------------------------------------------------------------------
def test_check_passes_on_a_ready_store(store: ObjectStore) -> None:
    store.check()
    store.ensure_ready()  # idempotent
    store.check()


def test_check_on_unreachable_s3_fails_fast() -> None:
    dead = make_s3(f"http://127.0.0.1:{free_port()}", connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"cannot reach S3 endpoint http://127\.0\.0\.1"):
        dead.check()
    with pytest.raises(StorageUnavailable):
        dead.stat("a")
    with pytest.raises(StorageUnavailable):
        dead.put_bytes("a", b"x")
    assert time.monotonic() - started < 5


def test_check_names_the_missing_bucket_or_root(s3_endpoint: str, tmp_path: Path) -> None:
    s3 = make_s3(s3_endpoint)
    with pytest.raises(StorageUnavailable, match=f"bucket '{s3.bucket}' does not exist"):
        s3.check()
    with pytest.raises(StorageUnavailable, match="does not exist"):
        s3.put_bytes("a", b"x")
    fs = FilesystemStore(tmp_path / "nowhere")
    with pytest.raises(StorageUnavailable, match="does not exist"):
        fs.check()
    with pytest.raises(StorageUnavailable, match="ensure_ready"):
        fs.put_bytes("a", b"x")
    assert not (tmp_path / "nowhere").exists()


# --- filesystem specifics -------------------------------------------------------------------
def test_filesystem_store_recovers_hashes_and_hides_its_own_files(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    store.ensure_ready()
    store.put_bytes("a/b", b"one")
    (store.root / ".strata" / "tmp" / "put-leftover").write_bytes(b"crashed write")
    (store.root / "copied" / "by").mkdir(parents=True)
    (store.root / "copied" / "by" / "hand.bin").write_bytes(b"manual")  # no sidecar
    assert [i.key for i in store.list()] == ["a/b", "copied/by/hand.bin"]
    assert store.stat("copied/by/hand.bin").sha256 == hashlib.sha256(b"manual").hexdigest()

    # Rewritten outside the store: the sidecar no longer matches the file and is not trusted.
    (store.root / "a" / "b").write_bytes(b"two!")
    assert store.stat("a/b").sha256 == hashlib.sha256(b"two!").hexdigest()

    store.delete("copied/by/hand.bin")
    assert not (store.root / "copied").exists()  # empty directories are pruned


def test_filesystem_store_reports_prefix_conflicts(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    store.ensure_ready()
    store.put_bytes("a", b"file")
    with pytest.raises(Exception, match="cannot hold both"):
        store.put_bytes("a/b", b"x")
    assert [i.key for i in store.list()] == ["a"]


# --- choosing a backend -----------------------------------------------------------------------
def test_open_store_follows_the_settings(embedded_settings, s3_endpoint: str) -> None:
    from services.config import load_settings

    fs = open_store(embedded_settings)
    assert isinstance(fs, FilesystemStore) and fs.root == embedded_settings.objects_dir
    settings = load_settings(
        data_dir=embedded_settings.data_dir, s3_endpoint=s3_endpoint, s3_access_key="testing",
        s3_secret_key="testing", s3_bucket=f"strata-{uuid.uuid4().hex[:8]}",
    )
    s3 = open_store(settings)
    assert isinstance(s3, S3Store) and s3.bucket == settings.s3_bucket
    s3.ensure_ready()
    s3.check()
    assert s3.put_bytes("x", b"1").size == 1
    s3.delete("x")


def test_s3_store_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="http"):
        S3Store("minio:9000", "k", "s", "bucket")
    with pytest.raises(ValueError, match="bucket name"):
        S3Store("http://127.0.0.1:9000", "k", "s", "Bad_Bucket")
    with pytest.raises(ValueError, match="part_size"):
        S3Store("http://127.0.0.1:9000", "k", "s", "bucket", part_size=1024)


def test_reader_streams_in_chunks(store: ObjectStore, tmp_path: Path) -> None:
    data = random.Random(5).randbytes(MiB + 3)
    store.put_bytes("blob", data)
    out = io.BytesIO()
    with store.open("blob") as f:
        assert f.readable() and f.info.size == len(data)
        shutil.copyfileobj(f, out, 64 * 1024)
    assert f.closed
    assert out.getvalue() == data
