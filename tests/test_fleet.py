"""The fleet file: parsing, every kind of error (with host, field and line), host selection, facts write-back."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from qwen35_prov.errors import UserError
from qwen35_prov.fleet import (
    FleetError, load_fleet, parse_fleet, select_hosts, update_facts_text, write_fleet_facts,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "inventories" / "examples"
CLI = [sys.executable, "-m", "qwen35_prov"]


def fleet(text: str, path: str = "/srv/fleet/fleet.yml"):
    return parse_fleet(textwrap.dedent(text), path)


def problems(text: str) -> list[str]:
    with pytest.raises(FleetError) as info:
        fleet(text)
    return info.value.problems


@pytest.mark.parametrize("name", ["h100x16", "h200x8", "mi300x8"])
def test_the_example_fleets_are_valid(name):
    f = load_fleet(EXAMPLES / name / "fleet.yml")
    assert f.hosts and all(h.gpu_count == 8 for h in f.hosts)


def test_defaults_apply_and_hosts_override_them():
    f = fleet("""
        defaults:
          ssh_user: ubuntu
          ssh_port: 2222
          ssh_key: keys/id_ed25519      # relative: against the fleet file's folder
          known_hosts: ~/.ssh/known_hosts
          network_interface: eth0
          ib_hcas: mlx5_0,mlx5_1        # a comma list is accepted too
        hosts:
          - name: gpu-01
            address: 10.0.0.11
            gpu: H100                   # case does not matter
            gpu_count: 8
          - name: gpu-02
            address: 10.0.0.12
            ssh_port: 22
            network_interface: ens5
            gpu: h100
            gpu_count: 8
            labels: {rack: r1, slot: 3}
        """)
    a, b = f.hosts
    assert (a.ssh_user, a.ssh_port, a.network_interface, a.gpu) == ("ubuntu", 2222, "eth0", "h100")
    assert a.ssh_key == "/srv/fleet/keys/id_ed25519" and a.known_hosts == "~/.ssh/known_hosts"
    assert a.ib_hcas == ("mlx5_0", "mlx5_1") and a.labels == {}
    assert (b.ssh_port, b.network_interface, b.labels) == (22, "ens5", {"rack": "r1", "slot": 3})
    assert a.line == 10 and b.line == 14
    assert a.known_hosts_local == os.path.expanduser("~/.ssh/known_hosts")


def test_every_problem_is_reported_with_line_host_and_field():
    errs = problems("""
        defaults:
          ssh_usr: root
          name: nope
        hosts:
          - name: gpu-01
            address: 10.0.0.11
            gpu: h1000
            gpu_count: eight
          - name: gpu-02
            address: 10.0.0.12
            gpu: h100
            gpu_count: 9
            ssh_port: 70000
            network_interface: "a very long interface name"
            weights_dir: models
            ib_hcas: [mlx5_0, {port: 1}]
            labels: [r1]
          - address: 10.0.0.13
            gpu: h100
          - name: gpu-01
            address: 10.0.0.14
            gpu: h100
            gpu_count: 8
            colour: blue
        """)
    f = "/srv/fleet/fleet.yml"
    assert errs == [
        f"{f}:3: defaults: unknown field 'ssh_usr' (did you mean 'ssh_user'?); allowed: ssh_user, ssh_port, "
        f"ssh_key, known_hosts, gpu, gpu_count, network_interface, ib_hcas, weights_dir, weights_storage, labels",
        f"{f}:4: defaults: name: is per host; it cannot be a default",
        f"{f}:8: host gpu-01: gpu: unknown GPU kind 'h1000' (did you mean 'h100'?); known: h100, h200, b200, "
        f"b300, gb200, gb300, mi300x, mi325x, mi355x, mi350x",
        f"{f}:9: host gpu-01: gpu_count: expected a whole number from 1 to 8, got 'eight'",
        f"{f}:13: host gpu-02: gpu_count: expected a whole number from 1 to 8, got 9",
        f"{f}:14: host gpu-02: ssh_port: expected a port number from 1 to 65535, got 70000",
        f"{f}:15: host gpu-02: network_interface: 'a very long interface name' is not a network interface name "
        f"(at most 15 characters, no spaces or '/')",
        f"{f}:16: host gpu-02: weights_dir: 'models' must be an absolute path",
        f"{f}:17: host gpu-02: ib_hcas: expected a list of InfiniBand device names such as [mlx5_0, mlx5_1], "
        f"got ['mlx5_0', {{'port': 1}}]",
        f"{f}:18: host gpu-02: labels: expected a mapping of label to plain value, such as {{rack: r1}}, "
        f"got ['r1']",
        f"{f}:19: hosts[2]: missing required field 'name'",
        f"{f}:19: hosts[2]: missing required field 'gpu_count'",
        f"{f}:25: host gpu-01: unknown field 'colour'; allowed: name, address, ssh_user, ssh_port, ssh_key, "
        f"known_hosts, gpu, gpu_count, network_interface, ib_hcas, weights_dir, weights_storage, labels, facts",
    ]


def test_the_cli_prints_every_problem_and_exits_2(tmp_path):
    path = tmp_path / "fleet.yml"
    path.write_text("hosts:\n  - name: gpu-01\n    address: 10.0.0.1\n    gpu: h100\n    gpu_count: 0\n")
    r = subprocess.run([*CLI, "fleet", "check", "--fleet", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [
        f"qwen35-prov: error: fleet file {path}: 1 problem:",
        f"  {path}:5: host gpu-01: gpu_count: expected a whole number from 1 to 8, got 0",
    ]


def test_duplicates_names_endpoints_and_keys():
    errs = problems("""
        hosts:
          - name: a
            address: 10.0.0.1
            gpu: h100
            gpu_count: 8
          - name: a
            address: 10.0.0.2
            gpu: h100
            gpu_count: 8
          - name: c
            address: 10.0.0.1
            gpu: h100
            gpu_count: 8
        """)
    assert errs == [
        "/srv/fleet/fleet.yml:7: host a: name 'a' is already used on line 3",
        "/srv/fleet/fleet.yml:12: host c: address 10.0.0.1 port 22 is also host a's (line 3)",
    ]
    [err] = problems("hosts:\n  - name: a\n    name: b\n    address: x\n    gpu: h100\n    gpu_count: 1\n")
    assert err == "/srv/fleet/fleet.yml:3: key 'name' given twice (first on line 2)"


@pytest.mark.parametrize("text,expected", [
    ("", "the file is empty"),
    ("- a\n- b\n", "expected a mapping with `hosts:`"),
    ("hosts: [\n", ":2: not valid YAML"),
    ("defaults: {}\n", "hosts: missing"),
    ("hosts: []\n", "expected a non-empty list of hosts"),
    ("hosts:\n  - just-a-name\n", "hosts[0]: expected a mapping"),
    ("hosts:\n  - name: 01\n    address: x\n    gpu: h100\n    gpu_count: 1\n", "expected a non-empty string, got 1 (quote it)"),
    ("hosts:\n  - name: a/b\n    address: x\n    gpu: h100\n    gpu_count: 1\n", "not a usable inventory hostname"),
    ("hostz: []\n", "unknown field 'hostz' (did you mean 'hosts'?)"),
])
def test_shape_errors(text, expected):
    errs = problems(text)
    assert any(expected in e for e in errs), errs


CLUSTERED = """
    hosts:
      - {name: a1, address: 10.0.0.1, gpu: h100, gpu_count: 8}
      - {name: a2, address: 10.0.0.2, gpu: h100, gpu_count: 8}
      - {name: a3, address: 10.0.0.3, gpu: h100, gpu_count: 4}
      - {name: b1, address: 10.0.0.4, gpu: h200, gpu_count: 8}
      - {name: a4, address: 10.0.0.5, gpu: h100, gpu_count: 8}
    clusters:
      prod:
        hosts: [a2, a4]
