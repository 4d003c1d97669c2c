"""``strata segment``: an image's mask from a model version, written as a PNG (the index mask, or
with ``--overlay`` the image with the classes' colours)."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.remote import OK, client_command, common_flags, need_model, print_json, say


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", parents=[common_flags()], help="segment an image, write the mask PNG",
                       description=__doc__)
    p.add_argument("image", type=Path, metavar="IMAGE")
    p.add_argument("--out", "-o", type=Path, required=True, help="the PNG to write")
    p.add_argument("--version", help="a version number or alias (default: production)")
    p.add_argument("--overlay", action="store_true", help="the image blended with the classes' colours")
    p.add_argument("--alpha", type=float, help="with --overlay: 0 the image .. 1 the colours (default 0.5)")
    p.set_defaults(func=_segment)


@client_command
def _segment(args: argparse.Namespace, client) -> int:
    model = need_model(args)
    if not args.image.is_file():
        raise argparse.ArgumentTypeError(f"IMAGE: {args.image} is not a file")
    if args.alpha is not None and not args.overlay:
        raise argparse.ArgumentTypeError("--alpha: only with --overlay")
    if args.alpha is not None and not 0 <= args.alpha <= 1:
        raise argparse.ArgumentTypeError("--alpha: must be 0 to 1")
    if not args.out.parent.is_dir():
        raise argparse.ArgumentTypeError(f"--out: directory {args.out.parent} does not exist")
    response = client.segment(model, args.image, version=args.version, overlay=args.overlay, alpha=args.alpha)
    args.out.write_bytes(response.content)
    version = response.headers.get("x-model-version")
    if args.json:
        print_json({"path": str(args.out), "bytes": len(response.content), "model": model,
                    "model_version": int(version) if version else None, "overlay": args.overlay})
    else:
        say(f"{args.out}: {'overlay' if args.overlay else 'mask'} of {args.image.name} by {model} version {version}")
    return OK
