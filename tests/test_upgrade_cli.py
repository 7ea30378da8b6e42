"""`qwen35-prov upgrade` refuses bad input in one line, exit 2, before any host is contacted (the rolling paths
themselves: tests/test_upgrade_sandbox.py and tests/test_rollout_sandbox.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "inventories" / "examples"


def upgrade(*args):
    return subprocess.run([sys.executable, "-m", "qwen35_prov", "upgrade", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--driver-version", "580.159.04"], "say which deployment: --cluster C or --inventory DIR"),
    (["--inventory", str(EXAMPLES / "h200x8" / "inventory")], "say what to upgrade: --image REF"),
    (["--inventory", str(EXAMPLES / "h200x8" / "inventory"), "--driver-version", "580"],
     "--driver-version '580': expected the exact package version, e.g. 580.159.04"),
    (["--inventory", str(EXAMPLES / "mi300x8" / "inventory"), "--driver-version", "580.159.04"],
     "--driver-version upgrades the NVIDIA driver; this deployment's GPUs are amd (mi300x)"),
    (["--inventory", str(EXAMPLES / "h200x8" / "inventory"), "--image", "lmsysorg/sglang:"],
     "is not an image reference"),
    (["--inventory", str(EXAMPLES / "h200x8" / "inventory"), "--image", "lmsysorg/sglang:v0.5.24", "--reboot"],
     "--reboot goes with --driver-version"),
])
def test_bad_input_is_refused_in_one_line_before_any_host(args, message):
    r = upgrade(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("golden, groups", [
    ("h100x32", [([0], ["h100-a", "h100-b"]), ([1], ["h100-c", "h100-d"])]),           # two-node replicas
    ("h100x16-122b", [([0, 1], ["h100-a"]), ([2, 3], ["h100-b"])]),                     # two replicas a node
    ("h200x8-35b-fp8", [([0, 1, 2, 3, 4, 5, 6, 7], ["h200-solo"])]),                     # one node, every replica
])
def test_reboot_groups_take_down_together_the_replicas_that_share_a_host(golden, groups):
    from qwen35_prov.deployment import Deployed

    assert Deployed(REPO / "tests" / "golden" / golden).reboot_groups() == groups


def test_ctrl_c_mid_upgrade_says_what_was_left_and_how_to_go_on(monkeypatch, capsys, tmp_path):
    """Ctrl-C while replica 1's playbook runs (KeyboardInterrupt raised where ansible-runner runs it)."""
    import shutil

    from qwen35_prov import cli, upgrade
    from qwen35_prov.runner import RunResult

    inventory = tmp_path / "h100x16-122b"
    shutil.copytree(REPO / "tests" / "golden" / "h100x16-122b", inventory)
    calls = []

    def run_playbook(playbook, inv, **kwargs):
        replica = kwargs["extravars"]["qwen35_upgrade_replica"]
        calls.append(replica)
        if replica == 1:
            raise KeyboardInterrupt
        return RunResult(status="ok", rc=0, facts={"h100-a": {"upgrade": [
            {"replica": replica, "host": "h100-a", "previous_image": "lmsysorg/sglang:v0.5.23"}]}})

    monkeypatch.setattr(upgrade, "run_playbook", run_playbook)
    status = cli.main(["upgrade", "--inventory", str(inventory), "--image", "lmsysorg/sglang:v0.5.24"])
    err = capsys.readouterr().err
    assert status == 130 and calls == [0, 1]
    assert "interrupted during the upgrade of replica 1 to lmsysorg/sglang:v0.5.24" in err
    assert "Already on lmsysorg/sglang:v0.5.24: replica(s) 0" in err
    assert "qwen35-router-ctl undrain http://10.1.0.1:30001" in err
    assert not (inventory / "group_vars/qwen35_nodes/zz-upgrade.yml").exists()   # nothing pinned


def test_a_node_lost_mid_upgrade_is_not_called_unchanged(monkeypatch, capsys, tmp_path):
    """The upgrade play ended early on a node (the aftermath play's report): partially changed, never
    "unchanged"; the router's state is named."""
    import json
    import shutil

    from qwen35_prov import cli, upgrade
    from qwen35_prov.runner import Failure, RunResult

    inventory = tmp_path / "h100x16-122b"
    shutil.copytree(REPO / "tests" / "golden" / "h100x16-122b", inventory)
    aftermath = {"replica": 0, "unfinished_hosts": ["h100-a"], "drained": True, "undrained": False,
                 "undrain_error": "Failed to connect to the host via ssh", "router_host": "h100-a",
                 "url": "http://10.0.1.1:30000"}

    def run_playbook(playbook, inv, **kwargs):
        return RunResult(status="failed", rc=2, facts={"localhost": {"upgrade_aftermath": aftermath}},
                         failures=[Failure("h100-a", "upgrade", "Restart replica 0", "UNREACHABLE")])

    monkeypatch.setattr(upgrade, "run_playbook", run_playbook)
    status = cli.main(["upgrade", "--inventory", str(inventory), "--image", "lmsysorg/sglang:v0.5.24", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 1 and data["status"] == "failed"
    step = data["replicas"][0]
    assert step["status"] == "partially changed"
    assert "h100-a stopped mid-upgrade" in step["detail"] and "STILL DRAINED from the router on h100-a" in step["detail"]
    assert "qwen35-router-ctl undrain http://10.0.1.1:30000" in step["detail"]
    assert [s["status"] for s in data["replicas"][1:]] == ["untouched"] * 3
