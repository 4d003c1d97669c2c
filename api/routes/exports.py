"""A version exported for another runtime: ONNX, TorchScript or a Triton model repository (zip), its
contract (classes, preprocessing) embedded. Built on the first request and cached in the object
store: ``services/inference/export_cache.py``; the files: ``services/inference/export.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from api.deps import ReadModelDep, StateDep
from api.routes.versions import VersionRef
from services.db.models import ExportFormat
from services.inference.export_cache import export_version

router = APIRouter(prefix="/models/{name}/versions", tags=["versions"])
BINARY = {"schema": {"type": "string", "format": "binary"}}
HEADERS = {
    "Content-Disposition": {"schema": {"type": "string"},
                            "description": 'attachment; filename="{model}-v{version}.onnx" (.pt, -triton.zip)'},
    "X-Content-SHA256": {"schema": {"type": "string"}, "description": "The file's sha256, hex."},
    "ETag": {"schema": {"type": "string"}, "description": "The file's sha256, quoted."},
    "X-Model": {"schema": {"type": "string"}, "description": "The model's name."},
    "X-Model-Version": {"schema": {"type": "string"}, "description": "The version's number (an alias resolved)."},
}


@router.get("/{version}/export", response_class=FileResponse, responses={
    200: {"description": "The file: `onnx` and `torchscript` as application/octet-stream, `triton` as "
                         "application/zip. Its sha256 is in X-Content-SHA256 and ETag.",
          "headers": HEADERS, "content": {"application/octet-stream": BINARY, "application/zip": BINARY}},
    404: {"description": "no such model, version or alias"},
    422: {"description": "`format` is not one of onnx, torchscript, triton (or the version is malformed)"},
    503: {"description": "the version's checkpoint cannot be loaded, or a dependency is unavailable"},
})
async def export(
    model: ReadModelDep,
    version: VersionRef,
    state: StateDep,
    format: Annotated[ExportFormat, Query(description=(
        "`onnx`: an ONNX model (opset 17); `torchscript`: a TorchScript module (`torch.jit.load`); `triton`: a zip "
        "of a Triton model repository folder, `{model}/config.pbtxt` (ONNX Runtime backend, dynamic batching) "
        "and `{model}/1/model.onnx`. Each takes `image` float32 [N, 3, H, W] (preprocessed as the contract says) "
        "and answers `logits` float32 [N, C, H, W] and `mask` uint8 [N, H, W] (class indices), N, H, W free. "
        "The contract (classes, colours, preprocessing) is in the file: ONNX metadata `strata`, TorchScript extra "
        "file `strata.json`."))] = ExportFormat.ONNX,
) -> FileResponse:
    """The version as a file for another runtime, built and checked against PyTorch on the first
    request (seconds), then served from the object store's cache."""
    found = await run_in_threadpool(export_version, state.sessions, state.store, state.settings.cache_dir, model.id,
                                    model.name, version, format)
    sha256 = found.record.sha256
    return FileResponse(found.path, media_type=found.media_type, filename=found.filename, headers={
        "X-Content-SHA256": sha256, "ETag": f'"{sha256}"', "X-Model": model.name,
        "X-Model-Version": str(found.record.version)})
