"""Filters for playbooks/validate.yml: the inventory's invariants and each host's readiness, as message lists.

Standard library only (and the collection's own GPU-tool parser, plugins/module_utils/gpu_parse.py):
validate.yml runs first, before anything is installed, with whatever Python runs Ansible. Each filter returns a
list of messages, one per broken rule; an empty list means all is well.
"""

from __future__ import annotations

import re

from ansible_collections.qwen35.prov.plugins.module_utils.gpu_parse import (
    AMD_SMI_STATIC_ARGS, NVIDIA_QUERY_ARGS, parse_amd_smi_static, parse_nvidia_query_csv,
)

REQUIRED_GROUPS = ("qwen35_nodes", "qwen35_heads", "qwen35_workers", "qwen35_nvidia", "qwen35_amd", "qwen35_router")
PLAN_KEYS = ("tp_size", "replicas", "gpus_per_node", "node_count", "idle_gpus", "nodes_per_replica", "vendor")
PCI_VENDORS = {"nvidia": "0x10de", "amd": "0x1002"}
#: The launch contract (docs/architecture.md): the fields of every entry of qwen35_launches, as
#: qwen35_prov.launch.NodeLaunch.contract() writes them (tests/test_launch_contract.py keeps the two equal).
INVENTORY_SCHEMA = 3
_UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")
LAUNCH_FIELDS = ("replica", "node_rank", "nnodes", "is_head", "host", "dist_init", "port", "gpu_ids", "served_model_name",
                 "model_path", "reasoning_parser", "tool_call_parser", "argv", "env", "units")


def _get(mapping, key, default=None):
    try:
        value = mapping[key]
    except (KeyError, TypeError):
        return default
    return default if value is None else value


def _flag(argv, name):
    for i, word in enumerate(argv[:-1]):
        if word == name:
            return argv[i + 1]
    return None


def _contract_errors(where, launch, hv, plan, nodes_per_replica):
    """What is wrong with the launch contract's fields of one launch (all of them are present)."""
    errors = []
    if launch["nnodes"] != nodes_per_replica:
        errors.append(f"{where} has nnodes {launch['nnodes']}, the plan has {nodes_per_replica} node(s) "
                      f"per replica")
    address = _get(hv, "ansible_host")
    every = plan.get("bind") == "all"
    if address is not None and launch["host"] != ("0.0.0.0" if every else address):
        errors.append(f"{where} listens on {launch['host']}, the plan binds "
                      f"{'every interface (0.0.0.0)' if every else 'the host address ' + str(address)}")
    if launch["host"] in ("0.0.0.0", "::") and plan.get("api_key") is not True:
        errors.append(f"{where} listens on every interface without an API key (plan with the key, or --bind cluster)")
    dist = launch["dist_init"]
    if nodes_per_replica > 1:
        if not (isinstance(dist, dict) and isinstance(dist.get("host"), str)
                and isinstance(dist.get("port"), int)):
            errors.append(f"{where}: a multi-node launch needs dist_init {{host, port}}, got {dist!r}")
        elif dist["host"] != _get(hv, "qwen35_replica_head_address"):
            errors.append(f"{where}: dist_init host {dist['host']} is not its replica head's address "
                          f"{_get(hv, 'qwen35_replica_head_address')}")
    elif dist is not None:
        errors.append(f"{where}: a one-node launch has no dist_init, got {dist!r}")
    units = launch["units"] if isinstance(launch["units"], dict) else {}
    wanted = {"server": ".service", "target": ".target", "container": "",
              "watch": ".service" if nodes_per_replica > 1 else None}
    for key, suffix in wanted.items():
        name = units.get(key)
        if suffix is None:
            if name is not None:
                errors.append(f"{where}: a one-node replica has no watch unit, got {name!r}")
        elif not (isinstance(name, str) and _UNIT_NAME.match(name) and name.endswith(suffix)):
            what = f"a systemd unit name ending in {suffix}" if suffix else "a container name"
            errors.append(f"{where}: units.{key} is {name!r}, not {what}")
    if "model_repo" in plan and launch["served_model_name"] != plan["model_repo"]:
        errors.append(f"{where} serves {launch['served_model_name']!r}, the plan's model is "
                      f"{plan['model_repo']!r}")
    return errors


