"""sglang_server's unit rendering: the docker command around the planner's argv and its systemd quoting.

The filters (plugins/filter/sglang_server.py) are tested directly; then the role's
units.yml renders the h100x16 plan's units on this machine (ansible-playbook, connection local, into a
temporary folder) and every Exec line is split back the way systemd splits it (the rules of systemd.service(5)
"Command lines", implemented below) to compare with the plan. The sandbox Molecule scenario then checks the
same against the argv the engine process really received.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_prov.plan_output import plan_to_dict
from qwen35_prov.planner import plan

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "roles" / "sglang_server"


def _filters():
    spec = importlib.util.spec_from_file_location("sglang_server_filters", ROLE.parents[1] / "plugins" / "filter" / "sglang_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


F = _filters()

_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"',
            "'": "'", "s": " "}


def systemd_split(line: str, environ: dict | None = None) -> list[str]:
    """Split an Exec line like systemd: %-specifiers and $VARIABLES first ($$ and %% are literals), then words on
    whitespace with "..." / '...' quoting anywhere in a word and C escapes. (Enough of systemd for these units.)"""
    environ = environ or {}
    out, i = [], 0
    # specifiers: only %% occurs in our lines; any other % would be a specifier systemd expands
    assert not re.search(r"%[^%]", line.replace("%%", "")), f"unescaped specifier in {line!r}"
    line = line.replace("%%", "\0PCT\0")
    words: list[str] = []
    word, quote, have = "", None, False
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            if nxt not in _ESCAPES:
                raise AssertionError(f"unknown escape \\{nxt} in {line!r}")
            word += _ESCAPES[nxt]
            have, i = True, i + 2
            continue
        if quote:
            if c == quote:
                quote = None
            else:
                word += c
            i += 1
            continue
        if c in "\"'":
            quote, have = c, True
        elif c.isspace():
            if have:
                words.append(word)
            word, have = "", False
        else:
            word += c
            have = True
        i += 1
    assert quote is None, f"unbalanced quote in {line!r}"
    if have:
        words.append(word)
    for w in words:
        # systemd expands $VAR / ${VAR} in each word; $$ is a literal $
        w = re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)",
                   lambda m: "$" if m.group(0) == "$$" else environ.get(m.group(1) or m.group(2), ""), w)
        out.append(w.replace("\0PCT\0", "%"))
    return out


# ---------------------------------------------------------------------------------------------- quoting

TRICKY = ['{"enable_multithread_load":"true","num_threads":64}', "two words", "it's", 'say "hi"', "$HOME",
          "${PATH}", "100%", "%h", "back\\slash", "", ";", "tab\there", "line\nbreak", "naïve", "a=b,c:d/e.f@g+h-i"]


@pytest.mark.parametrize("word", TRICKY)
def test_every_word_survives_systemd_splitting(word):
    line = F.systemd_exec(["/usr/bin/docker", word, "--next"])
    assert systemd_split(line, {"HOME": "/root", "PATH": "/bin"}) == ["/usr/bin/docker", word, "--next"]


def test_plain_words_stay_unquoted_and_json_is_quoted_once():
    assert F.systemd_exec(["/usr/bin/docker", "run", "--ipc=host", "/w:/w:ro"]) == "/usr/bin/docker run --ipc=host /w:/w:ro"
    assert F.systemd_quote_word('{"a":"b"}') == '"{\\"a\\":\\"b\\"}"'
    with pytest.raises(ValueError):
        F.systemd_exec("python3 -m x")


# ---------------------------------------------------------------------------------------------- the command

def _launch(cluster: str, index: int = 0) -> dict:
    return plan_to_dict(plan(cluster))["nodes"][index]


def _run(launch, device, vendor_args=(), env=None, shm="32g"):
    return F.sglang_server_run_argv(
        launch, docker="/usr/bin/docker", name="qwen35-sglang-r0", image="lmsysorg/sglang:v0.5.23",
        device_args=device, vendor_args=list(vendor_args), shm_size=shm, weights_dir="/var/lib/qwen35-prov/models",
        env_file="/etc/qwen35-prov/qwen35-sglang.env", env=env if env is not None else launch["env"])


def test_nvidia_command_wraps_the_plan_argv_unchanged():
    launch = _launch("h100x16", 1)
    cmd = _run(launch, ["--gpus", "all"], env=F.sglang_server_env(launch["env"], "eth0", ["mlx5_0", "mlx5_1"]))
    i = cmd.index("lmsysorg/sglang:v0.5.23")
    assert cmd[i + 1:] == launch["argv"]
    assert cmd[:i] == [
        "/usr/bin/docker", "run", "--rm", "--name", "qwen35-sglang-r0", "--gpus", "all", "--ipc=host",
        "--shm-size", "32g", "--network", "host", "-v", "/var/lib/qwen35-prov/models:/var/lib/qwen35-prov/models:ro",
        "--env-file", "/etc/qwen35-prov/qwen35-sglang.env", "-e", "GLOO_SOCKET_IFNAME=eth0",
        "-e", "NCCL_IB_HCA=mlx5_0,mlx5_1", "-e", "NCCL_SOCKET_IFNAME=eth0"]


def test_amd_command_opens_kfd_and_dri_with_numeric_groups():
    launch = _launch("mi300x8")
    device = ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "44", "--group-add", "993"]
    cmd = _run(launch, device, ["--cap-add", "SYS_PTRACE", "--security-opt", "seccomp=unconfined"], shm="16g")
    line = " ".join(cmd)
    assert ("--device /dev/kfd --device /dev/dri --group-add 44 --group-add 993 --cap-add SYS_PTRACE "
            "--security-opt seccomp=unconfined --ipc=host --shm-size 16g") in line
    assert "-e SGLANG_USE_AITER=1" in line and "--gpus" not in line
    assert cmd[-len(launch["argv"]):] == launch["argv"]


def test_the_sandbox_override_drops_only_the_device_requests():
    launch = _launch("h100x16")
    assert _run(launch, []) == [a for a in _run(launch, ["--gpus", "all"]) if a not in ("--gpus", "all")]


def test_network_variables_come_from_the_inventory_only_where_the_plan_lacks_them():
    assert F.sglang_server_env({"NCCL_SOCKET_IFNAME": "ib0"}, "eth0", []) == {
        "GLOO_SOCKET_IFNAME": "eth0", "NCCL_SOCKET_IFNAME": "ib0"}
    assert F.sglang_server_env({}, "", []) == {}
    assert F.sglang_server_env({"A": "1"}, "", [], {"NCCL_DEBUG": "INFO"}) == {"A": "1", "NCCL_DEBUG": "INFO"}
    assert F.sglang_server_env_conflicts({"SGLANG_USE_AITER": "0", "X": "1"}, {"SGLANG_USE_AITER": "1"}) == [
        "SGLANG_USE_AITER"]
    with pytest.raises(ValueError, match="SGLANG_USE_AITER"):
        F.sglang_server_env({"SGLANG_USE_AITER": "1"}, "", [], {"SGLANG_USE_AITER": "0"})


def test_dist_init_and_the_bounded_wait_for_the_head():
    worker = _launch("h100x16", 1)
    dist = worker["dist_init"]
    assert dist == {"host": "node0", "port": 20000}
    assert (worker["nnodes"], worker["node_rank"]) == (2, 1)
    assert _launch("h200x8")["dist_init"] is None and _launch("h200x8")["nnodes"] == 1
    wait = F.sglang_server_wait_argv(dist, 1200)
    assert wait[:4] == ["/usr/bin/timeout", "1200", "/bin/bash", "-c"]
    assert "until (exec 3<>/dev/tcp/node0/20000)" in wait[4]
    assert systemd_split(F.systemd_exec(wait)) == wait


# ---------------------------------------------------------------------------------------------- the role renders

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: sglang_server
        tasks_from: units.yml
"""


