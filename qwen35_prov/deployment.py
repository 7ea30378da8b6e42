"""The one reader of a deployment: where its state lives ($QWEN35_STATE_DIR/<cluster>/) and what its generated
inventory says, read once and handed out as data. No other module opens an inventory's hosts.yml, host_vars or
group_vars (the inventory writer and `upgrade`'s pins aside)."""

from __future__ import annotations

import argparse
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .catalog import load_catalog
from .cluster import parse_cluster
from .errors import UserError

NODE_GROUP = "qwen35_nodes"
WEIGHTS_VARS = Path("group_vars") / NODE_GROUP / "weights.yml"   # where `up` locks the model's revision
UPGRADE_PINS = Path("group_vars") / NODE_GROUP / "zz-upgrade.yml"  # what `upgrade` pinned (loaded last: it wins)
# what an upgrade may pin in the inventory
PIN_KEYS = ("qwen35_image", "sglang_image_digest", "sglang_image_archive", "nvidia_driver_version",
            "nvidia_driver_branch")
_REPLICA_GROUP = re.compile(r"^qwen35_replica_(\d+)$")


def state_root() -> Path:
    """Where `up` keeps each deployment: $QWEN35_STATE_DIR, default ./.qwen35-prov."""
    return Path(os.environ.get("QWEN35_STATE_DIR", ".qwen35-prov")).resolve()


def inventory_dir(name: str) -> Path:
    return state_root() / name / "inventory"


