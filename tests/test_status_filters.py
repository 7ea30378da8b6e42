"""plugins/filter/qwen35_status.py: GPU memory as numbers, from what the GPU tools really print (the
NVIDIA test double replays the H200 capture; the AMD double follows amd-smi's documented JSON)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("qwen35_status", REPO / "plugins" / "filter" / "qwen35_status.py")
qwen35_status = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(qwen35_status)
gpu_memory = qwen35_status.gpu_memory


def double(tool: str, config: dict, *argv: str, tmp_path: Path) -> str:
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "QWEN35_TEST_DOUBLE_CONFIG": str(path),
           "QWEN35_TEST_DOUBLE_FIXTURES": str(REPO / "tests" / "fixtures")}
    out = subprocess.run([sys.executable, str(REPO / "tests" / "doubles" / tool), *argv], capture_output=True,
                         text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_nvidia_smi_query_lines_become_numbers():
    out = "0, 283, 143771\n1, 70123, 143771\n"
    assert gpu_memory(out, "nvidia") == [{"index": 0, "used_mib": 283, "total_mib": 143771},
                                         {"index": 1, "used_mib": 70123, "total_mib": 143771}]


def test_what_the_nvidia_double_prints_for_the_status_query(tmp_path):
    out = double("nvidia-smi", {"gpu": "h100", "vendor": "nvidia", "name": "NVIDIA H100 80GB HBM3",
                                "memory_mib": 81559, "architecture": "hopper", "count": 8},
                 "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits", tmp_path=tmp_path)
    rows = gpu_memory(out, "nvidia")
    assert [r["index"] for r in rows] == list(range(8))
    assert all(r["total_mib"] == 81559 and 0 <= r["used_mib"] <= r["total_mib"] for r in rows)


def test_amd_smi_json_in_both_shapes_becomes_mib():
    gpu = {"gpu": 3, "mem_usage": {"total_vram": {"value": 192, "unit": "GB"}, "used_vram": {"value": 283, "unit": "MB"}}}
    expected = [{"index": 3, "used_mib": 283, "total_mib": 192 * 1024}]
    assert gpu_memory(json.dumps([gpu]), "amd") == expected
    assert gpu_memory(json.dumps({"gpu_data": [gpu]}), "amd") == expected


def test_what_the_amd_double_prints_for_the_status_query(tmp_path):
    out = double("amd-smi", {"gpu": "mi300x", "vendor": "amd", "name": "AMD Instinct MI300X", "memory_mib": 196592,
                             "architecture": "cdna3", "count": 8}, "metric", "--mem-usage", "--json", tmp_path=tmp_path)
    rows = gpu_memory(out, "amd")
    assert [r["index"] for r in rows] == list(range(8))
    assert all(r["total_mib"] == 196592 and r["used_mib"] == 283 for r in rows)


def test_nothing_usable_is_an_empty_list():
    assert gpu_memory("", "nvidia") == [] and gpu_memory("NVIDIA-SMI has failed", "nvidia") == []
    assert gpu_memory("not json", "amd") == [] and gpu_memory('{"gpu_data": [{"gpu": 0}]}', "amd") == []