API_KEY, ADMIN_KEY, WATCH_SECRET = "apiKey0123456789abcdef", "adminKey0123456789abcdef", "watchSecret0123456789"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """units.yml of the role for both nodes of h100x16 (NVIDIA, production device requests)."""
    nodes = plan_to_dict(plan("h100x16", node_names=["gpu-01", "gpu-02"],
                              node_addresses=["10.0.0.11", "10.0.0.12"]))["nodes"]
    out = {}
    for node in nodes:
        root = tmp_path_factory.mktemp(node["node"])
        play = root / "play.yml"
        play.write_text(PLAYBOOK)
        extra = {
            "sglang_server_launches": [node], "sglang_server_vendor": "nvidia",
            "sglang_server_image": "lmsysorg/sglang:v0.5.23", "sglang_server_network_interface": "eth0",
            "sglang_server_ib_hcas": ["mlx5_0"], "sglang_server_secret_env": {"HF_TOKEN": "hf_x"},
            "sglang_server_unit_dir": str(root / "units"), "sglang_server_env_dir": str(root / "etc"),
            "sglang_server_libexec_dir": str(root / "libexec"),
            "sglang_server_api_key": API_KEY, "sglang_server_admin_api_key": ADMIN_KEY,
            "sglang_server_watch_secret": WATCH_SECRET,
        }
        (root / "vars.json").write_text(json.dumps(extra))
        env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(play),
                               "-e", f"@{root / 'vars.json'}"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        out[node["node"]] = (node, root)
    return out


