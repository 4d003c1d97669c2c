"""``strata submit``: register a task of a model over the REST API (a folder or zip of images and
masks, or an annotation tool's export), with an upload bar, then follow its training live until
the version exists. Ctrl-C while it trains detaches: the task keeps running on the server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from services.cli.remote import DETACHED, OK, REFUSED, client_command, common_flags, need_model, print_json, say

# The flags that set a spec field, by field: what an error in the server's spec terms is said as.
FLAG_OF = {"classes": "--classes", "also_labelled": "--also-labelled", "epochs": "--epochs",
           "image_size": "--image-size", "batch_size": "--batch-size", "method": "--method",
           "architecture": "--architecture", "format": "--format", "other_labels": "--other-labels",
           "val_fraction": "--val-fraction"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", parents=[common_flags()], help="register a task: upload, then follow its training",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, metavar="FOLDER_OR_ZIP", help=(
        "images/ + masks/ (index PNGs), or an annotation tool's export (COCO, CVAT, VOC, Cityscapes, Label Studio), "
        "as a zip or a folder (zipped on the way)"))
    p.add_argument("--classes", help="the new classes, comma-separated, in mask-value order (1, 2, ...)")
    p.add_argument("--also-labelled", help="existing classes these masks label too, comma-separated")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int, help="shorter side in pixels (default: the model's, or the service's)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--method", help="the incremental method (default: the service's best, mib)")
    p.add_argument("--architecture", help="first task only: the network (default: the service's)")
    p.add_argument("--format", help="the upload's format (default: recognised from its layout)")
    p.add_argument("--other-labels", choices=("reject", "ignore", "background"),
                   help="exports: labels the spec does not name")
    p.add_argument("--no-pretrained", action="store_true",
                   help="first task only: random initialisation instead of ImageNet backbone weights")
    p.add_argument("--spec", help="more of the task's spec as JSON, or @FILE; flags above override it")
    p.add_argument("--create-model", action="store_true", help="create the model first if it does not exist")
    p.add_argument("--idempotency-key", help="repeat a submission safely: the same key and files give the same task")
    p.add_argument("--no-wait", action="store_true", help="print the task and return once it is queued")
    p.set_defaults(func=_submit)


@client_command
def _submit(args: argparse.Namespace, client) -> int:
    from services.cli.watch import follow, upload_bar
    from services.client import ApiError
    from services.client.uploads import UploadSourceError

    model = need_model(args)
    spec = build_spec(args)
    if not args.source.exists():
        raise argparse.ArgumentTypeError(f"FOLDER_OR_ZIP: {args.source} does not exist")
    if args.create_model and model not in {m.name for m in client.models()}:
        client.create_model(model)
        say(f"created model {model}")
    bar, moved = upload_bar(f"uploading {args.source.name}", quiet=args.json)
    try:
        task = client.submit(model, args.source, spec, idempotency_key=args.idempotency_key, on_upload=moved)
    except ApiError as err:
        err.detail = in_flag_terms(err.detail)
        raise
    except UploadSourceError as err:
        raise argparse.ArgumentTypeError(f"FOLDER_OR_ZIP: {err}") from None
    finally:
        bar.close()
    say(f"task {task.id} queued: model {model}, classes {', '.join(task.classes)}")
    if args.no_wait:
        return _report(args, task)
    try:
        task = follow(client, task.id, label=f"task {task.id[:8]}", quiet=args.json)
    except KeyboardInterrupt:
        say(f"\ndetached: task {task.id} keeps running; follow it with `strata tasks {task.id} --watch`, "
            f"stop it with `strata tasks {task.id} --cancel`")
        return DETACHED
    return _report(args, task)


def _report(args: argparse.Namespace, task) -> int:
    if args.json:
        print_json(task)
    elif task.status == "succeeded":
        print(f"model {task.model} version {task.model_version} is recorded: `strata versions {task.model_version} "
              f"--model {task.model}`")
    elif task.finished:
        print(f"task {task.id} {task.status}: {task.error}")
    else:
        print(f"task {task.id} is {task.status}")
    return REFUSED if task.status in ("failed", "cancelled") else OK


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec: --spec's JSON, then each flag given."""
    spec: dict[str, Any] = _spec_json(args.spec) if args.spec else {}
    for field, flag in FLAG_OF.items():
        value = getattr(args, field)
        if value is None:
            continue
        if field in ("classes", "also_labelled"):
            value = [name.strip() for name in value.split(",") if name.strip()]
            if not value:
                raise argparse.ArgumentTypeError(f"{flag}: give at least one name, comma-separated")
        spec[field] = value
    if args.no_pretrained:
        spec.setdefault("hyperparameters", {})["pretrained_backbone"] = False
    if not spec.get("classes"):
        raise argparse.ArgumentTypeError("--classes: name the task's new classes (e.g. --classes car,person)")
    return spec


def _spec_json(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as err:
            raise argparse.ArgumentTypeError(f"--spec: cannot read {text[1:]}: {err.strerror}") from None
    try:
        spec = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--spec: not valid JSON ({err})") from None
    if not isinstance(spec, dict):
        raise argparse.ArgumentTypeError("--spec: must be a JSON object, e.g. '{\"epochs\": 10}'")
    return spec


def in_flag_terms(detail: str) -> str:
    """The server's "invalid spec: <field>: ..." with the flag that sets the field named beside it."""
    for field, flag in FLAG_OF.items():
        for form in (f"invalid spec: {field}: ", f"invalid spec: {field}."):
            if detail.startswith(form):
                return detail.replace(field, f"{field} ({flag})", 1)
    return detail
