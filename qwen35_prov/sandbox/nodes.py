"""Sandbox clusters: systemd containers on their own podman network, reachable over SSH, described by a fleet file.

Objects of the sandbox NAME (the cluster spec by default, e.g. h100x16):
  network    q35-NAME
  containers q35-NAME-node0 .. q35-NAME-node<N-1>   (hostname = container name, systemd as PID 1, --privileged)
  volumes    q35-NAME-node<i>-docker                 (at /var/lib/docker inside the node)
  files      .sandbox/NAME/{id_ed25519,id_ed25519.pub,known_hosts,fleet.yml}
All podman objects carry the label qwen35.sandbox=NAME, which is how status and destroy find them.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..catalog import load_catalog
from ..cluster import ClusterSpec, parse_cluster
from ..errors import UserError
from .image import ensure_image
from .names import network_name, node_name, sandbox_root
from .podman import LABEL, PREFIX, REPO_ROOT, exec_in, exists, podman, podman_json, require_podman
from .services import start_services, stop_services

CLUSTER_LABEL = "qwen35.cluster"
NODE_LABEL = "qwen35.node"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
DOUBLES_DIR = REPO_ROOT / "tests" / "doubles"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
#: Where the GPU test doubles find their configuration and captured outputs inside a node.
DOUBLES_CONFIG = "/etc/qwen35-test-doubles/gpus.json"
DOUBLES_FIXTURES = "/usr/local/share/qwen35-test-doubles/fixtures"
DOUBLES_BY_VENDOR = {"nvidia": ("nvidia-smi",), "amd": ("amd-smi", "rocm-smi")}
BOOT_TIMEOUT_S = 90
SSH_TIMEOUT_S = 60

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Node:
    name: str
    state: str
    address: str | None = None
    interface: str | None = None


@dataclass
class Sandbox:
    name: str
    cluster: str | None
    dir: str
    fleet: str | None
    network: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(n.state == "running" for n in self.nodes)

    def to_dict(self) -> dict:
        return asdict(self)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(f"sandbox name {name!r}: use 1-40 of a-z, 0-9 and '-', starting with a letter or digit")
    return name


# ---------------------------------------------------------------------------------------------- status

def _containers(name: str | None = None) -> list[dict]:
    label = f"{LABEL}={name}" if name else LABEL
    return podman_json(["ps", "-a", "--filter", f"label={label}", "--format", "json"])


def _inspect_node(container: str, network: str) -> tuple[str | None, str | None]:
    """(IP address on the sandbox network, interface name inside the node) of a running node."""
    data = podman_json(["inspect", "--type", "container", container])
    nets = (data[0].get("NetworkSettings") or {}).get("Networks") or {} if data else {}
    address = (nets.get(network) or {}).get("IPAddress") or None
    interface = None
    if address:
        proc = exec_in(container, ["ip", "-o", "-4", "addr", "show"], check=False, timeout=20)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[3].split("/")[0] == address:
                interface = parts[1].split("@")[0]
    return address, interface


def nodes_without_reboot(name: str) -> list[str]:
    """The sandbox's nodes that would not come back from a reboot (created without a restart policy)."""
    names = [(c.get("Names") or [""])[0] for c in _containers(name)]
    data = podman_json(["inspect", "--type", "container", *names]) if names else []
    return sorted(d.get("Name", "?").lstrip("/") for d in data
                  if ((d.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") != "always")


def _node_index(container: dict) -> int:
    labels = container.get("Labels") or {}
    try:
        return int(labels.get(NODE_LABEL, 0))
    except ValueError:
        return 0


def status(name: str | None = None) -> list[Sandbox]:
    """Every sandbox (or one) with its nodes, their state, addresses and interfaces."""
    require_podman()
    groups: dict[str, list[dict]] = {}
    for c in _containers(name):
        groups.setdefault((c.get("Labels") or {}).get(LABEL, "?"), []).append(c)
    root = sandbox_root()
    if name is None and root.is_dir():  # folders left without containers show up too
        for d in root.iterdir():
            if d.is_dir() and not d.name.startswith(".") and _NAME.match(d.name):
                groups.setdefault(d.name, [])
    elif name is not None and (root / name).is_dir():
        groups.setdefault(name, [])
    result = []
    for sb_name in sorted(groups):
        containers = sorted(groups[sb_name], key=_node_index)
        cluster = next(((c.get("Labels") or {}).get(CLUSTER_LABEL) for c in containers), None)
        fleet = root / sb_name / "fleet.yml"
        sb = Sandbox(name=sb_name, cluster=cluster, dir=str(root / sb_name),
                     fleet=str(fleet) if fleet.is_file() else None, network=network_name(sb_name))
        for c in containers:
            cname = (c.get("Names") or ["?"])[0]
            state = c.get("State", "unknown")
            address = interface = None
            if state == "running":
                address, interface = _inspect_node(cname, sb.network)
            sb.nodes.append(Node(name=cname, state=state, address=address, interface=interface))
        result.append(sb)
    return result


def status_text(sandboxes: list[Sandbox]) -> str:
    if not sandboxes:
        return "no sandboxes"
    lines = []
    for sb in sandboxes:
        head = f"{sb.name}" + (f" (cluster {sb.cluster})" if sb.cluster and sb.cluster != sb.name else "")
        lines.append(f"{head}: network {sb.network}, fleet {sb.fleet or '(none)'}")
        if not sb.nodes:
            lines.append("  (no containers)")
        for n in sb.nodes:
            lines.append(f"  {n.name:<28} {n.state:<10} {n.address or '-':<16} {n.interface or '-'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- destroy

def destroy(name: str, progress: Progress = _quiet) -> bool:
    """Remove the sandbox's containers, volumes, network, keys and folder. True if anything was there."""
    check_name(name)
    require_podman()
    found = False
    containers = [(c.get("Names") or [""])[0] for c in _containers(name)]
    by_name = podman_json(["ps", "-a", "--filter", f"name=^{re.escape(PREFIX + name)}-node[0-9]+$", "--format", "json"])
    containers += [n for c in by_name for n in (c.get("Names") or [])[:1] if n not in containers]
    if containers:
        found = True
        progress(f"removing containers {' '.join(containers)}")
        podman(["rm", "-f", "-v", "-t", "3", *containers], timeout=180)
    volumes = [v["Name"] for v in podman_json(["volume", "ls", "--filter", f"label={LABEL}={name}", "--format", "json"])]
    if volumes:
        found = True
        progress(f"removing volumes {' '.join(volumes)}")
        podman(["volume", "rm", "-f", *volumes])
    net = network_name(name)
    if exists("network", net):
        found = True
        progress(f"removing network {net}")
        podman(["network", "rm", "-f", net])
    folder = sandbox_root() / name
    if folder.exists():
        stopped = stop_services(name)
        if stopped:
            progress(f"stopping the stand-in services {' '.join(stopped)}")
        found = True
        progress(f"removing {folder}")
        shutil.rmtree(folder)
    return found


def destroy_all(progress: Progress = _quiet) -> list[str]:
    """Destroy every sandbox (anything labelled qwen35.sandbox, and every folder under .sandbox/)."""
    names = [sb.name for sb in status()]
    for vol in podman_json(["volume", "ls", "--filter", f"label={LABEL}", "--format", "json"]):
        label = (vol.get("Labels") or vol.get("labels") or {}).get(LABEL)
        if label and label not in names:
            names.append(label)
    for net in podman_json(["network", "ls", "--filter", f"label={LABEL}", "--format", "json"]):
        label = (net.get("labels") or net.get("Labels") or {}).get(LABEL)
        if label and label not in names:
            names.append(label)
    for name in names:
        destroy(name, progress)
    return names


# ---------------------------------------------------------------------------------------------- create

def _write_keypair(folder: Path, comment: str) -> str:
    """An ed25519 key pair in OpenSSH format; returns the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}\n"
    priv_path = folder / "id_ed25519"
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    (folder / "id_ed25519.pub").write_text(line)
    return line


def _wait_booted(container: str, deadline: float) -> str:
    state = ""
    while time.monotonic() < deadline:
        proc = exec_in(container, ["systemctl", "is-system-running"], check=False, timeout=20)
        state = proc.stdout.strip()
        if state in ("running", "degraded"):
            hostkey = exec_in(container, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"], check=False, timeout=20)
            if hostkey.returncode == 0 and hostkey.stdout.strip():
                return state
        time.sleep(0.5)
    raise UserError(f"node {container} did not finish booting within {BOOT_TIMEOUT_S} s "
                    f"(systemctl is-system-running: {state or 'no answer'})")


def _ssh_banner(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def ssh_argv(folder: Path, address: str, *command: str) -> list[str]:
    """An OpenSSH command line reaching a sandbox node as root with the sandbox's key and known_hosts."""
    return ["ssh", "-i", str(folder / "id_ed25519"), "-o", f"UserKnownHostsFile={folder / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "IdentitiesOnly=yes", f"root@{address}", *command]


def _wait_ssh(folder: Path, node: Node, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        if _ssh_banner(node.address):
            if shutil.which("ssh") is None:
                return  # sshd answers; the OpenSSH client is not installed to log in end to end
            proc = subprocess.run(ssh_argv(folder, node.address, "true"), capture_output=True, text=True, timeout=30)
            if proc.returncode == 0:
                return
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        time.sleep(0.5)
    raise UserError(f"node {node.name} ({node.address}) did not answer SSH within {SSH_TIMEOUT_S} s ({last or 'no banner'})")


def _tar(entries: list[tuple[str, bytes | Path, int]]) -> bytes:
    """A tar (root-owned) of (path inside the node, content or host file/folder, mode) entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_bytes(path: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, 0, 0, int(time.time())
            tar.addfile(info, io.BytesIO(data))

        for path, content, mode in entries:
            if isinstance(content, Path) and content.is_dir():
                for f in sorted(content.rglob("*")):
                    if f.is_file():
                        add_bytes(f"{path}/{f.relative_to(content)}", f.read_bytes(), mode)
            else:
                add_bytes(path, content.read_bytes() if isinstance(content, Path) else content, mode)
    return buf.getvalue()


def doubles_config(spec: ClusterSpec) -> dict:
    """What the GPU test doubles of one node pretend to hold: the cluster's GPU kind (catalog) x GPUs per node."""
    return {"gpu": spec.gpu.id, "vendor": spec.gpu.vendor, "name": spec.gpu.name,
            "memory_mib": spec.gpu.memory_mib, "architecture": spec.gpu.architecture,
            "count": spec.gpus_per_node, "note": "TEST DOUBLE configuration written by qwen35-prov sandbox"}


def _doubles_entries(spec: ClusterSpec) -> list[tuple[str, bytes | Path, int]]:
    """The GPU test doubles for the cluster's vendor (sandbox only, never installed by a role)."""
    tools = DOUBLES_BY_VENDOR[spec.gpu.vendor]
    missing = [t for t in tools if not (DOUBLES_DIR / t).is_file()]
    if missing or not FIXTURES_DIR.is_dir():
        raise UserError(f"the GPU test doubles are missing under {DOUBLES_DIR} / {FIXTURES_DIR}: "
                        "the sandbox needs the repository checkout")
    config = doubles_config(spec)
    entries: list[tuple[str, bytes | Path, int]] = [
        (f"/usr/local/bin/{t}", DOUBLES_DIR / t, 0o755) for t in tools]
    entries.append((DOUBLES_CONFIG, (json.dumps(config, indent=2) + "\n").encode(), 0o644))
    entries.append((f"{DOUBLES_FIXTURES}/gpu", FIXTURES_DIR / "gpu", 0o644))
    return entries


def _fleet_doc(name: str, spec: ClusterSpec, folder: Path, nodes: list[Node]) -> dict:
    return {
        "defaults": {
            "ssh_user": "root",
            "ssh_port": 22,
            "ssh_key": str(folder / "id_ed25519"),
            "known_hosts": str(folder / "known_hosts"),
        },
        "hosts": [
            {"name": n.name, "address": n.address, "gpu": spec.gpu.id, "gpu_count": spec.gpus_per_node,
             "network_interface": n.interface, "labels": {"sandbox": name, "node": i}}
            for i, n in enumerate(nodes)
        ],
        "clusters": {name: {"hosts": [n.name for n in nodes]}},
    }


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class CreateResult:
    sandbox: Sandbox
    created: bool


def create_sandbox(cluster: str, *, name: str | None = None, gpus_per_node: int | None = None,
                   progress: Progress = _quiet) -> CreateResult:
    """Start the cluster's node containers and write .sandbox/NAME/fleet.yml; see create()."""
    spec = parse_cluster(cluster, load_catalog(), gpus_per_node)
    name = check_name(name or spec.name)
    require_podman()
    existing = status(name)
    if existing and existing[0].nodes:
        sb = _check_existing(existing[0], spec, progress)
        _record_standins(sb, progress)
        return CreateResult(sb, created=False)
    # leftovers without any container (a network, volumes, a folder) hold nothing worth keeping
    destroy(name, progress)

    folder = sandbox_root() / name
    image = ensure_image(progress)
    started = time.monotonic()
    try:
        sb = _create(name, spec, image, folder, progress, started)
        _record_standins(sb, progress)
        return CreateResult(sb, created=True)
    except BaseException:
        progress(f"create failed: removing what was made for sandbox {name}")
        try:
            destroy(name)
        except Exception as exc:  # keep the original error; say what is left
            progress(f"cleanup failed too ({exc}); run qwen35-prov sandbox destroy --cluster {name}")
        raise


def _record_standins(sb: Sandbox, progress: Progress) -> None:
    """Start the sandbox's stand-in services (TEST DOUBLES) and write the settings that point the roles at them
    into its fleet file (`standins:`), which every inventory of the sandbox then carries."""
    settings = start_services(sb.name, progress)
    path = Path(sb.fleet)
    text = path.read_text()
    doc = yaml.safe_load(text)
    if doc.get("standins") == settings:
        return
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    doc["standins"] = settings
    _write_atomic(path, header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def create(cluster: str, *, name: str | None = None, gpus_per_node: int | None = None,
           progress: Progress = _quiet) -> Path:
    """Create (or find healthy) the sandbox for CLUSTER; return the path of its fleet.yml."""
    result = create_sandbox(cluster, name=name, gpus_per_node=gpus_per_node, progress=progress)
    return Path(result.sandbox.fleet)


def _check_existing(sb: Sandbox, spec: ClusterSpec, progress: Progress) -> Sandbox:
    fix = f"run qwen35-prov sandbox destroy --cluster {sb.name}, then create it again"
    if sb.cluster and sb.cluster != spec.name:
        raise UserError(f"sandbox {sb.name} exists for cluster {sb.cluster}, not {spec.name}; {fix}")
    if len(sb.nodes) != spec.node_count or not sb.running:
        states = ", ".join(f"{n.name} {n.state}" for n in sb.nodes) or "no containers"
        raise UserError(f"sandbox {sb.name} exists but is not healthy ({states}); {fix}")
    if not sb.fleet:
        raise UserError(f"sandbox {sb.name} has no fleet file; {fix}")
    for node in sb.nodes:
        if not node.address or not _ssh_banner(node.address):
            raise UserError(f"sandbox {sb.name}: node {node.name} does not answer SSH; {fix}")
    fleet = yaml.safe_load(Path(sb.fleet).read_text())
    recorded = {h["name"]: h.get("address") for h in fleet.get("hosts", [])}
    if recorded != {n.name: n.address for n in sb.nodes}:
        raise UserError(f"sandbox {sb.name}: {sb.fleet} no longer matches the nodes' addresses; {fix}")
    progress(f"sandbox {sb.name} is already up ({len(sb.nodes)} nodes); nothing changed; fleet: {sb.fleet}")
    return sb


def _node_addresses(network: str, count: int) -> list[str]:
    """COUNT addresses of the network's first subnet for the nodes, from .10 on (the gateway keeps .1)."""
    subnets = (podman_json(["network", "inspect", network])[0].get("subnets") or [])
    if not subnets:
        raise UserError(f"podman network {network} has no subnet to place the nodes in")
    subnet = ipaddress.ip_network(subnets[0]["subnet"])
    if subnet.num_addresses < count + 12:
        raise UserError(f"podman network {network}: subnet {subnet} is too small for {count} nodes")
    return [str(subnet.network_address + 10 + i) for i in range(count)]


def _create(name: str, spec: ClusterSpec, image: str, folder: Path, progress: Progress, started: float) -> Sandbox:
    net = network_name(name)
    labels = ["--label", f"{LABEL}={name}", "--label", f"{CLUSTER_LABEL}={spec.name}"]
    folder.mkdir(parents=True, mode=0o700)
    pubkey = _write_keypair(folder, f"qwen35-sandbox-{name}")

    progress(f"creating network {net}")
    podman(["network", "create", *labels, net])
    names = [node_name(name, i) for i in range(spec.node_count)]
    addresses = _node_addresses(net, len(names))
    for i, cname in enumerate(names):
        progress(f"starting {cname}")
        volume = f"{cname}-docker"
        podman(["volume", "create", *labels, volume])
        # --restart=always: a reboot inside the node (the driver roles' handlers) ends its init, and podman
        # starts the container again with the same address, as a machine comes back from a reboot
        # fixed addresses, and every other node's name in /etc/hosts (podman writes it again at each start),
        # so nodes reach each other by name whatever DNS the podman network backend offers
        peers = [f"--add-host={other}:{addresses[j]}" for j, other in enumerate(names) if j != i]
        podman(["create", "--name", cname, "--hostname", cname, "--network", net, "--ip", addresses[i], *peers,
                "--privileged", "--systemd=always", "--restart=always", "-v", f"{volume}:/var/lib/docker", *labels,
                "--label", f"{NODE_LABEL}={i}", image])
        # a random machine-id per node, written before the first boot
        with tempfile.NamedTemporaryFile("w", delete=False) as fh:
            fh.write(uuid.uuid4().hex + "\n")
        try:
            podman(["cp", fh.name, f"{cname}:/etc/machine-id"])
        finally:
            os.unlink(fh.name)
        podman(["start", cname])

    deadline = time.monotonic() + BOOT_TIMEOUT_S
    nodes: list[Node] = []
    hostkeys: dict[str, str] = {}
    for cname in names:
        _wait_booted(cname, deadline)
        address, interface = _inspect_node(cname, net)
        if not address:
            raise UserError(f"node {cname} has no address on network {net}")
        nodes.append(Node(name=cname, state="running", address=address, interface=interface))
        key = exec_in(cname, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()
        hostkeys[cname] = f"{key[0]} {key[1]}"
    progress(f"nodes booted in {time.monotonic() - started:.0f} s: "
             + ", ".join(f"{n.name} {n.address}" for n in nodes))

    host_known = "".join(f"{n.address} {hostkeys[n.name]}\n" for n in nodes)
    node_known = "".join(f"{n.name},{n.address} {hostkeys[n.name]}\n" for n in nodes)
    private = (folder / "id_ed25519").read_bytes()
    _write_atomic(folder / "known_hosts", host_known)
    common = [
        ("/root/.ssh/authorized_keys", pubkey.encode(), 0o600),
        ("/root/.ssh/id_ed25519", private, 0o600),
        ("/root/.ssh/id_ed25519.pub", pubkey.encode(), 0o644),
        ("/root/.ssh/known_hosts", node_known.encode(), 0o644),
        *_doubles_entries(spec),
    ]
    payload = _tar(common)
    for n in nodes:
        exec_in(n.name, ["tar", "-x", "--no-same-owner", "-C", "/"], input=payload)  # type: ignore[arg-type]
        exec_in(n.name, ["chmod", "700", "/root/.ssh"])
    deadline = time.monotonic() + SSH_TIMEOUT_S
    for n in nodes:
        _wait_ssh(folder, n, deadline)

    fleet_path = folder / "fleet.yml"
    header = (f"# Sandbox fleet written by `qwen35-prov sandbox create --cluster {spec.name}`"
              + (f" --name {name}" if name != spec.name else "") + ".\n"
              f"# {spec.node_count} podman systemd containers on network {net}; GPUs are TEST DOUBLES.\n"
              f"# Remove with `qwen35-prov sandbox destroy --cluster {name}`. `standins:` points the roles at the\n"
              f"# sandbox's stand-in services (TEST DOUBLES: apt, hub, engine image); never copy it into a real fleet.\n")
    doc = _fleet_doc(name, spec, folder, nodes)
    _write_atomic(fleet_path, header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    progress(f"sandbox {name} up in {time.monotonic() - started:.0f} s; fleet: {fleet_path}")
    return Sandbox(name=name, cluster=spec.name, dir=str(folder), fleet=str(fleet_path), network=net, nodes=nodes)
