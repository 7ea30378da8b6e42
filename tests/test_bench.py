"""`qwen35-prov bench`: parsing SGLang's real benchmark outputs, the comparison with the published reference,
the saved report and chart, and the playbook's own checks of its variables.

The captured outputs under tests/fixtures/bench/ are SGLang's published ones (see the README there); the reference
figures they are checked against come from qwen35_prov/data/reference_results.yaml, not from this file.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_prov import bench
from qwen35_prov.cli import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "bench"
H200X8 = REPO / "inventories" / "examples" / "h200x8" / "inventory"
H100X32 = REPO / "tests" / "golden" / "h100x32"
LATENCY_LOG = FIXTURES / "cookbook-h200x8-latency.log"
THROUGHPUT_LOG = FIXTURES / "cookbook-h200x8-throughput.log"
GSM8K_LOG = FIXTURES / "cookbook-h200x8-gsm8k.log"

# The keys of the `result` dict SGLang 0.5.23's benchmark() appends to --output-file, in its order
# (tests/test_bench_contract.py checks this list against the installed SGLang source).
JSONL_KEYS = [
    "tag", "backend", "dataset_name", "request_rate", "max_concurrency", "sharegpt_output_len", "random_input_len",
    "random_output_len", "random_range_ratio", "server_info", "duration", "completed", "total_input_tokens",
    "total_input_text_tokens", "total_input_vision_tokens", "total_output_tokens", "total_output_tokens_retokenized",
    "request_throughput", "input_throughput", "output_throughput", "total_throughput", "mean_e2e_latency_ms",
    "median_e2e_latency_ms", "std_e2e_latency_ms", "p90_e2e_latency_ms", "p95_e2e_latency_ms", "p99_e2e_latency_ms",
    "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p90_ttft_ms", "p95_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
    "median_tpot_ms", "std_tpot_ms", "p90_tpot_ms", "p95_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms",
    "std_itl_ms", "p90_itl_ms", "p95_itl_ms", "p99_itl_ms", "concurrency", "accept_length", "max_output_tokens_per_s",
    "max_concurrent_requests",
]


def reference() -> dict:
    return bench.find_reference(bench.deployment_of(H200X8, 0), bench.load_references())


def jsonl_record(block: dict, spec: bench.RunSpec) -> dict:
    """A record with exactly SGLang's keys, filled from a captured block (the values SGLang would have written)."""
    record = {k: block.get(k) for k in JSONL_KEYS}
    record.update(tag=None, backend="sglang", dataset_name=spec.args["dataset_name"], request_rate="inf",
                  random_input_len=spec.args["random_input_len"], random_output_len=spec.args["random_output_len"],
                  random_range_ratio=spec.args["random_range_ratio"], server_info={"version": "0.5.23"})
    return record


def results_dir(tmp_path: Path, *, latency: str | None = None, throughput: str | None = None,
                gsm8k: str | None = None, with_jsonl: bool = True) -> Path:
    """A folder laid out as bench.yml fetches it, from the captured outputs (optionally altered)."""
    out = tmp_path / "raw"
    out.mkdir()
    specs = {s.name: s for s in bench.run_specs(bench.PROFILES)}
    for name, text in (("latency", latency or LATENCY_LOG.read_text()),
                       ("throughput", throughput or THROUGHPUT_LOG.read_text())):
        (out / f"{name}.log").write_text(text)
        if with_jsonl:
            block = bench.parse_serving_block(text)
            (out / f"{name}.jsonl").write_text(json.dumps(jsonl_record(block, specs[name])) + "\n")
    (out / "accuracy.log").write_text(gsm8k or GSM8K_LOG.read_text())
    return out


# ------------------------------------------------------------------------------------------------ parsing

def test_published_blocks_parse_to_the_published_figures():
    ref = reference()
    for log, run in ((LATENCY_LOG, "latency"), (THROUGHPUT_LOG, "throughput")):
        values = bench.parse_serving_block(log.read_text())
        for metric, expected in ref["runs"][run]["metrics"].items():
            assert values[metric] == pytest.approx(expected["value"]), (run, metric)
        assert values["backend"] == "sglang"
        assert values["request_rate"] == "inf"
        assert values["max_concurrency"] == ref["runs"][run]["args"]["max_concurrency"]
        assert values["completed"] == ref["runs"][run]["args"]["num_prompts"]
        assert "other" not in values, values.get("other")          # every printed label is known
    latency = bench.parse_serving_block(LATENCY_LOG.read_text())
    assert (latency["mean_ttft_ms"], latency["p99_tpot_ms"], latency["max_itl_ms"]) == (190.40, 4.96, 58.03)
    assert latency["total_input_tokens"] == 6101 and isinstance(latency["total_input_tokens"], int)