"""


def test_cluster_errors():
    errs = problems(CLUSTERED + """
      mixed:
        hosts: [a1, a3]
      typo:
        hosts: [a1, a5]
      twice:
        hosts: [a1, a1]
      empty:
        hosts: []
      bad:
        nodes: [a1]
    """)
    f = "/srv/fleet/fleet.yml"
    assert errs == [
        f"{f}:13: cluster mixed: hosts: every host of a cluster needs the same GPU kind and count; "
        f"got a1 8 x h100, a3 4 x h100",
        f"{f}:15: cluster typo: hosts: no host named 'a5' in the fleet",
        f"{f}:17: cluster twice: hosts: host a1 is listed twice",
        f"{f}:19: cluster empty: hosts: expected a non-empty list of host names",
        f"{f}:21: cluster bad: unknown field 'nodes'; allowed: hosts",
        f"{f}:21: cluster bad: hosts: expected a non-empty list of host names",
    ]


def test_select_named_cluster_and_spec():
    f = fleet(CLUSTERED)
    named = select_hosts(f, "prod")
    assert named.named and [h.name for h in named.hosts] == ["a2", "a4"]
    assert (named.spec.name, named.spec.gpus_per_node, named.spec.node_count) == ("h100x16", 8, 2)
    spec = select_hosts(f, "h100x16")
    assert not spec.named and [h.name for h in spec.hosts] == ["a1", "a2"]  # fleet order, right GPU count
    four = select_hosts(f, "h100x4")
    assert [h.name for h in four.hosts] == ["a3"]
    assert [h.name for h in select_hosts(f, "h200x8").hosts] == ["b1"]


def test_select_refuses_with_one_clear_line():
    f = fleet(CLUSTERED)
    with pytest.raises(UserError) as info:
        select_hosts(f, "h100x32")
    assert str(info.value) == ("/srv/fleet/fleet.yml cannot hold h100x32: it needs 4 host(s) with 8 x h100, the "
                               "fleet has 3 (a1, a2, a4); h100 hosts with other GPU counts: a3 (4); "
                               "pass --gpus-per-node 4")
    with pytest.raises(UserError, match="needs 1 host\\(s\\) with 8 x b200, the fleet has none"):
        select_hosts(f, "b200x8")
    with pytest.raises(UserError, match="clusters named in /srv/fleet/fleet.yml: prod"):
        select_hosts(f, "staging")
    with pytest.raises(UserError, match="fleet cluster 'prod' has 8 GPUs per host"):
        select_hosts(f, "prod", gpus_per_node=4)


def test_probe_facts_that_contradict_the_fleet_keep_a_host_out():
    f = fleet("""
        hosts:
          - name: a1
            address: 10.0.0.1
            gpu: h100
            gpu_count: 8
            facts: {gpu: h100, gpu_count: 7, gpu_name: NVIDIA H100 80GB HBM3}
          - name: a2
            address: 10.0.0.2
            gpu: h100
            gpu_count: 8
            facts: {gpu: h100, gpu_count: 8}
        clusters:
          both: {hosts: [a1, a2]}
        """)
    assert [h.name for h in select_hosts(f, "h100x8").hosts] == ["a2"]
    with pytest.raises(UserError, match="left out because their probe facts disagree: a1"):
        select_hosts(f, "h100x16")
    with pytest.raises(UserError, match="host a1: its probe facts say 7 x h100, the fleet says 8 x h100"):
        select_hosts(f, "both")


COMMENTED = """\
# my fleet
defaults:
  ssh_user: root   # everyone is root here
