"""What a sandbox cluster uses in place of the vendors' repositories, the image registry and the hub.

Every service here is a TEST DOUBLE from the repository's tests/ folder, started for the sandbox only:
  - the stand-in apt repositories (tests/apt_standins/build_repo.py), served over HTTP;
  - the local hub (tests/hub), serving a small generated checkpoint under the planned repository's name;
  - the stand-in inference engine image (tests/doubles/sglang_standin/build.py) as a docker-archive tarball.
They listen on the sandbox network's gateway (the host as the nodes see it) and stop by themselves after
SERVICE_LIFETIME seconds, or when the sandbox is destroyed (stop_services).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from .names import network_name, sandbox_root
from .podman import REPO_ROOT, podman

SERVICE_LIFETIME = 4 * 3600
APT_PORT, HUB_PORT = 8765, 8766  # on the sandbox network's gateway: fixed, so the fleet's settings stay true
HUB_TOKEN = "hf_qwen35_sandbox_TEST_DOUBLE_not_a_secret"
HUB_CHECKPOINT_MB = 8
HUGGINGFACE_HUB_VERSION = "2.4.0"
ROUTER_PACKAGE, ROUTER_VERSION = "smg", "1.13.0"  # roles/sglang_router/defaults/main.yml
DOCKER_IN_NODE = {"exec-opts": ["native.cgroupdriver=systemd"], "default-cgroupns-mode": "private"}


@dataclass(frozen=True)
class SandboxServices:
    revision: str      # the commit of the planned repository on the local hub
    hub_url: str       # the local hub, as the controller and the nodes reach it
    env: dict[str, str]  # for ansible-playbook's environment (secrets stay off command lines and files)


def _folder(name: str) -> Path:
    folder = sandbox_root() / name / "services"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def gateway(name: str) -> str:
    out = podman(["network", "inspect", network_name(name)], check=True)
    subnets = json.loads(out.stdout)[0].get("subnets") or []
    if not subnets or not subnets[0].get("gateway"):
        raise UserError(f"sandbox {name}: its network {network_name(name)} has no gateway")
    return subnets[0]["gateway"]


def _alive(pid: int) -> bool:
    """Whether PID runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, PermissionError, FileNotFoundError):
        return False
    return state != "Z"


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise UserError(f"sandbox: {what} failed: {' / '.join(tail)}")
    return result


def _start_detached(argv: list[str], log: Path, pid_file: Path) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(["timeout", str(SERVICE_LIFETIME), *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=REPO_ROOT, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def _running(pid_file: Path) -> bool:
    return pid_file.exists() and _alive(int(pid_file.read_text() or 0))


def _wait_port(host: str, port: int, seconds: float = 30) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise UserError(f"sandbox: nothing answers on {host}:{port}")


def _apt_standins(name: str, gw: str, progress) -> str:
    folder = _folder(name)
    root, pid_file, port = folder / "apt", folder / "apt.pid", APT_PORT
    if not (root / "qwen35-standins.pub").exists():
        progress("building the stand-in vendor apt repositories (TEST DOUBLES)")
        _run([sys.executable, "tests/apt_standins/build_repo.py", "--out", str(root)], "building the apt stand-ins")
    if not _running(pid_file):
        _start_detached([sys.executable, "-m", "http.server", str(port), "--bind", gw, "--directory", str(root)],
                        folder / "apt.log", pid_file)
        _wait_port(gw, port)
    return f"http://{gw}:{port}"


def _hub_checkpoint(name: str, repo: str, progress) -> str:
    """The commit of REPO's stand-in checkpoint on the local hub, generated the first time it is asked for."""
    folder = _folder(name)
    commit_file = folder / f"hub-commit-{repo.replace('/', '--')}"
    if not commit_file.exists():
        progress(f"generating a {HUB_CHECKPOINT_MB} MB stand-in checkpoint named {repo} on the local hub (TEST DOUBLE)")
        out = _run([sys.executable, "-m", "tests.hub", "generate", "--root", str(folder / "hub-root"), "--repo", repo,
                    "--size-mb", str(HUB_CHECKPOINT_MB), "--shards", "4"], "generating the hub's checkpoint")
        commit_file.write_text(out.stdout.strip())
    return commit_file.read_text().strip()


def _hub(name: str, gw: str, progress) -> tuple[str, Path]:
    """The local hub's URL (a fixed port on the gateway, so the fleet's settings stay true across restarts) and the
    huggingface_hub wheels for the nodes."""
    folder = _folder(name)
    root, ready, pid_file = folder / "hub-root", folder / "hub-ready.json", folder / "hub.pid"
    token = folder / "hub-token"
    root.mkdir(exist_ok=True)
    wheels = folder / "wheels"
    if not any(wheels.glob("huggingface_hub-*.whl")):
        progress("downloading huggingface_hub wheels for the nodes")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels),
              f"huggingface_hub=={HUGGINGFACE_HUB_VERSION}"], "downloading huggingface_hub")
    if _running(pid_file) and ready.exists() and json.loads(ready.read_text()).get("port") != HUB_PORT:
        _stop(pid_file)  # a hub started on another port (an older qwen35-prov): the fleet names HUB_PORT
    if not _running(pid_file):
        token.write_text(HUB_TOKEN + "\n")
        token.chmod(0o600)
        ready.unlink(missing_ok=True)
        _start_detached([sys.executable, "-m", "tests.hub", "serve", "--root", str(root), "--host", gw, "--port", str(HUB_PORT),
                         "--token-file", str(token), "--log", str(folder / "hub-requests.jsonl"),
                         "--ready-file", str(ready)], folder / "hub.log", pid_file)
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not ready.exists():
            raise UserError(f"sandbox: the local hub did not start; see {folder / 'hub.log'}")
    return json.loads(ready.read_text())["url"], wheels


