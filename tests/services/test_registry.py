"""The model registry on a real database (both flavours): models, recording versions with their
metrics, forgetting, the promotion policy (the service's and a model's own), aliases, promotion and
rollback, classes and their colours; every one of them per model.

Versions are inserted through ``record_version`` as the worker does; the checkpoint key is a
placeholder because nothing here loads a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import Model, SemanticClass, Task
from services.db.session import session_scope
from services.registry.aliases import (
    LATEST,
    PRODUCTION,
    AliasConflict,
    InvalidAlias,
    aliases_by_version,
    get_alias,
    move_alias,
    production_versions,
    promote,
    remove_alias,
)
from services.registry.classes import class_colour, colour_hex, list_classes
from services.registry.errors import InvalidVersionRecord, VersionNotFound
from services.registry.models import (
    InvalidModel,
    ModelChanges,
    ModelConflict,
    ModelNotFound,
    create_model,
    get_model,
    list_models,
    promotion_policy,
    update_model,
)
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


# --- helpers shared with tests/api/test_versions.py and others -----------------------------------
def score(iou: float, total: int = 1_000_000) -> tuple[float, int, int, int]:
    """(IoU, tp, fp, fn) with tp / (tp + fp + fn) equal to the returned IoU."""
    tp = round(iou * total)
    fp = (total - tp) // 2
    return tp / total, tp, fp, total - tp - fp


def seed_tasks(session: Session, model_name: str = "m", prefix: str = "") -> Model:
    """A model (created unless it exists), three of its tasks ``{prefix}t1`` .. ``{prefix}t3`` and
    the classes they introduced (background belongs to no task). Returns the model."""
    try:
        model = get_model(session, model_name)
    except ModelNotFound:
        model = create_model(session, model_name)
    for task_id in TASK_CLASSES:
        session.add(Task(id=prefix + task_id, model_id=model.id,
                         spec={"classes": [NAMES[c] for c in TASK_CLASSES[task_id]]}))
    session.flush()
    session.add(SemanticClass(model_id=model.id, id=0, name="background", task_id=None))
    for task_id, classes in TASK_CLASSES.items():
        session.add_all(SemanticClass(model_id=model.id, id=c, name=NAMES[c], task_id=prefix + task_id)
                        for c in classes)
    session.flush()
    return model


def record(session: Session, settings, task_id: str, parent: int | None, ious: Mapping[int, float | None], **kw):
    """Record a version of the task's model with the classes in ``ious`` (old = the parent's classes)."""
    task = session.get(Task, task_id)
    old = sorted(int(k) for k in get_version(session, task.model_id, parent).class_map) if parent else []
    metrics = {c: score(v) if v is not None else (None, 0, 0, 0) for c, v in ious.items()}
    return record_version(
        session, task=task, parent_version=parent, architecture="lraspp_mobilenet_v3_large",
        method="ft" if parent is None else "ilt", hyperparameters={"lr": 0.01, "epochs": 2},
        class_map={str(c): NAMES[c] for c in ious}, checkpoint_key=f"checkpoints/test-{task_id}/model.pt",
        checkpoint_sha256="0" * 64, checkpoint_bytes=123, metrics=metrics,
        old_classes=old, new_classes=sorted(set(ious) - set(old)), settings=settings, **kw,
    )


V1 = {0: 0.90, 1: 0.70, 2: 0.60}
V2 = {0: 0.88, 1: 0.68, 2: 0.57, 3: 0.50}  # drops 2, 2, 3 points: within a 5-point limit
V3 = {0: 0.88, 1: 0.55, 2: 0.57, 3: 0.50, 4: 0.40}  # cat drops 13 points: held back


def seed_lineage(sessions: sessionmaker, settings, model_name: str = "m", prefix: str = "") -> int:
    """In model ``model_name`` (created unless it exists): v1 (base, tasks ``{prefix}t1``) -> v2
    (adds bird, promoted) -> v3 (adds fish, forgets cat: a candidate). Returns the model's id."""
    with session_scope(sessions) as s:
        model = seed_tasks(s, model_name, prefix)
        record(s, settings, prefix + "t1", None, V1)
        record(s, settings, prefix + "t2", 1, V2)
        record(s, settings, prefix + "t3", 2, V3)
        return model.id


