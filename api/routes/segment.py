"""POST /models/{name}/segment: one image in, its mask of the model's class indices out.

What the answer holds is chosen by the query, or by the Accept header when the query says nothing:
``format=json`` (the default: counts and the index PNG in base64), ``format=png`` (the index PNG
itself; ``Accept: image/png`` without ``format`` asks the same), ``format=rle`` (each class present
as a COCO region with its RLE), ``render=overlay`` (a PNG of the image blended with the class colours,
``alpha`` its weight). An explicit ``format`` wins over Accept; a query that asks for two answers
(the overlay as JSON, ``alpha`` without the overlay) is refused, 422, naming the parameter.

The key and the query are checked before the body is read. The image's pixels are held in the
API's pixel budget (services/inference/admission.py) from before decoding until the answer is
encoded (the overlay needs the image itself); decoding and encoding run in the thread pool, the
forward on the version's batcher thread, batched with concurrent requests. The event loop only waits.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import InferModelDep, StateDep
from services.inference.answers import OVERLAY_ALPHA, class_regions, overlay_png
from services.inference.errors import AnswerOptionsClash, NotAnImage
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


class CocoRle(BaseModel):
    size: list[int] = Field(min_length=2, max_length=2, description="[height, width] of the mask.")
    counts: str = Field(description=(
        "COCO's compressed RLE string, column-major, exactly as pycocotools.mask.encode writes it (bytes "
        "decoded as ASCII): pycocotools.mask.decode({'size': size, 'counts': counts}) is the class's 0/1 mask."))


class ClassRegion(BaseModel):
    index: int = Field(description="The class index in the model (GET /models/{name}/classes?version=N).")
    name: str
    area: int = Field(description="Pixels of the class.")
    bbox: list[int] = Field(min_length=4, max_length=4, description=(
        "COCO's box around the class's pixels: [x, y, width, height], x and y of the top-left pixel."))
    rle: CocoRle


class SegmentRegions(BaseModel):
    model: str = Field(description="The model's name.")
    model_version: int = Field(description="The version that produced the mask.")
    width: int
    height: int
    classes: list[ClassRegion] = Field(description=(
        "Every class present in the mask, by index, background (0) included: the regions tile the image. "
        "Each is what a COCO annotation holds as area, bbox and segmentation (with iscrowd 1)."))


Format = Literal["json", "png", "rle"]
Render = Literal["mask", "overlay"]
# What an answer is: the three formats of the mask, or the overlay (a PNG).
Answer = Literal["json", "png", "rle", "overlay"]
MODEL_HEADERS = {
    "X-Model": {"schema": {"type": "string"}, "description": "The model's name (PNG answers)."},
    "X-Model-Version": {"schema": {"type": "integer"}, "description": "The version that answered (PNG answers)."},
}
JSON_EXAMPLES = {
    "json": {"summary": "format=json (default)", "value": {
        "model": "streets", "model_version": 2, "width": 4, "height": 3,
        "classes": {"background": 6, "car": 5, "person": 1},
        "mask_png": "iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAMAAAB...(base64 of the index PNG)"}},
    "rle": {"summary": "format=rle", "value": {
        "model": "streets", "model_version": 2, "width": 4, "height": 3, "classes": [
            {"index": 0, "name": "background", "area": 6, "bbox": [0, 0, 2, 3],
             "rle": {"size": [3, 4], "counts": "066"}},
            {"index": 1, "name": "car", "area": 5, "bbox": [2, 0, 2, 3], "rle": {"size": [3, 4], "counts": "631O"}},
            {"index": 2, "name": "person", "area": 1, "bbox": [3, 0, 1, 1], "rle": {"size": [3, 4], "counts": "912"}},
        ]}},
}
PNG_EXAMPLES = {
    "mask": {"summary": "format=png, or Accept: image/png", "description": (
        "An 8-bit palette PNG at the input's size: each pixel's value is its class index, the palette the "
        "classes' legend colours (the same bytes as mask_png in the JSON answer).")},
    "overlay": {"summary": "render=overlay", "description": (
        "An RGB PNG at the input's size: each pixel round(alpha * its class's colour + (1 - alpha) * the "
        "input's pixel), per channel, halves to even.")},
}


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


def answer_of(request: Request, answer_format: Format | None, render: Render, alpha: float | None) -> Answer:
    """What the query (or, when it names no format, the Accept header) asks for; a query that asks for
    two answers is refused, naming the parameter."""
    if render == "overlay":
        if answer_format not in (None, "png"):
            raise AnswerOptionsClash(
                f"query.render: render=overlay answers a PNG image, it cannot be format={answer_format} "
                "(leave format out, or send format=png)")
        return "overlay"
    if alpha is not None:
        raise AnswerOptionsClash("query.alpha: alpha is the overlay's colour weight; send it with render=overlay")
    if answer_format is None:
        return "png" if _wants_png(request) else "json"
    return answer_format


@router.post(
    "/models/{name}/segment",
    response_model=SegmentResult | SegmentRegions,
    openapi_extra=IMAGE_BODY,
    responses={
        200: {"description": "JSON (format=json, the default, or format=rle), or a PNG: the mask itself "
                             "(format=png, or Accept: image/png without format) or the overlay (render=overlay); "
                             "headers X-Model and X-Model-Version name the model and version of a PNG",
              "headers": MODEL_HEADERS,
              "content": {"application/json": {"examples": JSON_EXAMPLES},
                          PNG: {"schema": {"type": "string", "format": "binary"}, "examples": PNG_EXAMPLES}}},
        404: {"description": "no such model, version or alias"},
        409: {"description": "the model has no version yet, or none in production"},
        413: {"description": "the image has more pixels than STRATA_MAX_IMAGE_PIXELS"},
        422: {"description": "the upload is not an image, or the query asks for two answers at once (render=overlay "
                            "with format=json or rle; alpha without render=overlay): the message names the parameter"},
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
    answer_format: Annotated[Format | None, Query(alias="format", description=(
        "How the mask is answered. `json` (the default): model, version, size, each class's pixel count by "
        "name, and the index PNG in base64 (`mask_png`). `png`: that index PNG itself. `rle`: JSON with "
        "every class present, background included, as a COCO region: index, name, area, bbox "
        "[x, y, width, height] and its RLE {size: [height, width], counts} as pycocotools.mask.encode writes "
        "it (column-major). When given, `format` decides whatever Accept says; without it, "
        "`Accept: image/png` answers the PNG and anything else the JSON."))] = None,
    render: Annotated[Render, Query(description=(
        "`mask` (the default): the class mask, as `format` says. `overlay`: a PNG for people, the input "
        "image blended with each pixel's class colour (the legend's, GET /models/{name}/classes), at the "
        "input's size; a PNG only, so `format` must be left out or be `png`."))] = "mask",
    alpha: Annotated[float | None, Query(ge=0, le=1, description=(
        f"With render=overlay only: the class colour's weight, from 0 (the image) to 1 (the colours); "
        f"default {OVERLAY_ALPHA}. Each channel is round(alpha * colour + (1 - alpha) * pixel)."))] = None,
) -> Response:
    """Segment one image (multipart field `image`) with the model's production version (or ``version``)."""
    answer = answer_of(request, answer_format, render, alpha)  # refused before the body is read
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
            if answer == "overlay":
                weight = OVERLAY_ALPHA if alpha is None else alpha
                png = await run_in_threadpool(overlay_png, im, result.mask, weight)
                del im
                return _png(png, result)
            del im
            if answer == "png":
                return _png(await run_in_threadpool(encode_mask_png, result.mask), result)
            if answer == "rle":
                return await run_in_threadpool(_as_regions, result)
            return await run_in_threadpool(_as_json, result)


def _png(png: bytes, result: Segmentation) -> Response:
    return Response(png, media_type=PNG, headers={"X-Model": result.model, "X-Model-Version": str(result.version)})


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


def _as_regions(result: Segmentation) -> Response:
    """The RLE answer (format=rle), serialised in the thread pool like the JSON one."""
    height, width = result.mask.shape
    body = SegmentRegions(
        model=result.model, model_version=result.version, width=width, height=height,
        classes=[ClassRegion(index=r.index, name=r.name, area=r.area, bbox=list(r.bbox), rle=CocoRle(**r.rle))
                 for r in class_regions(result.mask, result.class_names)],
    )
    return Response(body.model_dump_json(), media_type="application/json")
