"""Validation gaps of issue 11, item 8: names that do not show what they hold (bidirectional
overrides, zero-width characters) in class names, key names and model descriptions; duplicate JSON
keys in a task's spec (json.loads keeps the last); first-task-only settings on a later task. Each
is a 422 naming the field, the name and the character, and leaves nothing behind."""

from __future__ import annotations

import pytest

from tests.api.test_tasks import MODEL, bearer, create_model, dataset, leftovers, post_task

NOTHING = {"tasks": 0, "dataset_items": 0, "classes": 0, "objects": 0, "messages": 0}
# Every character the issue names, and one of each other category that a name may not hold.
HIDDEN = {
    "\u202a": "LEFT-TO-RIGHT EMBEDDING", "\u202b": "RIGHT-TO-LEFT EMBEDDING", "\u202c": "POP DIRECTIONAL FORMATTING",
    "\u202d": "LEFT-TO-RIGHT OVERRIDE", "\u202e": "RIGHT-TO-LEFT OVERRIDE", "\u2066": "LEFT-TO-RIGHT ISOLATE",
    "\u2067": "RIGHT-TO-LEFT ISOLATE", "\u2068": "FIRST STRONG ISOLATE", "\u2069": "POP DIRECTIONAL ISOLATE",
    "\u200e": "LEFT-TO-RIGHT MARK", "\u200f": "RIGHT-TO-LEFT MARK", "\u061c": "ARABIC LETTER MARK",
    "\u200b": "ZERO WIDTH SPACE", "\u200c": "ZERO WIDTH NON-JOINER", "\u200d": "ZERO WIDTH JOINER",
    "\u2060": "WORD JOINER", "\ufeff": "ZERO WIDTH NO-BREAK SPACE", "\u00ad": "SOFT HYPHEN",
    "\ue000": "", "\u2028": "LINE SEPARATOR", "\u2029": "PARAGRAPH SEPARATOR", "\x00": "", "\x85": "",
}


def code_point(char: str) -> str:
    return f"U+{ord(char):04X}" + (f" ({HIDDEN[char]})" if HIDDEN[char] else "")


@pytest.fixture
def admin(client, prepared):
    headers = bearer(prepared, "admin")
    create_model(client, headers)
    return headers


@pytest.mark.parametrize("char", HIDDEN)
def test_a_class_name_that_hides_a_character_is_422_naming_it(client, prepared, admin, char):
    r = post_task(client, admin, {"classes": ["car", f"bi{char}ke"]}, dataset(2, 2))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"invalid spec: classes.1: class name {f'bi{char}ke'!r} contains {code_point(char)}")
    assert leftovers(prepared) == NOTHING


def test_also_labelled_names_are_checked_the_same_way(client, prepared, admin):
    r = post_task(client, admin, {"classes": ["car"], "also_labelled": ["\u2067person"]}, dataset(2, 2))
    assert r.status_code == 422
    assert r.json()["detail"].startswith("invalid spec: also_labelled.0: class name '\\u2067person' contains U+2067")


def test_visible_non_ascii_class_names_are_kept(client, prepared, admin):
    """Letters of any script, accents and spaces show as themselves: they stay allowed."""
    r = post_task(client, admin, {"classes": ["vélo électrique", "歩行者"]}, dataset(2, 2))
    assert r.status_code == 202, r.text
    assert r.json()["classes"] == {"vélo électrique": 1, "歩行者": 2}


@pytest.mark.parametrize("spec, where", [
    ('{"classes": ["car"], "classes": ["bike"]}', "key 'classes'"),
    ('{"classes": ["car"], "epochs": 2, "epochs": 3}', "key 'epochs'"),
    ('{"classes": ["car"], "hyperparameters": {"lr": 0.1, "lr": 0.01}}', "hyperparameters: key 'lr'"),
    ('{"classes": ["car"], "mask_format": "palette", "palette": {"car": [1, 2, 3], "car": [4, 5, 6]}}',
     "palette: key 'car'"),
])
def test_a_key_given_twice_in_the_spec_is_422_naming_it(client, prepared, admin, spec, where):
    r = post_task(client, admin, spec, dataset(2, 1))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"invalid spec: {where} is given more than once (each key of a JSON object may appear once)"
    assert leftovers(prepared) == NOTHING