hosts:
  # the first one
  - name: a1
    address: 10.0.0.1
    gpu: h200
    gpu_count: 1
    labels: {rack: r1}   # trailing comment stays
  # the second one
  - name: a2
    address: 10.0.0.2
    gpu: h200
    gpu_count: 1
    facts:
      gpu: h200
      gpu_count: 1
      old: value
    # after the facts
  - {name: a3, address: 10.0.0.3, gpu: h200, gpu_count: 1}
clusters:
  c: {hosts: [a1, a2]}
"""


def test_facts_update_keeps_comments_and_layout():
    new = update_facts_text(COMMENTED, {"a1": {"gpu": "h200", "gpu_count": 1, "interfaces": ["eth0", "lo"]},
                                        "a2": {"gpu": "h200", "gpu_count": 2}})
    assert new == COMMENTED.replace(
        "    labels: {rack: r1}   # trailing comment stays\n",
        "    labels: {rack: r1}   # trailing comment stays\n"
        "    # facts: written by `qwen35-prov fleet probe --update`; edits here are overwritten\n"
        "    facts:\n      gpu: h200\n      gpu_count: 1\n      interfaces:\n      - eth0\n      - lo\n",
    ).replace("      gpu_count: 1\n      old: value\n", "      gpu_count: 2\n")
    again = update_facts_text(new, {"a1": {"gpu": "h200", "gpu_count": 1, "interfaces": ["eth0", "lo"]},
                                    "a2": {"gpu": "h200", "gpu_count": 2}})
    assert again == new  # idempotent: the comment line is not repeated
    parsed = parse_fleet(new, "f.yml")
    assert parsed.host("a2").facts == {"gpu": "h200", "gpu_count": 2}


def test_facts_update_of_a_flow_style_host_rewrites_the_file(tmp_path):
    path = tmp_path / "fleet.yml"
    path.write_text(COMMENTED)
    path.chmod(0o640)
    result = write_fleet_facts(path, {"a3": {"gpu": "h200", "gpu_count": 1}})
    assert result.host("a3").facts == {"gpu": "h200", "gpu_count": 1}
    assert "# my fleet" not in path.read_text()  # the documented fallback: comments are lost for flow hosts
    assert yaml.safe_load(path.read_text())["clusters"] == {"c": {"hosts": ["a1", "a2"]}}
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.yml"]  # no temporary file left


def test_facts_update_never_writes_an_invalid_fleet(tmp_path, monkeypatch):
    import qwen35_prov.fleet as fleet_module

    path = tmp_path / "fleet.yml"
    path.write_text(COMMENTED)
    # a splice gone wrong (here: simulated) must leave the file as it was
    monkeypatch.setattr(fleet_module, "update_facts_text", lambda text, facts: text.replace("gpu_count: 1", "gpu_count: x"))
    with pytest.raises(FleetError):
        write_fleet_facts(path, {"a1": {"gpu": "h200"}})
    assert path.read_text() == COMMENTED
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.yml"]


def test_fleet_check_cli(tmp_path):
    r = subprocess.run([*CLI, "fleet", "check", "--fleet", str(EXAMPLES / "mi300x8" / "fleet.yml"), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = yaml.safe_load(r.stdout)
    assert data["clusters"] == {"mi300x8": ["mi300-01"]}
    assert [h["name"] for h in data["hosts"]] == ["mi300-01", "h100-spare"]
    assert data["hosts"][0]["weights_dir"] == "/scratch/models"
    missing = subprocess.run([*CLI, "fleet", "check", "--fleet", str(tmp_path / "nope.yml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"qwen35-prov: error: fleet file {tmp_path / 'nope.yml'} does not exist")


# --- fleet values are data (issue 16: reproduced injections) -----------------------------------------------

HOST = """
    hosts:
      - name: gpu-01
        address: 10.0.0.1
        gpu: h100
        gpu_count: 8
