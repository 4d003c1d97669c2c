"""TorchServe's side of bench/bench_serving.py: the same pipeline as Strata's /segment, served by TorchServe.

TorchServe calls ``handle(data, context)`` in its Python worker with up to ``batchSize`` requests
(``data``: one dict per request, the upload's bytes under "body" or "data"); the answer is one PNG
per request. The first call loads the archive's checkpoint (the same file Strata serves) and
warms it up, on the worker's one thread, as TorchServe does with its own handlers. The
pipeline is Strata's own code (decode_image, eval_preprocess, predict_logits, argmax, the
channel -> class table, encode_mask_png), so both servers must answer the same bytes: the bench
checks it. The worker finds that code through PYTHONPATH, which the bench sets to the checkout.
"""

from __future__ import annotations

from pathlib import Path

import torch

from services.data.transforms import eval_preprocess
from services.evaluation.predict import predict_logits, same_size_groups
from services.inference.images import decode_image, encode_mask_png
from services.learning.checkpoint import load_model
from services.learning.classmap import channels_of

MAX_PIXELS = 40_000_000
_state: dict = {}


def _initialise(context) -> None:
    properties = context.system_properties
    model_dir = Path(properties["model_dir"])
    loaded = load_model(model_dir / context.manifest["model"]["serializedFile"])
    _state["model"] = loaded.model.eval()
    _state["lut"] = torch.tensor(channels_of(loaded.class_map), dtype=torch.uint8)
    _state["image_size"] = int((context.model_yaml_config or {}).get("handler", {}).get("image_size", 256))
    s = _state["image_size"]
    with torch.inference_mode():  # the warm-up, as Strata's loader does it
        _state["model"](torch.zeros(1, 3, s, s))


def handle(data, context):
    if data is None:  # TorchServe's load-time call
        return None
    if not _state:
        _initialise(context)
    images = [decode_image(bytes(row.get("body") or row.get("data")), MAX_PIXELS) for row in data]
    inputs = [eval_preprocess(im, _state["image_size"]) for im in images]
    masks = {}
    with torch.inference_mode():
        for group in same_size_groups([x.shape for x in inputs]):
            logits = predict_logits(_state["model"], torch.stack([inputs[i] for i in group]),
                                    [(images[i].height, images[i].width) for i in group])
            masks.update((i, _state["lut"][one.argmax(0)].numpy()) for i, one in zip(group, logits))
    for i in range(len(data)):
        context.set_response_content_type(i, "image/png")
    return [encode_mask_png(masks[i]) for i in range(len(data))]