def model_row(sessions, name: str = "m") -> Model:
    with sessions() as s:
        return get_model(s, name)


# --- models ------------------------------------------------------------------------------------
def test_models_are_created_found_and_listed_by_name(sessions):
    with session_scope(sessions) as s:
        b = create_model(s, "b-cam.7", "  the back door  ")
        a = create_model(s, "a")
        assert (b.description, b.architecture, b.auto_promote, b.promote_max_old_miou_drop) == (
            "the back door", None, None, None)
    with sessions() as s:
        assert [m.name for m in list_models(s)] == ["a", "b-cam.7"]
        assert [m.name for m in list_models(s, ids=[b.id])] == ["b-cam.7"]
        assert get_model(s, "a").id == a.id and a.id != b.id
        with pytest.raises(ModelNotFound, match=r"no model named 'c' \(models: a, b-cam.7\)"):
            get_model(s, "c")


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a b", "é", "x" * 65, "a?b"])
def test_model_names_must_be_url_safe(sessions, name):
    with sessions() as s, pytest.raises(InvalidModel, match="model name .* is not valid"):
        create_model(s, name)


def test_model_names_are_unique(sessions):
    with session_scope(sessions) as s:
        create_model(s, "m")
    with sessions() as s, pytest.raises(ModelConflict, match="a model named 'm' already exists"):
        create_model(s, "m")


def test_a_models_policy_overrides_the_services_only_where_set(sessions, prepared):
    with session_scope(sessions) as s:
        row = create_model(s, "m")
        assert promotion_policy(prepared, row) == PromotionPolicy.from_settings(prepared)
        update_model(s, row, ModelChanges(given=frozenset({"auto_promote"}), auto_promote=False))
        policy = promotion_policy(prepared, row)
        assert (policy.auto_promote, policy.max_old_drop_points) == (False, prepared.promote_max_old_miou_drop)
        update_model(s, row, ModelChanges(given=frozenset({"promote_max_old_miou_drop", "auto_promote"}),
                                          promote_max_old_miou_drop=1.5))  # auto_promote given as None: reset
        policy = promotion_policy(prepared, row)
        assert (policy.auto_promote, policy.max_old_drop_points) == (prepared.auto_promote, 1.5)
        with pytest.raises(InvalidModel, match="between 0 and 100"):
            update_model(s, row, ModelChanges(given=frozenset({"promote_max_old_miou_drop"}),
                                              promote_max_old_miou_drop=101.0))


# --- recording -------------------------------------------------------------------------------
def test_recorded_versions_have_metrics_means_and_forgetting(sessions, prepared):
    mid = seed_lineage(sessions, prepared)
    with sessions() as s:
        assert [v.version for v in list_versions(s, mid)] == [1, 2, 3]
        v1, v2 = get_version(s, mid, 1), get_version(s, mid, 2)
        assert v1.parent_version is None and v1.miou_old is None
        assert v1.miou_new == pytest.approx((0.9 + 0.7 + 0.6) / 3)
        assert v2.parent_version == 1 and v2.num_classes == 4 and v2.model_id == mid
        assert v2.class_map == {"0": "background", "1": "cat", "2": "dog", "3": "bird"}
        assert v2.miou_old == pytest.approx((0.88 + 0.68 + 0.57) / 3)
        assert v2.miou_new == pytest.approx(0.50)
        assert v2.miou_all == pytest.approx((0.88 + 0.68 + 0.57 + 0.5) / 4)
        forgetting = {m.class_index: m.forgetting for m in v2.metrics}
        assert forgetting[0] == pytest.approx(0.02) and forgetting[2] == pytest.approx(0.03)
        assert forgetting[3] is None  # new class: nothing to forget
        assert s.get(Task, "t2").model_version == 2
        assert [v.version for v in lineage(s, mid, 3)] == [1, 2, 3]
        assert next_version_number(s, mid) == 4


