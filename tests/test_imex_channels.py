"""The IMEX channel script of roles/nvidia_driver (files/imex-channels, run at boot by qwen35-imex-channels.service),
run for real: mknod, in a private mount namespace whose /dev is a fresh tmpfs and whose /proc/devices is a stand-in
file (a TEST DOUBLE of a host with the NVIDIA driver loaded; no NVIDIA module exists here). Needs root and
unshare(1), as CI has."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "roles" / "nvidia_driver" / "files" / "imex-channels"
LOADED = "Character devices:\n  1 mem\n195 nvidia\n234 nvidia-caps-imex-channels\n\nBlock devices:\n  8 sd\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")


def run(tmp_path, devices, *steps):
    """Each step: the script's channel arguments, or a shell command (a str); then the channels' stat lines."""
    (tmp_path / "devices").write_text(devices)
    lines = ["set -e", "mount -t tmpfs tmpfs /dev", f"mount --bind {tmp_path / 'devices'} /proc/devices"]
    for step in steps:
        lines.append(step if isinstance(step, str) else f"{SCRIPT} {' '.join(map(str, step))}")
    lines.append("stat -c '%n %F %t:%T %a' /dev/nvidia-caps-imex-channels/* 2>/dev/null || true")
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)],
                          capture_output=True, text=True, timeout=60)


def test_makes_each_channel_with_the_major_number_of_this_host(tmp_path):
    r = run(tmp_path, LOADED, [0, 2])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2:] == [
        "/dev/nvidia-caps-imex-channels/channel0 character special file ea:0 666",   # 234 = 0xea
        "/dev/nvidia-caps-imex-channels/channel2 character special file ea:2 666"]


def test_a_second_run_changes_nothing_and_a_wrong_node_is_made_again(tmp_path):
    r = run(tmp_path, LOADED, [0], [0], "rm /dev/nvidia-caps-imex-channels/channel0",
            "mknod /dev/nvidia-caps-imex-channels/channel0 c 99 0", [0])
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("imex-channels: created /dev/nvidia-caps-imex-channels/channel0 (c 234 0)") == 2
    assert r.stdout.splitlines()[-1] == "/dev/nvidia-caps-imex-channels/channel0 character special file ea:0 666"


def test_without_the_driver_it_fails_saying_so(tmp_path):
    r = run(tmp_path, "Character devices:\n  1 mem\n", [0])
    assert r.returncode != 0
    assert "no nvidia-caps-imex-channels: the NVIDIA driver is not loaded" in r.stderr
