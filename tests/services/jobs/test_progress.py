"""A running task's reports on its row: the bounded loss history (``jobs/history.py``) and the
progress writer (``jobs/progress.py``) on a real database (both flavours), including an attempt
that resumes a redelivered task, and the history as the API's view reads it back."""

from __future__ import annotations

import math

import pytest

from services.db.models import Task
from services.db.session import session_scope
from services.jobs import progress as progress_module
from services.jobs.history import HISTORY_POINTS, fractional_epoch, history_points, thinned, with_point
from services.jobs.progress import ProgressWriter
from services.jobs.views import progress_view
from services.learning.trainer import Progress
from services.registry.models import create_model


# --- the history, pure ---------------------------------------------------------------------------
def test_thinning_keeps_every_other_point_back_from_the_newest():
    points = [[float(i), 1.0] for i in range(401)]
    kept = thinned(points)
    assert len(kept) == 201 and kept[0] == [0.0, 1.0] and kept[-1] == [400.0, 1.0]
    assert [p[0] for p in kept] == [float(i) for i in range(0, 401, 2)]
    assert thinned(points[:400]) == points[:400]  # at the bound: untouched
    assert [p[0] for p in thinned([[float(i), 0.0] for i in range(10)], 3)] == [1.0, 5.0, 9.0]  # halved twice
    assert thinned([]) == []


def test_the_fractional_epoch_spans_the_run():
    assert fractional_epoch(1, 5, 10) == 0.5
    assert fractional_epoch(3, 10, 10) == 3.0