@pytest.mark.parametrize("hyperparameters, fields", [
    ({"backbone_weights": "/weights/resnet50.pth"}, "hyperparameters.backbone_weights"),
    ({"pretrained_backbone": True}, "hyperparameters.pretrained_backbone"),
    ({"pretrained_backbone": True, "backbone_weights": "/w.pth"},
     "hyperparameters.pretrained_backbone, hyperparameters.backbone_weights"),
])
def test_backbone_settings_on_a_later_task_are_422_naming_the_field(client, prepared, admin, hyperparameters, fields):
    """Only the first task builds the network; a later one (here: queued behind the first) inherits it."""
    assert post_task(client, admin, {"classes": ["car"], "hyperparameters": hyperparameters},
                     dataset(2, 1)).status_code == 202
    before = leftovers(prepared)
    r = post_task(client, admin, {"classes": ["bike"], "hyperparameters": hyperparameters}, dataset(2, 1))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        f"invalid spec: {fields}: only a model's first task builds the network; model {MODEL!r} has one already "
        "(or a queued task builds it) and later tasks inherit it (leave it out)")
    assert leftovers(prepared) == before
    assert post_task(client, admin, {"classes": ["bike"]}, dataset(2, 1)).status_code == 202
    # "load no pretrained weights" is what every later step does: said again, it is accepted
    later = {"classes": ["bus"], "hyperparameters": {"pretrained_backbone": False}}
    assert post_task(client, admin, later, dataset(2, 1)).status_code == 202


@pytest.mark.parametrize("hyperparameters, message", [
    ({"pretrained_backbone": False, "backbone_weights": "/w.pth"},
     "invalid spec: hyperparameters: backbone_weights loads a weights file, pretrained_backbone false asks for "
     "random initialisation: give one of them"),
    ({"backbone_weights": "weights/w.pth"},
     "invalid spec: hyperparameters.backbone_weights: 'weights/w.pth' must be an absolute path on the worker's disk"),
])
def test_backbone_settings_that_cannot_mean_anything_are_422_at_submission(client, prepared, admin, hyperparameters,
                                                                           message):
    r = post_task(client, admin, {"classes": ["car"], "hyperparameters": hyperparameters}, dataset(2, 1))
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == message
    assert leftovers(prepared) == NOTHING


def test_a_backbone_weights_path_with_a_control_character_is_422(client, prepared, admin):
    r = post_task(client, admin, {"classes": ["car"], "hyperparameters": {"backbone_weights": "/w\x00.pth"}},
                  dataset(2, 1))
    assert r.status_code == 422
    assert r.json()["detail"] == "invalid spec: hyperparameters.backbone_weights: a file path cannot hold U+0000"


@pytest.mark.parametrize("char", [c for c in HIDDEN if c != "\x00"])
def test_a_key_name_that_hides_a_character_is_422_naming_it(client, admin, char):
    r = client.post("/keys", json={"name": f"labelling{char}tool", "scopes": ["read"]}, headers=admin)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"name: a key's name cannot hold {code_point(char)}")


@pytest.mark.parametrize("char", ["\u202a", "\u202e", "\u2066", "\u2069"])
def test_a_description_with_a_reordering_character_is_422(client, admin, char):
    for method, url, body in (("POST", "/models", {"name": "n", "description": f"gate {char}2 north"}),
                              ("PATCH", f"/models/{MODEL}", {"description": f"gate {char}2 north"})):
        r = client.request(method, url, json=body, headers=admin)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith(f"body.description: {code_point(char)} is not allowed")


def test_a_description_may_hold_joiners_marks_and_line_breaks(client, admin):
    """Free text needs some format characters: ZWJ in emoji, ZWNJ in Persian, marks in mixed scripts."""
    text = "north gate \U0001f468\u200d\U0001f469 \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \u200fok\nsecond line"
    r = client.patch(f"/models/{MODEL}", json={"description": text}, headers=admin)
    assert r.status_code == 200 and r.json()["description"] == text
