"""`qwen35-prov upgrade --image` end to end on a one-node sandbox serving two replicas behind the router: the
session's h200x8 sandbox (tests/conftest.py), which the other modules are done with, rolled out again with
`up --model 122b` (two replicas of TP 4 on the node; the model changed in place): the node is one batch of the
rolling play, its two replicas upgraded one after the other. The "new images" are TEST DOUBLE variants of the
stand-in engine (conftest.standin_image): `next` serves, `broken` never reports healthy.

One rollout shared by every test of the module, in order: a good upgrade, validate, a broken upgrade rolled back.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qwen35_prov.sandbox import node_name
from qwen35_prov.sandbox.podman import podman
from conftest import standin_image

pytestmark = pytest.mark.sandbox
REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "qwen35_prov"]
CLUSTER = "h200x8"          # the session's sandbox q35-h200x8-node0 (tests/conftest.py)
NODE = node_name(CLUSTER, 0)


def cli(env, *args, timeout=1500):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def running_image(replica):
    out = podman(["exec", NODE, "docker", "container", "inspect", "--format", "{{.Config.Image}} {{.Image}}",
                  f"qwen35-sglang-r{replica}"], check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def healthy(replica):
    """Replica REPLICA's /health, asked on the node at the address the plan binds (the node's own)."""
    port = 30000 + replica
    address = podman(["exec", NODE, "hostname", "--all-ip-addresses"], check=False).stdout.split()[0]
    out = podman(["exec", NODE, "python3", "-c",
                  f"import urllib.request; print(urllib.request.urlopen('http://{address}:{port}/health', timeout=5).status)"],
                 check=False)
    return out.stdout.strip() == "200"


def upgrade(env, image, *extra):
    r = cli(env, "upgrade", "--cluster", CLUSTER, "--image", image["ref"], "--digest", image["id"],
            "--archive", image["tarball"], "--ready-timeout", "30", "--json", *extra)
    assert r.stdout, r.stderr[-3000:]
    return r, json.loads(r.stdout)


@pytest.fixture(scope="module")
def deployed(h200x8_deployed, sandbox_env):
    env = sandbox_env
    r = cli(env, "up", "--cluster", CLUSTER, "--sandbox", "--model", "122b", "--json")
    summary = json.loads(r.stdout) if r.stdout else {}
    assert r.returncode == 0, summary.get("failures") or r.stderr[-3000:]
    # the router in front of the two replicas first, then each replica head
    assert len(summary["endpoints"]) == 3 and summary["endpoints"][0].endswith(":30080/v1")
    for replica in (0, 1):
        unit = podman(["exec", NODE, "systemctl", "cat", f"qwen35-sglang-r{replica}.service"], check=False).stdout
        assert "Qwen3.5-122B-A10B" in unit and "397B" not in unit       # the model changed in place
    return env, Path(summary["inventory"]), running_image(0)


def test_the_servers_and_the_gateway_listen_on_the_nodes_own_address_only(deployed):
    """The plan binds the cluster address (the default): SGLang's ports and the gateway's client and metrics
    ports are bound to the node's fleet address, none to every interface."""
    env, inventory, _ = deployed
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["children"]["qwen35_nodes"]["hosts"]
    [address] = [h["ansible_host"] for h in hosts.values()]
    listening = podman(["exec", NODE, "ss", "-Hltn"], check=False).stdout.split("\n")
    local = {line.split()[3] for line in listening if len(line.split()) > 3}
    for port in (30000, 30001, 30080, 29000):
        assert f"{address}:{port}" in local, (port, sorted(local))
        assert not {f"0.0.0.0:{port}", f"*:{port}", f"[::]:{port}"} & local, (port, sorted(local))


def test_upgrade_moves_every_replica_to_the_new_image(deployed):
    env, inventory, original = deployed
    new = standin_image("next")
    assert new["id"] != original[1]
    r, data = upgrade(env, new)
    assert r.returncode == 0, data
    assert data["status"] == "ok"
    assert [(s["replica"], s["status"]) for s in data["replicas"]] == [(0, "upgraded"), (1, "upgraded")]
    assert all(s["previous_image"] == original[0] for s in data["replicas"])
    for replica in (0, 1):
        assert running_image(replica) == [new["ref"], new["id"]]
        assert healthy(replica)
    pinned = yaml.safe_load((inventory / "group_vars/qwen35_nodes/zz-upgrade.yml").read_text())
    assert pinned["qwen35_image"] == new["ref"] and pinned["sglang_image_digest"] == new["id"]


