"""`bench` against the source of SGLang 0.5.23 itself: the flags it passes exist in SGLang's argument parsers, the
printed labels and the JSONL keys it parses are the ones SGLang writes.

Reads the installed SGLang's files (no import of sglang.benchmark.serving, which needs transformers and a GPU
stack). Needs `sglang==0.5.23` installed (scripts/test installs it --no-deps); QWEN35_REQUIRE_CONTRACT=1 turns the
skip into a failure.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

import pytest

from qwen35_prov import bench
from test_bench import JSONL_KEYS

spec = importlib.util.find_spec("sglang")
if spec is None or spec.origin is None:  # pragma: no cover - depends on the environment
    if os.environ.get("QWEN35_REQUIRE_CONTRACT") == "1":
        raise ImportError("sglang is not installed")
    pytest.skip("SGLang is not installed", allow_module_level=True)

pytestmark = pytest.mark.contract
SGLANG = Path(spec.origin).parent
SERVING = SGLANG / "benchmark" / "serving.py"
GSM8K = SGLANG / "test" / "few_shot_gsm8k.py"


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def function(module: ast.Module, name: str) -> ast.FunctionDef:
    return next(n for n in ast.walk(module) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)


def option_strings(node: ast.AST) -> set[str]:
    flags = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "add_argument":
            flags |= {a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return flags


def test_the_module_paths_bench_runs_exist():
    assert (SGLANG / "bench_serving.py").exists()               # python3 -m sglang.bench_serving (deprecated alias)
    assert "cli_main()" in (SGLANG / "bench_serving.py").read_text()
    assert GSM8K.exists()                                        # python3 -m sglang.test.few_shot_gsm8k
    from importlib.metadata import version

    assert version("sglang") == "0.5.23"                         # the version the planner pins


def test_jsonl_keys_are_the_result_dict_of_benchmark():
    bench_fn = function(tree(SERVING), "benchmark")
    result = next(n for n in ast.walk(bench_fn) if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "result" for t in n.targets)
                  and isinstance(n.value, ast.Dict))
    keys = [k.value for k in result.value.keys]
    assert keys == JSONL_KEYS
    for key in bench._SERVING_REQUIRED:
        assert key in keys


def test_every_printed_label_of_the_result_block_is_known():
    bench_fn = function(tree(SERVING), "benchmark")
    labels = []
    for call in ast.walk(bench_fn):
        # print("{:<40} {:<10.2f}".format("Median TPOT (ms):", metrics.median_tpot_ms))
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "format"
                and isinstance(call.func.value, ast.Constant) and str(call.func.value.value).startswith("{:<40}")
                and call.args and isinstance(call.args[0], ast.Constant)):
            labels.append(call.args[0].value.rstrip(":").strip())
    cache_report = {"Total prompt tokens", "Total cached tokens", "Device", "Host", "Cache hit rate"}
    assert "Output token throughput (tok/s)" in labels and "Accept length" in labels
    unknown = [l for l in labels if l not in bench._SERVING_LABELS and not bench._LATENCY_LABEL.match(l)
               and l not in cache_report]
    assert unknown == []
    # the banner the parser looks for
    assert '" Serving Benchmark Result "' in SERVING.read_text()


def test_bench_serving_accepts_every_flag_bench_passes():
    flags = option_strings(function(tree(SERVING), "cli_main"))
    for spec_ in bench.run_specs(bench.PROFILES):
        if spec_.kind != "serving":
            continue
        used = {a for a in spec_.argv(30000, {"sharegpt": "x.json"}) if a.startswith("--")}
        assert used <= flags, used - flags


def test_gsm8k_script_accepts_the_flags_and_prints_what_bench_parses():
    source = GSM8K.read_text()
    flags = option_strings(tree(GSM8K))
    accuracy = bench.run_specs(["accuracy"])[0]
    used = {a for a in accuracy.argv(30000, {"gsm8k": "x.jsonl"}) if a.startswith("--")}
    assert used <= flags, used - flags
    # render SGLang's own print statements with sample values and parse the result
    prints = re.findall(r'print\((f"(?:Accuracy|Invalid|Latency|Output throughput): [^"]*")\)', source)
    assert len(prints) == 4
    values = {"acc": 0.975, "invalid": 0.005, "latency": 31.784, "output_throughput": 998.166}
    text = "\n".join(eval(p, {}, values) for p in prints)  # noqa: S307 - SGLang's own f-strings
    assert bench.parse_gsm8k_output(text) == {"accuracy": 0.975, "invalid": 0.005, "latency_s": 31.784,
                                              "output_throughput": 998.166}


def test_gsm8k_host_must_be_a_bare_address():
    """few_shot_gsm8k joins --host and --port itself; the docs' `--host http://127.0.0.1` would double the scheme."""
    from sglang.utils import normalize_base_url

    assert normalize_base_url("127.0.0.1", 30000) == "http://127.0.0.1:30000"
    assert normalize_base_url("http://127.0.0.1", 30000) == "http://http://127.0.0.1:30000"
    argv = bench.run_specs(["accuracy"])[0].argv(30000)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_gsm8k_sends_the_deployments_key(tmp_path):
    """few_shot_gsm8k alone sends no key (its RuntimeEndpoint gets none); run as bench runs it, SGLang's own
    RuntimeEndpoint sends $OPENAI_API_KEY as a bearer token on its first request (/get_model_info)."""
    import http.server
    import subprocess
    import sys
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        argv = bench.run_specs(["accuracy"])[0].argv(server.server_address[1], {"gsm8k": str(tmp_path / "t.jsonl")})
        assert argv[:2] == ["python3", "-c"]
        subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "OPENAI_API_KEY": "k" * 48})
    finally:
        server.shutdown()
    assert seen and seen[0] == ("/get_model_info", "Bearer " + "k" * 48)
