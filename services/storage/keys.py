"""Object keys: the one set of rules every backend enforces, so a key valid on the
filesystem store is valid on S3 and cannot escape the store's root."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.storage.errors import InvalidKey

MAX_KEY_CHARS = 900
MAX_KEY_BYTES = 1024  # the S3 limit, in UTF-8 bytes
MAX_SEGMENT_BYTES = 255  # NAME_MAX of common filesystems
# The filesystem backend keeps its temp files and sha256 sidecars under this top-level name;
# every backend refuses it so that a key valid on one backend is valid on the other.
RESERVED_PREFIX = ".strata"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def validate_key(key: object) -> str:
    """Return ``key`` unchanged if it is a valid object key; raise InvalidKey naming the rule.

    Valid: a non-empty str of at most 900 characters (and 1024 UTF-8 bytes), relative
    ('/'-separated, no leading '/'), no empty, '.' or '..' segments, no segment over 255
    bytes, no backslash or control characters, and not under the reserved '.strata/'.
    """
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a str, got {type(key).__name__}")
    problem = _key_problem(key)
    if problem:
        raise InvalidKey(f"invalid object key {key!r}: {problem}")
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it may start keys: '' or a key, optionally ending with one '/'."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"key prefix must be a str, got {type(prefix).__name__}")
    if prefix == "":
        return prefix
    problem = _key_problem(prefix[:-1] if prefix.endswith("/") else prefix)
    if problem:
        raise InvalidKey(f"invalid key prefix {prefix!r}: {problem}")
    return prefix


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if len(key) > MAX_KEY_CHARS:
        return f"it has {len(key)} characters, the limit is {MAX_KEY_CHARS}"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} bytes in UTF-8"
    if key.startswith("/"):
        return "it must be relative (no leading '/')"
    if "\\" in key:
        return "backslashes are not allowed (use '/')"
    if _CONTROL.search(key):
        return "control characters are not allowed"
    segments = key.split("/")
    if "" in segments:
        return "empty path segments ('//' or a trailing '/') are not allowed"
    for seg in segments:
        if seg in (".", ".."):
            return f"'{seg}' segments are not allowed"
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            return f"segment {seg[:20]!r}... is longer than {MAX_SEGMENT_BYTES} bytes"
    if segments[0] == RESERVED_PREFIX:
        return f"'{RESERVED_PREFIX}/' is reserved for the store's own files"
    return None


# --- the key layout (docs/storage.md): every key Strata writes is built here ----------------------
# Everything a model owns lives under ``models/{model_id}/`` (the id, not the name: ids never change
# or return). Keys written before models existed (``datasets/...``, ``checkpoints/...``) stay where
# they are: rows record the key of every object they point at.
def model_prefix(model_id: int) -> str:
    """Everything a model stored (the trailing '/' keeps model 7 from matching model 70)."""
    return validate_prefix(f"models/{int(model_id)}/")


def dataset_prefix(model_id: int, task_id: str) -> str:
    """Everything a task uploaded."""
    return validate_prefix(f"{model_prefix(model_id)}datasets/{task_id}/")


def dataset_image_key(model_id: int, task_id: str, stem: str, extension: str) -> str:
    """An uploaded image, stored as sent; ``extension`` is its format's, with the dot."""
    return validate_key(f"{dataset_prefix(model_id, task_id)}images/{stem}{extension}")


def dataset_mask_key(model_id: int, task_id: str, stem: str) -> str:
    """An uploaded mask, stored in the task's local index form (always PNG)."""
    return validate_key(f"{dataset_prefix(model_id, task_id)}masks/{stem}.png")


def checkpoint_key(model_id: int, version: int, sha256: str) -> str:
    """A version's model file. The digest in the name: two attempts that raced to the same version
    number can never overwrite the bytes a recorded version points at."""
    return validate_key(f"{model_prefix(model_id)}checkpoints/{version}/model-{sha256[:16]}.pt")


def export_key(model_id: int, version: int, format: str, sha256: str, extension: str) -> str:
    """A version exported for another runtime (``format``: onnx, torchscript, triton; ``extension``
    with the dot). The digest in the name: two requests that exported at once never overwrite the
    bytes a row points at."""
    return validate_key(f"{model_prefix(model_id)}exports/{version}/{format}-{sha256[:16]}{extension}")


def training_state_key(model_id: int, task_id: str) -> str:
    """A running task's newest epoch checkpoint, so another machine can resume it."""
    return validate_key(f"{model_prefix(model_id)}training/{task_id}/last.pt")


# --- reading a key back: which model, task or version an object belongs to -----------------------
# For reports about objects no row names (``strata verify``): the layout above, read in reverse,
# legacy keys included. Only this module knows the layout, so the parsing lives beside the builders.
_OWNER = re.compile(
    r"(?:models/(?P<model_id>[0-9]+)/)?"
    r"(?:(?P<kind>datasets|training)/(?P<task_id>[^/]+)/|(?P<of_version>checkpoints|exports)/(?P<version>[0-9]+)/)"
)
_KINDS = {"datasets": "dataset", "training": "training state", "checkpoints": "checkpoint", "exports": "export"}


@dataclass(frozen=True)
class KeyOwner:
    """What a key of the layout above belongs to; every field is None where the key does not say."""

    kind: str | None = None  # "dataset", "checkpoint", "export" or "training state"
    model_id: int | None = None
    task_id: str | None = None
    version: int | None = None


def key_owner(key: str) -> KeyOwner:
    """The model, task or version a key names, or an empty KeyOwner for a key Strata never builds."""
    found = _OWNER.match(key)
    if found is None:
        model = re.match(r"models/([0-9]+)/", key)
        return KeyOwner(model_id=int(model[1]) if model else None)
    model_id, version = found["model_id"], found["version"]
    return KeyOwner(_KINDS[found["kind"] or found["of_version"]], int(model_id) if model_id else None, found["task_id"],
                    int(version) if version else None)
