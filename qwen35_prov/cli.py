"""The `qwen35-prov` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Sequence

from . import __version__
from .errors import UserError

PROG = "qwen35-prov"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line (what was wrong) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def add_plan_options(p: argparse.ArgumentParser) -> None:
    """The options that shape a plan; shared by every command that plans."""
    from .options import DEFAULT_CONTEXT_LENGTH, MAX_CONTEXT_LENGTH, MIN_CONTEXT_LENGTH

    g = p.add_argument_group("plan options")
    g.add_argument("--model", default="397b", help="model variant: 397b 122b 35b 27b 9b 4b 2b 0.8b (default 397b)")
    g.add_argument("--precision", default="bf16", choices=("bf16", "fp8", "fp4"), help="checkpoint precision (default bf16)")
    g.add_argument("--mtp", action=argparse.BooleanOptionalAction, default=True,
                   help="multi-token prediction (speculative decoding); on by default")
    g.add_argument("--reasoning-parser", action=argparse.BooleanOptionalAction, default=True,
                   help="separate thinking into reasoning_content (qwen3 parser); on by default")
    g.add_argument("--tool-call-parser", action=argparse.BooleanOptionalAction, default=True,
                   help="parse tool calls (qwen3_coder parser); on by default")
    g.add_argument("--mamba-cache", choices=("v1", "v2"),
                   help="mamba radix cache strategy where the recipe lets you pick (NVIDIA, MTP off, MoE models)")
    g.add_argument("--context-length", type=_int, default=DEFAULT_CONTEXT_LENGTH,
                   help=f"context length, {MIN_CONTEXT_LENGTH} to {MAX_CONTEXT_LENGTH} (default {DEFAULT_CONTEXT_LENGTH})")
    g.add_argument("--loader-threads", type=_positive_int, default=64, help="weight-loading threads (default 64)")
    g.add_argument("--port", type=_positive_int, default=30000, help="HTTP port of each replica head (default 30000)")
    g.add_argument("--dist-init-port", type=_positive_int, help="multi-node rendezvous port (default 20000)")
    g.add_argument("--revision", help="hub revision (commit) to deploy instead of the catalog's pin")
    g.add_argument("--weights-dir", default="/var/lib/qwen35-prov/models",
                   help="where weights live on every node (default /var/lib/qwen35-prov/models)")
    g.add_argument("--cuda-ipc-transport", action="store_true",
                   help="set SGLANG_USE_CUDA_IPC_TRANSPORT=1 (faster multimodal TTFT, more memory; NVIDIA)")
    g.add_argument("--bind", choices=("cluster", "all"), default="cluster",
                   help="where SGLang and the gateway listen: cluster = each node's own address from the fleet, "
                        "the one its peers and the gateway use (default); all = every interface (0.0.0.0)")
    g.add_argument("--router-host", metavar="NODE",
                   help="the node the gateway runs on when the cluster holds several replicas (default: the first "
                        "replica head)")
    g.add_argument("--kv-offload", nargs="?", const="hicache", default="disabled", choices=("disabled", "hicache"),
                   help="offload KV cache to host memory (HiCache) where the recipe offers it (397b FP4 on MI355X); "
                        "--kv-offload alone means hicache (default disabled)")
    g.add_argument("--gpus-per-node", type=_positive_int,
                   help="GPUs per node (default: the GPU kind's host size, 8, or 4 for GB200/GB300 compute trays; "
                        "at most the count)")
    g.add_argument("--api-key", action=argparse.BooleanOptionalAction, default=True,
                   help="serve the API with the deployment's key (default; kept 0600 beside the inventory, "
                        "never in a command line). --no-api-key: anyone who reaches a port may use the API")


def plan_options_from(args: argparse.Namespace):
    from .options import PlanOptions

    return PlanOptions(
        model=args.model, precision=args.precision, mtp=args.mtp, reasoning_parser=args.reasoning_parser,
        tool_call_parser=args.tool_call_parser, mamba_cache=args.mamba_cache, context_length=args.context_length,
        loader_threads=args.loader_threads, port=args.port, dist_init_port=args.dist_init_port,
        revision=args.revision, weights_dir=args.weights_dir, cuda_ipc_transport=args.cuda_ipc_transport,
        api_key=args.api_key, kv_offload=args.kv_offload, bind=args.bind, router_host=args.router_host,
    )


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def cmd_catalog(args: argparse.Namespace) -> int:
    from .catalog_output import catalog_to_dict, catalog_to_text

    if args.json:
        print_json(catalog_to_dict(args.section))
    else:
        print(catalog_to_text(args.section))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan_output import plan_to_dict, plan_to_text
    from .planner import plan

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