def _exec_lines(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(key + "=")]


def test_the_rendered_execstart_is_the_plan_argv_after_systemd_splitting(rendered):
    for name, (node, root) in rendered.items():
        unit = (root / "units" / "qwen35-sglang-r0.service").read_text()
        words = systemd_split(_exec_lines(unit, "ExecStart")[0])
        i = words.index("lmsysorg/sglang:v0.5.23")
        auth = str(root / "etc" / "qwen35-sglang-auth.yaml")
        assert words[i + 1:] == [*node["argv"], "--config", auth], name   # the plan's argv, then the keys file
        assert ["-v", f"{auth}:{auth}:ro"] == words[words.index(f"{auth}:{auth}:ro") - 1:words.index(f"{auth}:{auth}:ro") + 1]
        assert json.loads(Path(auth).read_text()) == {"api-key": API_KEY, "admin-api-key": ADMIN_KEY}
        for secret_file in (Path(auth), root / "etc" / "qwen35-sglang-watch.key"):
            assert oct(secret_file.stat().st_mode & 0o777) == "0o600", secret_file
        assert (root / "etc" / "qwen35-sglang-watch.key").read_text() == WATCH_SECRET + "\n"
        for secret in (API_KEY, ADMIN_KEY, WATCH_SECRET):
            assert all(secret not in p.read_text() for p in (root / "units").iterdir()), (name, secret)
        assert words[:7] == ["/usr/bin/docker", "run", "--rm", "--name", "qwen35-sglang-r0", "--gpus", "all"]
        assert ["-e", "NCCL_IB_HCA=mlx5_0"] == words[words.index("NCCL_IB_HCA=mlx5_0") - 1:words.index("NCCL_IB_HCA=mlx5_0") + 1]
        assert "Restart=on-failure" in unit and "PartOf=qwen35-replica-r0.target" in unit
        assert "hf_x" not in unit
        envfile = root / "etc" / "qwen35-sglang.env"
        assert oct(envfile.stat().st_mode & 0o777) == "0o600" and "HF_TOKEN=hf_x" in envfile.read_text()
        assert f"OPENAI_API_KEY={API_KEY}" in envfile.read_text()   # SGLang's bench clients in the container