"""


@pytest.mark.parametrize("field,value", [
    ("ssh_user", "\"{{ lookup('pipe', 'touch /tmp/pwned') }}\""),
    ("weights_dir", "\"/srv/{% raw %}x{% endraw %}\""),
    ("ssh_key", "\"{{ 7 * 7 }}\""),
    ("labels", "{rack: \"{{ lookup('pipe', 'id') }}\"}"),
    ("labels", "{\"{# c #}\": r1}"),
])
def test_template_syntax_in_any_string_is_refused(field, value):
    [problem] = problems(HOST + f"        {field}: {value}\n")
    assert f"host gpu-01: {field}:" in problem and "template syntax" in problem


def test_a_newline_or_other_control_character_is_refused():
    [problem] = problems(HOST + '        weights_dir: "/srv/models\\nrestrict ssh-ed25519 AAAA attacker"\n')
    assert "weights_dir" in problem and "control character" in problem
    [problem] = problems(HOST + '        labels: {rack: "r1\\tr2"}\n')
    assert "labels" in problem and "control character" in problem


@pytest.mark.parametrize("field,value,words", [
    ("ssh_user", "'root; id'", "is not a user name"),
    ("ssh_user", "Admin", "is not a user name"),
    ("ssh_key", "'/keys/id rsa'", "a path of letters"),
    ("ssh_key", "-oProxyCommand=id", "a path of letters"),
    ("weights_dir", "/srv/../etc", "'.' or '..'"),
    ("weights_dir", "/", "is a system folder"),
    ("weights_dir", "/etc/", "is a system folder"),
    ("weights_dir", "/var/lib", "is a system folder"),
    ("weights_dir", "'/srv/my models'", "a path of letters"),
    ("labels", "{'rack id': r1}", "label 'rack id'"),
    ("labels", "{rack: 'r1 r2'}", "label 'rack'"),
])
def test_strict_character_sets(field, value, words):
    [problem] = problems(HOST + f"        {field}: {value}\n")
    assert f"{field}:" in problem and words in problem, problem


def test_an_address_never_starts_with_a_dash():
    [problem] = problems(HOST.replace("10.0.0.1", "-oProxyCommand=id"))
    assert "is not a host name or IP address" in problem


def test_weights_dir_is_normalised():
    f = fleet(HOST + "        weights_dir: /srv//models/\n")
    assert f.hosts[0].weights_dir == "/srv/models"


def test_duplicates_are_caught_after_normalising():
    text = HOST + """
      - name: GPU-01
        address: 10.0.0.2
        gpu: h100
        gpu_count: 8
      - name: gpu-03
        address: "::1"
        gpu: h100
        gpu_count: 8
      - name: gpu-04
        address: "0:0::0:1"
        gpu: h100
        gpu_count: 8
    """
    found = problems(text)
    assert any("GPU-01" in p and "already used" in p for p in found), found
    assert any("gpu-04" in p and "also host gpu-03" in p for p in found), found


def test_yaml_aliases_are_refused_before_they_expand():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(12)) + HOST
    [problem] = problems(bomb)
    assert "aliases" in problem and len(problem) < 300


def test_weights_storage_is_local_unless_the_fleet_says_network_and_then_that_node_prefetches():
    from qwen35_prov.inventory import plan_for_fleet
    from qwen35_prov.options import PlanOptions

    f = fleet("""
        hosts:
          - {name: gpu-01, address: 10.0.0.11, gpu: h100, gpu_count: 8, weights_storage: network}
          - {name: gpu-02, address: 10.0.0.12, gpu: h100, gpu_count: 8}
        """)
    assert [h.weights_storage for h in f.hosts] == ["network", "local"]
    _, the_plan = plan_for_fleet("h100x16", f, PlanOptions())
    first, second = the_plan.nodes
    assert "--weight-loader-prefetch-checkpoints" in first.argv
    assert "--weight-loader-prefetch-checkpoints" not in second.argv
    [problem] = problems("""
        hosts:
          - {name: gpu-01, address: 10.0.0.11, gpu: h100, gpu_count: 8, weights_storage: nvme}
        """)
    assert problem.endswith("host gpu-01: weights_storage: expected one of local, network, got 'nvme'")


# --- a sandbox fleet's stand-in settings ---------------------------------------------------------------------

SANDBOX_FLEET = """
hosts:
  - {name: n0, address: 10.89.0.10, gpu: h100, gpu_count: 8}
