"""The `qwen35-prov` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from . import __version__
from .catalog_output import catalog_to_dict, catalog_to_text
from .cli_options import add_plan_options, plan_options_from, print_json
from .errors import UserError
from .plan_output import plan_to_dict, plan_to_text
from .planner import plan

PROG = "qwen35-prov"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line (what was wrong) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def cmd_catalog(args: argparse.Namespace) -> int:
    if args.json:
        print_json(catalog_to_dict(args.section))
    else:
        print(catalog_to_text(args.section))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    result = plan(args.cluster, plan_options_from(args), gpus_per_node=args.gpus_per_node)
    if args.json:
        print_json(plan_to_dict(result))
    else:
        print(plan_to_text(result))
    return 0


# Modules that add their own subcommands through register(subparsers), in --help order.
COMMAND_MODULES = ("probe", "inventory", "sandbox.cli", "rollout", "upgrade", "smoke", "bench", "metrics")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Provision GPU servers to serve Qwen3.5 with SGLang: plan layouts, generate inventories, "
                    "roll out with Ansible, validate.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("catalog", help="show the GPU, model and recipe catalogs",
                       description="Show the catalogs the planner works from.")
    p.add_argument("section", nargs="?", choices=("gpus", "models", "recipes"), help="one catalog (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser(
        "plan", help="lay a model out on a cluster and print every node's command",
        description="Plan a Qwen3.5 deployment: replicas, tensor/expert parallel size, node ranks, whether it "
                    "fits in GPU memory and why, and the exact SGLang command every node runs.",
        epilog="Examples: qwen35-prov plan --cluster h100x16 ; qwen35-prov plan --cluster h200x8 --precision fp8 --json")
    p.add_argument("--cluster", required=True, help="<gpu>x<count>, e.g. h100x16, h200x8, b200x4, mi355xx4")
    add_plan_options(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON (docs/plan-schema.md)")
    p.set_defaults(func=cmd_plan)

    for module in COMMAND_MODULES:
        importlib.import_module(f".{module}", __package__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
