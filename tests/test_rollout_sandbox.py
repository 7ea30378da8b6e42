"""`qwen35-prov up / status / validate / down` end to end on sandbox clusters (real systemd containers,
real SSH, real apt, real Docker in the nodes). GPUs, vendor repositories, the hub and the inference engine
are the sandbox's TEST DOUBLES (README, "Test doubles").

Slow (minutes per cluster): every test of a cluster shares one rollout; the h100x16 sandbox and the h200x8
rollout are shared with the other end-to-end modules (tests/conftest.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qwen35_prov.sandbox import destroy, node_name, sandbox_root
from qwen35_prov.sandbox.podman import podman
from qwen35_prov.sandbox.services import HUB_TOKEN
from conftest import run_cli, standin_image, up_json
from tests.hub import downloads_by_file

pytestmark = pytest.mark.sandbox
REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "qwen35_prov"]


@pytest.fixture(scope="module")
def state(sandbox_env):
    return sandbox_env


cli = run_cli


def in_node(cluster, index, *argv):
    return podman(["exec", node_name(cluster, index), *argv], check=False)


@pytest.fixture(scope="module")
def h100x16(h100x16_sandbox, state):
    """The rollout on the shared h100x16 sandbox (test_down_stops_the_units_and_keeps_the_weights takes it down)."""
    r, summary = up_json(state, "h100x16")
    yield r, summary


def test_up_h100x16_rolls_out_a_two_node_replica(h100x16):
    r, summary = h100x16
    assert r.returncode == 0, summary["failures"]
    assert summary["status"] == "ok"
    assert set(summary["hosts"]) >= {"q35-h100x16-node0", "q35-h100x16-node1"}
    assert all(c["failed"] == 0 for c in summary["hosts"].values())
    assert len(summary["endpoints"]) == 1 and summary["endpoints"][0].endswith(":30000/v1")
    phases = [p["name"] for p in summary["phases"]]
    for word in ("Validate", "driver", "Image", "Weights", "Server", "Smoke"):
        assert any(word in p for p in phases), phases
    assert "TEST DOUBLE" in summary["note"]
    assert "==> " in r.stderr  # live progress per phase on stderr, JSON alone on stdout
    # the stand-ins' settings came with the sandbox's fleet into the inventory; up passed no extra variables
    inventory = Path(summary["inventory"])
    fleet = yaml.safe_load((sandbox_root() / "h100x16" / "fleet.yml").read_text())
    assert yaml.safe_load((inventory / "group_vars/qwen35_nodes/zz-standins.yml").read_text()) == fleet["standins"]
    assert not (inventory.parent / "runner" / "env" / "extravars").exists()
    # the weights phase reported its bytes while the stager downloaded and node1 copied (JSON lines with --json)
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith('{"event": "weights_progress"')]
    last = {e["host"]: e for e in events}
    assert set(last) == {"q35-h100x16-node0", "q35-h100x16-node1"}, events
    assert all(e["done_bytes"] == e["total_bytes"] > 0 for e in last.values())
    # no --revision: the branch head, resolved through the stand-in hub's API, locked in the inventory
    assert summary["revision"]["source"] == "resolved", summary["revision"]
    weights = yaml.safe_load((Path(summary["inventory"]) / "group_vars/qwen35_nodes/weights.yml").read_text())
    assert weights["qwen35_model_revision"] == summary["revision"]["commit"]


def test_the_two_nodes_are_wired_as_ranks_of_one_replica(h100x16, state):
    _, summary = h100x16
    head_ip = summary["endpoints"][0].split("//")[1].split(":")[0]
    for index in (0, 1):
        unit = in_node("h100x16", index, "systemctl", "cat", "qwen35-sglang-r0.service").stdout
        assert f"--node-rank {index}" in unit or f"--node-rank' '{index}" in unit or f"--node-rank\" \"{index}" in unit
        assert f"{head_ip}:20000" in unit
        assert "--nnodes" in unit and "--tp-size" in unit
        assert in_node("h100x16", index, "systemctl", "is-active", "qwen35-sglang-r0.service").stdout.strip() == "active"


def test_the_hub_is_read_once_per_cluster_and_the_follower_copied_from_the_stager(h100x16, state):
    """The staged fan-out, as real clusters run it: only the stager (node0) asked the hub for file bytes, each file
    once; node1 has the same verified snapshot."""
    r, summary = h100x16
    assert r.returncode == 0, summary["failures"]
    log = sandbox_root() / "h100x16" / "services" / "hub-requests.jsonl"
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    downloads = downloads_by_file(requests)
    assert downloads and all(d["gets"] == 1 for d in downloads.values()), downloads
    stager = in_node("h100x16", 0, "hostname", "-I").stdout.split()[0]
    assert {q["client"] for q in requests if q["kind"] in ("resolve", "cdn")} == {stager}
    inv = Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "inventory"
    snapshot = yaml.safe_load((inv / "group_vars/qwen35_nodes/weights.yml").read_text())["qwen35_model_path"]
    listings = [in_node("h100x16", i, "sh", "-c", f"cd {snapshot} && sha256sum $(ls) | sort").stdout for i in (0, 1)]
    assert listings[0] and listings[0] == listings[1]
    assert in_node("h100x16", 1, "test", "-f", f"{snapshot}/.qwen35-complete.json").returncode == 0


def test_the_endpoint_passes_the_smoke_checks_with_the_deployments_key_only(h100x16, state):
    _, summary = h100x16
    status = json.loads(cli(state, "status", "--cluster", "h100x16", "--json").stdout)
    key_file = Path(status["api_key_file"])
    assert key_file == Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "secrets" / "api-key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600" and oct(key_file.parent.stat().st_mode & 0o777) == "0o700"
    r = cli(state, "smoke", "--url", summary["endpoints"][0], "--api-key-file", str(key_file), "--json", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    keyless = cli(state, "smoke", "--url", summary["endpoints"][0], "--json", timeout=600)
    checks = {c["name"]: c for c in json.loads(keyless.stdout)["checks"]}
    assert keyless.returncode == 1 and checks["health"]["ok"] and not checks["models"]["ok"]
    assert "401" in checks["models"]["detail"], checks["models"]


def test_no_secret_is_kept_anywhere_in_the_state_folder_but_its_secrets(h100x16, state):
    """Run records, inventories and logs of the rollout hold none of the deployment's keys (nor the sandbox's
    stand-in hub token); only secrets/ does, 0600."""
    root = Path(state["QWEN35_STATE_DIR"]) / "h100x16"
    secrets = {p.name: p.read_text().strip() for p in (root / "secrets").iterdir() if not p.name.endswith("lockfile")}
    assert set(secrets) == {"api-key", "admin-api-key", "watch-secret"}
    assert all(len(value) == 48 for value in secrets.values())
    secrets["HF_TOKEN"] = HUB_TOKEN
    leaks = [(str(p), name) for p in root.rglob("*") if p.is_file() and (root / "secrets") not in p.parents
             for name, value in secrets.items() if value in p.read_text(errors="replace")]
    assert leaks == []


def test_status_reports_units_health_and_gpu_memory(h100x16, state):
    r = cli(state, "status", "--cluster", "h100x16", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["nodes"]
    assert {row["host"] for row in rows} == {"q35-h100x16-node0", "q35-h100x16-node1"}
    assert all(row["state"] == "active" for row in rows)
    head = [row for row in rows if row["node_rank"] == 0][0]
    assert head["health"] == "ok"
    for row in rows:   # the stand-in nvidia-smi: 8 x H100 80GB (81559 MiB)
        assert [g["index"] for g in row["gpu_memory"]] == list(range(8)), row
        assert all(g["total_mib"] == 81559 and 0 <= g["used_mib"] <= g["total_mib"] for g in row["gpu_memory"])
    text = cli(state, "status", "--cluster", "h100x16")
    assert text.returncode == 0, text.stderr
    header, *lines = text.stdout.splitlines()
    assert header.split()[:4] == ["NODE", "UNIT", "STATE", "HEALTH"] and "USED/TOTAL (MiB)" in header
    head_line = [line for line in lines if line.startswith("q35-h100x16-node0")]
    assert len(head_line) == 1 and head_line[0].split()[2:4] == ["active", "ok"], lines
    assert [field.split(":")[0] for field in head_line[0].split()[4:]] == [str(i) for i in range(8)]
    assert all(field.endswith("/81559") for field in head_line[0].split()[4:])
    assert not [c for c in text.stdout if ord(c) < 32 and c != "\n"]      # numbers, no control characters


def test_validate_passes_every_check(h100x16, state):
    r = cli(state, "validate", "--cluster", "h100x16", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0, data
    checks = {(c["host"], c["check"]) for c in data["checks"]}
    for check in ("driver matches pin", "fabric manager", "image as pinned", "unit active", "/health", "smoke requests"):
        assert ("q35-h100x16-node0", check) in checks, check
    assert all(c["ok"] for c in data["checks"])


def test_a_second_up_changes_nothing(h100x16, state):
    first = h100x16[1]["revision"]["commit"]
    r, summary = up_json(state, "h100x16")
    assert r.returncode == 0, summary["failures"]
    assert summary["revision"] == {"commit": first, "source": "locked"}   # the lock, not the hub
    changed = {h: c["changed"] for h, c in summary["hosts"].items() if c["changed"]}
    assert changed == {}


FLIP = ("import os, sys; p = sys.argv[1]; st = os.stat(p); f = open(p, 'r+b'); f.seek(st.st_size // 2); "
        "b = f.read(1); f.seek(st.st_size // 2); f.write(bytes([b[0] ^ 1])); f.close(); "
        "sys.argv[2:] == ['--keep-mtime'] and os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))")


def test_a_changed_byte_in_a_workers_weights_fails_validate_naming_host_and_file(h100x16, state):
    """One byte flipped in place with its mtime kept (only --deep sees it), then one flipped as any write leaves it
    (the default check sees the changed stat and hashes that file). The next test's `up` repairs it (its
    validate --deep passes)."""
    inv = Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "inventory"
    snapshot = yaml.safe_load((inv / "group_vars/qwen35_nodes/weights.yml").read_text())["qwen35_model_path"]
    files = in_node("h100x16", 1, "sh", "-c", f"cd {snapshot} && ls -S | head -2").stdout.split()
    assert len(files) == 2
    assert in_node("h100x16", 1, "python3", "-c", FLIP, f"{snapshot}/{files[0]}", "--keep-mtime").returncode == 0
    deep = json.loads(cli(state, "validate", "--cluster", "h100x16", "--deep", "--json").stdout)
    bad = [c for c in deep["checks"] if not c["ok"]]
    assert deep["status"] == "failed" and [(c["host"], c["check"]) for c in bad] == [
        ("q35-h100x16-node1", "weights (every byte)")], bad
    assert files[0] in bad[0]["detail"] and files[1] not in bad[0]["detail"]
    # the same flip again puts the byte back (`up` checks stat, as validate does by default: it would not see it)
    assert in_node("h100x16", 1, "python3", "-c", FLIP, f"{snapshot}/{files[0]}", "--keep-mtime").returncode == 0

    assert in_node("h100x16", 1, "python3", "-c", FLIP, f"{snapshot}/{files[1]}").returncode == 0
    r = cli(state, "validate", "--cluster", "h100x16")
    failing = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
    assert r.returncode == 1 and len(failing) == 1, r.stdout
    assert "q35-h100x16-node1" in failing[0] and "weights" in failing[0] and files[1] in failing[0]


def test_a_node_stopped_in_the_middle_of_up_is_named_and_a_rerun_converges(h100x16, state):
    proc = subprocess.Popen([*CLI, "up", "--cluster", "h100x16", "--sandbox", "--json"], cwd=REPO, env=state,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # live progress: stop node1 once the rollout is under way
            if line.startswith("==> Image"):
                # the node drops off the network as Ansible sees it (a container restart would change its address)
                in_node("h100x16", 1, "sh", "-c", "systemctl stop ssh.socket ssh.service; pkill -9 -x sshd; true")
                break
        out, _ = proc.communicate(timeout=1800)
    finally:
        in_node("h100x16", 1, "systemctl", "start", "ssh.service")
    summary = json.loads(out)
    assert proc.returncode != 0 and summary["status"] == "failed"
    assert any(f["host"] == "q35-h100x16-node1" for f in summary["failures"]), summary["failures"]
    r, summary = up_json(state, "h100x16")
    assert r.returncode == 0, summary["failures"]
    # validate's every check passes: the weights the test before changed on node1 are whole again as well
    r = cli(state, "validate", "--cluster", "h100x16", "--deep")
    assert r.returncode == 0, r.stdout


def package_version(index, package):
    out = in_node("h100x16", index, "dpkg-query", "-W", "-f=${Version} ${db:Status-Status}", package)
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.endswith(" installed") else None


def unit_active(index):
    return in_node("h100x16", index, "systemctl", "is-active", "qwen35-sglang-r0.service").stdout.strip() == "active"


NODES = ["q35-h100x16-node0", "q35-h100x16-node1"]
# The drain hook for routers other than ours (docs/upgrade.md), here a TEST DOUBLE of an outside load balancer
# that writes what it is told on the router host (node0, the first head): h100x16 has one replica, so no gateway.
DRAIN_LOG = "/var/log/q35-drain-hook.log"
DRAIN_HOOK = f"""qwen35_upgrade_drain_cmd: [/bin/sh, -c, 'echo "drain $0" >> {DRAIN_LOG}', '{{url}}']
qwen35_upgrade_undrain_cmd: [/bin/sh, -c, 'echo "undrain $0" >> {DRAIN_LOG}', '{{url}}']
"""


def drain_log():
    """What the drain hook was told since the last look (the log is emptied)."""
    text = in_node("h100x16", 0, "sh", "-c", f"cat {DRAIN_LOG} 2>/dev/null; rm -f {DRAIN_LOG}").stdout
    return [line.split()[0] for line in text.splitlines()], {line.split()[1] for line in text.splitlines()}


def test_a_driver_upgrade_to_a_version_nobody_publishes_stops_at_the_first_host(h100x16, state):
    for index in (0, 1):   # as after the reboot that loaded the driver `up` installed
        in_node("h100x16", index, "rm", "-f", "/run/reboot-required", "/run/reboot-required.pkgs")
    site = Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "inventory" / "group_vars" / "all" / "zz-drain-hook.yml"
    site.parent.mkdir(exist_ok=True)
    site.write_text(DRAIN_HOOK)
    drain_log()
    r = cli(state, "upgrade", "--cluster", "h100x16", "--driver-version", "580.999.01", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["status"] == "failed"
    [group] = data["groups"]
    assert (group["replicas"], group["hosts"], group["status"]) == ([0], NODES, "failed")
    assert "580.999.01" in data["error"] and NODES[0] in data["error"] and NODES[1] not in data["error"]
    # drained before the packages changed; the servers never stopped, so the last play put the replica back
    calls, urls = drain_log()
    assert calls == ["drain", "undrain"] and urls == {h100x16[1]["endpoints"][0].removesuffix("/v1")}
    assert "put back into the router" in group["detail"]
    for index in (0, 1):
        assert package_version(index, "nvidia-open-580") == "580.159.04-1"
        pin = in_node("h100x16", index, "cat", "/etc/apt/preferences.d/qwen35-nvidia-driver.pref").stdout
        assert "pinned to 580.159.04" in pin and "580.999" not in pin     # the pin was put back on node0
        assert in_node("h100x16", index, "test", "-e", "/run/reboot-required.pkgs").returncode != 0
        assert unit_active(index)
    inv = Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "inventory"
    assert not (inv / "group_vars/qwen35_nodes/zz-upgrade.yml").exists()


def test_a_driver_upgrade_drains_the_replica_pins_it_and_names_the_hosts_that_wait_for_a_reboot(h100x16, state):
    r = cli(state, "upgrade", "--cluster", "h100x16", "--driver-version", "580.173.02", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0, data.get("error")
    assert [(g["replicas"], g["hosts"], g["status"]) for g in data["groups"]] == [([0], NODES, "upgraded")]
    assert data["reboot_pending"] == NODES and "--reboot" in data["next"]
    assert drain_log()[0] == ["drain", "undrain"]
    for index in (0, 1):
        assert package_version(index, "nvidia-open-580") == "580.173.02-1"
        assert package_version(index, "nvidia-fabricmanager") in (None, "580.173.02-1")   # only where NVSwitch is
        assert "nvidia-open-580" in in_node("h100x16", index, "apt-mark", "showhold").stdout.split()
        assert "nvidia-driver" in in_node("h100x16", index, "cat", "/run/reboot-required.pkgs").stdout.split()
        assert unit_active(index)       # serving goes on with the module it loaded; the reboot is the operator's
    inv = Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "inventory"
    pins = yaml.safe_load((inv / "group_vars/qwen35_nodes/zz-upgrade.yml").read_text())
    assert pins["nvidia_driver_version"] == "580.173.02" and pins["nvidia_driver_branch"] == 580
    # until the hosts reboot, validate names the driver they still run against the new pin
    v = cli(state, "validate", "--cluster", "h100x16", "--json")
    failed = {(c["host"], c["check"], c["detail"]) for c in json.loads(v.stdout)["checks"] if not c["ok"]}
    assert v.returncode != 0
    assert failed == {(h, "driver matches pin", "loaded 580.159.04, pin 580.173.02") for h in NODES}


def test_a_driver_upgrade_with_reboots_that_fails_leaves_the_replica_out_of_service_and_says_so(h100x16, state):
    r = cli(state, "upgrade", "--cluster", "h100x16", "--driver-version", "580.999.01", "--reboot", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["status"] == "failed"
    [group] = data["groups"]
    assert (group["replicas"], group["hosts"], group["status"]) == ([0], NODES, "failed")
    assert "out of service" in group["detail"] and "580.999.01" in data["error"]
    assert drain_log()[0] == ["drain"]     # stopped units: it stays out of the router
    for index in (0, 1):
        assert not unit_active(index)
        pin = in_node("h100x16", index, "cat", "/etc/apt/preferences.d/qwen35-nvidia-driver.pref").stdout
        assert "pinned to 580.173.02" in pin
    pins = yaml.safe_load((Path(state["QWEN35_STATE_DIR"]) / "h100x16/inventory/group_vars/qwen35_nodes/zz-upgrade.yml").read_text())
    assert pins["nvidia_driver_version"] == "580.173.02"


def boot_time(index):
    return in_node("h100x16", index, "ps", "-o", "lstart=", "-p", "1").stdout.strip()


def test_a_driver_upgrade_with_reboots_takes_the_replica_out_reboots_its_nodes_and_brings_it_back(h100x16, state):
    """--reboot: the two nodes of the replica (out of service since the previous test) are rebooted (the reboot
    left pending by the upgrade without --reboot), checked on the new driver, started, smoke-checked. Sandbox
    nodes reboot as containers restarted by podman; the TEST DOUBLE nvidia-smi reports the stand-in module
    installed at boot. The same command again finds nothing to do and leaves the replica serving."""
    booted = [boot_time(i) for i in (0, 1)]
    r = cli(state, "upgrade", "--cluster", "h100x16", "--driver-version", "580.173.02", "--reboot", "--json")
    data = json.loads(r.stdout)
    assert r.returncode == 0, data.get("error")
    assert [(g["replicas"], g["hosts"], g["status"]) for g in data["groups"]] == [([0], NODES, "upgraded")]
    for index in (0, 1):
        assert boot_time(index) != booted[index]
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        assert set(in_node("h100x16", index, *query).stdout.split()) == {"580.173.02"}
        assert in_node("h100x16", index, "test", "-e", "/run/reboot-required.pkgs").returncode != 0
        assert unit_active(index)
    v = cli(state, "validate", "--cluster", "h100x16", "--json")
    assert v.returncode == 0, [c for c in json.loads(v.stdout)["checks"] if not c["ok"]]
    booted = [boot_time(i) for i in (0, 1)]
    r = cli(state, "upgrade", "--cluster", "h100x16", "--driver-version", "580.173.02", "--reboot", "--json")
    assert r.returncode == 0 and [g["status"] for g in json.loads(r.stdout)["groups"]] == ["unchanged"]
    assert [boot_time(i) for i in (0, 1)] == booted and all(unit_active(i) for i in (0, 1))


def running_image(index):
    out = in_node("h100x16", index, "docker", "container", "inspect", "--format", "{{.Config.Image}} {{.Image}}",
                  "qwen35-sglang-r0")
    return out.stdout.split()


def test_plain_ansible_playbook_rolls_a_new_image_through_the_two_node_replica(h100x16, state):
    """The rolling upgrade lives in Ansible: plain `ansible-playbook -i INV playbooks/upgrade.yml -e qwen35_image=NEW`,
    no qwen35-prov in between, moves the replica's two nodes together (one batch of the rolling play), drained
    through the hook and put back, gated on readiness and the smoke checks. The new image is a TEST DOUBLE
    variant of the stand-in engine."""
    new = standin_image("next")
    before = [running_image(i) for i in (0, 1)]
    assert before[0] == before[1] and before[0][1] != new["id"]
    drain_log()
    inv = Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "inventory"
    settings = {"qwen35_image": new["ref"], "sglang_image_digest": new["id"], "sglang_image_archive": new["tarball"],
                "qwen35_upgrade_ready_timeout": 120, "sglang_server_ready_timeout": 120}
    r = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), "playbooks/upgrade.yml",
                        "-e", json.dumps(settings)], capture_output=True, text=True, cwd=REPO, timeout=900,
                       env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    assert r.returncode == 0, r.stdout[-4000:]
    assert [running_image(i) for i in (0, 1)] == [[new["ref"], new["id"]]] * 2
    assert all(unit_active(i) for i in (0, 1))
    calls, urls = drain_log()
    assert calls == ["drain", "undrain"] and urls == {h100x16[1]["endpoints"][0].removesuffix("/v1")}
    recap = {line.split()[0]: line for line in r.stdout[r.stdout.index("PLAY RECAP"):].splitlines()[1:] if line.strip()}
    assert all("failed=0" in recap[node] and "unreachable=0" in recap[node] for node in NODES), recap


def test_down_stops_the_units_and_keeps_the_weights(h100x16, state):
    r = cli(state, "down", "--cluster", "h100x16", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    for index in (0, 1):
        assert in_node("h100x16", index, "systemctl", "is-active", "qwen35-sglang-r0.service").stdout.strip() != "active"
        assert in_node("h100x16", index, "systemctl", "is-enabled", "qwen35-replica-r0.target").stdout.strip() != "enabled"
    inv = Path(state["QWEN35_STATE_DIR"]) / "h100x16" / "inventory"
    model_path = yaml.safe_load((inv / "group_vars/qwen35_nodes/weights.yml").read_text())["qwen35_model_path"]
    assert in_node("h100x16", 0, "test", "-f", f"{model_path}/config.json").returncode == 0


def test_a_bad_fleet_is_refused_before_any_host_is_touched(tmp_path, state):
    fleet = tmp_path / "fleet.yml"
    fleet.write_text("hosts:\n  - name: gpu-01\n    address: 192.0.2.10\n    gpu: h900\n    gpu_count: 8\n")
    env = {**state, "QWEN35_STATE_DIR": str(tmp_path / "state")}
    r = cli(env, "up", "--cluster", "h100x8", "--fleet", str(fleet), "--revision", "0123456789abcdef" * 2 + "01234567")
    assert r.returncode == 2
    assert "gpu-01" in r.stderr and "gpu" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "state" / "h100x8" / "runner").exists()


def test_a_single_node_nvidia_cluster(h200x8_deployed, state):
    r, summary, _ = h200x8_deployed
    assert r.returncode == 0, summary["failures"]
    assert len(summary["endpoints"]) == 1
    unit = in_node("h200x8", 0, "systemctl", "cat", "qwen35-sglang-r0.service").stdout
    assert "--nnodes" not in unit and "--tp-size 8" in unit.replace("' '", " ").replace('" "', " ")
    assert cli(state, "validate", "--cluster", "h200x8").returncode == 0


def test_a_single_node_amd_cluster(state):
    destroy("mi300xx8")
    try:
        r, summary = up_json(state, "mi300x8")
        assert r.returncode == 0, summary["failures"]
        assert len(summary["endpoints"]) == 1
        unit = in_node("mi300xx8", 0, "systemctl", "cat", "qwen35-sglang-r0.service").stdout
        assert "--nnodes" not in unit
        assert "SGLANG_USE_AITER=1" in unit
        assert cli(state, "validate", "--cluster", "mi300xx8").returncode == 0
        status = cli(state, "status", "--cluster", "mi300xx8", "--json")
        [row] = json.loads(status.stdout)["nodes"]
        assert row["state"] == "active" and row["health"] == "ok"
        assert [(g["index"], g["total_mib"]) for g in row["gpu_memory"]] == [(i, 196608) for i in range(8)]
    finally:
        destroy("mi300xx8")


def test_a_gb200_rack_serves_over_two_trays_with_imex_and_the_mnnvl_environment(state):
    """Two GB200 NVL72 compute trays (4 GPUs each; the TEST DOUBLE nvidia-smi reports GB200): one TP-8 replica
    over both. The driver role installs the IMEX stand-in package, lists both trays in IMEX's node list, the same
    on each, and enables IMEX and the channel unit (not started: no NVIDIA module in a container, so no channel
    device, which the sandbox's units therefore do not pass in); both trays' units carry the plan's multi-node
    NVLink environment; the replica serves and validate passes."""
    destroy("gb200x8")
    try:
        r, summary = up_json(state, "gb200x8")
        assert r.returncode == 0, summary["failures"]
        assert len(summary["endpoints"]) == 1
        inv = Path(state["QWEN35_STATE_DIR"]) / "gb200x8" / "inventory"
        trays = yaml.safe_load((inv / "group_vars/qwen35_nodes/drivers.yml").read_text())["nvidia_driver_imex_nodes"]
        hosts = yaml.safe_load((inv / "hosts.yml").read_text())["all"]["children"]["qwen35_nodes"]["hosts"]
        assert trays == [hosts[node_name("gb200x8", i)]["ansible_host"] for i in (0, 1)]
        for index in (0, 1):
            unit = in_node("gb200x8", index, "systemctl", "cat", "qwen35-sglang-r0.service").stdout
            assert {"NCCL_MNNVL_ENABLE=1", "NCCL_CUMEM_ENABLE=1", "MC_FORCE_MNNVL=1"} <= set(unit.split()), unit
            assert "--nnodes 2" in unit and "/dev/nvidia-caps-imex-channels" not in unit
            assert in_node("gb200x8", index, "cat", "/etc/nvidia-imex/nodes_config.cfg").stdout.split() == trays
            enabled = in_node("gb200x8", index, "systemctl", "is-enabled", "nvidia-imex.service",
                              "qwen35-imex-channels.service").stdout.split()
            assert enabled == ["enabled", "enabled"]
        assert cli(state, "validate", "--cluster", "gb200x8").returncode == 0
    finally:
        destroy("gb200x8")

