"""A task's loss over its run, kept in ``task.progress["history"]``: ``[x, loss]`` pairs with
``x = (epoch - 1) + step / steps`` (fractional epochs, so one axis spans the whole run), bounded
to HISTORY_POINTS however long the run is.

Pure functions on plain lists: the writer (``jobs/progress.py``) adds each report to what the row
holds, the view (``jobs/views.py``) reads what any earlier code may have written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

HISTORY_POINTS = 400
Point = list[float]  # [x, loss], as JSON stores it


def thinned(points: Sequence[Point], limit: int = HISTORY_POINTS) -> list[Point]:
    """``points`` with every other one dropped, as often as needed to keep at most ``limit``.

    Counted back from the newest, so the newest point always stays (and the first while the
    count is odd): the series still spans the whole run, at half the resolution each time.
    """
    kept = list(points)
    while len(kept) > max(limit, 1):
        kept = kept[::-2][::-1]
    return kept


def with_point(history: Any, x: float, loss: float, epochs: int, limit: int = HISTORY_POINTS) -> list[Point]:
    """``history`` (as read from the row) with the report ``(x, loss)`` of a run of ``epochs`` added.

    Points at or past ``x`` go first: a resumed attempt re-does an epoch, and its points replace
    the old attempt's instead of zig-zagging back. Points are kept about ``epochs / (limit - 1)``
    apart, so they spread evenly over the run instead of crowding its latest minutes: the newest
    point is always the latest report, and it replaces the one before while that one is closer to
    its predecessor than the spacing. That keeps a run within ``limit``; ``thinned`` is the bound.
    """
    points = history_points(history)
    if not math.isfinite(loss):  # a diverged step: JSON has no NaN, and the curve keeps its shape
        return points
    points = [p for p in points if p[0] < x]
    spacing = epochs / max(limit - 1, 1)
    if len(points) >= 2 and points[-1][0] - points[-2][0] < spacing:
        points.pop()  # it was only the latest report so far
    return thinned([*points, [round(x, 5), round(loss, 5)]], limit)


def history_points(value: Any) -> list[Point]:
    """The well-formed ``[x, loss]`` pairs of a stored history, ascending in x; anything else
    (not a list, a pair of the wrong shape, NaN or infinite numbers, x out of order) is skipped."""
    if not isinstance(value, list):
        return []
    points: list[Point] = []
    for entry in value:
        pair = _pair(entry)
        if pair is not None and (not points or pair[0] > points[-1][0]):
            points.append(pair)
    return points


def fractional_epoch(epoch: int, step: int, steps: int) -> float:
    """Epochs done at ``step`` of ``epoch`` (both from 1): 1.5 is half-way through the second."""
    return (epoch - 1) + step / max(steps, 1)


def _pair(entry: Any) -> Point | None:
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in entry):
        return None
    return [float(entry[0]), float(entry[1])]
