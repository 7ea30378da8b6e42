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
    from qwen35_prov.upgrade import reboot_groups

    assert reboot_groups(REPO / "tests" / "golden" / golden) == groups
