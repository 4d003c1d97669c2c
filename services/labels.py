"""The label values every mask, model and table shares: one definition each.

A mask pixel holds a class index: 0 is background, 1..254 are classes, 255 means "ignore"
(void, unlabelled, padding): it is never a class, never scored and never trained on.
"""

from __future__ import annotations

BACKGROUND_INDEX = 0
BACKGROUND_NAME = "background"
IGNORE_INDEX = 255
MAX_CLASS_INDEX = IGNORE_INDEX - 1  # the last index a class can have


def voc_colour(value: int) -> tuple[int, int, int]:
    """Pascal VOC's colour map: the colour of value 0..255 (0 black, 255 VOC's void (224, 224, 192)).
    The bits of the value are spread over R, G and B from the most significant bit down, so every
    value has its own colour. Class display colours (registry/classes.py) and VOC masks use it."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= (value & 1) << shift
        g |= ((value >> 1) & 1) << shift
        b |= ((value >> 2) & 1) << shift
        value >>= 3
    return r, g, b
