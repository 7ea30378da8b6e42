"""A plan as text for people and as JSON for machines (schema documented in docs/plan-schema.md)."""

from __future__ import annotations

from typing import Any

from .planner import Plan

PLAN_SCHEMA_VERSION = 2  # 2: each node carries the launch contract's fields


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    cluster = plan.cluster
    return {
        "schema_version": PLAN_SCHEMA_VERSION,
        "cluster": cluster.name,
        "gpu": cluster.gpu.id,
        "vendor": cluster.gpu.vendor,
        "gpu_count": cluster.gpu_count,
        "gpus_per_node": cluster.gpus_per_node,
        "node_count": cluster.node_count,
        "model": plan.model.id,
        "model_name": plan.model.name,
        "model_repo": plan.repo,
        "revision": plan.revision,
        "model_path": plan.model_path,
        "precision": plan.precision,
        "sglang_version": plan.sglang_version,
        "image": plan.image,
        "tp_size": plan.tp,
        "ep_size": plan.ep,
        "mem_fraction_static": plan.mem_fraction,
        "tp_source": plan.tp_source,
        "recipe_tp_size": plan.recipe_tp,
        "mtp": plan.options.mtp,
        "mamba_cache": "v2" if plan.mamba_v2 else "v1",
        "kv_offload": plan.options.kv_offload,
        "bind": plan.options.bind,
        "context_length": plan.options.context_length,
        "api_key": plan.options.api_key,
        "replicas": len(plan.replicas),
        "router": None if plan.router is None else dict(plan.router),
        "nodes_per_replica": plan.nodes_per_replica,
        "idle_gpus": plan.idle_gpus,
        "replica_layout": [
            {
                "replica": r.index,
                "nodes": [plan.node_names[i] for i in r.node_indexes],
                "head": plan.node_names[r.head],
                "gpu_ids": list(r.gpu_ids),
                "port": r.port,
            }
            for r in plan.replicas
        ],
        "memory": plan.memory.as_dict(),
        "notes": list(plan.notes),
        "warnings": list(plan.warnings),
        "nodes": [
            {"node": n.node_name, **n.contract(), "rules": list(n.rules)}
            for n in plan.nodes
        ],
    }


def plan_to_text(plan: Plan) -> str:
    c = plan.cluster
    lines = [
        f"{plan.model.name} {plan.precision.upper()} on {c.name} "
        f"({c.node_count} node(s) x {c.gpus_per_node} {c.gpu.name}), SGLang {plan.sglang_version}",
        f"  checkpoint: {plan.repo} @ {plan.revision or 'main (unpinned)'} -> {plan.model_path}",
        f"  image:      {plan.image}",
        f"  layout:     {len(plan.replicas)} replica(s) x TP {plan.tp}"
        + (f", EP {plan.ep}" if plan.ep else "")
        + f" over {plan.nodes_per_replica} node(s) each"
        + (" [recipe]" if plan.tp_source == "recipe" else f" [smallest that fits; recipe TP {plan.recipe_tp}]"),
        f"  memory:     {plan.memory.explain()}",
    ]
    lines += [f"  note:       {n}" for n in plan.notes]
    lines += [f"  WARNING:    {w}" for w in plan.warnings]
    for r in plan.replicas:
        head = plan.node_names[r.head]
        gpus = ",".join(map(str, r.gpu_ids))
        lines.append("")
        lines.append(f"replica {r.index}: head {head}, endpoint http://{head}:{r.port}/v1 (GPUs {gpus} of each node)")
        for n in (n for n in plan.nodes if n.replica == r.index):
            role = "head" if n.is_head else "worker"
            lines.append(f"  # {n.node_name} (node rank {n.node_rank}, {role})")
            lines.append(f"  {n.shell_line()}")
    return "\n".join(lines)
