"""The label values every mask, model and table shares: one definition each.

A mask pixel holds a class index: 0 is background, 1..254 are classes, 255 means "ignore"
(void, unlabelled, padding): it is never a class, never scored and never trained on.
"""

from __future__ import annotations

BACKGROUND_INDEX = 0
BACKGROUND_NAME = "background"
IGNORE_INDEX = 255
MAX_CLASS_INDEX = IGNORE_INDEX - 1  # the last index a class can have