def test_block_inside_a_whole_console_log():
    """What the log really holds: the deprecation warning, the args dump, tqdm's carriage-return progress bar."""
    block = LATENCY_LOG.read_text()
    log = (
        "/usr/local/lib/python3.12/dist-packages/sglang/bench_serving.py:13: FutureWarning: `sglang.bench_serving` "
        "is deprecated and will be removed in a future release; use `sglang.benchmark.serving` instead "
        "(e.g. `python -m sglang.benchmark.serving`).\n"
        "benchmark_args=Namespace(backend='sglang', base_url=None, host='127.0.0.1', port=30000)\n"
        "Namespace(backend='sglang', base_url=None, host='127.0.0.1', port=30000)\n\n"
        "#Input tokens: 6101\n#Output tokens: 4220\nStarting warmup with 1 sequences...\nWarmup completed.\n"
        "  0%|          | 0/10 [00:00<?, ?it/s]\r 10%|#         | 1/10 [00:01<00:16,  1.89s/it]\r"
        "100%|##########| 10/10 [00:18<00:00,  1.89s/it]\n" + block + "\n")
    assert bench.parse_serving_block(log) == bench.parse_serving_block(block)


def test_the_last_block_wins_and_padding_does_not_matter():
    first = LATENCY_LOG.read_text().replace("222.84", "100.00")
    assert bench.parse_serving_block(first + LATENCY_LOG.read_text())["output_throughput"] == 222.84
    ocr = bench.parse_serving_block((FIXTURES / "cookbook-deepseek-ocr-latency.log").read_text())
    assert "accept_length" not in ocr                       # no speculative decoding: no line printed
    assert ocr["total_input_vision_tokens"] == 0
    assert (ocr["output_throughput"], ocr["median_tpot_ms"], ocr["p95_itl_ms"]) == (625.26, 1.52, 1.76)


@pytest.mark.parametrize("text, message", [
    ("Successful requests: 10\nOutput token throughput (tok/s): 5\n", "no 'Serving Benchmark Result' block"),
    ("============ Serving Benchmark Result ============\nBackend: sglang\n" + "=" * 50 + "\n",
     "lacks completed, output_throughput, total_throughput, median_tpot_ms"),
    ("", "no 'Serving Benchmark Result' block"),
])
def test_not_a_serving_block(text, message):
    with pytest.raises(bench.ParseError, match=message):
        bench.parse_serving_block(text)


def test_unknown_labels_are_kept_aside():
    text = LATENCY_LOG.read_text().replace("Concurrency:", "Goodput (req/s):                         0.40\nConcurrency:")
    assert bench.parse_serving_block(text)["other"] == {"Goodput (req/s)": 0.40}


def test_jsonl_takes_the_last_appended_record():
    spec = bench.run_specs(["latency"])[0]
    block = bench.parse_serving_block(LATENCY_LOG.read_text())
    older = jsonl_record({**block, "output_throughput": 1.0}, spec)
    newer = {**jsonl_record(block, spec), "input_lens": [1] * 10, "generated_texts": ["x"] * 10}
    parsed = bench.parse_serving_jsonl(json.dumps(older) + "\n" + json.dumps(newer) + "\n\n")
    assert parsed["output_throughput"] == 222.84
    assert "input_lens" not in parsed and "generated_texts" not in parsed      # --output-details dropped
    assert set(parsed) == set(JSONL_KEYS)


@pytest.mark.parametrize("text, message", [
    ("", "no record"), ("{not json\n", "line 1 is not JSON"), ("[1, 2]\n", "not a JSON object"),
    ('{"completed": 10}\n', "lacks output_throughput"),
])
def test_bad_jsonl(text, message):
    with pytest.raises(bench.ParseError, match=message):
        bench.parse_serving_jsonl(text)


