"""Score a segmentation model on a labelled dataset: confusion matrix -> IoU, old/new/all mIoU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from services.evaluation.confusion import ConfusionMatrix
from services.evaluation.metrics import mean_iou, per_class_iou, pixel_accuracy

EVAL_BATCH_SIZE = 8  # images per forward when scoring (the model is in eval mode: any size gives the same scores)


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
    """Predict every item of ``dataset`` ((image [3,H,W], mask long [H,W]) pairs) and score it.

    The model's ``forward(x)`` returns an object with ``logits`` [N, C, H, W] at input size,
    C == ``num_classes``. The model is put in eval mode and left there.
    """
    model.eval().to(device)
    cm = ConfusionMatrix(num_classes)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for images, masks in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        logits = model(images.to(device)).logits
        if logits.shape[1] != num_classes:
            raise ValueError(f"model outputs {logits.shape[1]} classes but {num_classes} are evaluated")
        if logits.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"logits are {tuple(logits.shape[-2:])} but masks are {tuple(masks.shape[-2:])}")
        cm.update(logits.argmax(1).cpu(), masks)
    return EvalResult(
        confusion=cm,
        iou=per_class_iou(cm),
        miou_all=mean_iou(cm),
        miou_old=mean_iou(cm, old_classes) if old_classes else None,
        miou_new=mean_iou(cm, new_classes) if new_classes else None,
        pixel_accuracy=pixel_accuracy(cm),
    )
