"""`qwen35-prov metrics`: a Prometheus scrape configuration for a deployment, generated from its inventory.

Targets (every address and port comes from the inventory; nothing is guessed at scrape time):
- `qwen35-sglang`: SGLang's own `/metrics` on every replica head's HTTP port (the planner puts `--enable-metrics` in
  every launch; SGLang serves the metrics on the same port as the API);
- `qwen35-node`: the Prometheus node exporter (port 9100) on every node;
- `qwen35-dcgm`: NVIDIA's DCGM exporter (port 9400) on NVIDIA nodes;
- `qwen35-amd-gpu`: AMD's Device Metrics Exporter (port 5000, its documented default) on AMD nodes;
- `qwen35-router`: the SGLang Model Gateway's metrics (port 29000) when the plan has several replicas.

Labels on every target: `cluster`, `node` (inventory hostname), `gpu_kind` (h200, mi300x, ...); on hosts that run one
SGLang server also `replica` and `node_rank`. GPU exporters label their samples per GPU themselves (DCGM: `gpu`,
AMD: `gpu_id`); `metric_relabel_configs` map each (node, GPU index) to the `replica` and `node_rank` that GPU serves,
so hosts running several replicas (small models, one GPU each) are labelled per GPU correctly. The GPU kind is
called `gpu_kind` rather than `gpu` so it never overwrites DCGM's per-GPU `gpu` label.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .cli_options import add_deployment_target
from .deployment import Deployed, resolve
from .errors import UserError

NODE_EXPORTER_PORT = 9100
DCGM_EXPORTER_PORT = 9400
AMD_EXPORTER_PORT = 5000


@dataclass
class Launch:
    replica: int
    node_rank: int
    is_head: bool
    port: int
    gpu_ids: list[int]


@dataclass
class Node:
    name: str
    address: str
    vendor: str
    gpu_kind: str
    launches: list[Launch] = field(default_factory=list)


def read_inventory(inventory: Path) -> tuple[str, list[Node]]:
    cluster, nodes, _ = read_inventory_full(inventory)
    return cluster, nodes


def read_inventory_full(inventory: Path) -> tuple[str, list[Node], dict[str, Any]]:
    """(cluster name, nodes in inventory order, the plan's variables) of an inventory written by
    `qwen35-prov inventory`."""
    deployed = Deployed(inventory)
    nodes = []
    for name, address in deployed.nodes.items():
        hv = deployed.host_vars(name)
        for key in ("qwen35_vendor", "qwen35_gpu_kind", "qwen35_launches"):
            if key not in hv:
                raise UserError(f"{inventory / 'host_vars' / (name + '.yml')}: '{key}' is missing")
        launches = [Launch(int(x["replica"]), int(x["node_rank"]), bool(x["is_head"]), int(x["port"]),
                           [int(g) for g in x.get("gpu_ids", [])]) for x in hv["qwen35_launches"]]
        nodes.append(Node(name, address, hv["qwen35_vendor"], hv["qwen35_gpu_kind"], launches))
    return deployed.cluster, nodes, deployed.plan_vars


def _target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _node_labels(cluster: str, node: Node) -> dict[str, str]:
    labels = {"cluster": cluster, "node": node.name, "gpu_kind": node.gpu_kind}
    if len(node.launches) == 1:
        labels["replica"] = str(node.launches[0].replica)
        labels["node_rank"] = str(node.launches[0].node_rank)
    elif node.launches:
        labels["replicas"] = ",".join(str(x.replica) for x in sorted(node.launches, key=lambda x: x.replica))
    return labels


def _gpu_relabels(nodes: list[Node], gpu_label: str) -> list[dict[str, Any]]:
    """Per-GPU `replica`/`node_rank` from (node, GPU index): one pair of rules per launch."""
    rules: list[dict[str, Any]] = []
    for node in nodes:
        for launch in node.launches:
            if not launch.gpu_ids:
                continue
            regex = f"{node.name};({'|'.join(str(g) for g in launch.gpu_ids)})"
            for target, value in (("replica", launch.replica), ("node_rank", launch.node_rank)):
                rules.append({"source_labels": ["node", gpu_label], "separator": ";", "regex": regex,
                              "target_label": target, "replacement": str(value), "action": "replace"})
    return rules


def scrape_config(cluster: str, nodes: list[Node], *, scrape_interval: str = "15s",
                  node_exporter_port: int = NODE_EXPORTER_PORT, dcgm_port: int = DCGM_EXPORTER_PORT,
                  amd_port: int = AMD_EXPORTER_PORT, router: tuple[str, int] | None = None) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []

    sglang = []
    for node in nodes:
        for launch in node.launches:
            if launch.is_head:
                sglang.append({"targets": [_target(node.address, launch.port)],
                               "labels": {"cluster": cluster, "node": node.name, "gpu_kind": node.gpu_kind,
                                          "replica": str(launch.replica), "node_rank": str(launch.node_rank)}})
    sglang.sort(key=lambda t: int(t["labels"]["replica"]))
    jobs.append({"job_name": "qwen35-sglang", "metrics_path": "/metrics", "scheme": "http",
                 "static_configs": sglang})

    jobs.append({"job_name": "qwen35-node", "static_configs": [
        {"targets": [_target(n.address, node_exporter_port)], "labels": _node_labels(cluster, n)} for n in nodes]})

    for vendor, job, port, gpu_label in (("nvidia", "qwen35-dcgm", dcgm_port, "gpu"),
                                         ("amd", "qwen35-amd-gpu", amd_port, "gpu_id")):
        members = [n for n in nodes if n.vendor == vendor]
        if not members:
            continue
        entry: dict[str, Any] = {"job_name": job, "static_configs": [
            {"targets": [_target(n.address, port)], "labels": _node_labels(cluster, n)} for n in members]}
        relabels = _gpu_relabels(members, gpu_label)
        if relabels:
            entry["metric_relabel_configs"] = relabels
        jobs.append(entry)

    if router is not None:
        jobs.append({"job_name": "qwen35-router", "static_configs": [
            {"targets": [_target(*router)], "labels": {"cluster": cluster, "role": "router"}}]})

    return {"global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                       "external_labels": {"qwen35_cluster": cluster}},
            "scrape_configs": jobs}


def router_target(nodes: list[Node], plan_vars: dict[str, Any], port: int | None) -> tuple[str, int] | None:
    """The gateway's metrics address when the plan has one (its `router`: the node and metrics port; PORT, when
    given, replaces the port; 0 leaves the gateway out)."""
    router = plan_vars.get("qwen35_plan", {}).get("router")
    if not router or port == 0:
        return None
    address = next((n.address for n in nodes if n.name == router["host"]), router["host"])
    return address, int(port or router["metrics_port"])


def render(config: dict[str, Any], command: str) -> str:
    header = (f"# Prometheus scrape configuration generated by qwen35-prov {__version__}; regenerate rather than edit:\n"
              f"#   {command}\n"
              "# Jobs: qwen35-sglang (SGLang /metrics on every replica head, --enable-metrics), qwen35-node (node\n"
              "# exporter on every node), qwen35-dcgm (DCGM exporter, NVIDIA nodes), qwen35-amd-gpu (AMD Device\n"
              "# Metrics Exporter, AMD nodes). Check it with: promtool check config FILE\n")
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def cmd_metrics(args: argparse.Namespace) -> int:
    inventory = resolve(args).inventory
    cluster, nodes, plan_vars = read_inventory_full(inventory)
    for port, flag in ((args.node_exporter_port, "--node-exporter-port"), (args.dcgm_port, "--dcgm-port"),
                       (args.amd_port, "--amd-port"), (args.router_port or 1, "--router-port")):
        if not 0 < port < 65536:
            raise UserError(f"{flag} {port}: not a TCP port")
    config = scrape_config(cluster, nodes, scrape_interval=args.scrape_interval,
                           node_exporter_port=args.node_exporter_port, dcgm_port=args.dcgm_port,
                           amd_port=args.amd_port, router=router_target(nodes, plan_vars, args.router_port))
    target = f"--inventory {args.inventory}" if args.inventory else f"--cluster {args.cluster}"
    text = render(config, f"qwen35-prov metrics {target}" + (f" --out {args.out}" if args.out else ""))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        jobs = {j["job_name"]: sum(len(s["targets"]) for s in j["static_configs"]) for j in config["scrape_configs"]}
        print(f"metrics: wrote {out} ({', '.join(f'{k}: {v} target(s)' for k, v in jobs.items())})")
    else:
        sys.stdout.write(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "metrics", help="write a Prometheus scrape configuration for a deployment",
        description="Generate a Prometheus scrape configuration from the inventory: SGLang's /metrics on every "
                    "replica head, the node exporter on every node, the DCGM exporter on NVIDIA nodes, AMD's "
                    "Device Metrics Exporter on AMD nodes; labels cluster, node, gpu_kind, replica, node_rank.",
        epilog="Examples: qwen35-prov metrics --cluster h200x8 --out prometheus.yml ; "
               "qwen35-prov metrics --inventory inv > scrape.yml")
    add_deployment_target(p)
    p.add_argument("--out", help="write the configuration to FILE (default: print it)")
    p.add_argument("--scrape-interval", default="15s", help="Prometheus scrape interval (default 15s)")
    p.add_argument("--node-exporter-port", type=int, default=NODE_EXPORTER_PORT, help="default 9100")
    p.add_argument("--dcgm-port", type=int, default=DCGM_EXPORTER_PORT, help="NVIDIA DCGM exporter, default 9400")
    p.add_argument("--amd-port", type=int, default=AMD_EXPORTER_PORT,
                   help="AMD Device Metrics Exporter, default 5000")
    p.add_argument("--router-port", type=int, default=None,
                   help="the SGLang Model Gateway's metrics port, scraped on the node the plan puts it on when it "
                        "has several replicas (default: the plan's, 29000; 0 leaves it out)")
    p.set_defaults(func=cmd_metrics)
