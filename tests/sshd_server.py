"""A real OpenSSH server on 127.0.0.1 for tests of `fleet probe` and validate.yml.

sshd runs from a temporary folder with its own host key, config and authorized_keys; the client key's
authorized_keys line sets PATH (PermitUserEnvironment) so that sessions find the TEST DOUBLE nvidia-smi
(tests/doubles/nvidia-smi, replaying the real H200 capture) and its configuration. Needs root (sshd's
privilege separation) and /usr/sbin/sshd; tests skip without them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def available() -> str | None:
    """Why the server cannot run here, or None."""
    if os.geteuid() != 0:
        return "sshd needs root for privilege separation"
    if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
        return "OpenSSH server (sshd) or ssh-keygen is not installed"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qwen35-prov-test", "-f", str(path)],
                   check=True)
    return path.with_suffix(".pub").read_text().strip()


class SshServer:
    def __init__(self, root: Path, forced_command: str | None = None):
        """FORCED_COMMAND: the client key may run only this (authorized_keys `restrict,command=`), as the
        model_weights role sets up its fan-out keys."""
        self.root = root
        self.forced_command = forced_command
        self.port = free_port()
        self.bin = root / "bin"  # PATH entry holding only the TEST DOUBLE GPU tool of the vendor
        self.gpu_config = root / "gpus.json"
        self.client_key = root / "client_ed25519"
        self.known_hosts = root / "known_hosts"
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen | None = None

    def set_gpus(self, name: str = "NVIDIA H200", memory_mib: int = 143771, count: int = 1,
                 architecture: str = "hopper", vendor: str = "nvidia", gpu: str | None = None) -> None:
        """What the TEST DOUBLE GPU tool reports on this 'host' from now on; only that vendor's tool is on PATH."""
        self.gpu_config.write_text(json.dumps({"gpu": gpu, "vendor": vendor, "name": name, "memory_mib": memory_mib,
                                               "architecture": architecture, "count": count}))
        tool = {"nvidia": "nvidia-smi", "amd": "amd-smi"}[vendor]
        for old in ("nvidia-smi", "amd-smi"):
            (self.bin / old).unlink(missing_ok=True)
        (self.bin / tool).symlink_to(REPO / "tests" / "doubles" / tool)

    def start(self) -> "SshServer":
        self.root.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir(exist_ok=True)
        self.set_gpus()
        host_pub = _keygen(self.root / "host_ed25519")
        client_pub = _keygen(self.client_key)
        env = [f"PATH={self.bin}:{DEFAULT_PATH}", f"QWEN35_TEST_DOUBLE_CONFIG={self.gpu_config}",
               f"QWEN35_TEST_DOUBLE_FIXTURES={REPO / 'tests' / 'fixtures'}"]
        options = ",".join(f'environment="{e}"' for e in env)
        if self.forced_command:
            options = f'restrict,command="{self.forced_command}"'
        (self.root / "authorized_keys").write_text(f"{options} {client_pub}\n")
        key_type, key_data = host_pub.split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_data}\n")
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.root / 'host_ed25519'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}", "PermitUserEnvironment yes",
            f"PidFile {self.root / 'sshd.pid'}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "LogLevel VERBOSE", "MaxStartups 50:30:100", "",
        ]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t: {check.stderr}")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"sshd did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def fleet_host(self, name: str, gpu: str = "h200", gpu_count: int = 1, **extra) -> dict:
        """A fleet `hosts:` entry reaching this server."""
        entry = {"name": name, "address": "127.0.0.1", "ssh_port": self.port, "ssh_user": "root",
                 "ssh_key": str(self.client_key), "known_hosts": str(self.known_hosts), "gpu": gpu,
                 "gpu_count": gpu_count}
        entry.update(extra)
        return entry
