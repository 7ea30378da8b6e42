"""`up --check` is a dry run: it writes the plan's inventory to a scratch copy and leaves the stored one as it was
(issue 16: it rewrote the stored inventory before the dry run). The hosts here are 127.0.0.1 on a port nobody
listens on, so the run reaches the playbooks and stops at the unreachable hosts."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def up(state: Path, fleet: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "QWEN35_STATE_DIR": str(state),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "qwen35_prov", "up", "--cluster", "lab", "--fleet", str(fleet),
                           "--revision", COMMIT, "--json", *extra], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)


def test_up_check_leaves_the_stored_inventory_alone(tmp_path):
    port = closed_port()
    fleet = tmp_path / "fleet.yml"
    fleet.write_text("defaults:\n  ssh_user: root\n  ssh_port: %d\n" % port
                     + "hosts:\n" + "".join(f"  - {{name: gpu-0{i}, address: 127.0.0.1, gpu: h100, gpu_count: 8}}\n"
                                            if i == 0 else
                                            f"  - {{name: gpu-0{i}, address: localhost, gpu: h100, gpu_count: 8}}\n"
                                            for i in range(2))
                     + "clusters:\n  lab: {hosts: [gpu-00, gpu-01]}\n")
    state = tmp_path / "state"
    stored = state / "lab" / "inventory"

    r = up(state, fleet, "--check")      # no stored inventory yet: none appears
    assert r.returncode == 1, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["check"] is True and summary["status"] == "failed"
    assert {f["host"] for f in summary["failures"]} >= {"gpu-00"}          # it reached the playbooks
    assert not stored.exists()

    made = subprocess.run([sys.executable, "-m", "qwen35_prov", "inventory", "--cluster", "lab", "--fleet", str(fleet),
                           "--revision", COMMIT, "--out", str(stored)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    before = fingerprint(stored)
    r = up(state, fleet, "--check", "--context-length", "131072")   # another plan than the stored one
    assert r.returncode == 1 and json.loads(r.stdout)["check"] is True
    assert fingerprint(stored) == before