def test_two_models_keep_their_own_versions_aliases_and_classes(sessions, prepared):
    """The same class names and the same lineage in two models: numbers, aliases and indices do not mix."""
    a = seed_lineage(sessions, prepared, "a", prefix="a-")
    with session_scope(sessions) as s:
        b = create_model(s, "b")
        s.add(Task(id="b-t1", model_id=b.id, spec={"classes": ["fish", "cat"]}))
        s.flush()
        s.add_all([SemanticClass(model_id=b.id, id=0, name="background"),
                   SemanticClass(model_id=b.id, id=1, name="fish", task_id="b-t1"),
                   SemanticClass(model_id=b.id, id=2, name="cat", task_id="b-t1")])
        s.flush()
        row, decision = record_version(
            s, task=s.get(Task, "b-t1"), parent_version=None, architecture="a", method="ft", hyperparameters={},
            class_map={0: "background", 1: "fish", 2: "cat"}, checkpoint_key="k", checkpoint_sha256="0" * 64,
            checkpoint_bytes=1, metrics={0: score(0.9)}, old_classes=[], new_classes=[0, 1, 2], settings=prepared)
        assert row.version == 1 and decision.promote  # b's first version, although a has three
        b = b.id
    with sessions() as s:
        assert [v.version for v in list_versions(s, a)] == [1, 2, 3]
        assert [v.version for v in list_versions(s, b)] == [1]
        assert next_version_number(s, a) == 4 and next_version_number(s, b) == 2
        assert production_versions(s) == {a: 2, b: 1}
        assert aliases_by_version(s, a) == {2: ["production"], 3: ["latest"]}
        assert aliases_by_version(s, b) == {1: ["latest", "production"]}
        assert resolve_version(s, b, "latest").task_id == "b-t1"
        assert resolve_version(s, a, "latest").task_id == "a-t3"
        with pytest.raises(VersionNotFound, match="known versions: 1; aliases: latest, production"):
            resolve_version(s, b, 3)  # a's version 3 is not b's
        assert {c.name: c.id for c in list_classes(s, a)} == {"background": 0, "cat": 1, "dog": 2, "bird": 3,
                                                              "fish": 4}
        assert {c.name: c.id for c in list_classes(s, b)} == {"background": 0, "fish": 1, "cat": 2}
        assert [c.version for c in lineage(s, b, 1)] == [1]


def test_a_version_cannot_use_another_models_classes_or_parent(sessions, prepared):
    seed_lineage(sessions, prepared, "a", prefix="a-")
    with session_scope(sessions) as s:
        b = create_model(s, "b")
        s.add(Task(id="b-t1", model_id=b.id, spec={"classes": ["x"]}))
        s.flush()
        s.add(SemanticClass(model_id=b.id, id=0, name="background"))
        s.flush()
    with sessions() as s:
        args = dict(task=s.get(Task, "b-t1"), parent_version=None, architecture="a", method="ft",
                    hyperparameters={}, class_map={"0": "background", "1": "cat"}, checkpoint_key="k",
                    checkpoint_sha256="0" * 64, checkpoint_bytes=1, metrics={}, old_classes=[],
                    new_classes=[0, 1], settings=prepared)
        with pytest.raises(InvalidVersionRecord, match="class 1 .*not in the classes table"):
            record_version(s, **args)  # a's cat is not b's
        with pytest.raises(VersionNotFound, match="model version 2 does not exist"):
            record_version(s, **{**args, "parent_version": 2, "class_map": {"0": "background"},
                                 "new_classes": [0]})


def test_forgetting_against_the_best_earlier_version(sessions, prepared):
    with session_scope(sessions) as s:
        seed_tasks(s)
        record(s, prepared, "t1", None, {0: 0.9, 1: 0.7, 2: 0.6})
        record(s, prepared, "t2", 1, {0: 0.9, 1: 0.8, 2: 0.5, 3: 0.5})  # cat improves, dog drops
        record(s, prepared, "t3", 2, {0: 0.9, 1: 0.75, 2: 0.55, 3: 0.45, 4: 0.3})
    with sessions() as s:
        report = describe_version(s, prepared, get_model(s, "m"), 3)
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
        mid = seed_tasks(s).id
        _, d1 = record(s, prepared, "t1", None, V1)
        _, d2 = record(s, prepared, "t2", 1, V2)
        _, d3 = record(s, prepared, "t3", 2, V3)
    assert d1.promote and "no version is in production yet" in d1.reasons
    assert d2.promote and d2.old_miou_drop_points == pytest.approx(7 / 3)
    assert d3.promote is False
    assert d3.worst_old_class == 1 and d3.worst_old_class_drop_points == pytest.approx(13.0)
    assert "'cat' lost 13.00 IoU points" in d3.reasons[0] and "waits as a candidate" in d3.summary
    assert "STRATA_PROMOTE_MAX_OLD_MIOU_DROP" in d3.reasons[0]
    with sessions() as s:
        assert get_alias(s, mid, PRODUCTION) == 2
        assert get_alias(s, mid, LATEST) == 3


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
        mid = seed_tasks(s).id
        _, d1 = record(s, manual, "t1", None, V1)
        assert not d1.promote and "STRATA_AUTO_PROMOTE" in d1.summary
        assert get_alias(s, mid, PRODUCTION) is None
        promote(s, mid, 1)
        record(s, prepared, "t2", 1, V2)  # auto: promoted
        promote(s, mid, 1)  # a person rolls back while v3 trains from v2
        _, d3 = record(s, prepared, "t3", 2, {**V2, 4: 0.4})
    assert not d3.promote and "production is v1, not its parent v2" in d3.summary


