"""`qwen35-prov sandbox create|destroy|status|image`."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def cmd_create(args: argparse.Namespace) -> int:
    from .nodes import create_sandbox

    result = create_sandbox(args.cluster, name=args.name, gpus_per_node=args.gpus_per_node, progress=_progress)
    sb = result.sandbox
    if args.json:
        _print_json({**sb.to_dict(), "created": result.created})
    else:
        print(f"sandbox {sb.name}: {'created' if result.created else 'already up, nothing changed'}")
        for n in sb.nodes:
            print(f"  {n.name:<28} {n.address:<16} {n.interface or '-'}")
        print(f"fleet: {sb.fleet}")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    from .nodes import destroy, destroy_all

    if args.all == bool(args.cluster):
        raise UserError("sandbox destroy: give --cluster NAME or --all")
    if args.all:
        names = destroy_all(progress=_progress)
        print(f"destroyed {len(names)} sandbox(es){': ' + ', '.join(names) if names else ''}")
    else:
        found = destroy(args.cluster, progress=_progress)
        print(f"sandbox {args.cluster}: {'destroyed' if found else 'nothing to destroy'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .nodes import status, status_text

    sandboxes = status(args.cluster)
    if args.json:
        _print_json([sb.to_dict() for sb in sandboxes])
    else:
        print(status_text(sandboxes))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from .image import ensure_image, image_ref
    from .podman import exists

    if args.check:
        ref = image_ref()
        print(ref)
        return 0 if exists("image", ref) else 1
    print(ensure_image(progress=_progress, force=args.rebuild))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sandbox", help="a cluster of systemd containers standing in for GPU servers (podman)",
        description="Start, list and remove sandbox clusters: systemd containers on their own podman network, "
                    "reachable over SSH, with stand-in (TEST DOUBLE) GPU tools, described by a fleet file.")
    ssub = p.add_subparsers(dest="sandbox_command", metavar="ACTION")
    ssub.required = True

    c = ssub.add_parser("create", help="start the cluster's nodes and write .sandbox/NAME/fleet.yml",
                        description="Build the node image if needed, start one container per node of CLUSTER "
                                    "(q35-NAME-node<i> on network q35-NAME) and write .sandbox/NAME/fleet.yml. "
                                    "Does nothing when the sandbox is already up.",
                        epilog="Example: qwen35-prov sandbox create --cluster h100x16")
    c.add_argument("--cluster", required=True, help="<gpu>x<count>, e.g. h100x16 (2 nodes of 8 GPUs)")
    c.add_argument("--name", help="sandbox name (default: the cluster spec); lets sandboxes of one spec coexist")
    c.add_argument("--gpus-per-node", type=int, help="GPUs per node (default min(8, count))")
    c.add_argument("--json", action="store_true", help="print the sandbox as JSON")
    c.set_defaults(func=cmd_create)

    d = ssub.add_parser("destroy", help="remove a sandbox's containers, network, volumes, keys and folder")
    d.add_argument("--cluster", help="sandbox name (the cluster spec, or the --name given to create)")
    d.add_argument("--all", action="store_true", help="remove every sandbox")
    d.set_defaults(func=cmd_destroy)

    s = ssub.add_parser("status", help="list sandboxes, their nodes, states and addresses")
    s.add_argument("--cluster", help="only this sandbox")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_status)

    i = ssub.add_parser("image", help="build the node image if missing and print its reference")
    i.add_argument("--check", action="store_true", help="only print the reference; exit 1 if it is not built")
    i.add_argument("--rebuild", action="store_true", help="build it even if it exists")
    i.set_defaults(func=cmd_image)
