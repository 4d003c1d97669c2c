"""The model registry on a real database (both flavours): recording versions with their metrics,
forgetting, the promotion policy, aliases, promotion and rollback, classes and their colours.

Versions are inserted through ``record_version`` as the worker does; the checkpoint key is a
placeholder because nothing here loads a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import SemanticClass, Task
from services.db.session import make_engine, make_session_factory, session_scope
from services.registry.aliases import LATEST, PRODUCTION, get_alias, promote
from services.registry.classes import class_colour, colour_hex, list_classes
from services.registry.errors import InvalidVersionRecord, VersionNotFound
from services.registry.policy import Candidate, PromotionPolicy, decide
from services.registry.report import describe_version
from services.registry.versions import (
    get_version,
    lineage,
    list_versions,
    next_version_number,
    record_version,
    resolve_version,
)

NAMES = {0: "background", 1: "cat", 2: "dog", 3: "bird", 4: "fish"}
TASK_CLASSES = {"t1": [1, 2], "t2": [3], "t3": [4]}


# --- helpers shared with tests/api/test_models.py ----------------------------------------------
def score(iou: float, total: int = 1_000_000) -> tuple[float, int, int, int]:
    """(IoU, tp, fp, fn) with tp / (tp + fp + fn) equal to the returned IoU."""
    tp = round(iou * total)
    fp = (total - tp) // 2
    return tp / total, tp, fp, total - tp - fp


def seed_tasks(session: Session) -> None:
    """Three tasks and the classes they introduced (background belongs to no task)."""
    for task_id in TASK_CLASSES:
        session.add(Task(id=task_id, spec={"classes": [NAMES[c] for c in TASK_CLASSES[task_id]]}))
    session.flush()
    session.add(SemanticClass(id=0, name="background", task_id=None))
    for task_id, classes in TASK_CLASSES.items():
        session.add_all(SemanticClass(id=c, name=NAMES[c], task_id=task_id) for c in classes)
    session.flush()


def record(session: Session, settings, task_id: str, parent: int | None, ious: Mapping[int, float | None], **kw):
    """Record a version of the classes in ``ious`` (old = the parent's classes)."""
    old = sorted(int(k) for k in get_version(session, parent).class_map) if parent else []
    metrics = {c: score(v) if v is not None else (None, 0, 0, 0) for c, v in ious.items()}
    return record_version(
        session, task=session.get(Task, task_id), parent_version=parent, architecture="lraspp_mobilenet_v3_large",
        method="ft" if parent is None else "ilt", hyperparameters={"lr": 0.01, "epochs": 2},
        class_map={str(c): NAMES[c] for c in ious}, checkpoint_key=f"checkpoints/test-{task_id}/model.pt",
        checkpoint_sha256="0" * 64, checkpoint_bytes=123, metrics=metrics,
        old_classes=old, new_classes=sorted(set(ious) - set(old)), settings=settings, **kw,
    )


V1 = {0: 0.90, 1: 0.70, 2: 0.60}
V2 = {0: 0.88, 1: 0.68, 2: 0.57, 3: 0.50}  # drops 2, 2, 3 points: within a 5-point limit
V3 = {0: 0.88, 1: 0.55, 2: 0.57, 3: 0.50, 4: 0.40}  # cat drops 13 points: held back


def seed_lineage(sessions: sessionmaker, settings) -> None:
    """v1 (base) -> v2 (adds bird, promoted) -> v3 (adds fish, forgets cat: a candidate)."""
    with session_scope(sessions) as s:
        seed_tasks(s)
        record(s, settings, "t1", None, V1)
        record(s, settings, "t2", 1, V2)
        record(s, settings, "t3", 2, V3)


@pytest.fixture
def sessions(prepared) -> Iterator[sessionmaker]:
    engine = make_engine(prepared)
    yield make_session_factory(engine)
    engine.dispose()


# --- recording -------------------------------------------------------------------------------
def test_recorded_versions_have_metrics_means_and_forgetting(sessions, prepared):
    seed_lineage(sessions, prepared)
    with sessions() as s:
        assert [v.version for v in list_versions(s)] == [1, 2, 3]
        v1, v2 = get_version(s, 1), get_version(s, 2)
        assert v1.parent_version is None and v1.miou_old is None
        assert v1.miou_new == pytest.approx((0.9 + 0.7 + 0.6) / 3)
        assert v2.parent_version == 1 and v2.num_classes == 4
        assert v2.class_map == {"0": "background", "1": "cat", "2": "dog", "3": "bird"}
        assert v2.miou_old == pytest.approx((0.88 + 0.68 + 0.57) / 3)
        assert v2.miou_new == pytest.approx(0.50)
        assert v2.miou_all == pytest.approx((0.88 + 0.68 + 0.57 + 0.5) / 4)
        forgetting = {m.class_index: m.forgetting for m in v2.metrics}
        assert forgetting[0] == pytest.approx(0.02) and forgetting[2] == pytest.approx(0.03)
        assert forgetting[3] is None  # new class: nothing to forget
        assert s.get(Task, "t2").model_version == 2
        assert [v.version for v in lineage(s, 3)] == [1, 2, 3]
        assert next_version_number(s) == 4


def test_forgetting_against_the_best_earlier_version(sessions, prepared):
    with session_scope(sessions) as s:
        seed_tasks(s)
        record(s, prepared, "t1", None, {0: 0.9, 1: 0.7, 2: 0.6})
        record(s, prepared, "t2", 1, {0: 0.9, 1: 0.8, 2: 0.5, 3: 0.5})  # cat improves, dog drops
        record(s, prepared, "t3", 2, {0: 0.9, 1: 0.75, 2: 0.55, 3: 0.45, 4: 0.3})
    with sessions() as s:
        report = describe_version(s, prepared, 3)
    by_name = {c.name: c for c in report.classes}
    assert by_name["cat"].forgetting == pytest.approx(0.05)  # vs parent (0.8)
    assert by_name["cat"].forgetting_best == pytest.approx(0.05)  # best earlier is v2's 0.8
    assert by_name["dog"].forgetting == pytest.approx(-0.05)  # improved over the parent
    assert by_name["dog"].forgetting_best == pytest.approx(0.05)  # ... but v1 had 0.6
    assert by_name["fish"].forgetting is None and by_name["fish"].forgetting_best is None
    assert [c.role for c in report.classes] == ["old", "old", "old", "old", "new"]
    assert report.lineage == [1, 2, 3]


def test_a_class_without_validation_data_is_stored_without_a_score(sessions, prepared):
    with session_scope(sessions) as s:
        seed_tasks(s)
        row, _ = record(s, prepared, "t1", None, {0: 0.9, 1: 0.7, 2: None})
        assert {m.class_index: m.iou for m in row.metrics}[2] is None
        assert row.miou_all == pytest.approx(0.8)  # the unscored class is in no mean


@pytest.mark.parametrize("change, message", [
    (dict(class_map={"0": "background", "1": "kitten"}), "classes table calls it 'cat'"),
    (dict(class_map={"0": "background", "9": "whale"}), "class 9"),
    (dict(metrics={0: score(0.9), 1: (0.5, 1, 1, 1)}), "does not match"),
    (dict(metrics={0: score(0.9), 1: score(1.5)}), "class 1"),
    (dict(metrics={0: score(0.9), 7: score(0.5)}), "[7]"),
    (dict(metrics={0: score(0.9), 1: (0.5, -1, 0, 0)}), "non-negative"),
    (dict(new_classes=[1]), "split the class map"),
])
def test_inconsistent_records_are_refused_with_the_reason(sessions, prepared, change, message):
    with sessions() as s:
        seed_tasks(s)
        args = dict(task=s.get(Task, "t1"), parent_version=None, architecture="a", method="ft", hyperparameters={},
                    class_map={"0": "background", "1": "cat"}, checkpoint_key="k", checkpoint_sha256="0" * 64,
                    checkpoint_bytes=1, metrics={0: score(0.9), 1: score(0.5)}, old_classes=[], new_classes=[0, 1],
                    settings=prepared)
        with pytest.raises(InvalidVersionRecord) as err:
            record_version(s, **{**args, **change})
        assert message in str(err.value)


def test_old_classes_must_be_the_parents(sessions, prepared):
    with session_scope(sessions) as s:
        seed_tasks(s)
        record(s, prepared, "t1", None, V1)
    with sessions() as s:
        with pytest.raises(InvalidVersionRecord, match=r"parent's classes \[0, 1, 2\]"):
            record_version(s, task=s.get(Task, "t2"), parent_version=1, architecture="a", method="ilt",
                           hyperparameters={}, class_map={str(c): NAMES[c] for c in V2}, checkpoint_key="k",
                           checkpoint_sha256="0" * 64, checkpoint_bytes=1,
                           metrics={c: score(v) for c, v in V2.items()}, old_classes=[0, 1], new_classes=[2, 3],
                           settings=prepared)


def test_an_unknown_parent_is_named(sessions, prepared):
    with sessions() as s:
        seed_tasks(s)
        with pytest.raises(VersionNotFound, match="model version 5 does not exist"):
            record_version(
                s, task=s.get(Task, "t2"), parent_version=5, architecture="a", method="ilt", hyperparameters={},
                class_map={"0": "background"}, checkpoint_key="k", checkpoint_sha256="0" * 64, checkpoint_bytes=1,
                metrics={}, old_classes=[], new_classes=[0], settings=prepared)


# --- policy and aliases --------------------------------------------------------------------------
def test_policy_promotes_within_the_limit_and_holds_beyond_it(sessions, prepared):
    with session_scope(sessions) as s:
        seed_tasks(s)
        _, d1 = record(s, prepared, "t1", None, V1)
        _, d2 = record(s, prepared, "t2", 1, V2)
        _, d3 = record(s, prepared, "t3", 2, V3)
    assert d1.promote and "no version is in production yet" in d1.reasons
    assert d2.promote and d2.old_miou_drop_points == pytest.approx(7 / 3)
    assert d3.promote is False
    assert d3.worst_old_class == 1 and d3.worst_old_class_drop_points == pytest.approx(13.0)
    assert "'cat' lost 13.00 IoU points" in d3.reasons[0] and "waits as a candidate" in d3.summary
    with sessions() as s:
        assert get_alias(s, PRODUCTION) == 2
        assert get_alias(s, LATEST) == 3


def test_every_failed_check_is_reported(sessions, prepared):
    # Every old class drops 4 points against a limit of 3: each class and the mean are reported.
    strict = prepared.model_copy(update={"promote_max_old_miou_drop": 3.0})
    with session_scope(sessions) as s:
        seed_tasks(s)
        record(s, strict, "t1", None, V1)
        _, d2 = record(s, strict, "t2", 1, {0: 0.86, 1: 0.66, 2: 0.56, 3: 0.5})
    assert not d2.promote
    assert any("old-class mIoU dropped 4.00 points" in r and "beyond" in r for r in d2.reasons)
    assert sum("lost" in r for r in d2.reasons) == 3


def test_policy_respects_auto_promote_off_and_a_moved_production(sessions, prepared):
    manual = prepared.model_copy(update={"auto_promote": False})
    with session_scope(sessions) as s:
        seed_tasks(s)
        _, d1 = record(s, manual, "t1", None, V1)
        assert not d1.promote and "STRATA_AUTO_PROMOTE" in d1.summary
        assert get_alias(s, PRODUCTION) is None
        promote(s, 1)
        record(s, prepared, "t2", 1, V2)  # auto: promoted
        promote(s, 1)  # a person rolls back while v3 trains from v2
        _, d3 = record(s, prepared, "t3", 2, {**V2, 4: 0.4})
    assert not d3.promote and "production is v1, not its parent v2" in d3.summary


def test_pure_decision_with_unmeasurable_forgetting():
    c = Candidate(version=2, parent=1, production=1, old_classes=[0, 1], ious={0: None, 1: None, 2: 0.5},
                  parent_ious={0: 0.9, 1: 0.8}, names=NAMES)
    d = decide(PromotionPolicy(auto_promote=True, max_old_drop_points=5.0), c)
    assert not d.promote and "cannot be measured" in d.summary
    exact = Candidate(version=2, parent=1, production=1, old_classes=[1], ious={1: 0.75, 2: 0.5},
                      parent_ious={1: 0.80}, names=NAMES)
    assert decide(PromotionPolicy(True, 5.0), exact).promote  # exactly at the limit passes


def test_promotion_and_rollback_move_production(sessions, prepared):
    seed_lineage(sessions, prepared)
    with session_scope(sessions) as s:
        assert promote(s, 3) == 2
    with session_scope(sessions) as s:
        assert resolve_version(s, "production").version == 3
        assert promote(s, 1) == 3  # rollback
    with sessions() as s:
        assert get_alias(s, PRODUCTION) == 1
        with pytest.raises(VersionNotFound, match="known versions: 1, 2, 3"):
            resolve_version(s, 9)
        with pytest.raises(VersionNotFound, match="model version 9 does not exist"):
            promote(s, 9)
        with pytest.raises(VersionNotFound, match="'staging' is neither"):
            resolve_version(s, "staging")


def test_shown_decision_is_the_one_taken_when_the_version_was_recorded(sessions, prepared):
    seed_lineage(sessions, prepared)
    lenient = prepared.model_copy(update={"promote_max_old_miou_drop": 20.0})
    with sessions() as s:
        assert not describe_version(s, prepared, 3).promotion.promote
        # A later change of settings does not rewrite history: v3 was held back under 5 points.
        assert not describe_version(s, lenient, 3).promotion.promote
    with session_scope(sessions) as s:
        get_version(s, 3).promotion = None  # a version recorded before decisions were stored
    with sessions() as s:
        assert describe_version(s, lenient, 3).promotion.promote  # recomputed, with today's settings
        assert describe_version(s, prepared, "latest").version.version == 3
        assert describe_version(s, prepared, 2).aliases == ["production"]


# --- classes ---------------------------------------------------------------------------------------
def test_classes_are_listed_with_their_task(sessions):
    with session_scope(sessions) as s:
        seed_tasks(s)
    with sessions() as s:
        rows = [(c.id, c.name, c.task_id) for c in list_classes(s)]
    assert rows == [(0, "background", None), (1, "cat", "t1"), (2, "dog", "t1"), (3, "bird", "t2"), (4, "fish", "t3")]


def test_palette_is_fixed_distinct_and_background_black():
    colours = [class_colour(i) for i in range(255)]
    assert colours[0] == (0, 0, 0) and colours[1] == (128, 0, 0) and colours[15] == (192, 128, 128)
    assert len(set(colours)) == 255
    assert colour_hex(2) == "#008000"
    with pytest.raises(ValueError, match="255"):
        class_colour(255)
