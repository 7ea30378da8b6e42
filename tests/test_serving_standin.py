"""The stand-in inference engine (TEST DOUBLE, tests/doubles/sglang_standin) and the smoke checks against it.

The stand-in runs here as plain processes (`python3 -m sglang.launch_server ...` with its package on
PYTHONPATH), no containers: its parser contract against SGLang 0.5.23's real parser, its OpenAI shapes, the
multi-node rendezvous, and `qwen35-prov smoke` (qwen35_prov/smoke.py) passing and failing for the right reasons.
Needs SGLang's parser (tests/requirements-contract.txt) to generate server_args.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from qwen35_prov.cli import main as cli_main
from qwen35_prov.options import PlanOptions
from qwen35_prov.planner import plan
from qwen35_prov.smoke import base_url, run_smoke

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STANDIN = HERE / "doubles" / "sglang_standin"

try:
    import sglang.srt.server_args  # noqa: F401  (the real parser: the stand-in's contract is dumped from it)
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("QWEN35_REQUIRE_CONTRACT") == "1":
        raise
    pytest.skip(f"SGLang's parser is not installed: {exc}", allow_module_level=True)

pytestmark = pytest.mark.contract


def _load_build():
    spec = importlib.util.spec_from_file_location("sglang_standin_build", STANDIN / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pkg_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standin")
    _load_build().stage_package(root)
    return root


@pytest.fixture(scope="module")
def standin_parser(pkg_root):
    spec = importlib.util.spec_from_file_location("_standin_args_test", pkg_root / "sglang" / "_standin_args.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser(module.load_spec(pkg_root / "sglang" / "server_args.json"))


@pytest.fixture(scope="module")
def real_parser():
    from sglang.srt.server_args import ServerArgs

    p = argparse.ArgumentParser(prog="sglang serve", exit_on_error=False)
    ServerArgs.add_cli_args(p)
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, pkg_root: Path, argv: list[str], env: dict | None = None):
        self.argv = argv
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sglang.launch_server", *argv], cwd=pkg_root,
            env={**os.environ, "PYTHONPATH": str(pkg_root), "SGLANG_STANDIN_LOAD_SECONDS": "0", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.proc.stdout.read() if self.proc.stdout else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_status(url: str, status: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get(url)[0]
            if last == status:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{url}: wanted {status}, last {last}")


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def model_dir(tmp_path) -> Path:
    d = tmp_path / "models" / "Qwen" / "Qwen3.5-0.8B" / "main"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    return d


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def head_argv(model_dir: Path, port: int, *extra: str) -> list[str]:
    return ["--model-path", str(model_dir), "--served-model-name", "Qwen/Qwen3.5-0.8B", "--host", "127.0.0.1",
            "--port", str(port), *extra]


# ---------------------------------------------------------------------------------------------- the contract

def _accepts(parser: argparse.ArgumentParser, argv: list[str]) -> bool:
    parser.exit_on_error = False
    try:
        parser.parse_args(argv)
        return True
    except (argparse.ArgumentError, SystemExit):
        return False


def test_the_stand_in_parser_has_every_sglang_option(standin_parser, real_parser):
    def shape(p):
        return {tuple(a.option_strings): (a.nargs, sorted(map(str, a.choices)) if a.choices else None)
                for a in p._actions}

    assert shape(standin_parser) == shape(real_parser)
    assert len(shape(real_parser)) > 500


CASES = [
    ["--model-path", "/m"],
    ["--model-path", "/m", "--tp", "8"],                              # argparse abbreviation, accepted by both
    ["--model-path", "/m", "--tp-size", "eight"],                     # not an int
    ["--model-path", "/m", "--reasoning-parser", "qwen4"],            # not a choice
    ["--model-path", "/m", "--tool-call-parser", "qwen3_coder"],
    ["--model-path", "/m", "--tool-call-parser", "qwen3-coder"],      # close, still not a choice
    ["--model-path", "/m", "--no-such-flag"],
    ["--model-path", "/m", "--context-length", "128k"],               # SGLang's human-readable ints
    ["--model-path", "/m", "--context-length", "1.5Ki"],              # decimals with IEC suffixes are refused
    ["--model-path", "/m", "--model-loader-extra-config", '{"num_threads": 64}'],
    ["--model-path", "/m", "--enable-metrics", "--enable-metrics"],
    ["--model-path", "/m", "--enable-tf32-matmul", "--no-enable-tf32-matmul"],
    ["--model-path", "/m", "--mem-fraction-static", "0.8x"],
    ["--tp-size", "8"],                                               # --model-path is required
    ["--model-path", "/m", "--mamba-radix-cache-strategy", "extra_buffer"],
    ["--model-path", "/m", "--mamba-radix-cache-strategy", "v2"],
]


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c[2:]) or "minimal" for c in CASES])
def test_the_stand_in_accepts_and_rejects_what_sglang_does(standin_parser, real_parser, argv):
    assert _accepts(standin_parser, argv) == _accepts(real_parser, argv)


def test_every_planned_command_parses_in_the_stand_in(standin_parser):
    checked = 0
    for cluster, options in [("h100x16", PlanOptions()), ("h200x8", PlanOptions(precision="fp8")),
                             ("mi300x8", PlanOptions()), ("b200x4", PlanOptions(precision="fp4")),
                             ("h100x8", PlanOptions(model="35b", mtp=False)), ("mi355xx4", PlanOptions(precision="fp4"))]:
        for node in plan(cluster, options).nodes:
            assert _accepts(standin_parser, list(node.argv[3:])), (cluster, node.argv)
            checked += 1
    assert checked >= 15


def test_a_rejected_flag_exits_2_with_argparse_message(pkg_root, model_dir, procs):
    p = Proc(pkg_root, ["--model-path", str(model_dir), "--tool-call-parser", "qwen3-coder"])
    procs.append(p)
    assert p.wait() == 2
    assert "argument --tool-call-parser: invalid choice: 'qwen3-coder'" in p.output()


def test_a_missing_model_folder_exits_1(pkg_root, tmp_path, procs):
    p = Proc(pkg_root, ["--model-path", str(tmp_path / "nowhere")])
    procs.append(p)
    assert p.wait() == 1
    assert "is not a directory (is the weights folder mounted?)" in p.output()


# ---------------------------------------------------------------------------------------------- shapes

def test_single_node_head_answers_with_the_cookbook_shapes(pkg_root, model_dir, procs):
    port = free_port()
    procs.append(Proc(pkg_root, head_argv(model_dir, port, "--reasoning-parser", "qwen3",
                                          "--tool-call-parser", "qwen3_coder", "--enable-metrics")))
    base = f"http://127.0.0.1:{port}"
    wait_status(base + "/health", 200)
    models = json.loads(get(base + "/v1/models")[1])
    assert [m["id"] for m in models["data"]] == ["Qwen/Qwen3.5-0.8B"]

    think = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "2+2?"}]})
    message = think["choices"][0]["message"]
    assert message["reasoning_content"] and message["content"] and "</think>" not in message["content"]

    plain = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "2+2?"}],
                                                 "chat_template_kwargs": {"enable_thinking": False}})
    assert plain["choices"][0]["message"]["reasoning_content"] is None

    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    called = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Weather in Oslo?"}],
                                                  "tools": [tool]})
    choice = called["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}

    metrics = get(base + "/metrics")[1].decode()
    assert 'sglang:num_requests_total{model_name="Qwen/Qwen3.5-0.8B"} 3' in metrics


def test_without_the_parsers_thinking_and_tool_calls_stay_raw(pkg_root, model_dir, procs):
    port = free_port()
    procs.append(Proc(pkg_root, head_argv(model_dir, port)))
    base = f"http://127.0.0.1:{port}"
    wait_status(base + "/health", 200)
    message = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})["choices"][0]["message"]
    assert message["reasoning_content"] is None and "</think>" in message["content"]
    assert get(base + "/metrics")[0] == 404  # --enable-metrics not given


# ---------------------------------------------------------------------------------------------- multi-node

def test_head_is_healthy_only_with_every_rank_and_ranks_die_with_their_head(pkg_root, model_dir, procs):
    port, dist = free_port(), free_port()
    common = ["--tp-size", "16", "--nnodes", "2", "--dist-init-addr", f"127.0.0.1:{dist}"]
    head = Proc(pkg_root, head_argv(model_dir, port, *common, "--node-rank", "0"))
    procs.append(head)
    base = f"http://127.0.0.1:{port}"
    wait_status(base + "/health", 503)
    time.sleep(0.5)
    assert "waiting for 1 of 1 rank(s) to join" in get(base + "/health")[1].decode()
    with socket.create_connection(("127.0.0.1", dist)):  # a bare port probe is not a rank
        pass
    worker = Proc(pkg_root, ["--model-path", str(model_dir), *common, "--node-rank", "1"])
    procs.append(worker)
    wait_status(base + "/health", 200)
    info = json.loads(get(base + "/get_server_info")[1])
    assert info["standin"]["ranks_connected"] == [1] and info["nnodes"] == 2

    head.stop()
    assert worker.wait(timeout=15) == 1
    assert "lost the connection to the head" in worker.output()


def test_a_rank_lost_after_the_group_formed_breaks_the_head(pkg_root, model_dir, procs):
    port, dist = free_port(), free_port()
    common = ["--tp-size", "16", "--nnodes", "2", "--dist-init-addr", f"127.0.0.1:{dist}"]
    procs.append(Proc(pkg_root, head_argv(model_dir, port, *common, "--node-rank", "0")))
    worker = Proc(pkg_root, ["--model-path", str(model_dir), *common, "--node-rank", "1"])
    procs.append(worker)
    base = f"http://127.0.0.1:{port}"
    wait_status(base + "/health", 200)
    worker.stop()
    wait_status(base + "/health", 503)
    again = Proc(pkg_root, ["--model-path", str(model_dir), *common, "--node-rank", "1"])
    procs.append(again)
    time.sleep(2)
    status, body = get(base + "/health")
    assert status == 503 and b"restart the whole replica" in body  # only a restart of the head heals it


# ---------------------------------------------------------------------------------------------- smoke

def test_smoke_passes_against_a_cookbook_server(pkg_root, model_dir, procs, capsys):
    port = free_port()
    procs.append(Proc(pkg_root, head_argv(model_dir, port, "--reasoning-parser", "qwen3",
                                          "--tool-call-parser", "qwen3_coder")))
    wait_status(f"http://127.0.0.1:{port}/health", 200)
    assert cli_main(["smoke", "--url", f"http://127.0.0.1:{port}/v1", "--image", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok" and report["model"] == "Qwen/Qwen3.5-0.8B"
    assert [c["name"] for c in report["checks"]] == ["health", "models", "chat", "thinking", "thinking-off",
                                                     "tool-call", "image"]
    assert "8x8 image/png" in report["checks"][-1]["detail"]


def test_smoke_fails_the_right_checks_without_the_parsers(pkg_root, model_dir, procs, capsys):
    port = free_port()
    procs.append(Proc(pkg_root, head_argv(model_dir, port)))
    wait_status(f"http://127.0.0.1:{port}/health", 200)
    report = run_smoke(f"http://127.0.0.1:{port}")
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert set(failed) == {"thinking", "tool-call"}
    assert "is --reasoning-parser set?" in failed["thinking"] and "</think>" in failed["thinking"]
    assert "is --tool-call-parser set?" in failed["tool-call"] and "<tool_call>" in failed["tool-call"]
    assert cli_main(["smoke", "--url", f"http://127.0.0.1:{port}", "--skip", "thinking", "--skip", "tool-call"]) == 0
    assert "SKIP thinking" in capsys.readouterr().out


def _smoke_module(port: int, *args: str) -> subprocess.CompletedProcess:
    """The qwen35.prov.sglang_smoke module (what the sglang_smoke role runs on a head), run on this machine."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-e",
         f"ansible_python_interpreter={sys.executable}", "-m", "qwen35.prov.sglang_smoke", "-a",
         " ".join([f"url=http://127.0.0.1:{port}", *args])],
        capture_output=True, text=True, timeout=300, env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "0"})