def test_a_models_own_policy_decides_its_versions(sessions, prepared):
    """auto_promote off on the model holds a version the service's settings would promote, and a
    model's own drop limit replaces the service's; the reasons name the model's setting."""
    assert prepared.auto_promote and prepared.promote_max_old_miou_drop == 5.0
    with session_scope(sessions) as s:
        held = seed_tasks(s, "held", prefix="h-")
        held.auto_promote = False
        lenient = seed_tasks(s, "lenient", prefix="l-")
        lenient.promote_max_old_miou_drop = 20.0
        strict = seed_tasks(s, "strict", prefix="s-")
        strict.promote_max_old_miou_drop = 1.0
        s.flush()
        _, h1 = record(s, prepared, "h-t1", None, V1)
        for p in ("l-", "s-"):
            record(s, prepared, p + "t1", None, V1)
        _, l2 = record(s, prepared, "l-t2", 1, V2)
        _, l3 = record(s, prepared, "l-t3", 2, V3)  # cat drops 13 points: within the model's 20
        _, s2 = record(s, prepared, "s-t2", 1, V2)  # drops of 2-3 points: beyond the model's 1
        ids = held.id, lenient.id, strict.id
    assert not h1.promote and "no version is in production yet" in h1.reasons
    assert "automatic promotion is off (the model's auto_promote: false)" in h1.summary
    assert not any("STRATA_AUTO_PROMOTE" in r for r in h1.reasons)
    assert l2.promote and l3.promote
    assert any("no old class lost more than 20 IoU points" in r for r in l3.reasons)
    assert not s2.promote and "the model's promote_max_old_miou_drop" in s2.reasons[0]
    assert "limit 1," in s2.reasons[0]
    with sessions() as s:
        assert [get_alias(s, mid, PRODUCTION) for mid in ids] == [None, 3, 1]
        assert [get_alias(s, mid, LATEST) for mid in ids] == [1, 3, 2]


def test_pure_decision_with_unmeasurable_forgetting():
    c = Candidate(version=2, parent=1, production=1, old_classes=[0, 1], ious={0: None, 1: None, 2: 0.5},
                  parent_ious={0: 0.9, 1: 0.8}, names=NAMES)
    d = decide(PromotionPolicy(auto_promote=True, max_old_drop_points=5.0), c)
    assert not d.promote and "cannot be measured" in d.summary
    exact = Candidate(version=2, parent=1, production=1, old_classes=[1], ious={1: 0.75, 2: 0.5},
                      parent_ious={1: 0.80}, names=NAMES)
    assert decide(PromotionPolicy(True, 5.0), exact).promote  # exactly at the limit passes


def test_promotion_and_rollback_move_production(sessions, prepared):
    mid = seed_lineage(sessions, prepared)
    with session_scope(sessions) as s:
        assert promote(s, mid, 3) == 2
    with session_scope(sessions) as s:
        assert resolve_version(s, mid, "production").version == 3
        assert promote(s, mid, 1) == 3  # rollback
    with sessions() as s:
        assert get_alias(s, mid, PRODUCTION) == 1
        with pytest.raises(VersionNotFound, match="known versions: 1, 2, 3"):
            resolve_version(s, mid, 9)
        with pytest.raises(VersionNotFound, match="model version 9 does not exist"):
            promote(s, mid, 9)
        with pytest.raises(VersionNotFound, match="'staging' is neither"):
            resolve_version(s, mid, "staging")


