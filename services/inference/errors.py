"""Errors of the inference service; each message says what is wrong in the caller's terms.

Their categories (``services.errors``) give the API's statuses: NotAnImage and AnswerOptionsClash
422, ImageTooLarge 413, NoModelYet and NoProductionVersion 409, ModelUnavailable 503 (``VersionNotFound``: 404).
"""

from __future__ import annotations

from services.errors import Conflict, InvalidInput, TooLarge, Unavailable


class NotAnImage(InvalidInput):
    """The uploaded bytes are not an image we can decode."""


class AnswerOptionsClash(InvalidInput):
    """The request asks for two answers at once (e.g. the overlay image as RLE JSON)."""


class ImageTooLarge(TooLarge):
    """The image has more pixels than STRATA_MAX_IMAGE_PIXELS."""


class NoModelYet(Conflict):
    """No model version exists: nothing has been trained yet."""


class NoProductionVersion(Conflict):
    """Versions exist but none is in production (no ``production`` alias)."""


class ModelUnavailable(Unavailable):
    """A version exists but cannot be served (its checkpoint failed to download or load)."""


class ModelLoadError(ModelUnavailable):
    """Loading one version failed; the message names the version and the cause."""