def _router_wheelhouse(progress) -> Path:
    """The gateway (smg) and its dependencies as wheels: the nodes reach no package index from here."""
    from .podman import REPO_ROOT as repo

    package, version = ROUTER_PACKAGE, ROUTER_VERSION
    wheels = repo / ".cache" / "router-wheelhouse" / f"{package}-{version}"
    if not any(wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl")):
        progress(f"downloading {package} {version} wheels for the nodes")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
              "--python-version", "3.11", "-d", str(wheels), f"{package}=={version}"], f"downloading {package}")
    return wheels


def _standin_image(progress) -> dict[str, str]:
    progress("building the stand-in inference engine image (TEST DOUBLE), reused while unchanged")
    out = _run([sys.executable, "tests/doubles/sglang_standin/build.py", "--json"], "building the stand-in image")
    return json.loads(out.stdout)


def start_services(name: str, progress=lambda _m: None) -> dict[str, Any]:
    """Start (or find running) the sandbox's stand-in services; return the role settings that point the hosts at
    them (`sandbox create` writes them into the fleet it hands over, as `standins:`)."""
    gw = gateway(name)
    apt = _apt_standins(name, gw, progress)
    hub_url, wheels = _hub(name, gw, progress)
    image = _standin_image(progress)
    router_wheels = _router_wheelhouse(progress)
    return {
        # vendor repositories -> stand-in apt repositories (TEST DOUBLES)
        "nvidia_driver_mirror": f"{apt}/compute/cuda/repos",
        "nvidia_driver_repo_key_file": "qwen35-standins.pub",
        "nvidia_driver_install_kernel_headers": False,
        "nvidia_container_toolkit_mirror": f"{apt}/libnvidia-container",
        "amdgpu_driver_mirror": apt,
        "amdgpu_driver_install_kernel_headers": False,
        "amdgpu_driver_require_gpu": False,  # no /dev/kfd in a container
        # a node's reboot restarts its container (restart policy), which keeps the host's kernel and boot id
        "nvidia_driver_reboot_boot_time_command": "ps -o lstart= -p 1",
        "amdgpu_driver_reboot_boot_time_command": "ps -o lstart= -p 1",
        # Docker from Debian inside systemd containers (../shared/reference/test-hosts.md)
        "container_runtime_source": "distribution",
        "container_runtime_daemon_json": DOCKER_IN_NODE,
        # the hub -> the local hub (TEST DOUBLE)
        "model_weights_hf_endpoint": hub_url,
        "model_weights_pip_wheelhouse": str(wheels),
        # the disk check sizes the stand-in checkpoint, not the 800 GB one it is named after
        "qwen35_weights_gb": round(HUB_CHECKPOINT_MB / 1000 * 2, 3),
        # the registry -> the stand-in engine image tarball (TEST DOUBLE), and no GPU device requests
        "qwen35_image": image["ref"],
        "sglang_image_archive": image["tarball"],
        "sglang_image_digest": image["id"],
        "sglang_server_device_args_override": [],
        # no NVIDIA module in a node, so no IMEX channel device to pass in (GB200/GB300 sandboxes still get the
        # IMEX service's stand-in package, node list and channel unit from the driver role)
        "sglang_server_imex_channels": [],
        # the nodes are x86_64 containers standing in for hosts of any kind (GB200 trays are aarch64)
        "qwen35_host_architecture": None,
        # the stand-in loads no weights: a head that is not up within minutes never will be, and one that is
        # answers within seconds (a real server's 10 s polls would be most of the wait here)
        "sglang_server_ready_timeout": 300,
        "sglang_server_ready_delay": 2,
        # the stand-in hub's checkpoint takes seconds: report its progress every second, not every 5
        "model_weights_progress_interval": 1,
        # the router's Python packages from wheels fetched on the host (the nodes reach no package index)
        "sglang_router_pip_wheelhouse": str(router_wheels),
        # NCCL needs GPUs; the role's CPU (gloo) path is tested by its Molecule scenario
        "qwen35_preflight_nccl": False,
    }


def is_sandbox(name: str) -> bool:
    """Whether the deployment NAME is a sandbox of this machine (`sandbox create` wrote its fleet file)."""
    return (sandbox_root() / name / "fleet.yml").exists()


def standins_for(name: str, repo: str, progress=lambda _m: None) -> SandboxServices | None:
    """The one place a deployment meets the sandbox: for a sandbox, its stand-in services started (or found
    running), REPO's commit on the local hub and the environment the runs need; for real machines, None. The
    settings that point the roles at the services are in the sandbox's fleet and inventory, not here."""
    if not is_sandbox(name):
        return None
    hub_url = start_services(name, progress)["model_weights_hf_endpoint"]
    return SandboxServices(revision=_hub_checkpoint(name, repo, progress), hub_url=hub_url,
                           env={"HF_TOKEN": HUB_TOKEN})


def _stop(pid_file: Path, grace: float = 5.0) -> bool:
    """End the service's process group: SIGTERM, then SIGKILL after GRACE seconds (a service that outlived its
    sandbox would hold its fixed port against the next sandbox on the same network address)."""
    try:
        group = int(pid_file.read_text() or 0)
        os.killpg(group, signal.SIGTERM)
    except (ValueError, OSError):  # no pid file, or no such process (ProcessLookupError is an OSError)
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + grace
    while _alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(group):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 2
        while _alive(group) and time.monotonic() < deadline:
            time.sleep(0.05)
    pid_file.unlink(missing_ok=True)
    return True


def stop_services(name: str) -> list[str]:
    folder = sandbox_root() / name / "services"
    return [pid_file.stem for pid_file in folder.glob("*.pid") if _stop(pid_file)]
