"""One node's launch: the recipe's flags in the generator's order plus the deployment flags, and the facts every
consumer reads as fields (the launch contract, docs/architecture.md) instead of parsing the command."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Mapping

from .catalog import Gpu, Model, RecipeBook
from .options import PlanOptions
from .rules import apply_rules

#: systemd names of a replica's units on its nodes: <UNIT_PREFIX>-r<N>.service (and -watch.service on multi-node
#: replicas), <TARGET_PREFIX>-r<N>.target; the container is named as its server unit
UNIT_PREFIX = "qwen35-sglang"
TARGET_PREFIX = "qwen35-replica"


@dataclass(frozen=True)
class Replica:
    """One SGLang server of the layout: its nodes (head first), the GPUs it uses on each, its HTTP port."""

    index: int
    node_indexes: tuple[int, ...]
    gpu_ids: tuple[int, ...]
    port: int

    @property
    def head(self) -> int:
        return self.node_indexes[0]


@dataclass(frozen=True)
class NodeLaunch:
    replica: int
    node_rank: int
    node_index: int
    node_name: str
    is_head: bool
    port: int
    gpu_ids: tuple[int, ...]
    argv: tuple[str, ...]
    env: Mapping[str, str]
    rules: tuple[str, ...]
    nnodes: int
    host: str                            # the address SGLang listens on (--host)
    dist_init: tuple[str, int] | None   # (host, port) of the replica's rendezvous; None for a one-node replica
    served_model_name: str
    model_path: str
    reasoning_parser: str | None
    tool_call_parser: str | None

    @property
    def units(self) -> dict[str, str | None]:
        """Its systemd unit names and container name; `watch` only on multi-node replicas."""
        name = f"{UNIT_PREFIX}-r{self.replica}"
        return {"server": f"{name}.service", "watch": f"{name}-watch.service" if self.nnodes > 1 else None,
                "target": f"{TARGET_PREFIX}-r{self.replica}.target", "container": name}

    def contract(self) -> dict:
        """The launch as the inventory and `plan --json` carry it (LAUNCH_FIELDS, in this order)."""
        return {
            "replica": self.replica, "node_rank": self.node_rank, "nnodes": self.nnodes, "is_head": self.is_head,
            "host": self.host, "dist_init": None if self.dist_init is None else {"host": self.dist_init[0], "port": self.dist_init[1]},
            "port": self.port, "gpu_ids": list(self.gpu_ids), "served_model_name": self.served_model_name,
            "model_path": self.model_path, "reasoning_parser": self.reasoning_parser,
            "tool_call_parser": self.tool_call_parser, "argv": list(self.argv), "env": dict(sorted(self.env.items())),
            "units": self.units,
        }

    def shell_line(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return " ".join(filter(None, [env, shlex.join(self.argv)]))


def listen_address(bind: str, node_address: str) -> str:
    """Where a server of the plan listens: its node's fleet address (bind `cluster`), or every interface (`all`,
    which the planner allows only with the API key). SGLang's --host and the gateway's client port follow it."""
    return node_address if bind == "cluster" else "0.0.0.0"


def launch_for_node(*, recipes: RecipeBook, gpu: Gpu, model: Model, precision: str, options: PlanOptions,
                    repo: str, model_path: str, tp: int, ep: int | None, mem: float | None, mamba_v2: bool,
                    replica: Replica, node_rank: int, node_index: int, node_name: str, node_address: str,
                    dist_init_host: str, dist_init_port: int, weights_on_network: bool = False) -> NodeLaunch:
    nnodes = len(replica.node_indexes)
    parsers = {"reasoning_parser": recipes.parsers["reasoning"] if options.reasoning_parser else None,
               "tool_call_parser": recipes.parsers["tool_call"] if options.tool_call_parser else None}
    facts = {
        "vendor": gpu.vendor, "gpu": gpu.id, "precision": precision, "model": model.id, "family": model.family,
        "moe": model.moe,
        "mtp": options.mtp, "mamba_v2": mamba_v2, "tp_gt_1": tp > 1, "has_ep": ep is not None,
        "has_mem": mem is not None, "multinode": nnodes > 1,
        "reasoning_parser": options.reasoning_parser, "tool_call_parser": options.tool_call_parser,
        "kv_offload": options.kv_offload,
    }
    values = {"tp": tp, "ep": ep, "mem": mem, "nnodes": nnodes, "node_rank": node_rank,
              "dist_init_addr": f"{dist_init_host}:{dist_init_port}", **parsers}
    recipe_flags, env, applied = apply_rules(recipes.rules, facts, values)
    host = listen_address(options.bind, node_address)
    deployment_facts = {
        **facts, "loader_threads_default": options.loader_threads == recipes.default_loader_threads,
        "mm_attention_backend": gpu.mm_attention_backend is not None, "base_gpu_id": replica.gpu_ids[0] > 0,
        "cuda_ipc_transport": options.cuda_ipc_transport, "weights_on_network": weights_on_network,
    }
    deployment_values = {
        "context_length": options.context_length, "watchdog_timeout": options.watchdog_timeout, "host": host,
        "port": replica.port, "base_gpu_id": replica.gpu_ids[0], "mm_attention_backend": gpu.mm_attention_backend,
        "loader_config": json.dumps({"enable_multithread_load": "true", "num_threads": options.loader_threads},
                                    separators=(",", ":")),
    }
    deployment_flags, deployment_env, _ = apply_rules(recipes.deployment_rules, deployment_facts, deployment_values)
    argv = [*recipes.entrypoint, "--model-path", model_path, "--served-model-name", repo, *recipe_flags,
            *deployment_flags]
    env.update(deployment_env)
    return NodeLaunch(
        replica=replica.index, node_rank=node_rank, node_index=node_index, node_name=node_name,
        is_head=node_rank == 0, port=replica.port, gpu_ids=replica.gpu_ids, argv=tuple(argv), env=env,
        rules=tuple(applied), nnodes=nnodes, host=host, dist_init=(dist_init_host, dist_init_port) if nnodes > 1 else None,
        served_model_name=repo, model_path=model_path, **parsers)
