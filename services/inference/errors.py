"""Errors of the inference service; each message says what is wrong in the caller's terms.

The API maps them to status codes: NotAnImage 422, ImageTooLarge 413, NoModelYet and
NoProductionVersion 409, ModelUnavailable 503 (``VersionNotFound`` from the registry: 404).
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class of everything /segment can refuse."""


class NotAnImage(InferenceError, ValueError):
    """The uploaded bytes are not an image we can decode."""


class ImageTooLarge(InferenceError, ValueError):
    """The image has more pixels than STRATA_MAX_IMAGE_PIXELS."""


class NoModelYet(InferenceError):
    """No model version exists: nothing has been trained yet."""


class NoProductionVersion(InferenceError):
    """Versions exist but none is in production (no ``production`` alias)."""


class ModelUnavailable(InferenceError):
    """A version exists but cannot be served (its checkpoint failed to download or load)."""


class ModelLoadError(ModelUnavailable):
    """Loading one version failed; the message names the version and the cause."""
