"""POST /models/{name}/segment: one image in, its mask of the model's class indices out.

The key is checked before the body is read. The image's pixels are admitted through the API's
pixel budget (services/inference/admission.py), then the image is decoded and the mask PNG encoded
in the thread pool; the forward runs on the version's batcher thread, batched with concurrent
requests. The event loop only waits.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import InferModelDep, StateDep
from services.inference.errors import NotAnImage
from services.inference.images import class_pixel_counts, encode_mask_png, load_image, open_image
from services.inference.service import Segmentation
from services.registry.versions import VERSION_REF_PATTERN

router = APIRouter(tags=["inference"])
PNG = "image/png"
MAX_FORM_FIELDS = 8  # besides the one file: a client's extra text fields are ignored, not unbounded
# The body as the OpenAPI document shows it (the route reads it itself, after authentication).
IMAGE_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary",
                             "description": "The image to segment (PNG, JPEG, ...)."}}}}}}}


class SegmentResult(BaseModel):
    model: str = Field(description="The model's name.")
    model_version: int = Field(description="The version that produced the mask.")
    width: int
    height: int
    classes: dict[str, int] = Field(description="Pixel count of each class present in the mask, by class name.")
    mask_png: str = Field(description=(
        "Base64 of an 8-bit palette PNG at the input's size: each pixel's value is its class index in the "
        "model (see GET /models/{name}/classes?version=N), the palette the classes' legend colours."))


def _wants_png(request: Request) -> bool:
    """True when the Accept header asks for image/png (with a non-zero quality)."""
    for part in request.headers.get("accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() == PNG:
            quality = next((p.split("=", 1)[1] for p in params if p.lower().startswith("q=")), "1")
            try:
                return float(quality) > 0
            except ValueError:
                return True
    return False


@router.post(
    "/models/{name}/segment",
    response_model=SegmentResult,
    openapi_extra=IMAGE_BODY,
    responses={
        200: {"content": {PNG: {}}, "description": "JSON, or with `Accept: image/png` the mask PNG itself "
                                                   "(header X-Model-Version names the version)"},
        404: {"description": "no such model, version or alias"},
        409: {"description": "the model has no version yet, or none in production"},
        413: {"description": "the image has more pixels than STRATA_MAX_IMAGE_PIXELS"},
        422: {"description": "the upload is not an image"},
        503: {"description": "the version exists but cannot be loaded, or too many pixels are being "
                             "segmented now (Retry-After)"},
    },
)
async def segment(
    request: Request,
    state: StateDep,
    model: InferModelDep,
    version: Annotated[str | None, Query(max_length=64, pattern=VERSION_REF_PATTERN,
                                         description="A version number or alias; default: production.")] = None,
) -> Response:
    """Segment one image (multipart field `image`) with the model's production version (or ``version``)."""
    # The body is read here, after the key and the model were checked (no body parameter is
    # declared, so FastAPI reads nothing before the dependencies): a client without a valid key
    # is answered 401 at once, before a byte of its upload is read.
    async with request.form(max_files=1, max_fields=MAX_FORM_FIELDS) as form:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise NotAnImage("body.image: send the image as the multipart/form-data file field `image`")
        name = upload.filename or "image"
        im = await run_in_threadpool(open_image, upload.file, state.settings.max_image_pixels, name)
        async with state.pixels.hold(im.width * im.height):  # bounds memory over all requests
            await run_in_threadpool(load_image, im, name)
            result = await state.inference.predict(model.id, im, version)
            del im
            if _wants_png(request):
                png = await run_in_threadpool(encode_mask_png, result.mask)
                return Response(png, media_type=PNG, headers={"X-Model": result.model,
                                                              "X-Model-Version": str(result.version)})
            return await run_in_threadpool(_as_json, result)


def _as_json(result: Segmentation) -> Response:
    """The JSON answer, serialised here in the thread pool (counting and encoding a large mask take
    a while, and the event loop should only wait)."""
    height, width = result.mask.shape
    body = SegmentResult(
        model=result.model, model_version=result.version, width=width, height=height,
        classes=class_pixel_counts(result.mask, result.class_names),
        mask_png=base64.b64encode(encode_mask_png(result.mask)).decode("ascii"),
    )
    return Response(body.model_dump_json(), media_type="application/json")
