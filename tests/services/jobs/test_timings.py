"""Where a task's time went: phases measured by a stopwatch, kept on its row, shown with queue and total."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from services.jobs.timings import Stopwatch, timings_view, with_phases


def test_phases_add_up_and_one_under_way_counts_to_now() -> None:
    watch = Stopwatch()
    with watch.phase("fetch"):
        time.sleep(0.02)
    watch.add("fetch", 1.0)
    with watch.phase("record"):
        time.sleep(0.01)
        during = watch.as_json()
    assert 1.02 <= during["fetch_s"] < 1.5 and during["record_s"] >= 0.01
    assert list(watch.as_json()) == ["fetch_s", "record_s"]
    with pytest.raises(ValueError, match="unknown phase"):
        watch.add("lunch", 1.0)


def test_an_attempts_phases_replace_the_last_ones_and_keep_ingest() -> None:
    first = Stopwatch()
    first.add("train", 5.0)
    first.add("score", 1.0)
    row = with_phases({"ingest_s": 2.0}, first, attempt=1)
    second = Stopwatch()
    second.add("train", 3.0)
    assert with_phases(row, second, attempt=2) == {"ingest_s": 2.0, "train_s": 3.0, "attempt": 2}
    assert with_phases(None, second, attempt=1) == {"train_s": 3.0, "attempt": 1}


def test_the_view_adds_queue_wait_and_total() -> None:
    created = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    started, finished = created + timedelta(seconds=4), created + timedelta(seconds=64)
    view = timings_view({"ingest_s": 1.5, "train_s": 50.0}, created, started, finished)
    assert view == {"ingest_s": 1.5, "train_s": 50.0, "queued_s": 4.0, "total_s": 65.5}
    assert timings_view(None, created, None, None) == {}


def test_loader_workers_default_to_half_the_training_threads() -> None:
    from services.jobs.run import MAX_LOADER_WORKERS, loader_workers

    assert loader_workers(3, threads=16) == 3  # the setting wins, 0 included
    assert loader_workers(0, threads=16) == 0
    assert [loader_workers(None, threads=t) for t in (1, 2, 4, 8)] == [0, 1, 2, 4]
    assert loader_workers(None, threads=64) == MAX_LOADER_WORKERS
