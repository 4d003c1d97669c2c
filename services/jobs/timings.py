"""Where a task's time goes, phase by phase, kept on its row (``tasks.timings``).

The API writes ``ingest_s`` when it records the task (reading, checking and storing the upload);
the worker adds its attempt's phases when it records the version: ``fetch_s`` (images, masks and
the parent checkpoint from the store to the local cache), ``train_s``, ``score_s``, ``upload_s``
(the new checkpoint to the store) and ``record_s`` (the version's transaction, measured up to its
commit's start). Waiting in the queue is not a phase of ours: the task's ``started_at`` minus its
``created_at`` (``queued_s`` in the API's view).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

PHASES = ("fetch", "train", "score", "upload", "record")
INGEST = "ingest_s"


class Stopwatch:
    """Seconds per named phase; a phase entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: dict[str, float] = {}  # phases under way: their start

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = self._open[name] = time.perf_counter()
        try:
            yield
        finally:
            del self._open[name]
            self.add(name, time.perf_counter() - began)

    def add(self, name: str, seconds: float) -> None:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases are {', '.join(PHASES)}")
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def as_json(self) -> dict[str, float]:
        """{"<phase>_s": seconds}; a phase under way counts up to now (the recording writes its own
        row before its transaction ends)."""
        now = time.perf_counter()
        totals = {**self.seconds}
        for name, began in self._open.items():
            totals[name] = totals.get(name, 0.0) + now - began
        return {f"{name}_s": round(totals[name], 3) for name in PHASES if name in totals}


def with_phases(timings: Mapping[str, Any] | None, watch: Stopwatch, attempt: int) -> dict[str, Any]:
    """The row's timings with this attempt's phases (an earlier attempt's are replaced; ingest kept)."""
    kept = {INGEST: timings[INGEST]} if timings and INGEST in timings else {}
    return {**kept, **watch.as_json(), "attempt": attempt}


def timings_view(timings: Mapping[str, Any] | None, created_at: datetime, started_at: datetime | None,
                 finished_at: datetime | None) -> dict[str, Any]:
    """What the API shows: the row's phases plus ``queued_s`` (recorded to first started) and
    ``total_s`` (ingest plus recorded to finished), each where known."""
    view: dict[str, Any] = dict(timings or {})
    if started_at is not None:
        view["queued_s"] = round(max(0.0, (started_at - created_at).total_seconds()), 3)
    if finished_at is not None:
        since_recorded = (finished_at - created_at).total_seconds()
        view["total_s"] = round(view.get(INGEST, 0.0) + since_recorded, 3)
    return view