def test_gsm8k_summary():
    values = bench.parse_gsm8k_output(GSM8K_LOG.read_text())
    assert values == {"accuracy": reference()["runs"]["accuracy"]["metrics"]["accuracy"]["value"], "invalid": 0.005,
                      "latency_s": 31.784, "output_throughput": 998.166, "num_questions": 200}
    with pytest.raises(bench.ParseError, match="no 'Accuracy: ...' line"):
        bench.parse_gsm8k_output("Traceback (most recent call last):\nConnectionRefusedError\n")
    with pytest.raises(bench.ParseError, match="not between 0 and 1"):
        bench.parse_gsm8k_output("Accuracy: 97.5\n")


def test_a_result_of_other_arguments_is_refused(tmp_path):
    raw = results_dir(tmp_path)
    spec = bench.run_specs(["latency"], range_ratio=1.0)[0]
    with pytest.raises(bench.ParseError, match="random_range_ratio is 0.0 in the result, 1.0 was asked for"):
        bench.read_run(spec, raw)
    other = bench.run_specs(["throughput"])[0]
    (raw / "throughput.jsonl").write_text((raw / "latency.jsonl").read_text())
    with pytest.raises(bench.ParseError, match="max_concurrency is 1 in the result, 100 was asked for"):
        bench.read_run(other, raw)


# ------------------------------------------------------------------------------------------------ comparison

def evaluate(raw: Path, inventory: Path = H200X8, **kw) -> dict:
    return bench.evaluate(bench.deployment_of(inventory, 0), bench.run_specs(bench.PROFILES), raw, **kw)


def test_published_results_pass_against_their_reference(tmp_path):
    report = evaluate(results_dir(tmp_path))
    assert report["status"] == "pass", report["checks"]
    assert report["reference"]["id"] == "h200x8-397b-bf16-tp8-mtp"
    gated = {(c["run"], c["metric"]) for c in report["checks"] if c["metric"] != "completed"}
    ref = reference()
    assert gated == {(run, m) for run, spec in ref["runs"].items() for m in spec["metrics"]}
    for c in report["checks"]:
        assert c["status"] == "pass"
        if c["metric"] != "completed":
            assert c["measured"] == pytest.approx(c["reference"])
    # the JSONL was the source, the printed block filled nothing in
    assert report["runs"]["latency"]["measured"]["source"] == "latency.jsonl"


def test_printed_block_alone_is_enough(tmp_path):
    report = evaluate(results_dir(tmp_path, with_jsonl=False))
    assert report["status"] == "pass"
    assert report["runs"]["throughput"]["measured"]["source"] == "throughput.log"


def test_slower_and_less_accurate_deployment_fails(tmp_path):
    latency = LATENCY_LOG.read_text().replace("Median TPOT (ms):                        3.79",
                                              "Median TPOT (ms):                        4.50")
    throughput = THROUGHPUT_LOG.read_text().replace("1767.45", "1500.00")
    gsm8k = GSM8K_LOG.read_text().replace("Accuracy: 0.975", "Accuracy: 0.930")
    report = evaluate(results_dir(tmp_path, latency=latency, throughput=throughput, gsm8k=gsm8k))
    assert report["status"] == "fail"
    failed = {(c["run"], c["metric"]): c for c in report["checks"] if c["status"] == "fail"}
    assert set(failed) == {("latency", "median_tpot_ms"), ("throughput", "output_throughput"),
                           ("accuracy", "accuracy")}
    assert failed["latency", "median_tpot_ms"]["limit"] == pytest.approx(3.79 * 1.1)
    assert failed["throughput", "output_throughput"]["limit"] == pytest.approx(1767.45 * 0.9)
    assert failed["accuracy", "accuracy"]["limit"] == pytest.approx(0.975 - 0.03)
    passed = {(c["run"], c["metric"]) for c in report["checks"] if c["status"] == "pass"}
    assert ("throughput", "total_throughput") in passed and ("latency", "output_throughput") in passed


def test_tolerance_decides(tmp_path):
    throughput = THROUGHPUT_LOG.read_text().replace("1767.45", "1600.00")   # 9.5 % short
    raw = results_dir(tmp_path, throughput=throughput)
    assert evaluate(raw, tolerance=0.10)["status"] == "pass"
    strict = evaluate(raw, tolerance=0.05)
    assert strict["status"] == "fail"
    assert [c["metric"] for c in strict["checks"] if c["status"] == "fail"] == ["output_throughput"]


def test_failed_requests_fail_the_run(tmp_path):
    throughput = THROUGHPUT_LOG.read_text().replace("Successful requests:                     1000",
                                                    "Successful requests:                     990")
    report = evaluate(results_dir(tmp_path, throughput=throughput))
    check = next(c for c in report["checks"] if c["run"] == "throughput" and c["metric"] == "completed")
    assert (check["status"], check["detail"]) == ("fail", "10 of 1000 requests failed")
    assert report["status"] == "fail"


