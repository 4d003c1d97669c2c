"""Progress bars of the client commands: an upload's bytes, then a task's training steps, live."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm

from services.client import Strata
from services.client.schemas import Task


def upload_bar(label: str, *, quiet: bool) -> tuple[tqdm, Callable[[int, int], None]]:
    """A bar in bytes and the ``on_upload`` callback that moves it."""
    bar = tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=quiet or None,
               leave=True, dynamic_ncols=True)

    def moved(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)
    return bar, moved


def follow(client: Strata, task_id: str, *, label: str, quiet: bool, poll_s: float = 1.0) -> Task:
    """Poll the task until it ends, with a bar of its training steps (epoch, loss, images/s); returns
    its last state. Ctrl-C (KeyboardInterrupt) reaches the caller: the task is left running."""
    bar = tqdm(desc=f"{label}: queued", total=1, unit="step", file=sys.stderr, disable=quiet or None,
               dynamic_ncols=True, bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                              "[{elapsed}<{remaining}{postfix}]")

    def update(task: Task) -> None:
        p = task.progress
        if p is not None and p.epochs and p.steps:
            total = p.epochs * p.steps
            if bar.total != total:
                bar.reset(total=total)
            bar.update(((p.epoch or 1) - 1) * p.steps + (p.step or 0) - bar.n)
            bar.set_description(f"{label}: epoch {p.epoch}/{p.epochs}", refresh=False)
            bar.set_postfix_str(f"loss {p.loss:.3f}, {p.images_per_s or 0:.1f} img/s" if p.loss is not None else "",
                                refresh=False)
        else:
            bar.set_description(f"{label}: {task.status}", refresh=False)
        if task.status == "succeeded" and bar.total:
            bar.update(bar.total - bar.n)
        bar.refresh()

    try:
        return client.wait(task_id, on_update=update, poll_s=poll_s)
    finally:
        bar.close()
