"""`qwen35-prov metrics`: the Prometheus scrape configuration generated from an inventory.

Structure on the golden inventories; `promtool check config` on every generated file; and a real Prometheus
(Debian's build, put under build/tools by scripts/get-prometheus-tools) scraping a stand-in deployment on
127.0.0.1: the real node exporter, plus TEST DOUBLES for what needs GPUs here (DCGM exporter, SGLang's /metrics),
to see the per-GPU replica labels the relabel rules produce.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from qwen35_prov import metrics
from qwen35_prov.cli import main

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "build" / "tools"
H100X32 = REPO / "tests" / "golden" / "h100x32"                      # 2 replicas x 2 nodes
SOLO = REPO / "tests" / "golden" / "h200x8-35b-fp8"                  # 8 replicas of 1 GPU on one host
MI300 = REPO / "inventories" / "examples" / "mi300x8" / "inventory"   # AMD


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        if os.environ.get("QWEN35_REQUIRE_PROMETHEUS_TOOLS") == "1":
            pytest.fail(f"{path} is missing: run scripts/get-prometheus-tools")
        pytest.skip(f"{path} is missing: run scripts/get-prometheus-tools")
    return path


def jobs(config: dict) -> dict[str, dict]:
    return {j["job_name"]: j for j in config["scrape_configs"]}


def test_multi_node_replicas_structure():
    cluster, nodes = metrics.read_inventory(H100X32)
    config = metrics.scrape_config(cluster, nodes)
    j = jobs(config)
    assert list(j) == ["qwen35-sglang", "qwen35-node", "qwen35-dcgm"]        # no AMD job on an NVIDIA cluster
    sglang = j["qwen35-sglang"]["static_configs"]
    assert [s["targets"] for s in sglang] == [["10.1.0.1:30000"], ["10.1.0.3:30000"]]   # heads only
    assert [s["labels"] for s in sglang] == [
        {"cluster": "h100x32", "node": "h100-a", "gpu_kind": "h100", "replica": "0", "node_rank": "0"},
        {"cluster": "h100x32", "node": "h100-c", "gpu_kind": "h100", "replica": "1", "node_rank": "0"}]
    assert j["qwen35-sglang"]["metrics_path"] == "/metrics"
    node = j["qwen35-node"]["static_configs"]
    assert [s["targets"][0] for s in node] == [f"10.1.0.{i}:9100" for i in (1, 2, 3, 4)]
    assert [(s["labels"]["replica"], s["labels"]["node_rank"]) for s in node] == [("0", "0"), ("0", "1"),
                                                                                  ("1", "0"), ("1", "1")]
    assert [s["targets"][0] for s in j["qwen35-dcgm"]["static_configs"]] == [f"10.1.0.{i}:9400" for i in (1, 2, 3, 4)]
    rule = j["qwen35-dcgm"]["metric_relabel_configs"][0]
    assert rule == {"source_labels": ["node", "gpu"], "separator": ";", "regex": "h100-a;(0|1|2|3|4|5|6|7)",
                    "target_label": "replica", "replacement": "0", "action": "replace"}
    assert config["global"]["external_labels"] == {"qwen35_cluster": "h100x32"}


def test_several_replicas_on_one_host_are_labelled_per_gpu():
    cluster, nodes = metrics.read_inventory(SOLO)
    j = jobs(metrics.scrape_config(cluster, nodes))
    sglang = j["qwen35-sglang"]["static_configs"]
    assert [s["labels"]["replica"] for s in sglang] == [str(r) for r in range(8)]
    assert len({s["targets"][0] for s in sglang}) == 8                       # one port per replica
    (node,) = j["qwen35-node"]["static_configs"]
    assert "replica" not in node["labels"] and node["labels"]["replicas"] == "0,1,2,3,4,5,6,7"
    rules = [r for r in j["qwen35-dcgm"]["metric_relabel_configs"] if r["target_label"] == "replica"]
    assert [(r["regex"], r["replacement"]) for r in rules] == [(f"h200-solo;({g})", str(g)) for g in range(8)]


def test_amd_nodes_get_the_amd_exporter():
    cluster, nodes = metrics.read_inventory(MI300)
    j = jobs(metrics.scrape_config(cluster, nodes))
    assert "qwen35-dcgm" not in j
    amd = j["qwen35-amd-gpu"]
    assert all(t.endswith(":5000") for s in amd["static_configs"] for t in s["targets"])
    assert {r["source_labels"][1] for r in amd["metric_relabel_configs"]} == {"gpu_id"}


def test_ipv6_targets_are_bracketed():
    node = metrics.Node("n1", "fd00::1", "nvidia", "h200", [metrics.Launch(0, 0, True, 30000, [0])])
    j = jobs(metrics.scrape_config("c", [node]))
    assert j["qwen35-sglang"]["static_configs"][0]["targets"] == ["[fd00::1]:30000"]


@pytest.mark.parametrize("inventory", [H100X32, SOLO, MI300], ids=["h100x32", "solo", "mi300"])
def test_promtool_accepts_the_generated_file(inventory, tmp_path, capsys):
    promtool = tool("promtool")
    out = tmp_path / "prometheus.yml"
    assert main(["metrics", "--inventory", str(inventory), "--out", str(out)]) == 0
    assert f"metrics: wrote {out}" in capsys.readouterr().out
    assert out.read_text().startswith("# Prometheus scrape configuration generated by qwen35-prov")
    check = subprocess.run([str(promtool), "check", "config", str(out)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout + check.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    """The check is real: a relabel regex Prometheus cannot compile fails it."""
    promtool = tool("promtool")
    cluster, nodes = metrics.read_inventory(H100X32)
    config = metrics.scrape_config(cluster, nodes)
    jobs(config)["qwen35-dcgm"]["metric_relabel_configs"][0]["regex"] = "h100-a;(0|1"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(config))
    check = subprocess.run([str(promtool), "check", "config", str(bad)], capture_output=True, text=True, timeout=60)
    assert check.returncode != 0 and "error parsing regexp" in check.stdout + check.stderr


def test_cli_prints_to_stdout_and_refuses_bad_ports(capsys):
    assert main(["metrics", "--inventory", str(SOLO)]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["scrape_configs"][0]["job_name"] == "qwen35-sglang"
    assert main(["metrics", "--inventory", str(SOLO), "--dcgm-port", "70000"]) == 2
    assert "--dcgm-port 70000: not a TCP port" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ live scrape

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Exporter(ThreadingHTTPServer):
    """TEST DOUBLE: serves a fixed Prometheus text page on /metrics (for exporters that need GPUs)."""

    daemon_threads = True

    def __init__(self, page: str):
        self.page = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                if handler.path != "/metrics":
                    handler.send_error(404)
                    return
                handler.send_response(200)
                handler.send_header("Content-Type", "text/plain; version=0.0.4")
                handler.send_header("Content-Length", str(len(self.page)))
                handler.end_headers()
                handler.wfile.write(self.page)

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


# DCGM exporter's page shape (NVIDIA/dcgm-exporter README: `curl localhost:9400/metrics`), for 8 GPUs.
DCGM_PAGE = "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).\n# TYPE DCGM_FI_DEV_SM_CLOCK gauge\n" + "".join(
    f'DCGM_FI_DEV_SM_CLOCK{{gpu="{g}", UUID="GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e5{g}"}} {1980 - g}\n'
    for g in range(8))
SGLANG_PAGE = ('# HELP sglang:num_running_reqs The number of running requests.\n# TYPE sglang:num_running_reqs gauge\n'
               'sglang:num_running_reqs{model_name="Qwen/Qwen3.5-35B-A3B-FP8"} 0.0\n')


def query(base: str, expr: str) -> list[dict]:
    with urllib.request.urlopen(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5) as r:
        return json.loads(r.read())["data"]["result"]


def test_prometheus_scrapes_a_deployment_with_per_gpu_replica_labels(tmp_path):
    prometheus, node_exporter = tool("prometheus"), tool("prometheus-node-exporter")
    cluster, nodes = metrics.read_inventory(SOLO)
    (node,) = nodes
    node.address = "127.0.0.1"
    servers = [_Exporter(SGLANG_PAGE) for _ in node.launches]
    for launch, server in zip(node.launches, servers):
        launch.port = server.server_address[1]
    dcgm = _Exporter(DCGM_PAGE)
    node_port, prom_port = free_port(), free_port()
    config = metrics.scrape_config(cluster, nodes, scrape_interval="1s", node_exporter_port=node_port,
                                   dcgm_port=dcgm.server_address[1])
    (tmp_path / "prometheus.yml").write_text(metrics.render(config, "test"))
    procs = [
        subprocess.Popen([str(node_exporter), f"--web.listen-address=127.0.0.1:{node_port}",
                          "--collector.disable-defaults", "--collector.loadavg", "--collector.uname"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(prometheus), f"--config.file={tmp_path / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                         stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w")),
    ]
    base = f"http://127.0.0.1:{prom_port}"
    try:
        deadline = time.monotonic() + 60
        up: list[dict] = []
        while time.monotonic() < deadline:
            try:
                up = query(base, "up == 1")
                if len(up) == 10 and query(base, "DCGM_FI_DEV_SM_CLOCK") and query(base, "node_load1"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert len(up) == 10, ((tmp_path / "prometheus.log").read_text()[-2000:], up)   # 8 SGLang + node + DCGM
        by_job: dict[str, list[dict]] = {}
        for series in up:
            by_job.setdefault(series["metric"]["job"], []).append(series["metric"])
        assert sorted(m["replica"] for m in by_job["qwen35-sglang"]) == [str(r) for r in range(8)]
        assert cluster == "h200x8"
        assert {m["cluster"] for ms in by_job.values() for m in ms} == {cluster}
        # per-GPU samples got the replica and node rank of the launch that owns the GPU, DCGM's own gpu label kept
        gpus = query(base, "DCGM_FI_DEV_SM_CLOCK")
        assert sorted((s["metric"]["gpu"], s["metric"]["replica"], s["metric"]["node_rank"]) for s in gpus) == [
            (str(g), str(g), "0") for g in range(8)]
        assert {s["metric"]["node"] for s in gpus} == {"h200-solo"}
        assert {s["metric"]["gpu_kind"] for s in gpus} == {"h200"}
        # the real node exporter, labelled with the replicas the host serves
        (load,) = query(base, "node_load1")
        assert load["metric"]["replicas"] == "0,1,2,3,4,5,6,7" and load["metric"]["cluster"] == cluster
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        for s in servers + [dcgm]:
            s.shutdown()


def test_router_metrics_when_the_plan_has_several_replicas(capsys):
    assert main(["metrics", "--inventory", str(H100X32)]) == 0                           # 2 replicas
    router = jobs(yaml.safe_load(capsys.readouterr().out))["qwen35-router"]
    assert router["static_configs"] == [{"targets": ["10.1.0.1:29000"], "labels": {"cluster": "h100x32",
                                                                                  "role": "router"}}]
    assert main(["metrics", "--inventory", str(H100X32), "--router-port", "0"]) == 0
    assert "qwen35-router" not in jobs(yaml.safe_load(capsys.readouterr().out))
    one = REPO / "inventories" / "examples" / "h200x8" / "inventory"                     # 1 replica: no router
    assert main(["metrics", "--inventory", str(one)]) == 0
    assert "qwen35-router" not in jobs(yaml.safe_load(capsys.readouterr().out))
