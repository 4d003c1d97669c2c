"""The S3 / MinIO backend, over the ``minio`` client.

Uploads always go through ``put_object(length=-1, part_size=...)``: a stream shorter than one
part is sent in a single PUT, a longer one as a multipart upload that S3 makes visible only
when it completes (and that minio aborts if reading the stream fails).  Parts are uploaded one
at a time, so memory stays at about three parts per upload (minio re-slices each part) whatever
the object size.  The sha256 is stored as user metadata ``x-amz-meta-sha256`` when the caller
knows it up front (put_file, or put(..., sha256=...)); otherwise put returns the hash it
computed and stat reports ``sha256=None`` for that object.

All HTTP goes through our own urllib3 pool with short connect timeouts and few retries, so a
dead endpoint fails requests in seconds instead of minio's default minutes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import BinaryIO
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import MAX_PART_SIZE, MIN_PART_SIZE, check_bucket_name

from services.storage.base import ObjectInfo, ObjectReader, ObjectStore
from services.storage.errors import ObjectNotFound, StorageError, StorageUnavailable
from services.storage.keys import validate_key, validate_prefix
from services.storage.streams import HashingReader, check_sha256

META_SHA256 = "sha256"  # sent as the header x-amz-meta-sha256
DEFAULT_PART_SIZE = 8 * 1024 * 1024  # 10,000 parts of 8 MiB: objects up to ~78 GiB
_UNAVAILABLE_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _http_pool(connect_timeout: float, read_timeout: float, retries: int) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
        ),
    )


class S3Store(ObjectStore):
    """Objects in one bucket of an S3-compatible endpoint (MinIO in production)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str = "us-east-1",
        *,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 3,
    ) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/") \
                or url.query or url.fragment or url.username:
            raise ValueError(f"S3 endpoint must look like http(s)://host[:port], got {endpoint!r}")
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid S3 bucket name {bucket!r}: {exc}") from None
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE}, got {part_size}")
        self.endpoint = f"{url.scheme}://{url.netloc}"
        self.bucket = bucket
        self.region = region
        self.part_size = part_size

        def client(pool: urllib3.PoolManager) -> Minio:
            # Passing the region skips minio's GetBucketLocation round trip.
            return Minio(url.netloc, access_key=access_key, secret_key=secret_key,
                         secure=url.scheme == "https", region=region, http_client=pool)

        self._client = client(_http_pool(connect_timeout, read_timeout, retries))
        # check() answers /readyz: it must fail fast, so it never retries.
        self._probe = client(_http_pool(min(connect_timeout, 2.0), min(read_timeout, 5.0), 0))

    def __repr__(self) -> str:
        return f"S3Store({self.endpoint!r}, bucket={self.bucket!r})"

    # -- writing ---------------------------------------------------------------------------
    def put(
        self,
        key: str,
        stream: BinaryIO,
        length: int | None = None,
        content_type: str = "application/octet-stream",
        *,
        sha256: str | None = None,
    ) -> ObjectInfo:
        validate_key(key)
        expected = check_sha256(sha256) if sha256 else None
        # The reader enforces length and sha256 before minio sees the end of the stream, so a
        # bad stream aborts the upload and leaves any previous object under the key intact.
        reader = HashingReader(stream, key, length, expected)
        with self._translated(f"uploading {key!r}", key, reader):
            result = self._client.put_object(
                self.bucket, key, reader, length=-1, content_type=content_type,
                metadata={META_SHA256: expected} if expected else None,
                part_size=self.part_size, num_parallel_uploads=1,
            )
        return ObjectInfo(key, reader.size, reader.hexdigest(), result.last_modified)

    # -- reading ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[ObjectReader]:
        validate_key(key)
        with self._translated(f"downloading {key!r}", key):
            response = self._client.get_object(self.bucket, key)
        try:
            info = self._info(key, response.headers)
            with ObjectReader(response, info, lambda exc: self._map(exc, f"reading {key!r}", key)) as reader:
                yield reader
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        with self._translated(f"stat of {key!r}", key):
            obj = self._client.stat_object(self.bucket, key)
        return ObjectInfo(key, obj.size or 0, _sha256_from(obj.metadata), obj.last_modified)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # S3 lists keys in UTF-8 byte order, which is code-point order: the same as sorted().
        with self._translated(f"listing {prefix!r}"):
            for obj in self._client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                if not obj.is_dir:
                    yield ObjectInfo(obj.object_name, obj.size or 0, None, obj.last_modified)

    # -- deleting --------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        validate_key(key)
        with self._translated(f"deleting {key!r}", key):
            self._client.remove_object(self.bucket, key)  # S3 answers 204 for a missing key too

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        if not prefix:
            return super().delete_prefix(prefix)  # raises InvalidKey: refuses to empty the store
        keys = [info.key for info in self.list(prefix)]
        with self._translated(f"deleting under {prefix!r}"):
            # remove_objects is lazy: consuming it sends the batched DeleteObjects requests.
            errors = list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            first = errors[0]
            raise StorageError(
                f"could not delete {len(errors)} of {len(keys)} objects under {prefix!r} in {self!r}; "
                f"first: {first.name}: {first.code} {first.message}"
            )
        return len(keys)

    # -- health ----------------------------------------------------------------------------
    def check(self) -> None:
        try:
            found = self._probe.bucket_exists(self.bucket)
        except Exception as exc:
            mapped = self._map(exc, "checking the bucket")
            if mapped is None:
                raise
            raise StorageUnavailable(str(mapped)) from exc
        if not found:
            raise self._no_bucket()

    def ensure_ready(self) -> None:
        with self._translated(f"creating bucket {self.bucket!r}"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket, location=self.region)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # created meanwhile by another process
                    raise

    # -- errors ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _translated(
        self, what: str, key: str | None = None, source: HashingReader | None = None
    ) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            if source is not None and exc is source.error:
                raise  # the caller's stream failed, not S3: its error is theirs to see
            mapped = self._map(exc, what, key)
            if mapped is None:
                raise
            raise mapped from exc

    def _map(self, exc: Exception, what: str, key: str | None = None) -> StorageError | None:
        """Our error for a minio / urllib3 failure, or None to let it through unchanged."""
        where = f"{self.endpoint} (bucket {self.bucket!r})"
        if isinstance(exc, S3Error):
            if exc.code == "NoSuchKey" and key is not None:
                return ObjectNotFound(f"no object {key!r} in {self!r}")
            if exc.code == "NoSuchBucket":
                return self._no_bucket()
            cls = StorageUnavailable if exc.code in _UNAVAILABLE_CODES else StorageError
            return cls(f"{what} failed at {where}: {exc.code}: {exc.message}")
        if isinstance(exc, ServerError):
            return StorageUnavailable(f"{what} failed at {where}: HTTP {exc.status_code}")
        if isinstance(exc, InvalidResponseError):
            return StorageUnavailable(f"{what} failed: {self.endpoint} did not answer like S3 ({exc})")
        if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError):
            reason = getattr(exc, "reason", None) or exc
            return StorageUnavailable(f"{what} failed: cannot reach S3 endpoint {self.endpoint}: {reason}")
        return None

    def _no_bucket(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"bucket {self.bucket!r} does not exist at {self.endpoint}; call ensure_ready()"
        )

    def _info(self, key: str, headers) -> ObjectInfo:
        modified = headers.get("last-modified")
        return ObjectInfo(
            key,
            int(headers.get("content-length", 0)),
            _sha256_from(headers),
            parsedate_to_datetime(modified) if modified else None,
        )


def _sha256_from(headers) -> str | None:
    value = (headers or {}).get(f"x-amz-meta-{META_SHA256}")
    try:
        return check_sha256(value) if value else None
    except ValueError:
        return None  # written by someone else: not ours to trust
