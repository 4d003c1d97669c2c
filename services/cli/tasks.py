"""``strata tasks``: the training queue (a model's tasks, or every model's), or one task, followed
live with ``--watch`` (what ``strata submit`` does after its upload; Ctrl-C detaches) or stopped
with ``--cancel``."""

from __future__ import annotations

import argparse

from services.cli.remote import DETACHED, OK, REFUSED, client_command, common_flags, print_json, print_table, say

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", parents=[common_flags()], help="list training tasks, or show or follow one",
                       description=__doc__)
    p.add_argument("task_id", nargs="?", metavar="TASK_ID", help="one task: its state (with --watch: until it ends)")
    p.add_argument("--status", choices=STATUSES, help="only tasks in this state")
    p.add_argument("--limit", type=int, default=50, help="at most this many, newest first (default 50)")
    p.add_argument("--watch", action="store_true", help="with TASK_ID: a live progress bar until the task ends")
    p.add_argument("--cancel", action="store_true", help="with TASK_ID: cancel it (a running task stops at its next "
                                                         "step; a queued one at once)")
    p.set_defaults(func=_tasks)


@client_command
def _tasks(args: argparse.Namespace, client) -> int:
    if args.task_id is None:
        if args.watch or args.cancel:
            raise argparse.ArgumentTypeError(f"{'--watch' if args.watch else '--cancel'}: name the TASK_ID")
        if not 1 <= args.limit <= 1000:
            raise argparse.ArgumentTypeError("--limit: must be 1 to 1000")
        tasks = client.tasks(args.model, status=args.status, limit=args.limit)
        if args.json:
            print_json(tasks)
        else:
            print_table(None, ("task", "model", "status", "new classes", "method", "progress", "version", "created"),
                        (_row(t) for t in tasks))
        return OK
    task = client.cancel(args.task_id) if args.cancel else client.task(args.task_id)
    if args.watch and not task.finished:
        from services.cli.watch import follow

        try:
            task = follow(client, task.id, label=f"task {task.id[:8]}", quiet=args.json)
        except KeyboardInterrupt:
            say(f"\ndetached: task {task.id} keeps running")
            return DETACHED
    if args.json:
        print_json(task)
    else:
        print_table(None, ("task", "model", "status", "new classes", "method", "progress", "version", "created"),
                    [_row(task)])
        if task.error:
            print(f"error: {task.error}")
    return REFUSED if args.watch and task.status in ("failed", "cancelled") else OK


def _row(t) -> tuple:
    p = t.progress
    progress = f"{100 * p.fraction:.0f}% (epoch {p.epoch}/{p.epochs})" if p is not None and p.epoch else ""
    return (t.id, t.model, t.status, ", ".join(t.classes), t.method, progress, t.model_version,
            t.created_at.strftime("%Y-%m-%d %H:%M"))
