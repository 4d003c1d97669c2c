"""Score a segmentation model on a labelled dataset: confusion matrix -> IoU, old/new/all mIoU.

Scores are counted at each label's own resolution: the image (preprocessed, e.g. shorter side at
the model's size by ``EvalTransform``) goes through ``predict_logits``, whose logits are upsampled
bilinearly to the mask's size before the argmax. Images of a dataset may differ in size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from services.evaluation.confusion import ConfusionMatrix
from services.evaluation.metrics import mean_iou, per_class_iou, pixel_accuracy
from services.evaluation.predict import predict_logits, same_size_groups

EVAL_BATCH_SIZE = 8  # images per loader batch when scoring (eval mode, no image sways another: any size scores alike)


@dataclass(frozen=True)
class EvalResult:
    """Scores of one evaluation; IoU values in [0, 1], None where undefined."""

    confusion: ConfusionMatrix
    iou: list[float | None]
    miou_all: float | None
    miou_old: float | None
    miou_new: float | None
    pixel_accuracy: float | None

    def named_iou(self, class_names: Sequence[str]) -> dict[str, float | None]:
        """{class name: IoU} for the evaluated classes."""
        return dict(zip(class_names, self.iou))


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    num_classes: int,
    device: str | torch.device = "cpu",
    *,
    old_classes: Sequence[int] = (),
    new_classes: Sequence[int] = (),
    batch_size: int = EVAL_BATCH_SIZE,
    num_workers: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Predict every item of ``dataset`` ((image [3, h, w], mask long [H, W]) pairs) and score it.

    The image is the preprocessed network input, the mask the label at its own resolution (the
    two sizes may differ, and differ between items). The model's ``forward(x)`` returns an object
    with ``logits`` [N, C, h, w] at input size, C == ``num_classes``. Images of one size in a
    loader batch share a forward; an image's prediction does not depend on the others. The model
    is put in eval mode and left there.
    """
    model.eval().to(device)
    cm = ConfusionMatrix(num_classes)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_as_lists)
    for images, masks in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        for group in same_size_groups([im.shape for im in images]):
            batch = torch.stack([images[i] for i in group]).to(device)
            logits = predict_logits(model, batch, [tuple(masks[i].shape[-2:]) for i in group])
            for i, one in zip(group, logits):
                if one.shape[0] != num_classes:
                    raise ValueError(f"model outputs {one.shape[0]} classes but {num_classes} are evaluated")
                cm.update(one.argmax(0).cpu(), masks[i])
    return EvalResult(
        confusion=cm,
        iou=per_class_iou(cm),
        miou_all=mean_iou(cm),
        miou_old=mean_iou(cm, old_classes) if old_classes else None,
        miou_new=mean_iou(cm, new_classes) if new_classes else None,
        pixel_accuracy=pixel_accuracy(cm),
    )


def _as_lists(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A loader batch as (images, masks) lists: items may differ in size."""
    return [image for image, _ in batch], [mask for _, mask in batch]
