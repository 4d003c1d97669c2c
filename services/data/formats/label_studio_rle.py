"""Label Studio's brush RLE, decoded without trusting it.

Label Studio stores a brush region as the RGBA pixels of the image's size (H x W x 4 bytes,
row-major, flattened) packed by thi.ng's ``rle-pack`` scheme, and exports the packed bytes as a list
of ints (``value.rle``). The format (as label-studio-sdk's ``converter/brush.py`` and thi.ng's
``@thi.ng/rle-pack`` describe it) is a big-endian bit stream:

    32 bits  the number of values
     5 bits  word size - 1 (bits per value, 1..32; Label Studio writes 8)
    4 x 4 bits  four run-length field sizes - 1 (1..16 bits; Label Studio writes 3, 4, 8, 16)
    then chunks until every value is produced:
      1 bit   1: a run (one value repeated), 0: literal values
      2 bits  which of the four field sizes the count uses
      s bits  count - 1
      a run: one word, the value; literals: ``count`` words

The region's pixels are those whose alpha (the 4th byte) is not 0, as Label Studio itself draws a
stored region and as label-studio-sdk's converters read it.

The header's count must be exactly H x W x 4 of the image (so memory is bounded by the image),
and the chunk walk stops there: at most one step per value, whatever the bytes say. The walk over
chunk headers is sequential by nature; the values (a literal chunk may hold thousands) are read
and expanded with numpy a block at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHANNELS = 4  # RGBA
_HEADER_BITS = 32 + 5 + 4 * 4
_WINDOW = 8  # bytes read at once: a chunk's header and a run's value fit in 57 bits
_BLOCK_WORDS = 1 << 20  # words expanded at a time (bounds the scratch memory)


class RleError(ValueError):
    """The bytes are not a brush RLE of the expected size; the message says what is wrong."""


def as_bytes(rle: object) -> bytes:
    """The JSON list of byte values as bytes."""
    if not isinstance(rle, list) or not rle:
        raise RleError("value.rle must be a non-empty list of byte values (0..255)")
    try:
        return bytes(rle)
    except (TypeError, ValueError):
        bad = next((v for v in rle if not isinstance(v, int) or not 0 <= v <= 255), None)
        raise RleError(f"value.rle must hold byte values (integers 0..255), not {bad!r}") from None


def decode_alpha(rle: bytes, width: int, height: int) -> np.ndarray:
    """bool [H, W]: the pixels of a brush region of a ``width`` x ``height`` image."""
    values = decode(rle, width * height * CHANNELS)
    return values.reshape(height, width, CHANNELS)[..., CHANNELS - 1] != 0


def decode(rle: bytes, expected: int) -> np.ndarray:
    """The ``expected`` values packed in ``rle`` (uint8, uint16 or uint32 as the word size needs)."""
    total_bits = len(rle) * 8
    if total_bits < _HEADER_BITS:
        raise RleError(f"it is {len(rle)} bytes, shorter than the format's header (53 bits)")
    buf = rle + bytes(_WINDOW)  # reads near the end see zeros; bounds are checked against total_bits
    count = _field(buf, 0, 32)
    if count != expected:
        raise RleError(f"its header declares {count} values but the image's RGBA pixels are {expected} "
                       "(original_width x original_height x 4)")
    word = _field(buf, 32, 5) + 1
    sizes = [_field(buf, 37 + 4 * k, 4) + 1 for k in range(4)]
    out = np.empty(count, np.uint8 if word <= 8 else np.uint16 if word <= 16 else np.uint32)
    _Walk(buf, total_bits, word, sizes, out).run()
    return out


def _field(buf: bytes, pos: int, width: int) -> int:
    """The ``width``-bit big-endian field at bit ``pos`` (width <= 57)."""
    window = int.from_bytes(buf[pos >> 3:(pos >> 3) + _WINDOW], "big")
    return (window >> (_WINDOW * 8 - (pos & 7) - width)) & ((1 << width) - 1)


class _Walk:
    """Reads the chunks in order, noting each one's values (where they start in the stream and how
    many), and writes them into ``out`` a block at a time."""

    def __init__(self, buf: bytes, total_bits: int, word: int, sizes: Sequence[int], out: np.ndarray) -> None:
        self.buf, self.total_bits, self.word, self.sizes, self.out = buf, total_bits, word, sizes, out
        self.bytes = np.frombuffer(buf, np.uint8)
        self._clear()

    def _clear(self) -> None:
        self.first = 0  # the element the noted chunks start at
        self.offsets: list[int] = []  # each chunk's first word's bit
        self.counts: list[int] = []  # how many elements it produces: > 0 a run, < 0 literals
        self.words = 0

    def run(self) -> None:
        buf, word, sizes, total_bits, end = self.buf, self.word, self.sizes, self.total_bits, len(self.out)
        offsets, counts = self.offsets, self.counts
        window_bits = _WINDOW * 8
        pos, i = _HEADER_BITS, 0
        while i < end:
            if pos + 3 > total_bits:
                raise RleError(f"it ends after {i} of its {end} values")
            window = int.from_bytes(buf[pos >> 3:(pos >> 3) + _WINDOW], "big")
            left = window_bits - (pos & 7)  # bits of the window from ``pos`` on
            size = sizes[(window >> (left - 3)) & 3]
            n = ((window >> (left - 3 - size)) & ((1 << size) - 1)) + 1
            start = pos + 3 + size
            if (window >> (left - 1)) & 1:  # a run
                pos = start + word
                counts.append(n)
                self.words += 1
            else:
                pos = start + n * word
                counts.append(-n)
                self.words += n
            offsets.append(start)
            if pos > total_bits:
                raise RleError(f"a chunk at bit {start - 3 - size} runs past the end of the data "
                               f"({len(buf) - _WINDOW} bytes) after {i} of its {end} values")
            i += n
            if i > end:
                raise RleError(f"it holds more values than its header declares ({end})")
            if self.words >= _BLOCK_WORDS:
                self._flush(i)
                offsets, counts = self.offsets, self.counts
        self._flush(i)

    def _flush(self, i: int) -> None:
        """Write the noted chunks' values (elements ``self.first`` to ``i``) into ``out``, vectorised."""
        if not self.counts:
            return
        signed = np.asarray(self.counts, np.int64)
        runs = signed > 0
        counts = np.abs(signed)
        words_per_chunk = np.where(runs, 1, counts)
        # Each word's bit: its chunk's first word's bit plus word size x its place in the chunk.
        chunk_of_word = np.repeat(np.arange(len(counts)), words_per_chunk)
        place = np.arange(len(chunk_of_word)) - (np.cumsum(words_per_chunk) - words_per_chunk)[chunk_of_word]
        bits = np.asarray(self.offsets, np.int64)[chunk_of_word] + place * self.word
        spans = np.where(runs, counts, 1)[chunk_of_word]  # a run's one word fills its whole count
        self.out[self.first:i] = np.repeat(self._words_at(bits), spans)
        self._clear()
        self.first = i

    def _words_at(self, bits: np.ndarray) -> np.ndarray:
        """The ``word``-bit values starting at each of ``bits`` (any bit, not only byte starts)."""
        first = bits >> 3
        window = np.zeros(len(bits), np.uint64)
        for k in range(5):  # 5 bytes hold any 32-bit word, whatever its first bit's place in its byte
            window = (window << np.uint64(8)) | self.bytes[first + k].astype(np.uint64)
        shift = (40 - (bits & 7) - self.word).astype(np.uint64)
        return ((window >> shift) & np.uint64((1 << self.word) - 1)).astype(self.out.dtype)