@pytest.mark.parametrize("ref", ["²", "٣", "99999999999999999999", "2147483648", "0", "-1", "1.0", " 1"])
def test_a_version_reference_that_is_no_version_is_not_found(sessions, prepared, ref):
    """Non-ASCII digits, numbers beyond the column and other near-numbers name no version (no crash)."""
    mid = seed_lineage(sessions, prepared)
    with sessions() as s, pytest.raises(VersionNotFound):
        resolve_version(s, mid, ref)


def test_user_aliases_move_and_go_and_the_services_stay(sessions, prepared):
    mid = seed_lineage(sessions, prepared)
    with session_scope(sessions) as s:
        assert move_alias(s, mid, "candidate", 3) is None
        assert move_alias(s, mid, "candidate", 1) == 3
        assert move_alias(s, mid, PRODUCTION, 3) == 2  # a person's promotion
        assert resolve_version(s, mid, "candidate").version == 1
        with pytest.raises(AliasConflict, match="'latest' always names the newest version"):
            move_alias(s, mid, LATEST, 1)
        for name in (PRODUCTION, LATEST):
            with pytest.raises(AliasConflict, match="cannot be removed"):
                remove_alias(s, mid, name)
        for bad in ("Candidate", "1st", "a" * 65, "x y"):
            with pytest.raises(InvalidAlias):
                move_alias(s, mid, bad, 1)
        with pytest.raises(VersionNotFound, match="model version 4 does not exist"):
            move_alias(s, mid, "candidate", 4)
    with session_scope(sessions) as s:
        assert remove_alias(s, mid, "candidate") == 1
        with pytest.raises(VersionNotFound, match="alias 'staging' is not set"):
            remove_alias(s, mid, "staging")
    with sessions() as s:
        assert aliases_by_version(s, mid) == {3: ["latest", "production"]}


def test_shown_decision_is_the_one_taken_when_the_version_was_recorded(sessions, prepared):
    mid = seed_lineage(sessions, prepared)
    lenient = prepared.model_copy(update={"promote_max_old_miou_drop": 20.0})
    m = model_row(sessions)
    with sessions() as s:
        assert not describe_version(s, prepared, m, 3).promotion.promote
        # A later change of settings does not rewrite history: v3 was held back under 5 points.
        assert not describe_version(s, lenient, m, 3).promotion.promote
    with session_scope(sessions) as s:
        get_version(s, mid, 3).promotion = None  # a version recorded before decisions were stored
    with sessions() as s:
        assert describe_version(s, lenient, m, 3).promotion.promote  # recomputed, with today's settings
        assert describe_version(s, prepared, m, "latest").version.version == 3
        assert describe_version(s, prepared, m, 2).aliases == ["production"]
    with session_scope(sessions) as s:
        get_model(s, "m").promote_max_old_miou_drop = 20.0  # the model's own setting, when recomputed
    with sessions() as s:
        decision = describe_version(s, prepared, get_model(s, "m"), 3).promotion
    assert decision.promote and any("within the limit of 20" in r for r in decision.reasons)


# --- classes ---------------------------------------------------------------------------------------
def test_classes_are_listed_with_their_task(sessions):
    with session_scope(sessions) as s:
        mid = seed_tasks(s).id
        other = seed_tasks(s, "other", prefix="o-").id
    with sessions() as s:
        rows = [(c.id, c.name, c.task_id) for c in list_classes(s, mid)]
        assert [(c.id, c.task_id) for c in list_classes(s, other)][1:] == [
            (1, "o-t1"), (2, "o-t1"), (3, "o-t2"), (4, "o-t3")]
    assert rows == [(0, "background", None), (1, "cat", "t1"), (2, "dog", "t1"), (3, "bird", "t2"), (4, "fish", "t3")]


def test_palette_is_fixed_distinct_and_background_black():
    colours = [class_colour(i) for i in range(255)]
    assert colours[0] == (0, 0, 0) and colours[1] == (128, 0, 0) and colours[15] == (192, 128, 128)
    assert len(set(colours)) == 255
    assert colour_hex(2) == "#008000"
    with pytest.raises(ValueError, match="255"):
        class_colour(255)
