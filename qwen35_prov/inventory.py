"""`qwen35-prov inventory`: a fleet + a cluster + plan options -> a readable, deterministic Ansible inventory.

Layout (docs/architecture.md, "Inventory variables"):
  DIR/hosts.yml                              groups and connection variables
  DIR/host_vars/HOST.yml                     the host's launches (argv/env), node rank, replica, NCCL interface
  DIR/group_vars/qwen35_nodes/plan.yml       qwen35_plan (the plan summary)
  DIR/group_vars/qwen35_nodes/drivers.yml    vendor and GPU the driver roles prepare for
  DIR/group_vars/qwen35_nodes/container_runtime.yml
  DIR/group_vars/qwen35_nodes/weights.yml    the checkpoint, its revision, where it lives, its size
  DIR/group_vars/qwen35_nodes/server.yml     the pinned SGLang image and the ports
  DIR/group_vars/qwen35_nodes/zz-standins.yml  a sandbox only: its fleet's stand-in settings (TEST DOUBLES),
                                             over the files above, under what `upgrade` pins (zz-upgrade.yml)
Every file starts with a header naming the command that generated it (no timestamp: the same input gives
byte-identical output). The folder is written next to DIR and swapped in with rename, so DIR is either the
old inventory or the new one, never a mix. Files in DIR the generator did not write are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
import shlex
import shutil
import sys
import textwrap
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from . import __version__, collection
from .catalog import Catalog, load_catalog
from .cli_options import add_plan_options, add_site_vars_option, plan_options_from, print_json
from .errors import UserError
from .fleet import Fleet, Host, Selection, load_fleet, select_hosts
from .nccl import nccl_floor
from .options import PlanOptions
from .plan_output import plan_to_dict
from .planner import Plan, plan


MANIFEST = ".qwen35-prov-inventory.json"
NODE_GROUP, HEAD_GROUP, WORKER_GROUP, ROUTER_GROUP = "qwen35_nodes", "qwen35_heads", "qwen35_workers", "qwen35_router"
VENDOR_GROUPS = {"nvidia": "qwen35_nvidia", "amd": "qwen35_amd"}
REPLICA_GROUP = "qwen35_replica_{}"
GROUP_VARS_FILES = ("plan", "drivers", "container_runtime", "weights", "server")
INVENTORY_SCHEMA_VERSION = 3  # 2: the launch contract's fields; 3: its unit names (docs/architecture.md)
CONTAINER_ENGINE = "docker"
_SAFE = re.compile(r"^[A-Za-z0-9_./~+-]+$")


# --- YAML: block style, flow style for short lists, no anchors ----------------------------------------------

class FlowList(list):
    """A list written on one line: [0, 1, 2]."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # indent list items under their key ("key:\n  - item"), as ansible-lint's yamllint profile expects
        super().increase_indent(flow, False)


_Dumper.add_representer(
    FlowList, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True))


#: the IMEX channels a rack-scale NVLink tray makes and passes into the SGLang container (NCCL uses channel 0)
IMEX_CHANNELS = [0]
#: where a sandbox fleet's stand-in settings go: loaded after the plan's group_vars, before zz-upgrade.yml
STANDINS_FILE = "group_vars/qwen35_nodes/zz-standins.yml"


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=150,
                     allow_unicode=True, explicit_start=True)


# --- the command line recorded in every header --------------------------------------------------------------

_OPTION_FLAGS = (  # PlanOptions field -> how the CLI spells it
    ("model", "--model"), ("precision", "--precision"), ("mtp", "--mtp"),
    ("reasoning_parser", "--reasoning-parser"), ("tool_call_parser", "--tool-call-parser"),
    ("mamba_cache", "--mamba-cache"), ("context_length", "--context-length"),
    ("loader_threads", "--loader-threads"), ("port", "--port"), ("dist_init_port", "--dist-init-port"),
    ("revision", "--revision"), ("weights_dir", "--weights-dir"), ("cuda_ipc_transport", "--cuda-ipc-transport"),
    ("api_key", "--api-key"), ("kv_offload", "--kv-offload"), ("bind", "--bind"), ("router_host", "--router-host"),
)


