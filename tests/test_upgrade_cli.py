"""`qwen35-prov upgrade` refuses bad input in one line, exit 2, before any host is contacted (the rolling paths
themselves: tests/test_upgrade_sandbox.py and tests/test_rollout_sandbox.py)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qwen35_prov import cli
from qwen35_prov.runner import Failure, RunInterrupted, RunResult

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


def report(replica, ok=True, host=None, **extra):
    """One node's report of one replica, as upgrade.yml's rolling play sets it (qwen35_report.upgrade)."""
    return {"replica": replica, "host": host or ("h100-a" if replica < 2 else "h100-b"),
            "image": "lmsysorg/sglang:v0.5.24", "previous_image": "lmsysorg/sglang:v0.5.23",
            "previous_id": "sha256:" + "1" * 64, "ok": ok, "error": "" if ok else extra.get("error", "why"),
            "journal_tail": extra.get("journal_tail", ""), "rollback": extra.get("rollback", ""), "drained": True}


@pytest.fixture()
def golden_copy(tmp_path):
    """The h100x16-122b golden inventory (four single-node replicas, two on each node), writable."""
    inventory = tmp_path / "h100x16-122b"
    shutil.copytree(REPO / "tests" / "golden" / "h100x16-122b", inventory)
    return inventory


def one_run(monkeypatch, result_or_error):
    """upgrade's run_playbook replaced (no hosts here): returns the given RunResult, or raises the exception."""
    from qwen35_prov import upgrade

    calls = []

    def run_playbook(playbook, inv, **kwargs):
        calls.append((playbook, kwargs["extravars"]))
        if isinstance(result_or_error, BaseException):
            raise result_or_error
        return result_or_error

    monkeypatch.setattr(upgrade, "run_playbook", run_playbook)
    return calls


