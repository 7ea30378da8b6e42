"""`qwen35-prov bench` end to end on a sandbox node: the session's h200x8 deployment (tests/conftest.py: `up
--sandbox`, the stand-in engine TEST DOUBLE serving replica 0), playbooks/bench.yml running the benchmark-client TEST
DOUBLES inside that container with `docker exec` (they replay SGLang's published Qwen3.5 outputs), the result files
copied out and fetched, parsed, compared with the reference and saved with the chart.

What this proves: the playbook's plumbing (container name and port from the inventory, argv passed unchanged, the
runs' files coming back, a failing run reported with its own log), and the CLI's pass/fail on top of it. What it
cannot: the figures themselves (no GPU; tests/test_bench.py covers the parsing of the real outputs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_prov import bench
from test_bench import GSM8K_LOG, LATENCY_LOG, THROUGHPUT_LOG, jsonl_record

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "qwen35_prov"]


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=1500, **kw)


def ansible(*args: str, inventory: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ansible")
    return run([str(exe), "-i", str(inventory), *args],
               env={**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1"})


@pytest.fixture(scope="module")
def replica(h200x8_deployed, tmp_path_factory):
    """The session's h200x8 deployment, with the bench doubles put into replica 0's container."""
    _, _, inventory = h200x8_deployed
    captures = tmp_path_factory.mktemp("bench-captures")
    specs = {s.name: s for s in bench.run_specs(bench.PROFILES)}
    for name, log in (("latency", LATENCY_LOG), ("throughput", THROUGHPUT_LOG)):
        shutil.copy(log, captures / f"{name}.log")
        record = jsonl_record(bench.parse_serving_block(log.read_text()), specs[name])
        (captures / f"{name}.jsonl").write_text(json.dumps(record) + "\n")
    shutil.copy(GSM8K_LOG, captures / "gsm8k.log")
    prepared = run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory),
                    str(REPO / "tests/bench/put-doubles.yml"), "-e", json.dumps({"bench_captures_dir": str(captures)})],
                   env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    assert prepared.returncode == 0, prepared.stdout[-4000:] + prepared.stderr[-2000:]
    return inventory


def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of an activated virtualenv (ansible-runner finds ansible-playbook on PATH)."""
    return {**os.environ, "QWEN35_STATE_DIR": str(tmp_path / "state"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def knobs(inventory: Path, value: dict | None) -> None:
    """Set (or clear) the bench doubles' knob file inside the replica's container."""
    script = ("import pathlib, sys; p = pathlib.Path('/etc/qwen35-bench-standin.json'); "
              "p.unlink(missing_ok=True) if sys.argv[1] == 'null' else p.write_text(sys.argv[1])")
    done = ansible("qwen35_heads", "-m", "ansible.builtin.command", "-a",
                   json.dumps({"argv": ["docker", "exec", "qwen35-sglang-r0", "python3", "-c", script,
                                        json.dumps(value)]}),
                   inventory=inventory)
    assert done.returncode == 0, done.stdout + done.stderr


def test_bench_runs_in_the_replica_container_and_passes(replica, tmp_path):
    knobs(replica, None)
    out = tmp_path / "out"
    done = run([*CLI, "bench", "--inventory", str(replica), "--out", str(out), "--json"],
               env=cli_env(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["status"] == "pass", report["checks"]
    assert report["playbook"]["status"] == "ok"
    raw = out / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        ["latency.jsonl", "latency.log", "throughput.jsonl", "throughput.log", "accuracy.log"])
    record = json.loads((raw / "latency.jsonl").read_text().splitlines()[-1])
    # the double echoes what it was run with and what the replica answered on /server_info
    assert (record["max_concurrency"], record["random_input_len"], record["random_range_ratio"]) == (1, 1000, 0.0)
    assert record["server_info"]["tp_size"] == 8 and record["server_info"]["standin"]["test_double"] is True
    # the clients reach the head where it listens: its own fleet address (the plan binds the cluster address)
    address = bench.deployment_of(replica, 0).address
    assert f"benchmark_args=Namespace(backend='sglang', host='{address}', port=30000" in (raw / "latency.log").read_text()
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "bench.json").read_text())["status"] == "pass"
    assert json.loads((out / "runs.json").read_text())["qwen35_bench_runs"][0]["argv"][:3] == [
        "python3", "-m", "sglang.bench_serving"]


def test_a_slower_replica_fails_the_gate(replica, tmp_path):
    knobs(replica, {"scale": {"output_throughput": 0.8}, "accuracy": 0.9})
    try:
        done = run([*CLI, "bench", "--inventory", str(replica), "--out", str(tmp_path / "o"), "--json"],
                   env=cli_env(tmp_path))
    finally:
        knobs(replica, None)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    failed = sorted((c["run"], c["metric"]) for c in report["checks"] if c["status"] == "fail")
    assert failed == [("accuracy", "accuracy"), ("latency", "output_throughput"), ("throughput", "output_throughput")]
    assert report["playbook"]["status"] == "ok"          # the runs worked; the figures failed


def test_a_broken_run_is_reported_with_its_own_log(replica, tmp_path):
    knobs(replica, {"fail": "CUDA error: an illegal memory access was encountered (stand-in)"})
    try:
        done = run([*CLI, "bench", "--inventory", str(replica), "--profile", "latency", "--out", str(tmp_path / "o")],
                   env=cli_env(tmp_path))
    finally:
        knobs(replica, None)
    assert done.returncode == 1
    text = done.stdout + done.stderr
    assert "FAIL" in done.stdout.splitlines()[0]
    assert "a benchmark failed in qwen35-sglang-r0" in text, text
    assert "CUDA error: an illegal memory access was encountered (stand-in)" in text
    # the log came back even though the run failed
    assert "RuntimeError" in (tmp_path / "o" / "raw" / "latency.log").read_text()
