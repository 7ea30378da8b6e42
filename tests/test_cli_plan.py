"""The plan and catalog commands as a user runs them: output, JSON schema, and every error case."""

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "qwen35_prov"]


def run(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


def test_plan_h100x16_prints_layout_and_both_nodes_commands():
    r = run("plan", "--cluster", "h100x16")
    assert r.returncode == 0, r.stderr
    assert "1 replica(s) x TP 16 over 2 node(s)" in r.stdout
    lines = [l.strip() for l in r.stdout.splitlines() if l.strip().startswith("python3 -m sglang.launch_server")]
    assert len(lines) == 2
    assert "--node-rank 0" in lines[0] and "--node-rank 1" in lines[1]
    assert "fits" in r.stdout


def test_plan_json_schema():
    r = run("plan", "--cluster", "h100x16", "--json")
    data = json.loads(r.stdout)
    assert data["model_repo"] == "Qwen/Qwen3.5-397B-A17B"
    assert data["precision"] == "bf16" and data["tp_size"] == 16 and data["replicas"] == 1
    assert [(n["replica"], n["node_rank"]) for n in data["nodes"]] == [(0, 0), (0, 1)]
    for n in data["nodes"]:
        assert n["argv"][:3] == ["python3", "-m", "sglang.launch_server"]
        assert all(isinstance(a, str) for a in n["argv"]) and isinstance(n["env"], dict)


def test_plan_json_amd_env():
    data = json.loads(run("plan", "--cluster", "mi355xx4", "--json").stdout)
    assert data["nodes"][0]["env"]["SGLANG_USE_AITER"] == "1"


def test_catalog_sections():
    for section in ("gpus", "models", "recipes"):
        r = run("catalog", section, "--json")
        assert r.returncode == 0 and section in json.loads(r.stdout)
    text = run("catalog").stdout
    assert "143771" in text and "Qwen/Qwen3.5-27B-FP8" in text and "8/ep8/0.8" in text


@pytest.mark.parametrize("args,expected", [
    (["--cluster", "x100x8"], "unknown GPU kind 'x100'"),
    (["--cluster", "h100"], "not of the form <gpu>x<count>"),
    (["--cluster", "h100xabc"], "not of the form <gpu>x<count>"),
    (["--cluster", "h100x0"], "at least 1"),
    (["--cluster", "h100x12"], "not a multiple of 8 GPUs per node"),
    (["--cluster", "h100x16", "--gpus-per-node", "3"], "not a multiple of 3"),
    (["--cluster", "h100x16", "--model", "70b"], "unknown model '70b'"),
    (["--cluster", "h100x16", "--precision", "int4"], "invalid choice: 'int4'"),
    (["--cluster", "h100x16", "--precision", "fp4"], "FP4 needs a GPU with FP4 support"),
    (["--cluster", "b200x8", "--model", "122b", "--precision", "fp4"], "122b has no FP4 checkpoint"),
    (["--cluster", "h100x1", "--model", "9b", "--precision", "fp8"], "9b has no FP8 checkpoint"),
    (["--cluster", "h100x8"], "smallest cluster that works is h100x16"),
    (["--cluster", "h200x4"], "smallest cluster that works is h200x8"),
    (["--cluster", "h100x16", "--context-length", "65536"], "allowed 131072 to 262144"),
    (["--cluster", "h100x16", "--context-length", "lots"], "'lots' is not a whole number"),
    (["--cluster", "mi300xx8", "--mamba-cache", "v2"], "AMD GPUs use v1"),
    (["--cluster", "h200x8", "--mamba-cache", "v1"], "pass --no-mtp"),
    (["--cluster", "h200x1", "--model", "27b", "--no-mtp", "--mamba-cache", "v2"], "MoE models only"),
    (["--cluster", "h100x16", "--mamba-cache", "v3"], "invalid choice: 'v3'"),
    # what reaches paths on the hosts (the weights folder, `down --purge-weights`) is checked before anything runs
    (["--cluster", "h100x16", "--revision", "../../.."], "full 40-character hex commit"),
    (["--cluster", "h100x16", "--revision", "main"], "full 40-character hex commit"),
    (["--cluster", "h100x16", "--revision", "0123456789ABCDEF" * 2 + "01234567"], "full 40-character hex commit"),
    (["--cluster", "h100x16", "--weights-dir", "/etc"], "is a system folder"),
    (["--cluster", "h100x16", "--weights-dir", "/srv/m/../../etc"], "'.' or '..'"),
    (["--cluster", "h100x16", "--weights-dir", "/srv/{{ x }}"], "a path of letters"),
])
def test_bad_input_exits_2_with_one_line(args, expected):
    r = run("plan", *args)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert expected in lines[0]
    assert "Traceback" not in r.stderr


def test_help_explains_the_options():
    r = run("plan", "--help")
    assert r.returncode == 0
    for word in ("--cluster", "--precision", "--no-mtp", "--mamba-cache", "--context-length", "--gpus-per-node"):
        assert word in r.stdout
