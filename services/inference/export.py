"""A version as files other runtimes load: ONNX, TorchScript, a Triton model repository (zip).

The graph (``ExportGraph``) is the forward ``/segment`` runs (``services.evaluation.predict``):
``image`` float32 [N, 3, H, W], already preprocessed as the contract says, is padded bottom/right
with 0 to multiples of ``STRIDE``, run through the network, and the padding cropped off the logits;
it answers ``logits`` float32 [N, C, H, W] at the input's size and ``mask`` uint8 [N, H, W], the
argmax over channels mapped to GLOBAL class indices (channel c is class ``channels[c]``, as
``Predictor`` maps it). N, H and W are free (H, W >= 1; any size, not only multiples of the stride).
What ``/segment`` does around it (resizing the image first, upsampling the logits back to the
image's size after) is written in the contract (``contract``), embedded in every file: ONNX
``metadata_props["strata"]``, TorchScript's extra file ``strata.json``, and in the Triton
repository the ONNX model's metadata and the ``strata`` parameter of ``config.pbtxt``.

ONNX is written by torch's TorchScript-based exporter (``dynamo=False``). The torch.export-based one
exports every architecture of the zoo with dynamic N, H, W too, and answers the same, but takes 10
to 40 times longer (13 s against 0.4 s for LR-ASPP: docs/results.md), names the output sizes by
expressions ("Min(height, 16*((height + 15)//16))") instead of the input's "height", and turned the
ceiling division ``-(-h // 16)`` into a truncating one (a 40-pixel input answered 32 rows). So
padding below uses only non-negative operands whichever exporter runs it. Each written file is run
on two batches of sizes it was not traced at, in the runtime that will load it (ONNX Runtime,
``torch.jit.load``), and compared with the PyTorch graph (``check_file``); a mismatch raises
``ExportMismatch``, and the file is not kept.
"""

from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MAX_ASPECT, STRIDE, crop_padding
from services.db.models import ExportFormat
from services.inference.predictor import VersionSpec
from services.learning.classmap import channels_of
from services.learning.zoo import SegModel
from services.registry.classes import class_colour, colour_hex

CONTRACT = "strata-export/1"  # bumped when the graph or the metadata change: cached exports are then rebuilt
INPUT, LOGITS, MASK = "image", "logits", "mask"
METADATA_KEY = "strata"  # ONNX metadata_props key, Triton config parameter
EXTRA_FILE = "strata.json"  # TorchScript extra file
ONNX_OPSET = 17  # ONNX Runtime >= 1.12, TensorRT >= 8.6
TRITON_MAX_BATCH_SIZE = 8
EXTENSIONS = {ExportFormat.ONNX: ".onnx", ExportFormat.TORCHSCRIPT: ".pt", ExportFormat.TRITON: ".zip"}
MEDIA_TYPES = {ExportFormat.ONNX: "application/octet-stream", ExportFormat.TORCHSCRIPT: "application/octet-stream",
               ExportFormat.TRITON: "application/zip"}
# Traced at a size that is not a multiple of STRIDE (so the padding is in the graph), checked at
# others, one of them a multiple (no padding), with other batch sizes.
TRACE_SHAPE = (1, 3, 40, 56)
CHECK_SHAPES = ((2, 3, 45, 67), (3, 3, 32, 48))
# A file answers like the PyTorch graph when its logits are within LOGITS_RTOL x the largest |logit|
# (at least 1) and its mask differs only where the top two logits are within twice that (a tie).
LOGITS_RTOL = 1e-3

# Both are deliberate: the TorchScript format is what was asked for, and the exporter is chosen above.
warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                        category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")


class ExportMismatch(RuntimeError):
    """An exported file does not answer like the network it was exported from (a bug of ours)."""


