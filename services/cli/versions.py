"""``strata versions``, ``strata promote`` and ``strata compare``: a model's versions, what each
learnt and forgot, moving its aliases, and two versions side by side class by class."""

from __future__ import annotations

import argparse

from services.cli.remote import (
    OK,
    client_command,
    common_flags,
    need_model,
    points,
    print_json,
    print_table,
    signed_points,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("versions", parents=[common_flags()], help="a model's versions, or one version's classes",
                       description="A model's versions with their mIoU over old, new and all classes; with VERSION "
                                   "(a number or an alias), that version's per-class IoU and forgetting.")
    p.add_argument("version", nargs="?", metavar="VERSION", help="a version number or an alias (e.g. production)")
    p.set_defaults(func=_versions)

    p = sub.add_parser("promote", parents=[common_flags()], help="move production (or another alias) to a version",
                       description="Make VERSION the model's production version (an older one: a rollback), or "
                                   "move another alias with --alias. /segment serves the new version at once.")
    p.add_argument("version", type=int, metavar="VERSION")
    p.add_argument("--alias", default="production", help="the alias to move (default production)")
    p.set_defaults(func=_promote)

    p = sub.add_parser("compare", parents=[common_flags()], help="two versions side by side, class by class",
                       description="Per-class IoU of V2 against V1 (numbers or aliases) and the delta, the largest "
                                   "drop first, with the promotion policy's verdict on V2 replacing V1. Defaults: V1 "
                                   "production, V2 latest.")
    p.add_argument("a", nargs="?", metavar="V1")
    p.add_argument("b", nargs="?", metavar="V2")
    p.set_defaults(func=_compare)


@client_command
def _versions(args: argparse.Namespace, client) -> int:
    model = need_model(args)
    if args.version is not None:
        detail = client.version(model, args.version)
        if args.json:
            print_json(detail)
            return OK
        _print_version(detail)
        return OK
    versions = client.versions(model)
    if args.json:
        print_json(versions)
        return OK
    print_table(f"model {model}", ("version", "parent", "method", "classes", "old", "new", "all", "aliases", "created"),
                ((v.version, v.parent, v.method, v.num_classes - 1, points(v.miou.old), points(v.miou.new),
                  points(v.miou.all), ", ".join(v.aliases), v.created_at.strftime("%Y-%m-%d %H:%M")) for v in versions))
    return OK


def _print_version(detail: dict) -> None:
    miou = detail["miou"]
    title = (f"model {detail['model']} version {detail['version']} ({detail['method']}, parent {detail['parent']}): "
             f"mIoU old {points(miou['old'])}, new {points(miou['new'])}, all {points(miou['all'])}")
    print_table(title, ("index", "class", "role", "iou", "forgetting"),
                ((c["index"], c["name"], c["role"], points(c["iou"]), signed_points(c["forgetting"]))
                 for c in detail["classes"]))
    promotion = detail.get("promotion") or {}
    if promotion:
        print(f"promotion: {promotion.get('summary')}")


@client_command
def _promote(args: argparse.Namespace, client) -> int:
    moved = client.promote(need_model(args), args.version, alias=args.alias)
    if args.json:
        print_json(moved)
    else:
        before = "was not set" if moved.previous is None else f"was {moved.previous}"
        print(f"{args.model}: {moved.alias} -> version {moved.version} ({before})")
    return OK


@client_command
def _compare(args: argparse.Namespace, client) -> int:
    result = client.compare(need_model(args), args.a, args.b)
    if args.json:
        print_json(result)
        return OK
    va, vb = result.a.version, result.b.version
    print_table(f"model {result.model}: version {vb} against version {va}",
                ("index", "class", f"iou {va}", f"iou {vb}", "delta"),
                ((c.index, c.name, points(c.iou_a) if c.in_a else "(unknown)",
                  points(c.iou_b) if c.in_b else "(unknown)", signed_points(c.delta)) for c in result.classes))
    print(f"verdict: {result.verdict.summary}")
    return OK