def command_line(cluster: str, fleet_path: str | Path, out_dir: str | Path, options: PlanOptions,
                 gpus_per_node: int | None = None, weights_dir_given: bool = True) -> str:
    """The canonical `qwen35-prov inventory ...` line for these inputs (options that differ from the defaults)."""
    words = ["qwen35-prov", "inventory", "--cluster", cluster, "--fleet", str(fleet_path), "--out", str(out_dir)]
    defaults = PlanOptions()
    for name, flag in _OPTION_FLAGS:
        value = getattr(options, name)
        if value == getattr(defaults, name) or (name == "weights_dir" and not weights_dir_given):
            continue
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        else:
            words += [flag, str(value)]
    if gpus_per_node is not None:
        words += ["--gpus-per-node", str(gpus_per_node)]
    return shlex.join(words)


def _header(command: str, what: str) -> str:
    """The comment atop every file: who wrote it, the command that regenerates it (a shell line continued with
    backslashes), and what the file holds; no line longer than yamllint's 160 columns."""
    command_lines = textwrap.wrap(command, 100, break_long_words=False, break_on_hyphens=False)
    what_lines = textwrap.wrap(what, 110, break_long_words=False, break_on_hyphens=False)
    return (f"# Generated by qwen35-prov {__version__}; edit the fleet file and regenerate rather than editing:\n"
            + " \\\n".join(f"#   {'' if i == 0 else '  '}{line}" for i, line in enumerate(command_lines)) + "\n"
            + "".join(f"# {line}\n" for line in what_lines))


# --- building the files -------------------------------------------------------------------------------------

