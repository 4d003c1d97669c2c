"""What the distributed-training tests run: one tiny step, in the test's process or as a process of
its own (``python -m tests.services.learning.ddp_run``) that a test can kill.

Classes here travel to the other ranks in the job file, so they live in an importable module.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
import torch.distributed

from services.learning.config import TrainConfig
from services.learning.distributed import train_distributed
from services.learning.growth import grow_classifier
from services.learning.methods import build_method
from services.learning.zoo import SegModel, build_model
from tests.services.learning.tiny import TINY_ARCH, RandomSegDataset, class_map

OLD, NEW = 3, 2  # the teacher's classes (with background), the classes the step adds
IMAGES, SIZE = 16, 32


def config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=4, log_every=1, device="cpu", class_balance=0.0)
    return TrainConfig(**{**base, **changes})  # type: ignore[arg-type]


def models() -> tuple[SegModel, SegModel]:
    """(teacher, student grown from it), the same on every call."""
    torch.manual_seed(0)
    teacher = build_model(TINY_ARCH, OLD, pretrained_backbone=False)
    student = grow_classifier(teacher, NEW, generator=torch.Generator().manual_seed(0))
    return teacher, student


def run(world_size: int, method: str = "mib", train_config: TrainConfig | None = None, dataset=None,
        **hooks) -> dict[str, torch.Tensor]:
    """The trained student's state after a step with ``method`` on ``world_size`` processes."""
    teacher, student = models()
    data = dataset if dataset is not None else RandomSegDataset(IMAGES, OLD + NEW, size=SIZE, flip=True)
    trained = train_distributed(world_size, student, build_method(method, OLD), data, train_config or config(),
                                teacher=teacher, class_map=class_map(OLD + NEW), **hooks)
    return {k: v.detach().clone() for k, v in trained.state_dict().items()}


class FailsOnRank1(RandomSegDataset):
    """Unreadable on rank 1 from its second item on: a rank that fails mid-training."""

    def __getitem__(self, i: int):
        self.loaded = getattr(self, "loaded", 0) + 1
        if torch.distributed.is_initialized() and torch.distributed.get_rank() == 1 and self.loaded > 1:
            raise OSError("image 7 is unreadable on rank 1")
        return super().__getitem__(i)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--step-delay", type=float, default=0.0, help="seconds rank 0 waits after each step")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)  # the resumption line, for the test to read
    torch.set_num_threads(2)
    state = run(2, train_config=config(epochs=args.epochs), checkpoint_dir=args.checkpoint_dir,
                on_progress=lambda _: time.sleep(args.step_delay))
    torch.save(state, args.out)


if __name__ == "__main__":
    main()
