"""What every command shares: the plan options, the deployment a day-2 command acts on (--cluster | --inventory),
the site settings option and the JSON printer. Commands import these; nothing here imports a command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .catalog import load_catalog
from .options import DEFAULT_CONTEXT_LENGTH, MAX_CONTEXT_LENGTH, MIN_CONTEXT_LENGTH, PlanOptions


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def whole_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def add_plan_options(p: argparse.ArgumentParser) -> None:
    """The options that shape a plan; shared by every command that plans."""
    g = p.add_argument_group("plan options")
    families: dict[str, list[str]] = {}
    for model in load_catalog().models.values():
        families.setdefault(model.family, []).append(model.id)
    models = "; ".join(f"{family}: {' '.join(ids)}" for family, ids in families.items())
    g.add_argument("--model", default="397b",
                   help=f"model variant ({models}; default 397b; `qwen35-prov catalog` shows where each runs)")
    g.add_argument("--precision", default="bf16", choices=("bf16", "fp8", "fp4"), help="checkpoint precision (default bf16)")
    g.add_argument("--mtp", action=argparse.BooleanOptionalAction, default=True,
                   help="multi-token prediction (speculative decoding); on by default")
    g.add_argument("--reasoning-parser", action=argparse.BooleanOptionalAction, default=True,
                   help="separate thinking into reasoning_content (qwen3 parser); on by default")
    g.add_argument("--tool-call-parser", action=argparse.BooleanOptionalAction, default=True,
                   help="parse tool calls (qwen3_coder parser); on by default")
    g.add_argument("--mamba-cache", choices=("v1", "v2"),
                   help="mamba radix cache strategy where the recipe lets you pick (NVIDIA, MTP off, MoE models)")
    g.add_argument("--context-length", type=whole_int, default=DEFAULT_CONTEXT_LENGTH,
                   help=f"context length, {MIN_CONTEXT_LENGTH} to {MAX_CONTEXT_LENGTH} (default {DEFAULT_CONTEXT_LENGTH})")
    g.add_argument("--loader-threads", type=positive_int, default=64, help="weight-loading threads (default 64)")
    g.add_argument("--port", type=positive_int, default=30000, help="HTTP port of each replica head (default 30000)")
    g.add_argument("--dist-init-port", type=positive_int, help="multi-node rendezvous port (default 20000)")
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
    g.add_argument("--gpus-per-node", type=positive_int,
                   help="GPUs per node (default: the GPU kind's host size, 8, or 4 for GB200/GB300 compute trays; "
                        "at most the count)")
    g.add_argument("--api-key", action=argparse.BooleanOptionalAction, default=True,
                   help="serve the API with the deployment's key (default; kept 0600 beside the inventory, "
                        "never in a command line). --no-api-key: anyone who reaches a port may use the API")


def plan_options_from(args: argparse.Namespace) -> PlanOptions:
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


def add_deployment_target(p: argparse.ArgumentParser) -> None:
    """--cluster NAME (what `up` deployed, under the state folder) or --inventory DIR; neither: the only one."""
    target = p.add_mutually_exclusive_group()
    target.add_argument("--cluster", help="the cluster `up` deployed")
    target.add_argument("--inventory", help="an inventory folder written by `qwen35-prov inventory`")


def add_site_vars_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site-vars", metavar="DIR",
                   help="the site-wide settings (mirrors, pins, paths): a group_vars-style folder whose all/ files "
                        "are copied into the inventory's group_vars/all/, below the plan's variables (default: "
                        "group_vars/ beside the fleet file, else the tool's own group_vars/; docs/site-settings.md)")
