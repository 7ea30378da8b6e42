"""The launch contract (docs/architecture.md): every launch carries the planner's facts as fields, they agree
with the command they describe, and the inventory check and the docs name the same fields as the planner."""

import importlib.util
import re
from pathlib import Path

import pytest

from qwen35_prov.inventory import INVENTORY_SCHEMA_VERSION
from qwen35_prov.options import PlanOptions
from qwen35_prov.plan_output import plan_to_dict
from qwen35_prov.planner import plan

REPO = Path(__file__).resolve().parents[1]


def _validate_filters():
    path = REPO / "plugins" / "filter" / "qwen35_validate.py"
    spec = importlib.util.spec_from_file_location("qwen35_validate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


CASES = [("h100x16", {}), ("h100x32", {}), ("h200x8", {"model": "122b"}), ("mi300x8", {}),
         ("gb200x8", {"precision": "fp8", "mtp": False}),
         ("h200x1", {"model": "27b", "reasoning_parser": False, "tool_call_parser": False})]


def test_the_check_the_docs_and_the_planner_name_the_same_fields():
    launch = plan("h100x16").nodes[0].contract()
    validate = _validate_filters()
    assert tuple(launch) == validate.LAUNCH_FIELDS
    assert validate.INVENTORY_SCHEMA == INVENTORY_SCHEMA_VERSION
    doc = (REPO / "docs" / "architecture.md").read_text()
    table = doc[doc.index("### The launch contract"):]
    table = table[:table.index("\n\n", table.index("| field |"))]
    documented = {name for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for name in re.findall(r"`(\w+)`", cell)}
    assert documented == set(validate.LAUNCH_FIELDS)


@pytest.mark.parametrize("cluster,opts", CASES)
def test_every_field_agrees_with_the_command(cluster, opts):
    p = plan(cluster, PlanOptions(**opts))
    for node in plan_to_dict(p)["nodes"]:
        argv = node["argv"]
        assert node["nnodes"] == p.nodes_per_replica == int(_value(argv, "--nnodes") or 1)
        assert node["node_rank"] == int(_value(argv, "--node-rank") or 0)
        assert node["port"] == int(_value(argv, "--port"))
        assert node["served_model_name"] == _value(argv, "--served-model-name") == p.repo
        assert node["model_path"] == _value(argv, "--model-path") == p.model_path
        assert node["reasoning_parser"] == _value(argv, "--reasoning-parser")
        assert node["tool_call_parser"] == _value(argv, "--tool-call-parser")
        if node["nnodes"] > 1:
            assert f"{node['dist_init']['host']}:{node['dist_init']['port']}" == _value(argv, "--dist-init-addr")
            head = p.replicas[node["replica"]].head
            assert node["dist_init"]["host"] == p.node_names[head]
        else:
            assert node["dist_init"] is None and "--dist-init-addr" not in argv


def test_parsers_off_are_null():
    node = plan("h200x1", PlanOptions(model="27b", reasoning_parser=False, tool_call_parser=False)).nodes[0]
    assert (node.reasoning_parser, node.tool_call_parser) == (None, None)
    on = plan("h200x1", PlanOptions(model="27b")).nodes[0]
    assert (on.reasoning_parser, on.tool_call_parser) == ("qwen3", "qwen3_coder")


def _golden_hostvars(name):
    import yaml

    root = REPO / "tests" / "golden" / name
    groups = {g: list((v or {}).get("hosts") or {})
              for g, v in yaml.safe_load((root / "hosts.yml").read_text())["all"]["children"].items()}
    common = {}
    for f in sorted((root / "group_vars" / "qwen35_nodes").glob("*.yml")):
        common.update(yaml.safe_load(f.read_text()) or {})
    hostvars = {h: {**common, **yaml.safe_load((root / "host_vars" / f"{h}.yml").read_text())}
                for h in groups["qwen35_nodes"]}
    return groups, hostvars


def test_the_inventory_check_refuses_a_broken_contract_naming_each_launch():
    check = _validate_filters().inventory_errors
    groups, hostvars = _golden_hostvars("h100x32")
    assert check(groups, hostvars) == []
    del hostvars["h100-a"]["qwen35_launches"][0]["served_model_name"]
    hostvars["h100-b"]["qwen35_launches"][0]["nnodes"] = 1
    hostvars["h100-c"]["qwen35_launches"][0]["dist_init"] = {"host": "10.9.9.9", "port": 20000}
    hostvars["h100-d"]["qwen35_launches"][0]["dist_init"] = None
    assert check(groups, hostvars) == [
        "h100-a: launch 0 lacks served_model_name (the launch contract; regenerate the inventory)",
        "h100-b: launch 0 has nnodes 1, the plan has 2 node(s) per replica",
        "h100-c: launch 0: dist_init host 10.9.9.9 is not its replica head's address 10.1.0.3",
        "h100-d: launch 0: a multi-node launch needs dist_init {host, port}, got None",
    ]


def test_an_inventory_of_the_previous_schema_is_refused_with_what_to_do():
    groups, hostvars = _golden_hostvars("h200x8-35b-fp8")
    for hv in hostvars.values():
        hv["qwen35_inventory_schema"] = 2
    assert _validate_filters().inventory_errors(groups, hostvars) == [
        "the inventory is of schema 2, this qwen35-prov reads schema 3: regenerate it with qwen35-prov inventory "
        "(or up, which does)"]


def test_each_launch_names_its_units_and_the_check_refuses_names_that_are_no_unit():
    check = _validate_filters().inventory_errors
    groups, hostvars = _golden_hostvars("h100x32")
    units = {h: [launch["units"] for launch in hv["qwen35_launches"]] for h, hv in hostvars.items()}
    assert units["h100-a"] == [{"server": "qwen35-sglang-r0.service", "watch": "qwen35-sglang-r0-watch.service",
                                "target": "qwen35-replica-r0.target", "container": "qwen35-sglang-r0"}]
    assert units["h100-c"][0]["server"] == "qwen35-sglang-r1.service"
    hostvars["h100-a"]["qwen35_launches"][0]["units"]["server"] = "qwen35 sglang.service"
    hostvars["h100-b"]["qwen35_launches"][0]["units"]["watch"] = None
    hostvars["h100-c"]["qwen35_launches"][0]["units"]["target"] = "qwen35-replica-r1.service"
    assert check(groups, hostvars) == [
        "h100-a: launch 0: units.server is 'qwen35 sglang.service', not a systemd unit name ending in .service",
        "h100-b: launch 0: units.watch is None, not a systemd unit name ending in .service",
        "h100-c: launch 0: units.target is 'qwen35-replica-r1.service', not a systemd unit name ending in .target",
    ]
    groups, hostvars = _golden_hostvars("h200x8-35b-fp8")
    [host] = hostvars
    assert hostvars[host]["qwen35_launches"][0]["units"]["watch"] is None
    hostvars[host]["qwen35_launches"][0]["units"]["watch"] = "qwen35-sglang-r0-watch.service"
    assert check(groups, hostvars) == [
        f"{host}: launch 0: a one-node replica has no watch unit, got 'qwen35-sglang-r0-watch.service'"]


def test_the_inventory_check_wants_the_gateway_where_the_plan_puts_it():
    check = _validate_filters().inventory_errors
    groups, hostvars = _golden_hostvars("h100x32")
    groups["qwen35_router"] = ["h100-c"]
    assert check(groups, hostvars) == [
        "group qwen35_router holds ['h100-c'], the plan puts the gateway on h100-a"]


def test_the_inventory_check_wants_each_server_where_the_plan_binds_it_and_every_interface_only_with_a_key():
    check = _validate_filters().inventory_errors
    groups, hostvars = _golden_hostvars("h200x8-35b-fp8")
    [host] = hostvars
    hostvars[host]["ansible_host"] = hostvars[host]["qwen35_launches"][0]["host"]
    assert check(groups, hostvars) == []
    hostvars[host]["qwen35_launches"][0]["host"] = "0.0.0.0"
    hostvars[host]["qwen35_plan"] = {**hostvars[host]["qwen35_plan"], "api_key": False}
    assert check(groups, hostvars) == [
        f"{host}: launch 0 listens on 0.0.0.0, the plan binds the host address {hostvars[host]['ansible_host']}",
        f"{host}: launch 0 listens on every interface without an API key (plan with the key, or --bind cluster)"]