def test_validate_passes_on_the_upgraded_deployment(deployed):
    env, _, _ = deployed
    r = cli(env, "validate", "--cluster", CLUSTER, "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0, data
    pinned = [c for c in data["checks"] if c["check"] == "image as pinned"]
    assert pinned and all(c["ok"] and "-next" in c["detail"] for c in pinned)


def test_a_broken_image_is_rolled_back_and_the_upgrade_stops(deployed):
    env, inventory, _ = deployed
    before = [running_image(0), running_image(1)]
    broken = standin_image("broken")
    r, data = upgrade(env, broken)
    assert r.returncode == 1 and data["status"] == "failed", data
    assert data["failed_replica"] == 0
    assert "replica 0" in data["error"] and broken["ref"] in data["error"] and "rolled back" in data["error"]
    assert "refusing health" in data["error"] + "\n".join(data["journal_tail"]) or "not ready" in data["error"]
    assert [(s["replica"], s["status"]) for s in data["replicas"]] == [(0, "rolled back"), (1, "untouched")]
    assert "serving again" in data["replicas"][0]["detail"]
    # replica 0 runs the previous image again and serves; replica 1 was never touched
    assert running_image(0) == before[0]
    assert running_image(1) == before[1]
    assert healthy(0) and healthy(1)
    unit = podman(["exec", NODE, "systemctl", "cat", "qwen35-sglang-r0.service"], check=False).stdout
    assert before[0][0] in unit and broken["ref"] not in unit
    # the failed image is not pinned
    pinned = yaml.safe_load((inventory / "group_vars/qwen35_nodes/zz-upgrade.yml").read_text())
    assert pinned["qwen35_image"] == before[0][0]


def test_a_node_lost_mid_upgrade_is_reported_partially_changed_naming_the_drained_replica(deployed):
    """The node (which also runs the router) vanishes right after replica 0 was drained: no rollback can run
    there, and the undrain cannot reach the router. `upgrade` must not call that "unchanged". Last test of the
    module: the node stays down (the session's fixture removes the sandbox)."""
    env, inventory, _ = deployed
    broken = standin_image("broken")   # never healthy: the upgrade is still busy with replica 0 when the node goes
    artifacts = Path(env["QWEN35_STATE_DIR"]) / CLUSTER / "runner" / "artifacts"
    started = time.time()

    def drained() -> bool:
        """This run's drain of replica 0 went through (ansible-runner's events, written as tasks end)."""
        for event in artifacts.glob("*/job_events/*.json"):
            try:   # ansible-runner rotates old runs' folders away while we look
                text = event.read_text(errors="replace") if event.stat().st_mtime >= started else ""
            except FileNotFoundError:
                continue
            if '"runner_on_ok"' in text and ("Drain from the router replica 0" in text
                                             or "Drain from the router replica {{ __r }}" in text):
                return True
        return False

    proc = subprocess.Popen([*CLI, "upgrade", "--cluster", CLUSTER, "--image", broken["ref"], "--digest", broken["id"],
                             "--archive", broken["tarball"], "--ready-timeout", "120", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not drained():
            assert proc.poll() is None and time.monotonic() < deadline, "replica 0 was never drained"
            time.sleep(0.5)
        podman(["stop", "--time", "0", NODE])          # power lost mid-upgrade
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = json.loads(out)
    assert proc.returncode == 1 and data["status"] == "failed", err[-2000:]
    step = data["replicas"][0]
    assert step["status"] == "partially changed", data
    assert NODE in step["detail"] and "no rollback ran" in step["detail"]
    assert "STILL DRAINED" in step["detail"] and "qwen35-router-ctl undrain http://" in step["detail"]
    assert data["replicas"][1] == {"replica": 1, "status": "untouched", "detail": "still the previous image"}
    pinned = yaml.safe_load((inventory / "group_vars/qwen35_nodes/zz-upgrade.yml").read_text())
    assert pinned["qwen35_image"] != broken["ref"]