def _canonical(cluster: str) -> str:
    """mi300x8 -> mi300xx8; names that are no cluster spec stay as they are (named clusters of a fleet)."""
    try:
        return parse_cluster(cluster, load_catalog()).name
    except UserError:
        return cluster


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class Deployed:
    """A deployment's inventory folder, read lazily, each file once."""

    def __init__(self, inventory: Path, name: str | None = None):
        self.inventory = Path(inventory)
        self.name = name or self.inventory.name

    @property
    def state_dir(self) -> Path:
        return state_root() / self.name

    def _read(self, rel: str, required: bool = True) -> dict[str, Any]:
        path = self.inventory / rel
        try:
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            if required:
                raise UserError(f"{path}: missing (write the inventory with `qwen35-prov inventory`)") from None
            return {}

    # ---- hosts.yml
    @cached_property
    def _groups(self) -> dict[str, Any]:
        return (self._read("hosts.yml").get("all") or {}).get("children") or {}

    def group(self, name: str) -> list[str]:
        return list(((self._groups.get(name) or {}).get("hosts") or {}))

    @cached_property
    def nodes(self) -> dict[str, str]:
        """Every node of the cluster, in inventory order, with the address Ansible reaches it at."""
        hosts = (self._groups.get(NODE_GROUP) or {}).get("hosts")
        if not hosts:
            raise UserError(f"{self.inventory / 'hosts.yml'}: no hosts in group {NODE_GROUP}")
        return {name: str((conn or {}).get("ansible_host", name)) for name, conn in hosts.items()}

    @cached_property
    def replicas(self) -> list[int]:
        found = sorted(int(m.group(1)) for g in self._groups if (m := _REPLICA_GROUP.match(g)))
        if not found:
            raise UserError(f"{self.inventory}: no qwen35_replica_<N> groups in hosts.yml")
        return found

    def replica_hosts(self, replica: int) -> list[str]:
        return self.group(f"qwen35_replica_{replica}")

    # ---- group_vars/qwen35_nodes
    @cached_property
    def plan_vars(self) -> dict[str, Any]:
        return self._read(f"group_vars/{NODE_GROUP}/plan.yml")

    @cached_property
    def plan(self) -> dict[str, Any]:
        plan = self.plan_vars.get("qwen35_plan")
        if not plan:
            raise UserError(f"{self.inventory}: group_vars/{NODE_GROUP}/plan.yml has no qwen35_plan")
        return plan

    @property
    def cluster(self) -> str:
        return str(self.plan_vars.get("qwen35_cluster") or (self.plan_vars.get("qwen35_plan") or {}).get("cluster")
                   or self.name)

    @cached_property
    def keyed(self) -> bool:
        """Whether the deployment serves with an API key (server.yml's qwen35_api_key)."""
        return bool(self._read(f"group_vars/{NODE_GROUP}/server.yml", required=False).get("qwen35_api_key", False))

    @cached_property
    def weights_vars(self) -> dict[str, Any]:
        return self._read(str(WEIGHTS_VARS), required=False)

    # ---- group_vars/qwen35_nodes/zz-upgrade.yml: read fresh each time (pin() changes it)
    @property
    def pins_file(self) -> Path:
        return self.inventory / UPGRADE_PINS

    @property
    def pins(self) -> dict[str, Any]:
        """What earlier upgrades pinned in this inventory ({} when none)."""
        data = self._read(str(UPGRADE_PINS), required=False)
        return {k: v for k, v in data.items() if k in PIN_KEYS}

    def pin(self, values: dict[str, Any]) -> Path:
        """Pin VALUES in the inventory; None removes a key, "" pins an empty value (an image without a digest or
        tarball, over the inventory's). Written whole or not at all."""
        data = {k: v for k, v in {**self.pins, **values}.items() if v is not None}
        path = self.pins_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("---\n# Written by `qwen35-prov upgrade` after every replica (or host) took it; wins over "
                       "server.yml /\n# drivers.yml (loaded after them). Delete this file to go back to what the plan "
                       "pins.\n" + yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        return path

    # ---- host_vars
    def host_vars(self, host: str) -> dict[str, Any]:
        if host not in self._host_vars:
            self._host_vars[host] = self._read(f"host_vars/{host}.yml")
        return self._host_vars[host]

    @cached_property
    def _host_vars(self) -> dict[str, dict[str, Any]]:
        return {}

    def launches(self, host: str) -> list[dict[str, Any]]:
        """The host's launches, each in the launch contract (docs/architecture.md)."""
        return list(self.host_vars(host).get("qwen35_launches") or [])

    def head_launch(self, replica: int) -> tuple[str, dict[str, Any]]:
        """(head host, its launch) of a replica."""
        for host in self.nodes:
            for launch in self.launches(host):
                if launch.get("replica") == replica and launch.get("is_head"):
                    return host, launch
        raise UserError(f"replica {replica}: no head in {self.inventory} (replicas: "
                        f"{', '.join(map(str, self.replicas))})")

    # ---- what the CLI reports
    def endpoints(self) -> list[str]:
        """The gateway's endpoint first when the plan has one (on the node the plan's `router` names), then
        http://HEAD:PORT/v1 of every replica head, in replica order."""
        urls = []
        for host, address in self.nodes.items():
            for launch in self.launches(host):
                if launch["is_head"]:
                    urls.append((launch["replica"], f"http://{url_host(address)}:{launch['port']}/v1"))
        endpoints = [u for _, u in sorted(urls)]
        router = self.plan.get("router")
        if router:
            address = self.nodes.get(router["host"], router["host"])
            endpoints.insert(0, f"http://{url_host(address)}:{router['port']}/v1")
        return endpoints

    def reboot_groups(self) -> list[tuple[list[int], list[str]]]:
        """The replicas that go down together when their hosts reboot (replicas sharing a host merge), in replica
        order: [(replicas, hosts), ...]."""
        merged: list[tuple[set[int], set[str]]] = []
        for replica in self.replicas:
            replicas, hosts = {replica}, set(self.replica_hosts(replica))
            for other in [g for g in merged if g[1] & hosts]:
                merged.remove(other)
                replicas |= other[0]
                hosts |= other[1]
            merged.append((replicas, hosts))
        order = list(self.nodes)
        return [(sorted(r), sorted(h, key=order.index)) for r, h in sorted(merged, key=lambda g: min(g[0]))]


def open_inventory(inventory: Path | str, name: str | None = None) -> Deployed:
    inv = Path(inventory)
    if not (inv / "hosts.yml").exists():
        raise UserError(f"--inventory {inv}: no hosts.yml there (write one with `qwen35-prov inventory`)")
    return Deployed(inv.resolve(), name or inv.resolve().name)


def resolve(args: argparse.Namespace) -> Deployed:
    """The deployment a day-2 command works on: --inventory DIR, or the one `up` wrote for --cluster."""
    if getattr(args, "inventory", None):
        return open_inventory(args.inventory)
    if not getattr(args, "cluster", None):
        known = sorted(p.parent.name for p in state_root().glob("*/inventory/hosts.yml"))
        hint = f"; deployed here: {', '.join(known)}" if known else ""
        raise UserError(f"say which deployment: --cluster C or --inventory DIR{hint}")
    inv = inventory_dir(args.cluster)
    if not (inv / "hosts.yml").exists():
        inv = inventory_dir(_canonical(args.cluster))
    if not (inv / "hosts.yml").exists():
        raise UserError(f"no deployment of {args.cluster} under {state_root()}: run `qwen35-prov up --cluster "
                        f"{args.cluster} ...` first, or pass --inventory DIR")
    return Deployed(inv, inv.parent.name)
