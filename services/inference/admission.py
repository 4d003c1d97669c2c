"""How many pixels are being segmented at once: the bound on the API's memory under load.

A request's memory grows with its image, not with its body: a 131 KB PNG can decode to 40
megapixels, and each pixel costs tens of bytes on the way (RGB, the logits upsampled to full size,
the mask). The per-request limit (STRATA_MAX_IMAGE_PIXELS) does not bound the sum, so every
request holds its image's pixels in a ``PixelBudget`` from before its image is decoded until its
answer is encoded; a request that does not fit waits its turn, and one that waits longer than
``wait_s`` is answered 503 with Retry-After. An image larger than the whole budget runs alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.errors import Unavailable


class SegmentationBusy(Unavailable):
    """Too many pixels are being segmented now; the same request may succeed shortly."""


class PixelBudget:
    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit, self.wait_s = limit, wait_s
        self.in_flight = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        share = min(pixels, self.limit)
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.in_flight + share <= self.limit),
                                       self.wait_s)
            except TimeoutError:
                raise SegmentationBusy(
                    f"busy: {self.in_flight} pixels are being segmented, the limit is {self.limit} "
                    f"(STRATA_SEGMENT_MAX_PIXELS_IN_FLIGHT) and this image's {pixels} did not fit within "
                    f"{self.wait_s:g} s; retry shortly") from None
            self.in_flight += share
        try:
            yield
        finally:
            self.in_flight -= share  # at once (no await before it): a cancelled request cannot keep its share
            async with self._changed:
                self._changed.notify_all()
