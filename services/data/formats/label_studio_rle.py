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
chunk headers is sequential by nature (about a million chunks a second; a brush region has a few
per row it crosses); the values (a literal chunk may hold thousands) are read and expanded with
numpy a block at a time, and ``decode_alpha`` expands only the alpha channel (H x W, not H x W x 4).
"""

from __future__ import annotations

from collections.abc import Iterator

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
    """bool [H, W]: the pixels of a brush region of a ``width`` x ``height`` image (alpha != 0)."""
    alpha = np.empty(width * height, bool)
    for first, values, spans in _blocks(rle, width * height * CHANNELS):
        # Value k covers elements [start_k, end_k): the alpha elements 4p + 3 among them are those
        # of the pixels p in [start_k // 4, end_k // 4).
        ends = first + np.cumsum(spans)
        pixels = np.diff(ends // CHANNELS, prepend=first // CHANNELS)
        alpha[first // CHANNELS:ends[-1] // CHANNELS] = np.repeat(values != 0, pixels)
    return alpha.reshape(height, width)


def decode(rle: bytes, expected: int) -> np.ndarray:
    """All the ``expected`` values packed in ``rle`` (uint32)."""
    out = np.empty(expected, np.uint32)
    for first, values, spans in _blocks(rle, expected):
        out[first:first + int(spans.sum())] = np.repeat(values, spans)
    return out


def _blocks(rle: bytes, expected: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(the first element, values, how many elements each value fills), a block at a time, in order."""
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
    data = np.frombuffer(buf, np.uint8)
    offsets: list[int] = []  # each chunk's first word's bit
    counts: list[int] = []  # how many elements it fills: > 0 a run (one word), < 0 literals (one word each)
    window_bits = _WINDOW * 8
    pos, i, first, words = _HEADER_BITS, 0, 0, 0
    while i < count:
        if pos + 3 > total_bits:
            raise RleError(f"it ends after {i} of its {count} values")
        window = int.from_bytes(buf[pos >> 3:(pos >> 3) + _WINDOW], "big")
        left = window_bits - (pos & 7)  # bits of the window from ``pos`` on
        size = sizes[(window >> (left - 3)) & 3]
        n = ((window >> (left - 3 - size)) & ((1 << size) - 1)) + 1
        start = pos + 3 + size
        if (window >> (left - 1)) & 1:
            pos, words = start + word, words + 1
            counts.append(n)
        else:
            pos, words = start + n * word, words + n
            counts.append(-n)
        offsets.append(start)
        if pos > total_bits:
            raise RleError(f"a chunk at bit {start - 3 - size} runs past the end of the data ({len(rle)} bytes) "
                           f"after {i} of its {count} values")
        i += n
        if i > count:
            raise RleError(f"it holds more values than its header declares ({count})")
        if words >= _BLOCK_WORDS or i == count:
            yield first, *_expand(data, word, offsets, counts)
            offsets, counts, first, words = [], [], i, 0


def _field(buf: bytes, pos: int, width: int) -> int:
    """The ``width``-bit big-endian field at bit ``pos`` (width <= 57)."""
    window = int.from_bytes(buf[pos >> 3:(pos >> 3) + _WINDOW], "big")
    return (window >> (_WINDOW * 8 - (pos & 7) - width)) & ((1 << width) - 1)


def _expand(data: np.ndarray, word: int, offsets: list[int], counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(values, how many elements each fills) of a block of chunks, vectorised."""
    signed = np.asarray(counts, np.int64)
    runs = signed > 0
    lengths = np.abs(signed)
    words_per_chunk = np.where(runs, 1, lengths)
    # Each word's bit: its chunk's first word's bit plus the word size x its place in the chunk.
    chunk_of_word = np.repeat(np.arange(len(lengths)), words_per_chunk)
    place = np.arange(len(chunk_of_word)) - (np.cumsum(words_per_chunk) - words_per_chunk)[chunk_of_word]
    bits = np.asarray(offsets, np.int64)[chunk_of_word] + place * word
    spans = np.where(runs, lengths, 1)[chunk_of_word]  # a run's one word fills its whole count
    return _words_at(data, bits, word), spans


def _words_at(data: np.ndarray, bits: np.ndarray, word: int) -> np.ndarray:
    """The ``word``-bit values (uint32) starting at each of ``bits`` (any bit, not only byte starts)."""
    first = bits >> 3
    window = np.zeros(len(bits), np.uint64)
    for k in range(5):  # 5 bytes hold any 32-bit word, whatever its first bit's place in its byte
        window = (window << np.uint64(8)) | data[first + k].astype(np.uint64)
    shift = (40 - (bits & 7) - word).astype(np.uint64)
    return ((window >> shift) & np.uint64((1 << word) - 1)).astype(np.uint32)