def test_a_long_run_stays_bounded_and_evenly_spread():
    """10 000 reports of a 30-epoch run: at most HISTORY_POINTS points, from the first report to
    the last, none of the run's tenths left without points."""
    history: list = []
    steps = 1000
    for n in range(1, 30 * steps // 3 + 1):
        epoch, step = divmod(3 * n - 1, steps)
        history = with_point(history, fractional_epoch(epoch + 1, step + 1, steps), 1.0 / n, 30)
        assert len(history) <= HISTORY_POINTS
    xs = [x for x, _ in history]
    assert xs == sorted(set(xs)) and xs[0] == pytest.approx(0.003) and xs[-1] == 30.0
    per_tenth = [sum(1 for x in xs if 3 * k < x <= 3 * (k + 1)) for k in range(10)]
    assert min(per_tenth) >= 35 and max(per_tenth) <= 45, per_tenth
    assert len(history) >= 380


def test_the_newest_point_is_always_the_latest_report():
    history = with_point([], 0.1, 2.0, 10)
    history = with_point(history, 0.12, 1.9, 10)
    assert history == [[0.1, 2.0], [0.12, 1.9]]
    history = with_point(history, 0.13, 1.8, 10)  # 0.12 was closer to 0.1 than 10 / 399: replaced
    assert history == [[0.1, 2.0], [0.13, 1.8]]


def test_a_resumed_attempt_replaces_the_points_it_redoes():
    history = [[0.5, 2.0], [1.0, 1.5], [1.5, 1.2], [2.0, 1.0], [2.5, 0.9]]
    # The new attempt resumes after epoch 2's checkpoint: its first report is early in epoch 3...
    assert with_point(history, 2.1, 0.95, 4, limit=100) == [[0.5, 2.0], [1.0, 1.5], [1.5, 1.2], [2.0, 1.0],
                                                           [2.1, 0.95]]
    # ... or it resumes from an earlier checkpoint and goes back further.
    assert with_point(history, 1.2, 1.3, 4, limit=100) == [[0.5, 2.0], [1.0, 1.5], [1.2, 1.3]]


def test_a_non_finite_loss_adds_no_point():
    history = [[0.5, 2.0]]
    assert with_point(history, 0.6, math.nan, 4) == history
    assert with_point(history, 0.6, math.inf, 4) == history


@pytest.mark.parametrize("stored, read", [
    (None, []), ("x", []), ({"a": 1}, []),
    ([[0.5, 1.0], "x", [1], [1, 2, 3], [None, 1], [True, 1.0], [1.0, 0.5]], [[0.5, 1.0], [1.0, 0.5]]),
    ([[1.0, 1.0], [0.5, 2.0], [1.0, 0.9], [2.0, 0.5]], [[1.0, 1.0], [2.0, 0.5]]),  # out of order: skipped
    ([(1, 2)], [[1.0, 2.0]]),
])
def test_a_stored_history_is_read_defensively(stored, read):
    assert history_points(stored) == read
    view = progress_view({"epoch": 1, "history": stored}, 8, None)
    assert view.history == [tuple(p) for p in read]


def test_the_view_reads_nan_and_infinity_as_malformed():
    view = progress_view({"history": [[0.5, float("nan")], [float("inf"), 1.0], [1.0, 0.25]]}, 8, None)
    assert view.history == [(1.0, 0.25)]


# --- the writer on a real database ---------------------------------------------------------------
@pytest.fixture
def task_id(sessions) -> str:
    with session_scope(sessions) as s:
        task = Task(model_id=create_model(s, "m").id, spec={"classes": ["cat"]})
        s.add(task)
        s.flush()
        return task.id


@pytest.fixture
def unthrottled(monkeypatch):
    """Every report reaches the row (the writer's once-a-second limit is not what is tested)."""
    monkeypatch.setattr(progress_module, "REPORT_EVERY_S", 0.0)


def report(epoch: int, step: int, loss: float, epochs: int = 2, steps: int = 4) -> Progress:
    return Progress(epoch=epoch, epochs=epochs, step=step, steps=steps, loss=loss, lr=0.01, images_per_s=10.0)


def stored(sessions, task_id: str) -> dict:
    with sessions() as s:
        return s.get(Task, task_id).progress


def test_the_writer_keeps_the_history_on_the_row(sessions, task_id, unthrottled):
    write = ProgressWriter(sessions, task_id)
    for epoch in (1, 2):
        for step in range(1, 5):
            write(report(epoch, step, 1.0 / (4 * epoch + step) + 1e-7))
    progress = stored(sessions, task_id)
    assert progress["history"] == [[0.25, 0.2], [0.5, 0.16667], [0.75, 0.14286], [1.0, 0.125], [1.25, 0.11111],
                                   [1.5, 0.1], [1.75, 0.09091], [2.0, 0.08333]]
    assert (progress["epoch"], progress["step"], progress["loss"]) == (2, 4, 0.08333)
    assert progress_view(progress, 8, None).history[-1] == (2.0, 0.08333)


def test_the_writer_throttles_the_history_with_the_report(sessions, task_id):
    write = ProgressWriter(sessions, task_id)
    write(report(1, 1, 0.5))
    write(report(1, 2, 0.4))  # within REPORT_EVERY_S of the first: not written at all
    write(report(2, 4, 0.3))  # the run's last step: always written
    assert stored(sessions, task_id)["history"] == [[0.25, 0.5], [2.0, 0.3]]


def test_a_resumed_attempt_continues_the_earlier_attempts_curve(sessions, task_id, unthrottled):
    """Another worker's writer (a redelivery) starts from the row: the first attempt's points up to
    the resumed epoch stay, the ones it re-does are replaced."""
    first = ProgressWriter(sessions, task_id)
    for epoch, step in ((1, 2), (1, 4), (2, 2), (2, 3)):  # killed during epoch 2: its checkpoint is epoch 1's
        first(report(epoch, step, 1.0 / (4 * epoch + step), epochs=3))
    second = ProgressWriter(sessions, task_id)
    second(report(2, 1, 0.5, epochs=3))
    progress = stored(sessions, task_id)
    assert [x for x, _ in progress["history"]] == [0.5, 1.0, 1.25]
    assert progress["history"][-1] == [1.25, 0.5] and progress["resumed_from_epoch"] == 1
    second(report(3, 4, 0.05, epochs=3))
    assert [x for x, _ in stored(sessions, task_id)["history"]] == [0.5, 1.0, 1.25, 3.0]
