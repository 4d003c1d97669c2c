"""Predictor: masks of global class indices at each input's size, from the evaluation's
preprocessing and forward (aspect ratio kept, logits upsampled to the input), and checkpoints
loaded only with the registry's sha256, each model's versions cached apart."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from services.data.transforms import eval_preprocess
from services.evaluation.predict import predict_logits
from services.inference.errors import ModelLoadError
from services.inference.predictor import Predictor, VersionSpec
from services.learning.checkpoint import save_model, sha256_file
from services.learning.classmap import channels_of
from services.learning.zoo import build_model
from services.storage import FilesystemStore
from services.storage.cache import checkpoint_path
from tests.services.inference.helpers import ARCH, constant_model, random_image

# Global indices are not the channels: channel 0 -> 0, 1 -> 2, 2 -> 5.
CLASS_MAP = {0: "background", 2: "dog", 5: "fish"}


def spec(version: int = 1, sha256: str = "0" * 64, image_size: int = 32, class_map=CLASS_MAP,
         model_id: int = 1) -> VersionSpec:
    return VersionSpec(model_id=model_id, model_name=f"model-{model_id}", version=version, architecture=ARCH,
                       class_map=dict(class_map), image_size=image_size,
                       checkpoint_key=object_key(model_id, version), checkpoint_sha256=sha256)


def object_key(model_id: int, version: int) -> str:
    return f"models/{model_id}/checkpoints/{version}/model.pt"


@pytest.fixture
def store(tmp_path) -> FilesystemStore:
    s = FilesystemStore(tmp_path / "objects")
    s.ensure_ready()
    return s


def upload(store, tmp_path, model, class_map=CLASS_MAP, version: int = 1, model_id: int = 1) -> str:
    """save_model + put_file as the worker does; returns the sha256."""
    local = tmp_path / f"upload-{model_id}-{version}.pt"
    names = {ch: class_map[idx] for ch, idx in enumerate(channels_of(class_map))}
    digest = save_model(local, model, names)
    store.put_file(object_key(model_id, version), local)
    return digest


@pytest.mark.parametrize("winner, expected_index", [(0, 0), (1, 2), (2, 5)])
def test_masks_hold_global_indices_at_each_inputs_size(winner, expected_index):
    predictor = Predictor(spec(), constant_model(3, winner))
    images = [random_image(20, 10, seed=1), random_image(33, 47, seed=2), random_image(32, 32, seed=3)]
    masks = predictor.predict_batch(images)
    assert [m.shape for m in masks] == [(10, 20), (47, 33), (32, 32)]
    for mask in masks:
        assert mask.dtype == np.uint8
        assert np.all(mask == expected_index)


def test_prediction_is_the_evaluations_forward_at_the_inputs_resolution():
    """Same preprocessing and forward as evaluation (shorter side at image_size, aspect kept); the
    logits are upsampled to the input's resolution and the argmax taken there, then mapped."""
    torch.manual_seed(0)
    model = build_model(ARCH, 3).eval()
    predictor = Predictor(spec(image_size=48), model)
    image = random_image(96, 72, seed=4)
    x = eval_preprocess(image, 48)
    assert x.shape == (3, 48, 64)  # not squashed to 48 x 48
    with torch.no_grad():
        (logits,) = predict_logits(model, x.unsqueeze(0), [(72, 96)])  # [3, 72, 96]
    expected = np.array(channels_of(CLASS_MAP), dtype=np.uint8)[logits.argmax(0).numpy()]
    mask = predictor.predict_batch([image])[0]
    assert mask.shape == (72, 96)
    assert np.array_equal(mask, expected)
    assert set(np.unique(mask)) <= {0, 2, 5}