def test_a_missing_run_fails(tmp_path):
    raw = results_dir(tmp_path)
    (raw / "accuracy.log").unlink()
    report = evaluate(raw)
    assert report["status"] == "fail"
    check = next(c for c in report["checks"] if c["run"] == "accuracy")
    assert check["status"] == "missing" and "accuracy.log is missing" in check["detail"]


def test_no_published_reference_for_other_hardware(tmp_path):
    report = evaluate(results_dir(tmp_path), inventory=H100X32)
    assert report["status"] == "no-reference"
    assert report["note"].startswith("no published reference for this hardware (h100 x 16 (TP 16)")
    assert {c["status"] for c in report["checks"]} == {"pass", "measured"}      # completed + values
    assert report["reference"] is None


def test_fixed_lengths_are_not_comparable(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    specs = bench.run_specs(["latency"], range_ratio=1.0)
    block = bench.parse_serving_block(LATENCY_LOG.read_text())
    (raw / "latency.jsonl").write_text(json.dumps(jsonl_record(block, specs[0])) + "\n")
    report = bench.evaluate(bench.deployment_of(H200X8, 0), specs, raw)
    assert report["status"] == "not-comparable"
    checks = [c for c in report["checks"] if c["metric"] != "completed"]
    assert checks and all(c["status"] == "not-comparable" for c in checks)
    assert "random_range_ratio=0.0 (this run: 1.0)" in checks[0]["detail"]


def test_reference_data_is_well_formed():
    refs = bench.load_references()
    ids = [r["id"] for r in refs]
    assert len(ids) == len(set(ids))
    for ref in refs:
        for name, run in ref["runs"].items():
            spec = bench.run_specs([name])[0]
            assert run["kind"] == spec.kind
            for key, value in run["args"].items():          # the toolkit's runs are the published commands
                assert spec.args[key] == value, (ref["id"], name, key)
            for metric in run["metrics"].values():
                assert metric["better"] in ("higher", "lower") and metric["value"] > 0


# ------------------------------------------------------------------------------------------------ commands

def test_run_commands_are_the_published_ones():
    latency, throughput, accuracy = bench.run_specs(bench.PROFILES)
    argv = latency.argv(31000)
    assert argv[:3] == ["python3", "-m", "sglang.bench_serving"]
    pairs = dict(zip(argv[3::2], argv[4::2]))
    assert pairs == {"--backend": "sglang", "--host": "127.0.0.1", "--port": "31000", "--dataset-name": "random",
                     "--random-input-len": "1000", "--random-output-len": "1000", "--random-range-ratio": "0.0",
                     "--num-prompts": "10", "--max-concurrency": "1", "--output-file": "latency.jsonl"}
    t = dict(zip(throughput.argv(30000)[3::2], throughput.argv(30000)[4::2]))
    assert (t["--num-prompts"], t["--max-concurrency"]) == ("1000", "100")
    a = accuracy.argv(30000, {"gsm8k": "input-gsm8k.jsonl"})
    # the published module, run with the deployment's key (bench.GSM8K_WITH_KEY; the contract test runs it)
    assert a[:3] == ["python3", "-c", bench.GSM8K_WITH_KEY]
    assert "runpy.run_module('sglang.test.few_shot_gsm8k', run_name='__main__'" in a[2]
    assert dict(zip(a[3::2], a[4::2])) == {"--host": "127.0.0.1", "--port": "30000", "--num-questions": "200",
                                           "--num-shots": "5", "--data-path": "input-gsm8k.jsonl"}
    assert "--dataset-path" in latency.argv(1, {"sharegpt": "input-sharegpt.json"})


def test_cli_compares_fetched_results_and_saves_report_and_chart(tmp_path, capsys):
    raw = results_dir(tmp_path)
    out = tmp_path / "out"
    status = main(["bench", "--inventory", str(H200X8), "--results", str(raw), "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["status"] == "pass"
    assert json.loads((out / "bench.json").read_text()) == report
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 600 and height >= 300
    import matplotlib.image
    pixels = matplotlib.image.imread(out / "bench.png")      # a PNG a decoder reads, not just a header
    assert pixels.shape[:2] == (height, width)
    assert report["chart"] == str(out / "bench.png")


def test_cli_fails_with_exit_1_and_says_which_metric(tmp_path, capsys):
    raw = results_dir(tmp_path, gsm8k=GSM8K_LOG.read_text().replace("0.975", "0.900"))
    status = main(["bench", "--inventory", str(H200X8), "--results", str(raw), "--out", str(tmp_path / "o")])
    text = capsys.readouterr().out
    assert status == 1
    assert "FAIL" in text.splitlines()[0]
    line = next(l for l in text.splitlines() if "accuracy" in l and "FAIL" in l)
    assert "0.9" in line and "0.975" in line


def test_cli_without_matplotlib_still_saves_json(tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    raw = results_dir(tmp_path)
    status = main(["bench", "--inventory", str(H200X8), "--results", str(raw), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert status == 0
    assert "no chart: the chart needs matplotlib: pip install 'qwen35-prov[chart]'" in captured.err
    saved = json.loads((tmp_path / "o" / "bench.json").read_text())
    assert saved["chart"] is None and saved["status"] == "pass"
    assert not (tmp_path / "o" / "bench.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["--replica", "3"], "--replica 3: the plan has replicas 0"),
    (["--profile", "speed"], "--profile speed: unknown speed"),
    (["--tolerance", "10"], "--tolerance 10.0: give a fraction between 0 and 1"),
    (["--range-ratio", "2"], "--range-ratio 2.0: must be between 0 and 1"),
    (["--results", "/nonexistent/q35"], "--results /nonexistent/q35: not a folder"),
])
def test_cli_user_errors(argv, message, capsys):
    assert main(["bench", "--inventory", str(H200X8), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_needs_a_deployment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("QWEN35_STATE_DIR", str(tmp_path))
    assert main(["bench"]) == 2
    assert "say which deployment: --cluster C or --inventory DIR" in capsys.readouterr().err


def test_chart_without_reference_shows_measured_values(tmp_path):
    report = evaluate(results_dir(tmp_path), inventory=H100X32)
    path = bench.write_chart(report, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ playbook

def ansible_playbook(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ansible-playbook")
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_LOCALHOST_WARNING": "0"}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_playbook_checks_its_variables(tmp_path):
    """The runs file `bench` writes satisfies bench.yml's first play; a broken one is refused before any host."""
    deployment = bench.deployment_of(H200X8, 0)
    specs = bench.run_specs(bench.PROFILES)
    runs = {"qwen35_bench_host": deployment.head, "qwen35_bench_replica": 0, "qwen35_bench_port": deployment.port,
            "qwen35_bench_id": "20260101-000000", "qwen35_bench_fetch_dir": str(tmp_path / "raw"),
            "qwen35_bench_runs": [{"name": s.name, "kind": s.kind, "argv": s.argv(deployment.port),
                                   "files": list(s.result_files().values())} for s in specs],
            "qwen35_bench_inputs": [], "qwen35_bench_timeout": 60}
    good = tmp_path / "runs.json"
    good.write_text(json.dumps(runs))
    ok = ansible_playbook("-i", str(H200X8), str(REPO / "playbooks" / "bench.yml"), "-e", f"@{good}",
                          "--tags", "validate_inventory", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok=2" in ok.stdout and "failed=0" in ok.stdout       # invariants + the variables check

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**runs, "qwen35_bench_host": "not-a-head", "qwen35_bench_runs": []}))
    refused = ansible_playbook("-i", str(H200X8), str(REPO / "playbooks" / "bench.yml"), "-e", f"@{bad}",
                               "--tags", "validate_inventory", cwd=tmp_path)
    assert refused.returncode != 0
    assert "bench.yml needs qwen35_bench_host (a replica head of this inventory)" in refused.stdout


def test_the_clients_reach_the_head_where_it_listens():
    """A plan that binds the cluster address (the default) is benchmarked at the head's own address; IPv6
    literals are bracketed for the clients, which build http://HOST:PORT themselves."""
    deployment = bench.deployment_of(H200X8, 0)
    assert deployment.listen == deployment.address != "127.0.0.1"
    latency, _, accuracy = bench.run_specs(bench.PROFILES)
    for spec in (latency, accuracy):
        argv = spec.argv(deployment.port, host=deployment.listen)
        assert argv[argv.index("--host") + 1] == deployment.address
        v6 = spec.argv(30000, host="fd00::7")
        assert v6[v6.index("--host") + 1] == "[fd00::7]"