def _connection_vars(host: Host) -> dict[str, Any]:
    out: dict[str, Any] = {"ansible_host": host.address, "ansible_port": host.ssh_port}
    if host.ssh_user:
        out["ansible_user"] = host.ssh_user
    if host.ssh_key:
        out["ansible_ssh_private_key_file"] = host.ssh_key
    if host.known_hosts:
        path = host.known_hosts
        out["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={path if _SAFE.match(path) else shlex.quote(path)}"
    return out


def _network_env(host: Host) -> dict[str, str]:
    env = {}
    if host.network_interface:
        env["NCCL_SOCKET_IFNAME"] = host.network_interface
        env["GLOO_SOCKET_IFNAME"] = host.network_interface
    if host.ib_hcas:
        env["NCCL_IB_HCA"] = ",".join(host.ib_hcas)
    return env


def _group(hosts: Sequence[str]) -> dict[str, Any]:
    return {"hosts": {h: {} for h in hosts}}


def build_inventory(selection: Selection, the_plan: Plan, command: str,
                    catalog: Catalog | None = None) -> dict[str, str]:
    """The inventory's files as {relative path: text}. Pure: no I/O."""
    catalog = catalog or load_catalog()
    hosts = selection.hosts
    names = [h.name for h in hosts]
    by_name = {h.name: h for h in hosts}
    gpu = the_plan.cluster.gpu
    summary = plan_to_dict(the_plan)
    summary.pop("nodes")
    for entry in summary["replica_layout"]:
        entry["nodes"], entry["gpu_ids"] = FlowList(entry["nodes"]), FlowList(entry["gpu_ids"])
    launches: dict[str, list] = {n: [] for n in names}
    for node in the_plan.nodes:
        host = by_name[node.node_name]
        launch = node.contract()
        launch["gpu_ids"] = FlowList(launch["gpu_ids"])
        launch["env"] = dict(sorted({**node.env, **_network_env(host)}.items()))
        launches[node.node_name].append(launch)
    idle = [n for n in names if not launches[n]]
    if idle:
        used = len(names) - len(idle)
        raise UserError(f"{selection.name}: the plan ({len(the_plan.replicas)} replica(s) x TP {the_plan.tp} over "
                        f"{the_plan.nodes_per_replica} node(s) each) uses {used} of the {len(names)} nodes, and "
                        f"{', '.join(idle)} would run nothing; deploy on the nodes it uses "
                        f"(--cluster {gpu.id}x{used * selection.spec.gpus_per_node}) or choose a model, precision "
                        f"or --tp that fills every node")
    heads = [n for n in names if any(l["is_head"] for l in launches[n])]
    workers = [n for n in names if n not in heads]
    layout = (f"{the_plan.model.name} {the_plan.precision.upper()} on {selection.name} "
              f"({len(hosts)} x {selection.spec.gpus_per_node} {gpu.id}): {len(the_plan.replicas)} replica(s) "
              f"x TP {the_plan.tp} over {the_plan.nodes_per_replica} node(s) each")

    groups: dict[str, Any] = {NODE_GROUP: {"hosts": {h.name: _connection_vars(h) for h in hosts}},
                              HEAD_GROUP: _group(heads), WORKER_GROUP: _group(workers),
                              ROUTER_GROUP: _group([the_plan.router["host"]] if the_plan.router else [])}
    for vendor, group in VENDOR_GROUPS.items():
        groups[group] = _group(names if gpu.vendor == vendor else [])
    for replica in the_plan.replicas:
        groups[REPLICA_GROUP.format(replica.index)] = _group([the_plan.node_names[i] for i in replica.node_indexes])
    files = {"hosts.yml": _header(command, f"Hosts and groups of {layout}.") + to_yaml({"all": {"children": groups}})}

    for host in hosts:
        mine = launches[host.name]
        data: dict[str, Any] = {
            "qwen35_node_rank": mine[0]["node_rank"],
            "qwen35_replica": mine[0]["replica"],
            "qwen35_is_head": mine[0]["is_head"],
            "qwen35_gpu_kind": host.gpu,
            "qwen35_gpu_count": host.gpu_count,
            "qwen35_vendor": gpu.vendor,
        }
        if host.network_interface:
            data["qwen35_network_interface"] = host.network_interface
        data["qwen35_ib_hcas"] = FlowList(host.ib_hcas)
        if host.labels:
            data["qwen35_labels"] = dict(host.labels)
        head = by_name[the_plan.node_names[the_plan.replicas[mine[0]["replica"]].head]]
        data["qwen35_replica_head_address"] = head.address
        data["qwen35_launches"] = mine
        what = (f"{host.name}: node rank {mine[0]['node_rank']} of replica {mine[0]['replica']}"
                + (f" (+{len(mine) - 1} more replica(s) on this host)" if len(mine) > 1 else "")
                + "; the SGLang command(s) this host runs, unchanged from the plan plus NCCL/GLOO network variables.")
        files[f"host_vars/{host.name}.yml"] = _header(command, what) + to_yaml(data)

    gv = f"group_vars/{NODE_GROUP}"
    files[f"{gv}/plan.yml"] = _header(command, f"The plan: {layout}.") + to_yaml({
        "qwen35_inventory_schema": INVENTORY_SCHEMA_VERSION,
        "qwen35_cluster": selection.name,
        "qwen35_dist_init_port": (the_plan.options.dist_init_port or catalog.recipes.dist_init_port),
        "qwen35_plan": summary,
    })
    files[f"{gv}/drivers.yml"] = _header(
        command, f"The GPUs every node must have and the driver stack for them ({gpu.vendor}).") + to_yaml({
            "qwen35_driver_stack": gpu.vendor,
            "qwen35_gpu_name": gpu.name,
            "qwen35_gpu_memory_mib": gpu.memory_mib,
            "qwen35_gpus_per_node": selection.spec.gpus_per_node,
            # 8-GPU HGX boards of NVSwitch kinds need the fabric manager, pinned to the driver version
            "qwen35_nvswitch": bool(gpu.nvswitch and selection.spec.gpus_per_node == 8),
            "qwen35_nvlink_domain": gpu.nvlink_domain,
            # the CPU architecture every host of this kind has (validate checks it), where the GPU fixes one
            "qwen35_host_architecture": gpu.host_architecture,
            **_imex(the_plan, by_name),
        })
    floor = nccl_floor(gpu.id, the_plan.nodes_per_replica, infiniband=all(h.ib_hcas for h in hosts))
    files[f"{gv}/preflight.yml"] = _header(
        command, "What the NCCL preflight expects of each replica (qwen35_prov/data/nccl_floors.yaml).") + to_yaml({
            "qwen35_nccl_link": floor.link,
            "qwen35_nccl_floor_gbps": floor.floor_gbps,
            "qwen35_nccl_floor_source": floor.source,
        })
    files[f"{gv}/container_runtime.yml"] = _header(
        command, "The container engine that runs the SGLang image.") + to_yaml({
            "container_runtime_engine": CONTAINER_ENGINE,
        })
    files[f"{gv}/weights.yml"] = _header(command, "The checkpoint every node serves and where it lives.") + to_yaml({
        "qwen35_model": the_plan.model.id,
        "qwen35_precision": the_plan.precision,
        "qwen35_model_repo": the_plan.repo,
        "qwen35_model_revision": the_plan.revision,
        "qwen35_model_path": the_plan.model_path,
        "qwen35_weights_dir": the_plan.options.weights_dir,
        "qwen35_weights_gb": the_plan.model.checkpoints[the_plan.precision].weight_gb,
    })
    files[f"{gv}/server.yml"] = _header(command, "The SGLang server: pinned image and ports.") + to_yaml({
        "qwen35_image": the_plan.image,
        "qwen35_sglang_version": the_plan.sglang_version,
        "qwen35_served_model_name": the_plan.repo,
        "qwen35_server_ports": FlowList(sorted({r.port for r in the_plan.replicas})),
        # keyed API: the keys are made on the controller at the first run (playbooks/group_vars/all/secrets.yml),
        # 0600 in the folder beside this inventory, and reach the nodes only as root-only files
        "qwen35_api_key": the_plan.options.api_key,
        "qwen35_secrets_dir": "{{ inventory_dir | dirname }}/secrets",
        **({"sglang_server_imex_channels": FlowList(IMEX_CHANNELS)} if gpu.nvlink_domain else {}),
    })
    return files


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _imex(the_plan: Plan, by_name: dict[str, Any]) -> dict[str, Any]:
    """The IMEX settings of a rack-scale NVLink kind's trays (GB200/GB300 NVL72): the domain is exactly this
    cluster's trays, listed by address in the plan's node order (every tray must list the same addresses)."""
    if not the_plan.cluster.gpu.nvlink_domain:
        return {}
    addresses = [by_name[name].address for name in the_plan.node_names]
    names = [f"{name} ({address})" for name, address in zip(the_plan.node_names, addresses) if not _is_ip(address)]
    if names:
        raise UserError(f"{the_plan.cluster.gpu.id} trays share NVLink through NVIDIA's IMEX service, whose node list "
                        f"takes IP addresses; give these hosts their IP address in the fleet: {', '.join(names)}")
    return {"nvidia_driver_imex": True,
            "nvidia_driver_imex_nodes": addresses,
            "nvidia_driver_imex_channels": FlowList(IMEX_CHANNELS)}


# --- choosing the hosts and planning --------------------------------------------------------------------

def _weights_dir(selection: Selection, options: PlanOptions, weights_dir_given: bool) -> PlanOptions:
    if weights_dir_given:
        return options
    dirs = sorted({h.weights_dir for h in selection.hosts if h.weights_dir})
    if len(dirs) > 1:
        shown = ", ".join(f"{h.name}: {h.weights_dir}" for h in selection.hosts if h.weights_dir)
        raise UserError(f"the hosts of {selection.name} set different weights_dir ({shown}); every node serves "
                        f"the same model path: give them one weights_dir or pass --weights-dir")
    return dataclasses.replace(options, weights_dir=dirs[0]) if dirs else options


def plan_for_fleet(cluster: str, fleet: Fleet, options: PlanOptions, gpus_per_node: int | None = None,
                   weights_dir_given: bool = True, catalog: Catalog | None = None) -> tuple[Selection, Plan]:
    """Pick the cluster's hosts from the fleet and plan on them (host names and addresses bound to nodes)."""
    catalog = catalog or load_catalog()
    selection = select_hosts(fleet, cluster, catalog, gpus_per_node)
    options = _weights_dir(selection, options, weights_dir_given)
    the_plan = plan(selection.spec, options, node_names=[h.name for h in selection.hosts],
                    node_addresses=[h.address for h in selection.hosts],
                    node_weights_on_network=[h.weights_storage == "network" for h in selection.hosts], catalog=catalog)
    if the_plan.nodes_per_replica > 1:
        for replica in the_plan.replicas:
            head = selection.hosts[replica.head]
            if ":" in head.address:
                raise UserError(
                    f"host {head.name} heads a multi-node replica but its address {head.address} is an IPv6 "
                    f"literal; SGLang splits --dist-init-addr HOST:PORT at ':', so give it a host name or an "
                    f"IPv4 address in the fleet")
    return selection, the_plan


# --- writing atomically ---------------------------------------------------------------------------------

def _read_manifest(out: Path) -> list[str] | None:
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return [str(f) for f in data["files"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{out / MANIFEST} is damaged; move {out} away and generate again") from None


def _carry_over(old: Path, new: Path, generated: set[str], previous: set[str]) -> None:
    """Copy (hard-link where possible) what the user put in the old inventory into the new one."""
    for root, dirs, files in os.walk(old):
        rel_root = Path(root).relative_to(old)
        for d in dirs:
            target = new / rel_root / d
            if (old / rel_root / d).is_symlink():
                continue
            target.mkdir(exist_ok=True)
            shutil.copymode(old / rel_root / d, target)
        for f in files + [d for d in dirs if (old / rel_root / d).is_symlink()]:
            rel = (rel_root / f).as_posix()
            if rel == MANIFEST or rel in previous:
                continue
            if rel in generated:
                raise UserError(f"{old / rel} was not written by qwen35-prov but the new inventory needs that "
                                f"path; move it away and run again")
            src, dst = old / rel, new / rel
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            else:
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)


def write_files_atomically(out: Path, files: Mapping[str, str]) -> None:
    """Write `files` as the inventory folder `out`: built beside it, then renamed into place."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    previous = _read_manifest(out) if out.exists() else None
    if out.exists() and previous is None:
        ours = [p for p in ("hosts.yml", "host_vars", "group_vars") if (out / p).exists()]
        if ours:
            raise UserError(f"--out {out} already holds an inventory qwen35-prov did not write ({', '.join(ours)}); "
                            f"choose a new or empty folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (out.stat().st_mode & 0o7777) if out.exists() else 0o777 & ~umask)
        for rel, text in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        (tmp / MANIFEST).write_text(json.dumps({"generator": f"qwen35-prov {__version__}",
                                                "files": sorted(files)}, indent=1) + "\n", encoding="utf-8")
        if not out.exists():
            os.rename(tmp, out)
            return
        _carry_over(out, tmp, set(files), set(previous or ()))
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.rmdir(old)
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# --- site-wide settings ------------------------------------------------------------------------------------

def site_vars_dir(fleet_path: str | Path, given: str | Path | None = None) -> Path | None:
    """Where the site's settings are: --site-vars DIR, else group_vars/ beside the fleet file, else the
    collection's own group_vars/ (in a checkout, the top-level folder an ops team edits)."""
    if given is not None:
        folder = Path(given)
        if not folder.is_dir():
            raise UserError(f"--site-vars {given}: no such folder; give a group_vars-style folder whose all/ "
                            f"(or all.yml) holds the site's settings (see group_vars/all/site.yml)")
        return folder
    beside = Path(fleet_path).resolve().parent / "group_vars"
    if beside.is_dir():
        return beside
    own = collection.root() / "group_vars"
    return own if own.is_dir() else None


def site_files(site: Path | None) -> dict[str, str]:
    """The site's settings as files of the inventory's group_vars/all/ (the lowest precedence of an inventory);
    files that set nothing (only comments) are left out."""
    if site is None:
        return {}
    sources = sorted((site / "all").glob("*.y*ml")) if (site / "all").is_dir() else []
    sources += [path for path in (site / "all.yml", site / "all.yaml") if path.is_file()]
    files = {}
    for path in sources:
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML: {e}") from None
        if data is None:
            continue
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise UserError(f"{path}: site settings must be a mapping of variable names to values")
        files[f"group_vars/all/{path.stem}.yml"] = (f"# Site-wide settings copied by qwen35-prov from {path.resolve()};\n"
                       f"# edit that file and regenerate (qwen35-prov inventory / up). Below the plan's group_vars.\n"
                       + text)
    return files


def generate_inventory(cluster: str, fleet_path: str | Path, out_dir: str | Path,
                       options: PlanOptions | None = None, *, gpus_per_node: int | None = None,
                       weights_dir_given: bool = True, command: str | None = None,
                       catalog: Catalog | None = None,
                       site_vars: str | Path | None = None) -> tuple[Path, Selection, Plan]:
    """write_inventory, also returning the chosen hosts and the plan."""
    catalog = catalog or load_catalog()
    options = options or PlanOptions()
    fleet = load_fleet(fleet_path, catalog)
    out = Path(out_dir)
    if Path(fleet_path).resolve().parent == out.resolve():
        raise UserError(f"--out {out_dir} holds the fleet file: Ansible would read it as an inventory too; "
                        f"write the inventory to a folder of its own (for example {Path(out_dir) / 'inventory'})")
    selection, the_plan = plan_for_fleet(cluster, fleet, options, gpus_per_node, weights_dir_given, catalog)
    if command is None:
        command = command_line(cluster, fleet_path, out_dir, options, gpus_per_node, weights_dir_given)
        if site_vars is not None:
            command += f" --site-vars {shlex.quote(str(site_vars))}"
    files = build_inventory(selection, the_plan, command, catalog)
    files.update(site_files(site_vars_dir(fleet_path, site_vars)))
    if fleet.standins:
        files[STANDINS_FILE] = (f"# The stand-in settings of the sandbox fleet {Path(fleet_path).resolve()}\n"
                                "# (TEST DOUBLES: apt repositories, hub, engine image of `qwen35-prov sandbox create`);\n"
                                "# regenerate, do not edit.\n" + to_yaml(dict(fleet.standins)))
    write_files_atomically(out, files)
    return out, selection, the_plan


def write_inventory(cluster: str, fleet_path: str | Path, out_dir: str | Path, options: PlanOptions | None = None,
                    *, gpus_per_node: int | None = None, weights_dir_given: bool = True,
                    command: str | None = None, catalog: Catalog | None = None,
                    site_vars: str | Path | None = None) -> Path:
    """Load the fleet, pick the hosts, plan, and write the inventory folder. Returns the folder."""
    return generate_inventory(cluster, fleet_path, out_dir, options, gpus_per_node=gpus_per_node,
                              weights_dir_given=weights_dir_given, command=command, catalog=catalog,
                              site_vars=site_vars)[0]


# --- CLI -------------------------------------------------------------------------------------------------

def cmd_inventory(args: argparse.Namespace) -> int:
    weights_dir_given = args.weights_dir is not None
    if not weights_dir_given:
        args.weights_dir = PlanOptions().weights_dir
    options = plan_options_from(args)
    out, selection, the_plan = generate_inventory(args.cluster, args.fleet, args.out, options,
                                                  gpus_per_node=args.gpus_per_node,
                                                  weights_dir_given=weights_dir_given, site_vars=args.site_vars)
    files = sorted(_read_manifest(out) or [])
    if args.json:
        print_json({
            "inventory": str(out), "cluster": selection.name, "fleet": str(args.fleet),
            "hosts": [h.name for h in selection.hosts],
            "heads": [the_plan.node_names[r.head] for r in the_plan.replicas],
            "files": files, "plan": plan_to_dict(the_plan),
        })
    else:
        print(f"wrote {out}/ ({len(files)} files) for {selection.name}: {len(the_plan.replicas)} replica(s) x "
              f"TP {the_plan.tp} on {', '.join(h.name for h in selection.hosts)}")
        for warning in the_plan.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)
        print(f"check it with: ansible-inventory -i {out} --graph ; "
              f"ansible-playbook -i {out} {collection.playbook_ref('validate')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inventory", help="write an Ansible inventory for a cluster of the fleet",
        description="Pick the cluster's hosts from the fleet file (a named cluster of the fleet, or the first "
                    "hosts with the GPU kind and count of <gpu>x<count>), plan the deployment on them and write "
                    "an Ansible inventory: hosts.yml, host_vars/ (each node's SGLang command), group_vars/ "
                    "split by concern. The same input gives byte-identical files.",
        epilog="Example: qwen35-prov inventory --cluster h100x16 --fleet fleet.yml --out inventory")
    p.add_argument("--cluster", required=True, help="a cluster named in the fleet file, or <gpu>x<count>")
    p.add_argument("--fleet", required=True, help="the fleet file (docs/fleet.md)")
    p.add_argument("--out", required=True, help="the inventory folder to write (replaced as a whole)")
    add_plan_options(p)
    add_site_vars_option(p)
    p.set_defaults(weights_dir=None)  # unset: the fleet's weights_dir, else the planner's default
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_inventory)
