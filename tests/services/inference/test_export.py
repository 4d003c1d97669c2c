"""Exported files (services/inference/export.py), without a database: the graph is serving's forward,
every architecture of the zoo exports to ONNX and TorchScript with free batch, height and width and
answers like PyTorch in ONNX Runtime and torch.jit, the contract round-trips through each file's
metadata, a file that answers otherwise is refused, and the Triton repository matches its model.

Networks are real, randomly initialised zoo models (``classifier biases zeroed so the argmax depends
on the image``); the ResNet ones take tens of seconds each and are marked slow.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import zipfile

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from services.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from services.db.models import ExportFormat
from services.evaluation.predict import predict_logits
from services.inference.export import (
    EXTRA_FILE,
    LOGITS_RTOL,
    METADATA_KEY,
    TRITON_MAX_BATCH_SIZE,
    ExportGraph,
    ExportMismatch,
    check_file,
    contract,
    disagreement,
    triton_config,
    write_file,
    write_onnx,
    write_triton,
)
from services.inference.predictor import VersionSpec
from services.learning.classmap import channels_of
from services.learning.names import ARCHITECTURES
from services.learning.zoo import build_model
from services.registry.classes import class_colour

CLASSES = {0: "background", 1: "cat", 2: 'dög "the good"', 7: "bird"}  # channel 3 is class 7
SLOW = {"deeplabv3_resnet101", "deeplabv3_resnet50", "fcn_resnet50"}
# Batches of one and three, at sizes the export was not traced at: multiples of the stride and not.
SHAPES = [(1, 3, 33, 47), (3, 3, 48, 32), (1, 3, 1, 5), (3, 3, 19, 70)]


def spec_for(arch: str, image_size: int = 40) -> VersionSpec:
    return VersionSpec(model_id=1, model_name="pets", version=3, architecture=arch, class_map=CLASSES,
                       image_size=image_size, checkpoint_key="models/1/checkpoints/3/model-0.pt",
                       checkpoint_sha256="ab" * 32)


def graph_for(arch: str, seed: int = 0) -> ExportGraph:
    torch.manual_seed(seed)
    model = build_model(arch, len(CLASSES))
    with torch.no_grad():  # an untrained network's biases alone would decide its argmax
        for conv in model.classifier.modules():
            if isinstance(conv, torch.nn.Conv2d) and conv.out_channels == len(CLASSES) and conv.bias is not None:
                conv.bias.zero_()
    return ExportGraph(model, channels_of(CLASSES))


def torch_answer(graph: ExportGraph, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        return tuple(t.numpy() for t in graph(image))


def run_onnx(path):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda image: session.run(["logits", "mask"], {"image": image.numpy()})


def run_torchscript(path):
    module = torch.jit.load(str(path))

    def run(image):
        with torch.no_grad():
            return [t.numpy() for t in module(image)]

    return run


RUNNERS = {ExportFormat.ONNX: run_onnx, ExportFormat.TORCHSCRIPT: run_torchscript}


def test_the_graph_answers_what_serving_answers():
    """Serving's forward (predict_logits at the input's size, argmax, channel -> index) to the bit."""
    graph = graph_for("lraspp_mobilenet_v3_large")
    table = torch.tensor(channels_of(CLASSES), dtype=torch.uint8)
    for shape in SHAPES:
        image = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        logits, mask = (torch.from_numpy(a) for a in torch_answer(graph, image))
        with torch.no_grad():
            served = list(predict_logits(graph.model, image, [shape[2:]] * shape[0]))
        for i, one in enumerate(served):
            assert torch.equal(logits[i], one)
            assert torch.equal(mask[i], table[one.argmax(dim=0)])


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in ARCHITECTURES])
def test_every_architecture_exports_and_answers_like_pytorch(arch, tmp_path):
    graph = graph_for(arch)
    meta = contract(spec_for(arch))
    for format, run in RUNNERS.items():
        path = tmp_path / f"model.{format}"
        write_file(graph, format, meta, path)  # checks itself too
        answer = run(path)
        for shape in SHAPES:
            image = torch.randn(shape, generator=torch.Generator().manual_seed(2))
            logits, mask = torch_answer(graph, image)
            other_logits, other_mask = answer(image)
            assert disagreement(logits, mask, other_logits, other_mask) is None, (format, shape)
            # In float32 on one CPU the runtimes agree far inside the tolerance, and on every pixel.
            assert np.abs(other_logits - logits).max() <= 1e-4 * max(1.0, float(np.abs(logits).max()))
            assert np.array_equal(other_mask, mask)
    dims = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
            for o in onnx.load(str(tmp_path / "model.onnx")).graph.output]
    assert dims == [["batch", len(CLASSES), "height", "width"], ["batch", "height", "width"]]


def test_the_contract_round_trips_through_both_files(tmp_path):
    arch = "lraspp_mobilenet_v3_large"
    meta = contract(spec_for(arch, image_size=96))
    assert (meta["model"], meta["version"], meta["architecture"]) == ("pets", 3, arch)
    assert meta["channels"] == [0, 1, 2, 7]
    assert [(c["channel"], c["index"], c["name"], tuple(c["color"])) for c in meta["classes"]] == [
        (ch, i, CLASSES[i], class_colour(i)) for ch, i in enumerate([0, 1, 2, 7])]
    pre = meta["preprocessing"]
    assert (pre["shorter_side"], pre["mean"], pre["std"]) == (96, list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert (pre["layout"], pre["dtype"]) == ("NCHW", "float32")
    graph = graph_for(arch)
    write_file(graph, ExportFormat.ONNX, meta, tmp_path / "m.onnx")
    write_file(graph, ExportFormat.TORCHSCRIPT, meta, tmp_path / "m.pt")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    assert json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY]) == meta
    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert json.loads(extra[EXTRA_FILE]) == meta


def test_a_file_that_answers_otherwise_is_refused(tmp_path):
    path = tmp_path / "m.onnx"
    meta = contract(spec_for("lraspp_mobilenet_v3_large"))
    write_onnx(graph_for("lraspp_mobilenet_v3_large", seed=0), meta, path)
    with pytest.raises(ExportMismatch, match=r"the onnx export answers unlike PyTorch on a batch of \[2, 3, 45, 67\]: "
                                             r"logits differ by up to"):
        check_file(graph_for("lraspp_mobilenet_v3_large", seed=1), ExportFormat.ONNX, path)


def test_disagreement_allows_ties_only():
    logits = np.zeros((1, 3, 2, 2), dtype=np.float32)
    logits[0, 1] = 5.0  # channel 1 wins everywhere...
    logits[0, 2, 0, 0] = 5.0 - LOGITS_RTOL  # ...by a hair at pixel (0, 0)
    mask = np.ones((1, 2, 2), dtype=np.uint8)
    assert disagreement(logits, mask, logits, mask) is None
    tie = mask.copy()
    tie[0, 0, 0] = 2
    assert disagreement(logits, mask, logits, tie) is None
    wrong = mask.copy()
    wrong[0, 1, 1] = 2
    assert disagreement(logits, mask, logits, wrong) == (
        "1 pixel(s) take another class where the top two logits are more than 0.01 apart")
    assert "logits differ by up to 0.1" in disagreement(logits, mask, logits + 0.1, mask)
    assert "logits differ" in disagreement(logits, mask, logits * np.nan, mask)
    assert disagreement(logits, mask, logits[:, :, :1], mask).startswith("shapes")
    assert disagreement(logits, mask, logits, mask.astype(np.int64)) == "a int64 mask instead of uint8"


def test_the_triton_repository_matches_its_model(tmp_path):
    meta = contract(spec_for("lraspp_mobilenet_v3_large"))
    write_onnx(graph_for("lraspp_mobilenet_v3_large"), meta, tmp_path / "m.onnx")
    write_triton(tmp_path / "m.onnx", meta, tmp_path / "a.zip")
    write_triton(tmp_path / "m.onnx", meta, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()  # the same bytes every time
    archive = zipfile.ZipFile(io.BytesIO((tmp_path / "a.zip").read_bytes()))
    assert archive.namelist() == ["pets/config.pbtxt", "pets/1/model.onnx"]
    assert archive.read("pets/1/model.onnx") == (tmp_path / "m.onnx").read_bytes()
    config = archive.read("pets/config.pbtxt").decode("ascii")
    assert config == triton_config(onnx.load(str(tmp_path / "m.onnx")), meta)
    body = config[config.index('name: "pets"'):]
    assert body.startswith(f'name: "pets"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {TRITON_MAX_BATCH_SIZE}\n'
                           'input [\n  {\n    name: "image"\n    data_type: TYPE_FP32\n    dims: [ 3, -1, -1 ]\n  }\n]\n'
                           'output [\n  {\n    name: "logits"\n    data_type: TYPE_FP32\n    dims: [ 4, -1, -1 ]\n  },\n'
                           '  {\n    name: "mask"\n    data_type: TYPE_UINT8\n    dims: [ -1, -1 ]\n  }\n]\n'
                           'dynamic_batching { }\n')
    # The contract as a protobuf text string: ASCII, escapes a text-format parser reads back.
    escaped = re.search(r'string_value: "(.*)" \} \}\n$', config)[1]
    assert json.loads(codecs.escape_decode(escaped)[0].decode("utf-8")) == meta