class ExportGraph(nn.Module):
    """The network with ``/segment``'s padding, cropping and channel -> class index table."""

    def __init__(self, model: SegModel, channels: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        # uint8: class indices are < 255 (the classes table's CHECK), as in /segment's masks.
        self.register_buffer("channel_to_index", torch.tensor(list(channels), dtype=torch.uint8))
        # The whole module: exporters put back the top module's mode, recursively, when they are done.
        self.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """image [N, 3, H, W] normalised -> (logits float [N, C, H, W], mask uint8 [N, H, W])."""
        h, w = image.shape[-2:]
        # pad_to_stride's padding without its "already a multiple" shortcut: a branch on the size
        # would be taken once, at the traced size, and frozen into the graph.
        x = F.pad(image, (0, (w + STRIDE - 1) // STRIDE * STRIDE - w, 0, (h + STRIDE - 1) // STRIDE * STRIDE - h))
        logits = crop_padding(self.model(x).logits, (h, w))
        return logits, self.channel_to_index[logits.argmax(dim=1)]


def contract(spec: VersionSpec) -> dict[str, Any]:
    """What a runtime needs to answer like ``/segment``: the classes, the preprocessing, the graph's
    inputs and outputs, and what to do with them (JSON-compatible)."""
    channels = channels_of(spec.class_map)
    size = spec.image_size
    return {
        "contract": CONTRACT,
        "model": spec.model_name,
        "version": spec.version,
        "architecture": spec.architecture,
        "checkpoint_sha256": spec.checkpoint_sha256,
        "classes": [{"channel": ch, "index": index, "name": spec.class_map[index], "color": list(class_colour(index)),
                     "hex": colour_hex(index)} for ch, index in enumerate(channels)],
        "channels": channels,
        "preprocessing": {
            "color": "RGB: other modes (greyscale, RGBA, palette) converted as PIL's Image.convert('RGB') does",
            "shorter_side": size,
            "max_aspect": MAX_ASPECT,
            "resize": (f"scale = min({size} / shorter, {size * MAX_ASPECT} / longer); the shorter side becomes {size} "
                       "when scale is the first term, else max(1, round(shorter * scale)); the longer side "
                       "max(1, round(longer * scale)) (Python's round); no resize when the size is unchanged"),
            "interpolation": "bilinear, as PIL's Image.resize(size, Image.BILINEAR) (antialiased when shrinking)",
            "scale": "uint8 values / 255, giving [0, 1]",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "normalize": "(x - mean[c]) / std[c] per channel c (R, G, B)",
            "layout": "NCHW",
            "dtype": "float32",
        },
        "inputs": [{"name": INPUT, "dtype": "float32", "shape": ["batch", 3, "height", "width"],
                    "description": "preprocessed images, all of one size; any height and width (the graph pads "
                                   f"them to multiples of {STRIDE} and crops the padding off)"}],
        "outputs": [
            {"name": LOGITS, "dtype": "float32", "shape": ["batch", len(channels), "height", "width"],
             "description": "class scores per channel, at the input's size"},
            {"name": MASK, "dtype": "uint8", "shape": ["batch", "height", "width"],
             "description": "argmax over channels, as class indices (channels[c]), at the input's size"},
        ],
        "postprocessing": ("/segment answers at the uploaded image's size: resize logits to the image's height and "
                           "width bilinearly with half-pixel centres and no antialiasing (torch's interpolate with "
                           "align_corners=False, OpenCV's INTER_LINEAR; PIL's BILINEAR only when enlarging), take the "
                           "argmax over channels there, and map channel c to class index channels[c]"),
    }


def contract_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, ensure_ascii=False, sort_keys=True)


# --- writing -------------------------------------------------------------------------------------
def write_onnx(graph: ExportGraph, meta: dict[str, Any], path: Path) -> None:
    """The graph as an ONNX model with dynamic batch, height and width, the contract in its metadata."""
    with torch.no_grad():
        torch.onnx.export(
            graph, (torch.zeros(TRACE_SHAPE),), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT], output_names=[LOGITS, MASK],
            dynamic_axes={INPUT: {0: "batch", 2: "height", 3: "width"}, LOGITS: {0: "batch", 2: "height", 3: "width"},
                          MASK: {0: "batch", 1: "height", 2: "width"}})
    model = onnx.load(str(path))
    # The exporter cannot see that slicing keeps the channel count: state every output dimension.
    for output in model.graph.output:
        shape = next(o["shape"] for o in meta["outputs"] if o["name"] == output.name)
        for dim, value in zip(output.type.tensor_type.shape.dim, shape, strict=True):
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    model.doc_string = f"Strata model {meta['model']!r} version {meta['version']}: see metadata_props[{METADATA_KEY!r}]"
    onnx.helper.set_model_props(model, {METADATA_KEY: contract_json(meta)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_torchscript(graph: ExportGraph, meta: dict[str, Any], path: Path) -> None:
    """The graph traced to TorchScript (sizes stay symbolic in a trace), the contract as ``strata.json``."""
    with torch.no_grad():
        traced = torch.jit.trace(graph, torch.zeros(TRACE_SHAPE), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: contract_json(meta)})


def write_triton(onnx_path: Path, meta: dict[str, Any], path: Path) -> None:
    """A Triton model repository folder, zipped: ``{model}/config.pbtxt`` (ONNX Runtime backend,
    dynamic batching) and ``{model}/1/model.onnx``. Every entry has a fixed time stamp: the same
    ONNX model always gives the same bytes."""
    name = meta["model"]
    config = triton_config(onnx.load(str(onnx_path), load_external_data=False), meta)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(_entry(f"{name}/config.pbtxt", zipfile.ZIP_DEFLATED), config)
        with open(onnx_path, "rb") as src, zf.open(_entry(f"{name}/1/model.onnx", zipfile.ZIP_STORED), "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def triton_config(model: onnx.ModelProto, meta: dict[str, Any]) -> str:
    """config.pbtxt for ``model``: its inputs and outputs with their types and dimensions (the batch
    dimension left to ``max_batch_size``), dynamic batching on, the contract as a parameter."""
    lines = [f"# Strata model {meta['model']!r} version {meta['version']} ({meta['architecture']}).",
             f"# The contract: the {METADATA_KEY!r} parameter below, and model.onnx's metadata.",
             "# Requests for images of one size are batched together.",
             f'name: "{meta["model"]}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {TRITON_MAX_BATCH_SIZE}"]
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        lines.append(f"{kind} [")
        for i, value in enumerate(values):
            tensor = value.type.tensor_type
            dims = ", ".join(str(d.dim_value) if d.HasField("dim_value") else "-1" for d in tensor.shape.dim[1:])
            lines += ["  {", f'    name: "{value.name}"', f"    data_type: {_TRITON_TYPES[tensor.elem_type]}",
                      f"    dims: [ {dims} ]", "  }," if i < len(values) - 1 else "  }"]
        lines.append("]")
    escaped = _pbtxt_string(contract_json(meta))
    lines += ["dynamic_batching { }", f'parameters {{ key: "{METADATA_KEY}" value {{ string_value: "{escaped}" }} }}']
    return "\n".join(lines) + "\n"


_TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.UINT8: "TYPE_UINT8",
                 onnx.TensorProto.INT64: "TYPE_INT64"}


def _pbtxt_string(text: str) -> str:
    """``text`` as the inside of a protobuf text-format string: printable ASCII as itself (quotes and
    backslashes escaped), every other UTF-8 byte as an octal escape."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return "".join(out)


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = compression
    info.external_attr = 0o644 << 16
    return info


# --- checking --------------------------------------------------------------------------------------
def check_file(graph: ExportGraph, format: ExportFormat, path: Path) -> None:
    """Run the written file in its runtime on batches of sizes it was not traced at; raise
    ExportMismatch unless it answers like ``graph``."""
    run = _runner(format, path)
    for shape in CHECK_SHAPES:
        image = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            logits, mask = (t.numpy() for t in graph(image))
        problem = disagreement(logits, mask, *run(image))
        if problem is not None:
            raise ExportMismatch(f"the {format} export answers unlike PyTorch on a batch of {list(shape)}: {problem}")


def _runner(format: ExportFormat, path: Path):
    if format is ExportFormat.ONNX:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda image: session.run([LOGITS, MASK], {INPUT: image.numpy()})
    if format is ExportFormat.TORCHSCRIPT:
        module = torch.jit.load(str(path), map_location="cpu")

        def run(image: Tensor) -> list[np.ndarray]:
            with torch.no_grad():
                return [t.numpy() for t in module(image)]

        return run
    raise ValueError(f"no runtime to check a {format} file with: check the ONNX model it holds")


def disagreement(logits: np.ndarray, mask: np.ndarray, other_logits: np.ndarray, other_mask: np.ndarray) -> str | None:
    """Why (``other_logits``, ``other_mask``) is not the same answer as (``logits``, ``mask``), or
    None: logits within LOGITS_RTOL of the largest |logit|, masks equal except at ties."""
    if other_logits.shape != logits.shape or other_mask.shape != mask.shape:
        return f"shapes {other_logits.shape}, {other_mask.shape} instead of {logits.shape}, {mask.shape}"
    if other_mask.dtype != mask.dtype:
        return f"a {other_mask.dtype} mask instead of {mask.dtype}"
    tolerance = LOGITS_RTOL * max(1.0, float(np.abs(logits).max()))
    worst = float(np.abs(other_logits - logits).max())
    if not worst <= tolerance:  # also NaN
        return f"logits differ by up to {worst:.3g} (allowed: {tolerance:.3g})"
    top2 = np.sort(logits, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * tolerance
    wrong = int(((other_mask != mask) & decided).sum())
    if wrong:
        return f"{wrong} pixel(s) take another class where the top two logits are more than {2 * tolerance:.3g} apart"
    return None


def write_file(graph: ExportGraph, format: ExportFormat, meta: dict[str, Any], path: Path) -> None:
    """Write ``graph`` as ``format`` (ONNX or TorchScript) and check it."""
    writers = {ExportFormat.ONNX: write_onnx, ExportFormat.TORCHSCRIPT: write_torchscript}
    writers[format](graph, meta, path)
    check_file(graph, format, path)