def test_one_run_of_the_playbook_upgrades_every_replica_and_pins_the_image(monkeypatch, capsys, golden_copy):
    """The rolling happens inside Ansible: one run of upgrade.yml, no replica named; every replica reported."""
    calls = one_run(monkeypatch, RunResult(status="ok", rc=0, facts={
        "h100-a": {"upgrade_begun": [0, 1], "upgrade": [report(0), report(1)]},
        "h100-b": {"upgrade_begun": [2, 3], "upgrade": [report(2), report(3)]}}))
    status = cli.main(["upgrade", "--inventory", str(golden_copy), "--image", "lmsysorg/sglang:v0.5.24", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 0 and data["status"] == "ok"
    assert [(p, "qwen35_upgrade_replica" in x, x["qwen35_image"]) for p, x in calls] == [
        ("upgrade.yml", False, "lmsysorg/sglang:v0.5.24")]
    assert [(s["replica"], s["status"], s["hosts"]) for s in data["replicas"]] == [
        (0, "upgraded", ["h100-a"]), (1, "upgraded", ["h100-a"]), (2, "upgraded", ["h100-b"]), (3, "upgraded", ["h100-b"])]
    pins = yaml.safe_load((golden_copy / "group_vars/qwen35_nodes/zz-upgrade.yml").read_text())
    assert pins["qwen35_image"] == "lmsysorg/sglang:v0.5.24"


def test_a_rolled_back_replica_stops_the_upgrade_and_nothing_is_pinned(monkeypatch, capsys, golden_copy):
    message = "replica 1: upgrade to lmsysorg/sglang:v0.5.24 failed and was rolled back to ...; later replicas untouched."
    one_run(monkeypatch, RunResult(status="failed", rc=2, facts={
        "h100-a": {"upgrade_begun": [0, 1], "upgrade": [
            report(0), report(1, ok=False, error="h100-a: Wait until ready: not ready", journal_tail="a\nb",
                             rollback="rolled back to lmsysorg/sglang:v0.5.23 (sha256:111), serving again")]}},
        failures=[Failure("localhost", "aftermath", "Fail - the new image did not take in replica 1", message)]))
    status = cli.main(["upgrade", "--inventory", str(golden_copy), "--image", "lmsysorg/sglang:v0.5.24", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 1 and data["status"] == "failed" and data["failed_replica"] == 1
    assert [s["status"] for s in data["replicas"]] == ["upgraded", "rolled back", "untouched", "untouched"]
    assert "serving again" in data["replicas"][1]["detail"]
    assert data["error"] == message and data["journal_tail"] == ["a", "b"]
    assert not (golden_copy / "group_vars/qwen35_nodes/zz-upgrade.yml").exists()


def test_a_replica_refused_before_it_changed_is_unchanged(monkeypatch, capsys, golden_copy):
    """A node without the running replica fails the play's check before anything changes."""
    one_run(monkeypatch, RunResult(status="failed", rc=2, facts={"h100-a": {"upgrade_begun": [0], "upgrade": [report(0)]}},
                                   failures=[Failure("h100-a", "upgrade", "Require something to roll back to",
                                                     "replica 1 has no running container")]))
    status = cli.main(["upgrade", "--inventory", str(golden_copy), "--image", "lmsysorg/sglang:v0.5.24", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 1 and data["failed_replica"] == 1
    assert [s["status"] for s in data["replicas"]] == ["upgraded", "unchanged", "untouched", "untouched"]
    assert "no running container" in data["error"]


def test_ctrl_c_mid_upgrade_says_what_was_left_and_how_to_go_on(monkeypatch, capsys, golden_copy):
    """Ctrl-C while the rolling play works on replica 1 (raised where ansible-runner runs, with what the run had
    reported by then)."""
    calls = one_run(monkeypatch, RunInterrupted(RunResult(status="interrupted", rc=0, facts={
        "h100-a": {"upgrade_begun": [0, 1], "upgrade": [report(0)]}})))
    status = cli.main(["upgrade", "--inventory", str(golden_copy), "--image", "lmsysorg/sglang:v0.5.24"])
    err = capsys.readouterr().err
    assert status == 130 and len(calls) == 1
    assert "interrupted during the rolling upgrade to lmsysorg/sglang:v0.5.24" in err
    assert "Already on lmsysorg/sglang:v0.5.24: replica(s) 0;" in err
    assert "replica 1 may be drained" in err and "qwen35-router-ctl undrain http://10.1.0.1:30001" in err
    assert not (golden_copy / "group_vars/qwen35_nodes/zz-upgrade.yml").exists()   # nothing pinned


def test_a_node_lost_mid_upgrade_is_not_called_unchanged(monkeypatch, capsys, golden_copy):
    """The rolling play ended early on a node (the aftermath play's report): partially changed, never
    "unchanged"; the router's state is named."""
    aftermath = {"replica": 0, "unfinished_hosts": ["h100-a"], "drained": True, "undrained": False,
                 "undrain_error": "Failed to connect to the host via ssh", "router_host": "h100-a",
                 "url": "http://10.0.1.1:30000"}
    one_run(monkeypatch, RunResult(status="failed", rc=2, facts={"localhost": {"upgrade_aftermath": aftermath},
                                                                 "h100-a": {"upgrade_begun": [0]}},
                                   failures=[Failure("h100-a", "upgrade", "Restart replica 0", "UNREACHABLE")]))
    status = cli.main(["upgrade", "--inventory", str(golden_copy), "--image", "lmsysorg/sglang:v0.5.24", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 1 and data["status"] == "failed"
    step = data["replicas"][0]
    assert step["status"] == "partially changed"
    assert "h100-a stopped mid-upgrade" in step["detail"] and "STILL DRAINED from the router on h100-a" in step["detail"]
    assert "qwen35-router-ctl undrain http://10.0.1.1:30000" in step["detail"]
    assert [s["status"] for s in data["replicas"][1:]] == ["untouched"] * 3


def test_a_replica_begun_but_reported_by_no_one_is_partially_changed(monkeypatch, capsys, golden_copy):
    """The run ended mid-replica and even the controller's play said nothing: still never "unchanged"."""
    one_run(monkeypatch, RunResult(status="failed", rc=4, facts={"h100-a": {"upgrade_begun": [0, 1], "upgrade": [report(0)]}},
                                   failures=[Failure("h100-a", "upgrade", "Restart replica 1", "unreachable: timed out")]))
    status = cli.main(["upgrade", "--inventory", str(golden_copy), "--image", "lmsysorg/sglang:v0.5.24", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert status == 1 and data["failed_replica"] == 1
    assert [s["status"] for s in data["replicas"]] == ["upgraded", "partially changed", "untouched", "untouched"]
    assert "may still be drained" in data["replicas"][1]["detail"]