def inventory_errors(groups, hostvars):
    """Every broken invariant of a qwen35-prov inventory (docs/architecture.md)."""
    errors = []
    groups = dict(groups or {})
    for group in REQUIRED_GROUPS:
        if group not in groups:
            errors.append(f"inventory group {group} is missing (regenerate the inventory with qwen35-prov inventory)")
    nodes = list(groups.get("qwen35_nodes") or [])
    if not nodes:
        errors.append("inventory group qwen35_nodes has no hosts")
        return errors
    plan = _get(hostvars[nodes[0]], "qwen35_plan")
    if not isinstance(plan, dict):
        errors.append(f"qwen35_plan is not set for {nodes[0]} (group_vars/qwen35_nodes/plan.yml is missing)")
        return errors
    missing = [k for k in PLAN_KEYS if k not in plan]
    if missing:
        errors.append(f"qwen35_plan lacks {', '.join(missing)}")
        return errors
    schema = _get(hostvars[nodes[0]], "qwen35_inventory_schema")
    if schema != INVENTORY_SCHEMA:
        errors.append(f"the inventory is of schema {schema}, this qwen35-prov reads schema {INVENTORY_SCHEMA}: "
                      f"regenerate it with qwen35-prov inventory (or up, which does)")
        return errors
    tp, replicas, per_node = plan["tp_size"], plan["replicas"], plan["gpus_per_node"]
    nodes_per_replica = plan["nodes_per_replica"]

    if len(nodes) != plan["node_count"]:
        errors.append(f"the plan has {plan['node_count']} node(s), group qwen35_nodes has {len(nodes)}: "
                      f"{', '.join(nodes)}")
    router = list(groups.get("qwen35_router") or [])
    planned = (plan.get("router") or {}).get("host")
    if router != ([planned] if planned else []):
        errors.append(f"group qwen35_router holds {router or 'no host'}, the plan puts the gateway on "
                      f"{planned or 'no host (one replica)'}")
    gpu_total = 0
    by_replica = {}
    heads, workers = set(groups.get("qwen35_heads") or []), set(groups.get("qwen35_workers") or [])
    for host in nodes:
        hv = hostvars[host]
        count = _get(hv, "qwen35_gpu_count")
        if not isinstance(count, int) or count < 1:
            errors.append(f"{host}: qwen35_gpu_count is not set to a number of GPUs")
            count = 0
        elif count != per_node:
            errors.append(f"{host}: qwen35_gpu_count is {count}, the plan has {per_node} GPUs per node")
        gpu_total += count
        launches = _get(hv, "qwen35_launches")
        if not isinstance(launches, list) or not launches:
            errors.append(f"{host}: qwen35_launches is missing or empty (host_vars/{host}.yml)")
            continue
        used_gpus, used_ports, is_head = {}, {}, False
        for i, launch in enumerate(launches):
            where = f"{host}: launch {i}"
            if not isinstance(launch, dict):
                errors.append(f"{where} is not a mapping")
                continue
            argv = _get(launch, "argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                errors.append(f"{where} has no argv (a list of strings)")
                argv = []
            if not isinstance(_get(launch, "env", {}), dict):
                errors.append(f"{where}: env is not a mapping")
            missing = [k for k in LAUNCH_FIELDS if k not in launch]
            if missing:
                errors.append(f"{where} lacks {', '.join(missing)} (the launch contract; regenerate the inventory)")
            else:
                errors += _contract_errors(where, launch, hv, plan, nodes_per_replica)
            replica, rank = _get(launch, "replica"), _get(launch, "node_rank")
            if not isinstance(replica, int) or not isinstance(rank, int):
                errors.append(f"{where} lacks replica/node_rank numbers")
                continue
            by_replica.setdefault(replica, []).append((host, rank, bool(_get(launch, "is_head", False))))
            is_head = is_head or bool(_get(launch, "is_head", False))
            if i == 0 and (_get(hv, "qwen35_node_rank") != rank or _get(hv, "qwen35_replica") != replica):
                errors.append(f"{host}: qwen35_node_rank/qwen35_replica ({_get(hv, 'qwen35_node_rank')}/"
                              f"{_get(hv, 'qwen35_replica')}) differ from its first launch ({rank}/{replica})")
            if argv:
                if nodes_per_replica > 1 and _flag(argv, "--node-rank") != str(rank):
                    errors.append(f"{where}: argv says --node-rank {_flag(argv, '--node-rank')}, "
                                  f"the launch has node_rank {rank}")
                if tp > 1 and _flag(argv, "--tp-size") != str(tp):
                    errors.append(f"{where}: argv says --tp-size {_flag(argv, '--tp-size')}, the plan has TP {tp}")
                if _flag(argv, "--port") != str(_get(launch, "port")):
                    errors.append(f"{where}: argv says --port {_flag(argv, '--port')}, the launch has port "
                                  f"{_get(launch, 'port')}")
            gpu_ids = list(_get(launch, "gpu_ids", []) or [])
            outside = [str(g) for g in gpu_ids if count and not (isinstance(g, int) and 0 <= g < count)]
            if outside:
                errors.append(f"{where} uses GPU(s) {', '.join(outside)}, the host has GPUs 0-{count - 1}")
            shared = [str(g) for g in gpu_ids if g in used_gpus]
            if shared:
                errors.append(f"{where} uses GPU(s) {', '.join(shared)}, already used by launch "
                              f"{used_gpus[gpu_ids[[str(g) for g in gpu_ids].index(shared[0])]]}")
            for gpu in gpu_ids:
                used_gpus.setdefault(gpu, i)
            port = _get(launch, "port")
            if port in used_ports:
                errors.append(f"{where} uses port {port}, already used by launch {used_ports[port]}")
            used_ports[port] = i
        if is_head and host not in heads:
            errors.append(f"{host} runs a replica head but is not in group qwen35_heads")
        if not is_head and host not in workers:
            errors.append(f"{host} runs no replica head but is not in group qwen35_workers")
    for host in sorted(heads & workers):
        errors.append(f"{host} is in both qwen35_heads and qwen35_workers")
    for host in sorted((heads | workers) - set(nodes)):
        errors.append(f"{host} is in qwen35_heads/qwen35_workers but not in qwen35_nodes")

    if sorted(by_replica) != list(range(replicas)):
        errors.append(f"the plan has replicas 0-{replicas - 1}, the launches have {sorted(by_replica)}")
    for replica, members in sorted(by_replica.items()):
        ranks = sorted(rank for _, rank, _ in members)
        if ranks != list(range(nodes_per_replica)):
            errors.append(f"replica {replica}: node ranks are {ranks}, expected 0-{nodes_per_replica - 1} "
                          f"once each ({', '.join(f'{h}={r}' for h, r, _ in members)})")
        head_hosts = [h for h, rank, head in members if head]
        if len(head_hosts) != 1:
            errors.append(f"replica {replica}: {len(head_hosts)} heads ({', '.join(head_hosts) or 'none'}), "
                          f"expected exactly one")
        elif not any(head and rank == 0 for _, rank, head in members):
            errors.append(f"replica {replica}: the head {head_hosts[0]} is not node rank 0")

    vendor = plan["vendor"]
    own = f"qwen35_{vendor}"
    other = "qwen35_amd" if vendor == "nvidia" else "qwen35_nvidia"
    for host in nodes:
        if own in groups and host not in groups[own]:
            errors.append(f"{host} is not in group {own} ({vendor} GPUs)")
        if host in (groups.get(other) or []):
            errors.append(f"{host} is in group {other}, the plan's GPUs are {vendor}")
    if gpu_total != tp * replicas + plan["idle_gpus"]:
        errors.append(f"nodes x GPUs per node = {gpu_total}, but TP x replicas + idle = {tp} x {replicas} + "
                      f"{plan['idle_gpus']} = {tp * replicas + plan['idle_gpus']}")
    return errors


# --- on the hosts -----------------------------------------------------------------------------------------

def _kind_matches(kind, name):
    return kind.lower() in re.split(r"[^a-z0-9]+", name.lower())


def _gpus(vendor, stdout):
    """[{index (text), name, memory_mib, mig}] from the vendor tool's output (ParseError, a ValueError, if garbled)."""
    parse = parse_nvidia_query_csv if vendor == "nvidia" else parse_amd_smi_static
    return [{"index": str(g["index"]), "name": g["name"], "memory_mib": g["memory_mib"],
             "mig": (g["mig_mode"] or "").lower() == "enabled"} for g in parse(stdout)["gpus"]]


def gpu_tool_args(vendor):
    """The arguments validate.yml gives the vendor's tool, the ones the parser reads (one field list)."""
    return " ".join(NVIDIA_QUERY_ARGS if vendor == "nvidia" else AMD_SMI_STATIC_ARGS)


def _listeners(stdout):
    """{port: owner command line or ''} from `ss -Hltnp` lines (+ '@@cmd PORT CMDLINE'), or /proc/net/tcp*."""
    ports = {}
    owners = {}
    proc = "@@no-ss" in stdout
    for line in stdout.splitlines():
        if line.startswith("@@cmd "):
            _, port, cmd = (line.split(" ", 2) + ["", ""])[:3]
            if port.isdigit():
                owners[int(port)] = cmd.strip()
            continue
        parts = line.split()
        if proc:
            if len(parts) > 3 and parts[3] == "0A" and ":" in parts[1]:
                ports[int(parts[1].rsplit(":", 1)[1], 16)] = ""
        elif len(parts) >= 4 and parts[0] == "LISTEN":
            port = parts[3].rsplit(":", 1)[-1]
            if port.isdigit():
                ports.setdefault(int(port), "")
    for port, cmd in owners.items():
        if port in ports:
            ports[port] = cmd
    return ports


def host_errors(host, gpu, disk, ports, expect, options=None):
    """One host's problems. gpu: {tool, rc, stdout, pci, architecture (uname -m)}; disk: 'DIR AVAIL PRESENT';
    ports: listener output; expect: {vendor, kind, count, memory_mib, weights_gb, ports: {port: what},
    architecture (the CPU every host of the kind has, or None)}."""
    options = options or {}
    errors = []
    vendor, kind, count = expect["vendor"], expect["kind"], int(expect["count"])
    want = f"{count} x {kind}"
    tool = {"nvidia": "nvidia-smi", "amd": "amd-smi"}[vendor]
    gpus = None
    if gpu.get("rc") == 0 and (gpu.get("stdout") or "").strip():
        try:
            gpus = _gpus(vendor, gpu["stdout"])
        except (ValueError, TypeError, AttributeError) as exc:
            errors.append(f"{host}: cannot read the output of {tool}: {exc}")
    if gpus is not None:
        names = sorted({g["name"] for g in gpus})
        wrong = [g for g in gpus if not _kind_matches(kind, g["name"])]
        if wrong:
            errors.append(f"{host}: the plan needs {want}, {tool} shows {len(gpus)} x {' / '.join(names)}")
        elif len(gpus) != count:
            errors.append(f"{host}: the plan needs {want}, {tool} shows {len(gpus)}")
        tolerance = float(options.get("memory_tolerance", 0.05))
        small = [g for g in gpus if g["memory_mib"] is not None
                 and g["memory_mib"] < (1 - tolerance) * int(expect["memory_mib"])]
        if small and not wrong:
            errors.append(f"{host}: GPU(s) {', '.join(g['index'] for g in small)} have {small[0]['memory_mib']} MiB, "
                          f"a {kind} has {expect['memory_mib']} MiB")
        mig = [g["index"] for g in gpus if g["mig"]]
        if mig and not options.get("allow_mig", False):
            errors.append(f"{host}: MIG mode is enabled on GPU(s) {', '.join(mig)}; SGLang needs whole GPUs")
    elif options.get("require_gpu_tool", False):
        errors.append(f"{host}: {tool} is not installed or failed (rc {gpu.get('rc')}); the GPU driver is missing")
    else:
        pci_vendor = PCI_VENDORS[vendor]
        found = sum(1 for line in (gpu.get("pci") or "").splitlines()
                    if len(line.split()) == 2 and line.split()[0].lower() == pci_vendor
                    and line.split()[1].lower()[:4] in ("0x03", "0x12"))
        if found != count:
            errors.append(f"{host}: the plan needs {want}, the PCI bus shows {found} {vendor} GPU(s) "
                          f"({tool} not installed yet, so the kind is not checked)")

    want_cpu, have_cpu = expect.get("architecture"), (gpu.get("architecture") or "").strip()
    if want_cpu and have_cpu and have_cpu != want_cpu:
        errors.append(f"{host}: {kind} hosts have {want_cpu} CPUs, this host is {have_cpu}")

    parts = (disk or "").split()
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        errors.append(f"{host}: cannot read the free disk space under the weights folder: {disk!r}")
    else:
        where, avail, present = parts[0], int(parts[1]), int(parts[2])
        margin = float(options.get("disk_margin", 1.1))
        need = float(expect["weights_gb"]) * 1e9 * margin
        if avail + present < need:
            errors.append(f"{host}: {avail / 1e9:.0f} GB free under {where}, the weights need "
                          f"{float(expect['weights_gb']) * margin:.0f} GB ({expect['weights_gb']} GB x {margin:g} "
                          f"margin) and {present / 1e9:.0f} GB of them are there already")

    listening = _listeners(ports or "")
    patterns = [p for p in options.get("port_owners", ["sglang"]) if p]
    for port, what in sorted((int(p), w) for p, w in (expect.get("ports") or {}).items()):
        if port not in listening:
            continue
        owner = listening[port]
        if owner and any(p in owner for p in patterns):
            continue  # our own server from an earlier rollout
        errors.append(f"{host}: port {port} ({what}) is in use"
                      + (f" by {owner[:80]!r}" if owner else "") + "; free it or choose another port")
    return errors


class FilterModule:
    def filters(self):
        return {"qwen35_inventory_errors": inventory_errors, "qwen35_host_errors": host_errors,
                "qwen35_gpu_tool_args": gpu_tool_args}
