"""The planner: cluster + model + precision + options -> replicas, node ranks, memory fit, launch commands."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .catalog import Catalog, Cell, Gpu, Model, RecipeBook, load_catalog
from .cluster import ClusterSpec, parse_cluster
from .errors import UserError
from .launch import NodeLaunch, Replica, launch_for_node, listen_address
from .memory import MemoryFit, memory_fit
from .options import ROUTER_METRICS_PORT, ROUTER_PORT, PlanOptions
from .rules import condition_matches


@dataclass(frozen=True)
class Plan:
    cluster: ClusterSpec
    model: Model
    precision: str
    options: PlanOptions
    repo: str
    revision: str | None
    model_path: str
    image: str
    sglang_version: str
    tp: int
    ep: int | None
    mem_fraction: float | None
    tp_source: str  # "recipe" or "seed-minimum"
    recipe_tp: int
    memory: MemoryFit
    replicas: tuple[Replica, ...]
    nodes: tuple[NodeLaunch, ...]
    node_names: tuple[str, ...]
    idle_gpus: int
    mamba_v2: bool = False
    router: Mapping[str, Any] | None = None   # {host, port, metrics_port} of the gateway; None for one replica
    notes: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())

    @property
    def nodes_per_replica(self) -> int:
        return len(self.replicas[0].node_indexes)


def _checkpoint(model: Model, precision: str, gpu: Gpu):
    if precision not in ("bf16", "fp8", "fp4"):
        raise UserError(f"unknown precision {precision!r}; allowed: bf16, fp8, fp4")
    checkpoint = model.checkpoints.get(precision)
    if checkpoint is None:
        raise UserError(
            f"{model.id} has no {precision.upper()} checkpoint; available: {', '.join(model.checkpoints)}")
    if precision == "fp4" and not gpu.fp4:
        capable = [g for g in load_catalog().gpus.values() if g.fp4]
        raise UserError(
            f"FP4 needs a GPU with FP4 support ({', '.join(g.id for g in capable)}); {gpu.id} has none")
    return checkpoint


def _mamba_v2(recipes: RecipeBook, options: PlanOptions, gpu: Gpu, model: Model) -> bool:
    """The recipes' mamba_cache table: the first entry matching the plan allows some choices and has a default."""
    facts = {"vendor": gpu.vendor, "gpu": gpu.id, "model": model.id, "family": model.family, "moe": model.moe,
             "mtp": options.mtp}
    entry = next(e for e in recipes.mamba_cache if condition_matches(e.when, facts))
    choice = options.mamba_cache or entry.default
    if choice not in entry.allowed:
        raise UserError(entry.refuse.format(choice=choice, model=model.id))
    return choice == "v2"


def _any_of(value) -> str:
    """A condition's value for a message: a list (any of these) as 'a or b'."""
    return " or ".join(map(str, value)) if isinstance(value, list) else str(value)


def _check_offered(recipes, options: PlanOptions, model: Model, precision: str, gpu: Gpu) -> None:
    if options.kv_offload == "disabled":
        return
    cells = recipes.offered.get("kv_offload", ())
    if any(condition_matches(c, {"model": model.id, "precision": precision, "gpu": gpu.id}) for c in cells):
        return
    where = "; ".join(f"{_any_of(c['model'])} {_any_of(c['precision']).upper()} on {_any_of(c['gpu'])}"
                      for c in cells) or "nowhere"
    raise UserError(f"--kv-offload {options.kv_offload}: the recipes offer KV cache offloading only for {where}; "
                    f"{model.id} {precision.upper()} on {gpu.id} keeps it off")


def _choose_tp(cluster: ClusterSpec, model: Model, precision: str, cell: Cell, weights_gb: float,
               assumed_fraction: float) -> tuple[int, str, list[str]]:
    notes: list[str] = []
    gpu = cluster.gpu
    if cell.tp <= cluster.gpu_count:
        return cell.tp, "recipe", notes
    minimum = memory_fit(gpu, weights_gb, cell.min_tp, cell.mem, assumed_fraction)
    if cell.min_tp <= cluster.gpu_count and minimum.fits:
        notes.append(
            f"the recipe uses TP {cell.tp}, more GPUs than {cluster.name} has; using TP {cell.min_tp}, the "
            f"smallest TP whose GPUs hold the weights (the cookbook's hardware table)")
        return cell.min_tp, "seed-minimum", notes
    per_node = min(gpu.gpus_per_node, cell.min_tp)
    smallest = math.ceil(cell.min_tp / per_node) * per_node
    at_cluster = memory_fit(gpu, weights_gb, cluster.gpu_count, cell.mem, assumed_fraction)
    raise UserError(
        f"{cluster.name} cannot host {model.id} {precision.upper()}: {weights_gb:g} GB of weights over "
        f"{cluster.gpu_count} GPU(s) is {at_cluster.weights_per_gpu_gb:.0f} GB per GPU of "
        f"{at_cluster.gpu_memory_gb:.0f} GB; the smallest cluster that works is {gpu.id}x{smallest}")


