"""Decoding images someone sent us: one place that turns Pillow's many failures into clear errors.

Uploads (POST /tasks) and inference (POST /segment) both decode untrusted files; each raises its
own error types (a 422 for a task's file, a 422/413 for /segment) but they say the same things.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, UnidentifiedImageError


@contextmanager
def decoding(what: str, *, not_image: type[Exception], too_large: type[Exception]) -> Iterator[None]:
    """Run Pillow calls on an untrusted file; ``what`` names it in messages (e.g. "image 'a.png'").

    Unrecognised, corrupt or truncated files raise ``not_image``; decompression bombs raise
    ``too_large``. Our own errors raised inside the block pass through unchanged.
    """
    try:
        yield
    except (not_image, too_large):
        raise
    except UnidentifiedImageError:
        raise not_image(f"{what} is not an image (no decoder recognises it)") from None
    except Image.DecompressionBombError as err:
        raise too_large(f"{what} is too large: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise not_image(f"{what} cannot be decoded as an image (corrupt or truncated?): {err}") from None


def check_pixels(what: str, width: int, height: int, max_pixels: int, error: type[Exception]) -> None:
    """Refuse an image over ``max_pixels`` from its header, before decoding it."""
    if width * height > max_pixels:
        raise error(f"{what} is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{max_pixels} (STRATA_MAX_IMAGE_PIXELS)")
