"""The all-reduce bandwidth check: a real 2-process all-reduce on CPUs (gloo), its verdicts, and the floors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_prov.nccl import nccl_floor

SCRIPT = Path(__file__).resolve().parents[1] / "roles/nccl_preflight/files/nccl_allreduce.py"

sys.path.insert(0, str(SCRIPT.parent))
import nccl_allreduce  # noqa: E402


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def torch_available():
    pytest.importorskip("torch")


def test_two_process_allreduce_over_gloo_is_correct_and_reports_bandwidth(torch_available):
    r = run("--backend", "gloo", "--sizes", "64K,1M", "--iters", "3", "--warmup", "1", "--floor-min-size", "64K",
            "--master-port", "29611")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["status"] == "pass" and report["world_size"] == 2
    assert [row["bytes"] for row in report["results"]] == [65536, 1048576]
    assert all(row["correct"] and row["busbw_gbps"] > 0 for row in report["results"])


def test_under_the_floor_fails_with_measured_and_expected_figures(torch_available):
    r = run("--backend", "gloo", "--sizes", "64K", "--iters", "2", "--warmup", "1", "--floor-min-size", "64K",
            "--floor-gbps", "100000", "--master-port", "29612")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["status"] == "fail"
    assert "under the floor of 100000.0 GB/s" in report["message"]
    assert f"bandwidth {report['peak_busbw_gbps']:.1f} GB/s" in report["message"]


def test_one_gpu_has_nothing_to_all_reduce(torch_available):
    r = run("--backend", "gloo", "--nproc", "1")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"status": "skipped", "world_size": 1, "message": "1 GPU: nothing to all-reduce"}


def test_verdict_uses_only_large_messages_and_flags_wrong_sums():
    rows = [{"bytes": 1 << 20, "busbw_gbps": 500.0, "correct": True},
            {"bytes": 1 << 28, "busbw_gbps": 250.0, "correct": True}]
    report = nccl_allreduce.verdict({"world_size": 8, "results": rows}, 300.0, 1 << 28)
    assert report["status"] == "fail" and report["peak_busbw_gbps"] == 250.0
    rows[1]["correct"] = False
    assert "wrong sums" in nccl_allreduce.verdict({"world_size": 8, "results": rows}, 0, 1 << 28)["message"]


def test_sizes_parse():
    assert [nccl_allreduce.parse_size(s) for s in ("64K", "256M", "1G", "4096")] == [65536, 1 << 28, 1 << 30, 4096]


@pytest.mark.parametrize("gpu,nodes,ib,floor,link", [
    ("h200", 1, False, 300, "nvlink4"), ("h100", 1, True, 300, "nvlink4"), ("b200", 1, False, 600, "nvlink5"),
    ("mi300x", 1, False, 150, "infinity_fabric"), ("h100", 2, True, 35, "infiniband"), ("h100", 2, False, 1, "socket")])
def test_floors_by_interconnect(gpu, nodes, ib, floor, link):
    f = nccl_floor(gpu, nodes, ib)
    assert (f.floor_gbps, f.link) == (floor, link) and f.source


def test_the_measured_h200_reference_passes_its_floor():
    ref = json.loads((Path(__file__).resolve().parents[1] / "docs/measurements/nccl-allreduce-h200x2.json").read_text())
    assert ref["device_name"] == "NVIDIA H200" and ref["status"] == "pass"
    assert ref["peak_busbw_gbps"] >= nccl_floor("h200", 1, False).floor_gbps
