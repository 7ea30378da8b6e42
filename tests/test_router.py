"""roles/sglang_router's filter: the gateway's workers are the inventory's replica heads, in replica order."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("sglang_router_filters",
                                              REPO / "plugins/filter/sglang_router.py")
filters = importlib.util.module_from_spec(spec)
spec.loader.exec_module(filters)


def hostvars_of(inventory: Path) -> tuple[list[str], dict]:
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["children"]
    hostvars = {}
    for name, conn in hosts["qwen35_nodes"]["hosts"].items():
        hostvars[name] = {**(conn or {}), **yaml.safe_load((inventory / "host_vars" / f"{name}.yml").read_text())}
    return list(hosts["qwen35_heads"]["hosts"]), hostvars


def test_heads_of_multi_node_replicas():
    heads, hv = hostvars_of(REPO / "tests/golden/h100x32")
    assert filters.sglang_router_worker_urls(heads, hv) == ["http://10.1.0.1:30000", "http://10.1.0.3:30000"]


def test_several_replicas_on_one_host():
    heads, hv = hostvars_of(REPO / "tests/golden/h200x8-35b-fp8")
    urls = filters.sglang_router_worker_urls(heads, hv)
    assert hv[heads[0]]["ansible_host"] == "fd00:10::5"                     # the golden fleet's IPv6 host
    assert urls == [f"http://[fd00:10::5]:{port}" for port in range(31000, 31008)]


def test_ipv6_and_duplicates():
    hv = {"a": {"ansible_host": "fd00::1", "qwen35_launches": [{"replica": 0, "is_head": True, "port": 30000}]},
          "b": {"ansible_host": "10.0.0.2", "qwen35_launches": [{"replica": 0, "is_head": True, "port": 30000}]}}
    assert filters.sglang_router_worker_urls(["a"], hv) == ["http://[fd00::1]:30000"]
    with pytest.raises(ValueError, match="two heads claim the same replica"):
        filters.sglang_router_worker_urls(["a", "b"], hv)