def _layout(cluster: ClusterSpec, tp: int, base_port: int) -> tuple[list[Replica], int]:
    per_node = cluster.gpus_per_node
    replicas: list[Replica] = []
    if tp > per_node:
        if tp % per_node:
            raise UserError(
                f"TP {tp} cannot be split over nodes of {per_node} GPUs; use --gpus-per-node that divides {tp}")
        nodes_each = tp // per_node
        for r in range(cluster.node_count // nodes_each):
            nodes = tuple(range(r * nodes_each, (r + 1) * nodes_each))
            replicas.append(Replica(index=r, node_indexes=nodes, gpu_ids=tuple(range(per_node)), port=base_port))
    else:
        slots = per_node // tp
        for node in range(cluster.node_count):
            for slot in range(slots):
                replicas.append(Replica(
                    index=len(replicas), node_indexes=(node,),
                    gpu_ids=tuple(range(slot * tp, (slot + 1) * tp)), port=base_port + slot))
    used = sum(len(r.gpu_ids) * len(r.node_indexes) for r in replicas)
    return replicas, cluster.gpu_count - used


def default_node_names(count: int) -> tuple[str, ...]:
    return tuple(f"node{i}" for i in range(count))


def plan(cluster_spec: str | ClusterSpec, options: PlanOptions | None = None, *, gpus_per_node: int | None = None,
         node_names: Sequence[str] | None = None, node_addresses: Sequence[str] | None = None,
         node_weights_on_network: Sequence[bool] | None = None, catalog: Catalog | None = None) -> Plan:
    """Plan a deployment. node_names/node_addresses bind the cluster's node slots to real hosts;
    node_weights_on_network says which of them keep the weights on a network filesystem (the fleet's
    weights_storage)."""
    catalog = catalog or load_catalog()
    options = options or PlanOptions()
    cluster = (cluster_spec if isinstance(cluster_spec, ClusterSpec)
               else parse_cluster(cluster_spec, catalog, gpus_per_node))
    gpu = cluster.gpu
    model = catalog.model(options.model)
    precision = options.precision.lower()
    checkpoint = _checkpoint(model, precision, gpu)
    recipes = catalog.recipes
    cell = recipes.cell(model.id, precision, gpu.id, options.mtp)
    if cell is None:
        supported = sorted(recipes.matrix.get(model.id, {}).get(precision, {}))
        raise UserError(
            f"no recipe for {model.id} {precision.upper()} on {gpu.id}; supported GPUs: {', '.join(supported)}")
    mamba_v2 = _mamba_v2(recipes, options, gpu, model)
    _check_offered(recipes, options, model, precision, gpu)
    tp, tp_source, notes = _choose_tp(cluster, model, precision, cell, checkpoint.weight_gb,
                                      recipes.assumed_mem_fraction_static)
    ep = cell.ep if cell.ep and cell.ep <= tp and tp % cell.ep == 0 else None
    if cell.ep and ep is None:
        notes.append(f"expert parallel size {cell.ep} dropped: it needs TP {cell.ep}, the layout has TP {tp}")
    fit = memory_fit(gpu, checkpoint.weight_gb, tp, cell.mem, recipes.assumed_mem_fraction_static)
    warnings: list[str] = []
    if not fit.fits:
        warnings.append(
            "the memory estimate leaves no room for KV cache; the upstream recipe is verified on this hardware, "
            "but lower --context-length or check the weight size if loading fails")
    elif fit.tight:
        warnings.append("little memory is left for KV cache: expect a small number of concurrent requests")

    replicas, idle = _layout(cluster, tp, options.port)
    if idle:
        notes.append(f"{idle} GPU(s) stay idle: the cluster holds {len(replicas)} replica(s) of TP {tp}")
    names = tuple(node_names) if node_names else default_node_names(cluster.node_count)
    addresses = tuple(node_addresses) if node_addresses else names
    if len(names) != cluster.node_count or len(addresses) != cluster.node_count:
        raise UserError(f"{cluster.name} has {cluster.node_count} node(s); got {len(names)} name(s)")
    router = None
    if len(replicas) > 1:
        host = options.router_host or names[replicas[0].head]
        if host not in names:
            raise UserError(f"--router-host {host!r}: not a node of {cluster.name}; its nodes: {', '.join(names)}")
        address = addresses[names.index(host)]
        # the client port follows the plan's bind; the metrics take no key, so they stay on the fleet address
        router = {"host": host, "port": ROUTER_PORT, "metrics_port": ROUTER_METRICS_PORT,
                  "listen": listen_address(options.bind, address), "metrics_listen": address}
    elif options.router_host:
        raise UserError(f"--router-host {options.router_host}: {cluster.name} holds one replica, so no gateway is "
                        f"deployed (its head's endpoint is the endpoint)")
    revision = options.revision or model.revision
    repo = checkpoint.repo_for(gpu.vendor)
    model_path = f"{options.weights_dir}/{repo}/{revision or 'main'}"
    dist_port = options.dist_init_port or recipes.dist_init_port
    nodes = tuple(
        launch_for_node(
            recipes=recipes, gpu=gpu, model=model, precision=precision, options=options, repo=repo,
            model_path=model_path, tp=tp, ep=ep, mem=cell.mem, mamba_v2=mamba_v2, replica=replica,
            node_rank=rank, node_index=node_index, node_name=names[node_index], node_address=addresses[node_index],
            dist_init_host=addresses[replica.head], dist_init_port=dist_port,
            weights_on_network=bool(node_weights_on_network and node_weights_on_network[node_index]))
        for replica in replicas
        for rank, node_index in enumerate(replica.node_indexes)
    )
    return Plan(
        cluster=cluster, model=model, precision=precision, options=options, repo=repo, revision=revision,
        model_path=model_path, image=recipes.images[gpu.image_family], sglang_version=recipes.sglang_version,
        tp=tp, ep=ep, mem_fraction=cell.mem, tp_source=tp_source, recipe_tp=cell.tp, memory=fit,
        replicas=tuple(replicas), nodes=nodes, node_names=names, idle_gpus=idle, mamba_v2=mamba_v2, router=router,
        notes=tuple(notes), warnings=tuple(warnings),
    )