def test_the_roles_module_runs_the_same_checks_and_names_each_failure(pkg_root, model_dir, procs):
    port = free_port()
    procs.append(Proc(pkg_root, head_argv(model_dir, port)))  # served without the parsers
    wait_status(f"http://127.0.0.1:{port}/health", 200)
    without = _smoke_module(port, "thinking=false", "tool_calls=false")
    assert without.returncode == 0, without.stdout + without.stderr
    assert '"model": "Qwen/Qwen3.5-0.8B"' in without.stdout
    forced = _smoke_module(port, "label=head-r9")
    assert forced.returncode != 0
    out = forced.stdout + forced.stderr
    assert "head-r9: thinking: no reasoning_content (is --reasoning-parser set?)" in out
    assert "; tool-call: no parsed tool_calls (is --tool-call-parser set?)" in out
    assert "thinking-off:" not in out and "chat:" not in out  # the checks that pass are not in the message


def test_smoke_reports_an_unreachable_endpoint_and_refuses_bad_urls(capsys):
    port = free_port()
    assert cli_main(["smoke", "--url", f"http://127.0.0.1:{port}", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "failed" and [c["name"] for c in report["checks"]] == ["health"]
    assert cli_main(["smoke", "--url", "10.0.0.1:30000"]) == 2
    assert "--url must look like http://HOST:PORT" in capsys.readouterr().err
    assert base_url("http://h:30000/v1/") == "http://h:30000"


# ---------------------------------------------------------------------------------------------- API keys

def _auth_file(tmp_path: Path) -> tuple[Path, str, str]:
    spec = importlib.util.spec_from_file_location(
        "sglang_server_filters", REPO / "plugins" / "filter" / "sglang_server.py")
    filters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(filters)
    api, admin = "k" * 48, "a" * 48
    path = tmp_path / "qwen35-sglang-auth.yaml"
    path.write_text(filters.sglang_server_auth_config(api, admin))
    return path, api, admin


def test_sglangs_own_config_reader_takes_the_keys_file(tmp_path, real_parser):
    from sglang.srt.utils.server_args_config_parser import ConfigArgumentMerger

    path, api, admin = _auth_file(tmp_path)
    merged = ConfigArgumentMerger(real_parser).merge_config_with_args(
        ["--model-path", "/m", "--port", "30000", "--config", str(path)])
    args = real_parser.parse_args(merged)
    assert (args.api_key, args.admin_api_key) == (api, admin)


def test_a_keyed_head_answers_401_without_the_key(pkg_root, model_dir, procs, tmp_path):
    path, api, admin = _auth_file(tmp_path)
    port = free_port()
    proc = Proc(pkg_root, head_argv(model_dir, port, "--enable-metrics", "--config", str(path)))
    procs.append(proc)
    base = f"http://127.0.0.1:{port}"
    wait_status(base + "/health", 200)                 # open, as in SGLang: probes and Prometheus
    assert get(base + "/metrics")[0] == 200

    def call(path: str, key: str | None, body: dict | None = None) -> int:
        req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    chat = {"messages": [{"role": "user", "content": "2+2?"}]}
    assert call("/v1/models", None) == 401
    assert call("/v1/chat/completions", None, chat) == 401
    assert call("/v1/models", "wrong") == 401
    assert call("/v1/models", api) == 200
    assert call("/v1/chat/completions", api, chat) == 200
    assert call("/update_weights_from_disk", None, {}) == 401
    assert call("/update_weights_from_disk", api, {}) == 401  # with an admin key, only the admin key
    assert call("/update_weights_from_disk", admin, {}) == 200
    proc.stop()
    assert api not in proc.output() and admin not in proc.output()