standins:
  qwen35_image: localhost/sglang-standin:abc
  container_runtime_daemon_json: {exec-opts: [native.cgroupdriver=systemd]}
  qwen35_preflight_nccl: false
"""


def test_a_sandbox_fleet_carries_its_stand_in_settings_as_plain_data():
    parsed = fleet(SANDBOX_FLEET)
    assert parsed.standins == {"qwen35_image": "localhost/sglang-standin:abc",
                               "container_runtime_daemon_json": {"exec-opts": ["native.cgroupdriver=systemd"]},
                               "qwen35_preflight_nccl": False}
    assert type(parsed.standins["container_runtime_daemon_json"]) is dict
    assert fleet("hosts:\n  - {name: n0, address: 10.0.0.1, gpu: h100, gpu_count: 8}\n").standins == {}


@pytest.mark.parametrize("standins, expected", [
    ("[a, b]", "expected a mapping of role variable names to values"),
    ("{Not-A-Variable: 1}", "expected a mapping of role variable names to values"),
    ("{qwen35_image: \"{{ lookup('pipe', 'id') }}\"}", "holds template syntax"),
])
def test_stand_in_settings_are_variable_names_and_data(standins, expected):
    found = problems(SANDBOX_FLEET.split("standins:")[0] + f"standins: {standins}\n")
    assert len(found) == 1 and expected in found[0] and "standins" in found[0]