def test_only_the_worker_waits_for_its_head_and_both_get_a_group_watch(rendered):
    head_unit = (rendered["gpu-01"][1] / "units" / "qwen35-sglang-r0.service").read_text()
    worker_unit = (rendered["gpu-02"][1] / "units" / "qwen35-sglang-r0.service").read_text()
    pre = [systemd_split(line.lstrip("-")) for line in _exec_lines(worker_unit, "ExecStartPre")]
    assert pre[0] == ["/usr/bin/docker", "rm", "--force", "qwen35-sglang-r0"]
    assert pre[1][:2] == ["/usr/bin/timeout", "1200"] and "/dev/tcp/10.0.0.11/20000" in pre[1][4]
    assert len(_exec_lines(head_unit, "ExecStartPre")) == 1
    head_watch = (rendered["gpu-01"][1] / "units" / "qwen35-sglang-r0-watch.service").read_text()
    worker_watch = (rendered["gpu-02"][1] / "units" / "qwen35-sglang-r0-watch.service").read_text()
    # the head listens on the replica's dist-init address (the cluster interface), not on every interface
    assert "--listen 10.0.0.11:29600" in head_watch and "--head 10.0.0.11:29600 --rank 1" in worker_watch
    assert "0.0.0.0" not in head_watch and "--secret-file" in head_watch and "--secret-file" in worker_watch
    target = (rendered["gpu-02"][1] / "units" / "qwen35-replica-r0.target").read_text()
    assert "Wants=qwen35-sglang-r0.service qwen35-sglang-r0-watch.service" in target
    assert "WantedBy=multi-user.target" in target


def test_the_readiness_report_redacts_the_keys_sglang_logs_at_start():
    """SGLang 0.5.23 logs `server_args={... 'api_key': ...}` once at start; a readiness failure quotes the journal."""
    journal = "[2026-12-06] server_args={'api_key': 'k1k1k1k1', 'admin_api_key': 'a2a2a2a2', 'port': 30000}"
    redacted = F.sglang_server_redact(journal, ["k1k1k1k1", "a2a2a2a2", ""])
    assert "k1k1k1k1" not in redacted and "a2a2a2a2" not in redacted and "'port': 30000" in redacted
    assert F.sglang_server_redact(journal, []) == journal


def test_the_compile_caches_live_on_the_host_and_the_plan_env_wins():
    launch = _launch("h200x8")
    plain = _run(launch, [])
    assert not any("SGLANG_CACHE_DIR" in a for a in plain)
    run = F.sglang_server_run_argv(
        launch, docker="/usr/bin/docker", name="qwen35-sglang-r0", image="lmsysorg/sglang:v0.5.23", device_args=[],
        vendor_args=[], shm_size="32g", weights_dir="/var/lib/qwen35-prov/models",
        env_file="/etc/qwen35-prov/qwen35-sglang.env", env={"SGLANG_DG_CACHE_DIR": "/elsewhere"},
        cache_dir="/var/cache/qwen35-prov/sglang")
    image = run.index("lmsysorg/sglang:v0.5.23")
    wrapping = run[:image]
    assert "/var/cache/qwen35-prov/sglang:/var/cache/qwen35-prov/sglang" in wrapping
    assert "SGLANG_CACHE_DIR=/var/cache/qwen35-prov/sglang/sglang" in wrapping
    assert "FLASHINFER_WORKSPACE_BASE=/var/cache/qwen35-prov/sglang/flashinfer" in wrapping
    assert "SGLANG_DG_CACHE_DIR=/elsewhere" in wrapping           # a value the plan or inventory set is kept
    assert run[image + 1:] == list(launch["argv"])                # the plan's command unchanged after the image
    assert F.sglang_server_cache_dirs("/c") == ["/c/sglang", "/c/deep_gemm", "/c/flashinfer"]
    assert F.sglang_server_cache_dirs("") == []


def test_a_gb200_tray_passes_the_imex_channel_into_the_container_beside_the_plans_mnnvl_env():
    launch = _launch("gb200x8", 1)
    run = F.sglang_server_run_argv(
        launch, docker="/usr/bin/docker", name="qwen35-sglang-r0", image="lmsysorg/sglang:v0.5.23",
        device_args=["--gpus", "all"], vendor_args=[], shm_size="32g", weights_dir="/var/lib/qwen35-prov/models",
        env_file="/etc/qwen35-prov/qwen35-sglang.env", env=launch["env"], imex_channels=[0])
    wrapping = run[:run.index("lmsysorg/sglang:v0.5.23")]
    assert wrapping[5:9] == ["--gpus", "all", "--device", "/dev/nvidia-caps-imex-channels/channel0"]
    assert {"NCCL_MNNVL_ENABLE=1", "NCCL_CUMEM_ENABLE=1", "MC_FORCE_MNNVL=1"} <= set(wrapping)
    assert "--device" not in _run(launch, ["--gpus", "all"])      # no channel unless the inventory names one