class _Out(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor


class BrightIsClass1(nn.Module):
    """Channel 1 where the (normalised) red value is positive, channel 0 elsewhere: it segments
    what the image shows, so a squashed or shifted prediction would show in the mask."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> _Out:
        bright = x[:, :1]
        return _Out(torch.cat([-bright, bright], 1), x)


@pytest.mark.parametrize("width, height", [(240, 60), (60, 240), (150, 113)])
def test_non_square_inputs_are_answered_at_their_resolution_without_squashing(width, height):
    """A thin bright stripe (4 px) in a non-square image comes back where it is, about as wide."""
    predictor = Predictor(spec(image_size=32, class_map={0: "background", 7: "stripe"}), BrightIsClass1())
    pixels = np.zeros((height, width, 3), np.uint8)
    x0 = width // 2
    pixels[:, x0 : x0 + 4] = 255
    mask = predictor.predict_batch([Image.fromarray(pixels)])[0]
    assert mask.shape == (height, width)
    stripe = np.flatnonzero((mask == 7).mean(0) > 0.9)  # columns predicted stripe from top to bottom
    assert stripe.size >= 2 and abs(stripe.min() - x0) <= 2 and abs(stripe.max() - (x0 + 3)) <= 2
    assert np.all(mask[:, : x0 - 4] == 0) and np.all(mask[:, x0 + 8 :] == 0)


def test_a_batch_answers_like_single_images():
    torch.manual_seed(1)
    predictor = Predictor(spec(), build_model(ARCH, 3))
    # Mixed sizes: 40x30 and 80x60 preprocess to the same 43x32 but answer at their own sizes.
    images = [random_image(40, 30, seed=s) for s in range(3)] + [random_image(80, 60, seed=3),
                                                                  random_image(30, 50, seed=4),
                                                                  random_image(40, 30, seed=5)]
    batched = predictor.predict_batch(images)
    assert [m.shape for m in batched] == [(30, 40)] * 3 + [(60, 80), (50, 30), (30, 40)]
    for image, mask in zip(images, batched):
        assert np.array_equal(predictor.predict_batch([image])[0], mask)
    assert predictor.predict_batch([]) == []


def test_warm_up_runs_at_the_versions_size():
    predictor = Predictor(spec(image_size=40), constant_model(3, 1))
    predictor.warm_up(batch_size=2)
    assert np.all(predictor.predict_batch([random_image(50, 40)])[0] == 2)


def test_load_downloads_checks_and_reuses_the_cached_checkpoint(store, tmp_path):
    digest = upload(store, tmp_path, constant_model(3, 2))
    cache = tmp_path / "cache"
    predictor = Predictor.load(spec(sha256=digest), store, cache, device="cpu")
    path = checkpoint_path(cache, 1, 1)
    assert path == cache / "checkpoints" / "1" / "1" / "model.pt" and sha256_file(path) == digest
    assert np.all(predictor.predict_batch([random_image(8, 8)])[0] == 5)
    assert predictor.device.type == "cpu" and predictor.amp_dtype is None
    # The cached file matches: no download needed any more.
    store.delete(object_key(1, 1))
    assert Predictor.load(spec(sha256=digest), store, cache, device="cpu").version == 1


def test_the_same_version_number_of_two_models_is_cached_apart(store, tmp_path):
    """Version 1 of model 1 and version 1 of model 2 are different files: neither is taken for the other."""
    first = upload(store, tmp_path, constant_model(3, 1), model_id=1)
    second_map = {0: "background", 3: "dog", 4: "fish"}  # same names, other indices
    second = upload(store, tmp_path, constant_model(3, 2), class_map=second_map, model_id=2)
    cache = tmp_path / "cache"
    a = Predictor.load(spec(sha256=first, model_id=1), store, cache, device="cpu")
    b = Predictor.load(spec(sha256=second, class_map=second_map, model_id=2), store, cache, device="cpu")
    assert checkpoint_path(cache, 1, 1) != checkpoint_path(cache, 2, 1)
    assert sha256_file(checkpoint_path(cache, 1, 1)) == first and sha256_file(checkpoint_path(cache, 2, 1)) == second
    assert np.all(a.predict_batch([random_image(8, 8)])[0] == 2)
    assert np.all(b.predict_batch([random_image(8, 8)])[0] == 4)
    assert (a.spec.key, b.spec.key) == ((1, 1), (2, 1))


def test_a_corrupt_cached_file_is_downloaded_again(store, tmp_path):
    digest = upload(store, tmp_path, constant_model(3, 1))
    cache = tmp_path / "cache"
    path = checkpoint_path(cache, 1, 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the checkpoint")
    Predictor.load(spec(sha256=digest), store, cache, device="cpu")
    assert sha256_file(path) == digest


def test_a_checkpoint_whose_sha256_differs_from_the_registry_is_refused(store, tmp_path):
    upload(store, tmp_path, constant_model(3, 1))
    with pytest.raises(ModelLoadError, match=r"model version 1 cannot be loaded: .*sha256"):
        Predictor.load(spec(sha256="ab" * 32), store, tmp_path / "cache", device="cpu")
    assert not checkpoint_path(tmp_path / "cache", 1, 1).exists()


def test_a_tampered_cached_file_never_reaches_the_model(store, tmp_path, monkeypatch):
    """Even when the download step is bypassed, load_model checks the sha256 itself."""
    digest = upload(store, tmp_path, constant_model(3, 1))
    other = upload(store, tmp_path, constant_model(3, 2), version=2)
    cache = tmp_path / "cache"
    path = checkpoint_path(cache, 1, 1)
    store.download(object_key(1, 2), path)  # the wrong model in version 1's place
    monkeypatch.setattr("services.inference.predictor.fetch", lambda *a, **k: path)
    with pytest.raises(ModelLoadError, match=f"has sha256 {other}, expected {digest}"):
        Predictor.load(spec(sha256=digest), store, cache, device="cpu")


def test_a_checkpoint_that_is_not_the_registrys_model_is_refused(store, tmp_path):
    digest = upload(store, tmp_path, constant_model(3, 1), class_map={0: "background", 2: "cat", 5: "fish"})
    with pytest.raises(ModelLoadError, match="channels name"):
        Predictor.load(spec(sha256=digest), store, tmp_path / "cache", device="cpu")
    with pytest.raises(ModelLoadError, match="4 classes"):
        Predictor(spec(class_map={0: "background", 1: "a", 2: "b", 3: "c"}), constant_model(3, 0))


def test_a_missing_checkpoint_names_the_version(store, tmp_path):
    with pytest.raises(ModelLoadError, match="model version 1 cannot be loaded"):
        Predictor.load(spec(), store, tmp_path / "cache", device="cpu")


def test_spec_needs_an_image_size():
    from services.db.models import ModelVersion

    row = ModelVersion(model_id=7, version=3, architecture=ARCH, class_map={"0": "background", "4": "x"}, hyperparameters={},
                       checkpoint_key="k", checkpoint_sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="model version 3 has no image_size"):
        VersionSpec.from_row(row, "roads")
    row.hyperparameters = {"image_size": 48}  # the shorter side
    assert VersionSpec.from_row(row, "roads").image_size == 48
    row.hyperparameters = {"image_size": [24, 40]}  # an old row's (height, width): its shorter side
    s = VersionSpec.from_row(row, "roads")
    assert s.image_size == 24 and s.class_map == {0: "background", 4: "x"}
    assert (s.model_id, s.model_name, s.key) == (7, "roads", (7, 3))
    row.hyperparameters = {"image_size": 0}
    with pytest.raises(ModelLoadError, match="invalid image_size 0"):
        VersionSpec.from_row(row, "roads")
    row.hyperparameters = {"image_size": [24, 0]}
    with pytest.raises(ModelLoadError, match=r"invalid image_size \[24, 0\]"):
        VersionSpec.from_row(row, "roads")
