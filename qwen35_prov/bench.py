"""`qwen35-prov bench`: SGLang's own benchmarks on one replica, compared with the published reference results.

What runs (playbooks/bench.yml, inside the replica's SGLang container on its head node, against the address the
head listens on (its fleet address; 127.0.0.1 when the plan binds every interface) and PORT):
- latency:    python3 -m sglang.bench_serving --backend sglang --dataset-name random --random-input-len 1000
              --random-output-len 1000 --random-range-ratio R --num-prompts 10 --max-concurrency 1
- throughput: the same with --num-prompts 1000 --max-concurrency 100
- accuracy:   python3 -m sglang.test.few_shot_gsm8k --num-questions 200 (the module form of SGLang's
              benchmark/gsm8k/bench_sglang.py; same prompts, same printed "Accuracy: ..." lines)

Each serving run leaves the JSONL record bench_serving appends to --output-file and the console log with its
"Serving Benchmark Result" block; the accuracy run leaves its console log. The files are fetched to the
controller, parsed (the JSONL first, the printed block where the JSONL lacks a value), compared with
qwen35_prov/data/reference_results.yaml for the same GPU, model, precision, TP size and MTP setting, and saved
as bench.json plus a chart bench.png (matplotlib, optional).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from .cli_options import add_deployment_target, print_json
from .deployment import Deployed, resolve, state_root
from .errors import UserError
from .runner import Progress, run_playbook

PROFILES = ("latency", "throughput", "accuracy")
DEFAULT_TOLERANCE = 0.10
DEFAULT_ACCURACY_TOLERANCE = 0.03   # accuracy points: ~3 standard errors of a 0.975 score over 200 questions
SERVING_MODULE = "sglang.bench_serving"
GSM8K_MODULE = "sglang.test.few_shot_gsm8k"
#: few_shot_gsm8k builds its RuntimeEndpoint without an API key (SGLang 0.5.23), so against a keyed server every
#: request would get 401. This runs the module unchanged with RuntimeEndpoint's api_key defaulting to
#: $OPENAI_API_KEY, which the container has from the server's root-only env file, as bench_serving reads it.
GSM8K_WITH_KEY = (
    "import os, runpy\n"
    "from sglang.lang.backend import runtime_endpoint as e\n"
    "init = e.RuntimeEndpoint.__init__\n"
    "e.RuntimeEndpoint.__init__ = lambda self, base_url, api_key=None, *a, **k: "
    "init(self, base_url, api_key or os.environ.get('OPENAI_API_KEY'), *a, **k)\n"
    f"runpy.run_module({GSM8K_MODULE!r}, run_name='__main__', alter_sys=True)\n")


# ------------------------------------------------------------------------------------------------ run specs

@dataclass(frozen=True)
class RunSpec:
    """One benchmark run: what to execute inside the container and with which arguments."""

    name: str                      # latency | throughput | accuracy
    kind: str                      # serving | gsm8k
    args: dict[str, Any]

    def result_files(self) -> dict[str, str]:
        if self.kind == "serving":
            return {"jsonl": f"{self.name}.jsonl", "log": f"{self.name}.log"}
        return {"log": f"{self.name}.log"}

    def argv(self, port: int, inputs: Mapping[str, str] | None = None, host: str = "127.0.0.1") -> list[str]:
        """The command, run with the container's working folder holding `inputs` (file names) and the outputs;
        HOST is where the server listens, as the node (the container shares its network) reaches it."""
        inputs = inputs or {}
        host = f"[{host}]" if ":" in host else host   # both clients build http://HOST:PORT themselves
        a = self.args
        if self.kind == "serving":
            argv = ["python3", "-m", SERVING_MODULE, "--backend", "sglang", "--host", host, "--port", str(port),
                    "--dataset-name", a["dataset_name"],
                    "--random-input-len", str(a["random_input_len"]), "--random-output-len", str(a["random_output_len"]),
                    "--random-range-ratio", _num(a["random_range_ratio"]),
                    "--num-prompts", str(a["num_prompts"]), "--max-concurrency", str(a["max_concurrency"]),
                    "--output-file", self.result_files()["jsonl"]]
            if inputs.get("sharegpt"):
                argv += ["--dataset-path", inputs["sharegpt"]]
            return argv
        # few_shot_gsm8k joins host and port itself (http://HOST:PORT): the host is a bare address
        argv = ["python3", "-c", GSM8K_WITH_KEY, "--host", host, "--port", str(port),
                "--num-questions", str(a["num_questions"]), "--num-shots", str(a["num_shots"])]
        if inputs.get("gsm8k"):
            argv += ["--data-path", inputs["gsm8k"]]
        return argv


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"


def run_specs(profiles: Sequence[str], *, range_ratio: float = 0.0, num_questions: int = 200,
              input_len: int = 1000, output_len: int = 1000) -> list[RunSpec]:
    serving = {"dataset_name": "random", "random_input_len": input_len, "random_output_len": output_len,
               "random_range_ratio": float(range_ratio)}
    table = {
        "latency": RunSpec("latency", "serving", {**serving, "num_prompts": 10, "max_concurrency": 1}),
        "throughput": RunSpec("throughput", "serving", {**serving, "num_prompts": 1000, "max_concurrency": 100}),
        "accuracy": RunSpec("accuracy", "gsm8k", {"num_questions": num_questions, "num_shots": 5}),
    }
    return [table[p] for p in profiles]


# ------------------------------------------------------------------------------------------------ parsing

class ParseError(ValueError):
    """A result file that is not what SGLang writes."""


SERVING_BANNER = "Serving Benchmark Result"

# Printed labels of bench_serving's result block (sglang/benchmark/serving.py, 0.5.23) -> the JSONL keys.
_SERVING_LABELS = {
    "Backend": "backend",
    "Traffic request rate": "request_rate",
    "Max request concurrency": "max_concurrency",
    "Successful requests": "completed",
    "Benchmark duration (s)": "duration",
    "Total input tokens": "total_input_tokens",
    "Total input text tokens": "total_input_text_tokens",
    "Total input vision tokens": "total_input_vision_tokens",
    "Total generated tokens": "total_output_tokens",
    "Total generated tokens (retokenized)": "total_output_tokens_retokenized",
    "Request throughput (req/s)": "request_throughput",
    "Input token throughput (tok/s)": "input_throughput",
    "Output token throughput (tok/s)": "output_throughput",
    "Peak output token throughput (tok/s)": "max_output_tokens_per_s",
    "Peak concurrent requests": "max_concurrent_requests",
    "Total token throughput (tok/s)": "total_throughput",
    "Concurrency": "concurrency",
    "Accept length": "accept_length",
}
_LATENCY_LABEL = re.compile(r"^(Mean|Median|P90|P95|P99|Max) (E2E Latency|TTFT|TPOT|ITL) \(ms\)$")
_LATENCY_KEYS = {"E2E Latency": "e2e_latency", "TTFT": "ttft", "TPOT": "tpot", "ITL": "itl"}
# The metrics a serving result must carry to be a result at all.
_SERVING_REQUIRED = ("completed", "output_throughput", "total_throughput", "median_tpot_ms")


def _value(text: str) -> Any:
    text = text.strip()
    if text in ("inf", "nan"):
        return text if text == "inf" else None
    if text == "not set":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _lines(text: str) -> list[str]:
    # tqdm progress bars rewrite their line with carriage returns; every segment is a line of its own
    return [seg for line in text.splitlines() for seg in line.split("\r")]


def parse_serving_block(text: str) -> dict[str, Any]:
    """The last "Serving Benchmark Result" block of a bench_serving console log, as JSONL-style keys."""
    lines = _lines(text)
    starts = [i for i, line in enumerate(lines) if SERVING_BANNER in line and line.strip().startswith("=")]
    if not starts:
        raise ParseError(f"no '{SERVING_BANNER}' block (is this bench_serving's output?)")
    values: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    for line in lines[starts[-1] + 1:]:
        stripped = line.strip()
        if stripped.startswith("=" * 10):
            break                                        # the closing rule
        if not stripped or stripped.startswith("-"):
            continue                                     # section rules (---Time to First Token---)
        label, sep, rest = stripped.partition(":")
        if not sep:
            continue
        label = label.strip()
        rest = rest.strip().rstrip("%").strip()
        if label in _SERVING_LABELS:
            values[_SERVING_LABELS[label]] = _value(rest)
        elif m := _LATENCY_LABEL.match(label):
            values[f"{m.group(1).lower()}_{_LATENCY_KEYS[m.group(2)]}_ms"] = _value(rest)
        else:
            unknown[label] = _value(rest)
    missing = [k for k in _SERVING_REQUIRED if k not in values]
    if missing:
        raise ParseError(f"the '{SERVING_BANNER}' block lacks {', '.join(missing)}")
    if unknown:
        values["other"] = unknown
    return values


def parse_serving_jsonl(text: str) -> dict[str, Any]:
    """The last record of a bench_serving --output-file (it appends one JSON object per run)."""
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ParseError(f"line {n} is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ParseError(f"line {n} is not a JSON object")
        records.append(record)
    if not records:
        raise ParseError("no record (the run wrote nothing)")
    record = records[-1]
    missing = [k for k in _SERVING_REQUIRED if k not in record]
    if missing:
        raise ParseError(f"the record lacks {', '.join(missing)} (is this bench_serving's --output-file?)")
    # per-request details (--output-details) are large and not needed here
    return {k: v for k, v in record.items()
            if k not in ("input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors")}


_GSM8K_PATTERNS = {
    "accuracy": re.compile(r"^Accuracy:\s*([0-9.]+)\s*$"),
    "invalid": re.compile(r"^Invalid:\s*([0-9.]+)\s*$"),
    "latency_s": re.compile(r"^Latency:\s*([0-9.]+)\s*s\s*$"),
    "output_throughput": re.compile(r"^Output throughput:\s*([0-9.]+)\s*token/s\s*$"),
}
_PROGRESS = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")


def parse_gsm8k_output(text: str) -> dict[str, Any]:
    """GSM8K's printed summary (sglang.test.few_shot_gsm8k and benchmark/gsm8k/bench_sglang.py print the same)."""
    values: dict[str, Any] = {}
    questions = None
    for line in _lines(text):
        stripped = line.strip()
        for key, pattern in _GSM8K_PATTERNS.items():
            if m := pattern.match(stripped):
                values[key] = float(m.group(1))
        if m := _PROGRESS.search(stripped):
            questions = int(m.group(2))
    if "accuracy" not in values:
        raise ParseError("no 'Accuracy: ...' line (is this the GSM8K script's output?)")
    if not 0.0 <= values["accuracy"] <= 1.0:
        raise ParseError(f"accuracy {values['accuracy']} is not between 0 and 1")
    if questions is not None:
        values["num_questions"] = questions
    return values


def read_run(spec: RunSpec, folder: Path) -> dict[str, Any]:
    """The measured values of one run from its fetched files; raises ParseError/FileNotFoundError."""
    files = spec.result_files()
    log_path = folder / files["log"]
    if spec.kind == "gsm8k":
        if not log_path.exists():
            raise FileNotFoundError(f"{log_path.name} is missing")
        return parse_gsm8k_output(log_path.read_text(errors="replace"))
    jsonl_path = folder / files["jsonl"]
    block: dict[str, Any] = {}
    if log_path.exists():
        try:
            block = parse_serving_block(log_path.read_text(errors="replace"))
        except ParseError:
            if not jsonl_path.exists():
                raise
    if jsonl_path.exists():
        values = {**block, **parse_serving_jsonl(jsonl_path.read_text(errors="replace"))}
        values["source"] = jsonl_path.name
    elif block:
        values = {**block, "source": log_path.name}
    else:
        raise FileNotFoundError(f"neither {jsonl_path.name} nor {log_path.name} is there")
    # a result file of another run would compare the wrong thing
    for key in ("dataset_name", "random_input_len", "random_output_len", "max_concurrency"):
        if key in values and values[key] is not None and key in spec.args and values[key] != spec.args[key]:
            raise ParseError(f"{key} is {values[key]!r} in the result, {spec.args[key]!r} was asked for")
    if "random_range_ratio" in values and not math.isclose(float(values["random_range_ratio"]),
                                                           float(spec.args["random_range_ratio"])):
        raise ParseError(f"random_range_ratio is {values['random_range_ratio']} in the result, "
                         f"{spec.args['random_range_ratio']} was asked for")
    return values


# ------------------------------------------------------------------------------------------------ references

@dataclass(frozen=True)
class Deployment:
    """What `bench` measured: the shape of one replica."""

    cluster: str
    gpu: str
    model: str
    precision: str
    tp_size: int
    mtp: bool
    replica: int
    head: str
    address: str
    port: int
    sglang_version: str = ""
    listen: str = "127.0.0.1"      # where the head's server listens, as the head itself reaches it

    def describe(self) -> str:
        return (f"{self.gpu} x {self.tp_size} (TP {self.tp_size}), model {self.model} {self.precision}, "
                f"MTP {'on' if self.mtp else 'off'}")


def load_references(path: Path | None = None) -> list[dict[str, Any]]:
    if path is None:
        text = resources.files("qwen35_prov").joinpath("data/reference_results.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("references"), list):
        raise UserError(f"{path or 'reference_results.yaml'}: not a schema-1 reference file")
    for ref in data["references"]:
        for key in ("id", "gpu", "model", "precision", "tp_size", "mtp", "runs"):
            if key not in ref:
                raise UserError(f"reference {ref.get('id', '?')}: '{key}' is missing")
    return data["references"]


def find_reference(deployment: Deployment, references: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for ref in references:
        if (ref["gpu"], ref["model"], ref["precision"], int(ref["tp_size"]), bool(ref["mtp"])) == (
                deployment.gpu, deployment.model, deployment.precision, deployment.tp_size, deployment.mtp):
            return ref
    return None


# ------------------------------------------------------------------------------------------------ comparison

@dataclass
class Check:
    run: str
    metric: str
    measured: float | None
    reference: float | None
    limit: float | None
    better: str
    status: str                    # pass | fail | missing | not-comparable | measured (no reference)
    unit: str = ""
    detail: str = ""


def _limit(reference: float, better: str, tolerance: float, absolute: bool) -> float:
    if absolute:
        return reference - tolerance if better == "higher" else reference + tolerance
    return reference * (1 - tolerance) if better == "higher" else reference * (1 + tolerance)


def compare_run(spec: RunSpec, measured: Mapping[str, Any] | None, reference: Mapping[str, Any] | None, *,
                tolerance: float, accuracy_tolerance: float, error: str = "") -> list[Check]:
    """Pass/fail per metric of one run; `reference` is the reference entry's run of the same name (or None)."""
    checks: list[Check] = []
    if spec.kind == "serving":
        wanted = spec.args["num_prompts"]
        done = (measured or {}).get("completed")
        if measured is not None:
            checks.append(Check(spec.name, "completed", done, wanted, wanted, "higher",
                                "pass" if done == wanted else "fail", "requests",
                                "" if done == wanted else f"{wanted - (done or 0)} of {wanted} requests failed"))
    if reference is None:
        keys = (("output_throughput", "total_throughput", "accept_length", "median_tpot_ms", "median_ttft_ms")
                if spec.kind == "serving" else ("accuracy", "output_throughput"))
        for key in keys:
            value = (measured or {}).get(key)
            if value is not None:
                checks.append(Check(spec.name, key, float(value), None, None, "", "measured"))
        if measured is None:
            checks.append(Check(spec.name, "-", None, None, None, "", "missing", detail=error))
        return checks

    differences = {k: (spec.args.get(k), v) for k, v in reference.get("args", {}).items()
                   if k in spec.args and not _same(spec.args.get(k), v)}
    for key, ref in reference["metrics"].items():
        absolute = ref.get("tolerance") == "absolute"
        tol = accuracy_tolerance if absolute else tolerance
        limit = _limit(float(ref["value"]), ref["better"], tol, absolute)
        value = None if measured is None else measured.get(key)
        check = Check(spec.name, key, None if value is None else float(value), float(ref["value"]), round(limit, 6),
                      ref["better"], "", ref.get("unit", ""))
        if differences:
            check.status = "not-comparable"
            check.detail = "reference measured with " + ", ".join(
                f"{k}={v[1]} (this run: {v[0]})" for k, v in differences.items())
        elif value is None:
            check.status = "missing"
            check.detail = error or f"{key} is not in the result"
        else:
            ok = float(value) >= limit if ref["better"] == "higher" else float(value) <= limit
            check.status = "pass" if ok else "fail"
            sign = ">=" if ref["better"] == "higher" else "<="
            check.detail = f"{'' if ok else 'not '}{sign} {limit:.4g} ({'±' + str(tol) if absolute else f'{tol:.0%}'} of {ref['value']})"
        checks.append(check)
    return checks


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b))
    return a == b


def verdict(checks: Sequence[Check], has_reference: bool) -> str:
    """fail: a metric missed its limit or a run gave no result; pass: every compared metric passed;
    not-comparable: nothing could be compared (different arguments); partial: some could not."""
    statuses = {c.status for c in checks}
    if statuses & {"fail", "missing"}:
        return "fail"
    if not has_reference:
        return "no-reference"
    compared = {c.status for c in checks if c.metric != "completed"}
    if compared == {"not-comparable"}:
        return "not-comparable"
    if "not-comparable" in compared:
        return "partial"
    return "pass"


def evaluate(deployment: Deployment, specs: Sequence[RunSpec], results_dir: Path, *,
             tolerance: float = DEFAULT_TOLERANCE, accuracy_tolerance: float = DEFAULT_ACCURACY_TOLERANCE,
             references: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Parse every run's files under results_dir and compare them with the reference; the report as a dict."""
    refs = load_references() if references is None else references
    reference = find_reference(deployment, refs)
    runs: dict[str, Any] = {}
    checks: list[Check] = []
    for spec in specs:
        error = ""
        try:
            measured: dict[str, Any] | None = read_run(spec, results_dir)
        except (ParseError, FileNotFoundError, OSError) as exc:
            measured, error = None, f"{spec.name}: {exc}"
        runs[spec.name] = {"kind": spec.kind, "args": spec.args, "measured": measured, "error": error or None}
        ref_run = None if reference is None else reference["runs"].get(spec.name)
        checks += compare_run(spec, measured, ref_run, tolerance=tolerance, accuracy_tolerance=accuracy_tolerance,
                              error=error)
    status = verdict(checks, reference is not None)
    if reference is None:
        note = (f"no published reference for this hardware ({deployment.describe()}); "
                f"references exist for: {', '.join(r['id'] for r in refs)}")
    else:
        note = f"compared with {reference['id']} ({reference.get('hardware', '')})"
    return {
        "schema": 1,
        "status": status,
        "note": note,
        "deployment": asdict(deployment),
        "reference": None if reference is None else {
            "id": reference["id"], "hardware": reference.get("hardware"), "source": reference.get("source"),
            "sglang_version": reference.get("sglang_version")},
        "tolerance": tolerance,
        "accuracy_tolerance": accuracy_tolerance,
        "runs": runs,
        "checks": [asdict(c) for c in checks],
    }


# ------------------------------------------------------------------------------------------------ chart

def write_chart(report: Mapping[str, Any], path: Path) -> Path:
    """A PNG: per run, measured vs reference per metric (as % of the reference), or the measured values alone."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("the chart needs matplotlib: pip install 'qwen35-prov[chart]' (bench.json is written "
                        "without it; or pass --no-chart)") from None

    by_run: dict[str, list[Mapping[str, Any]]] = {}
    for c in report["checks"]:
        if c["measured"] is not None and c["metric"] != "completed":
            by_run.setdefault(c["run"], []).append(c)
    runs = list(by_run) or ["(no results)"]
    height = 1.0 + sum(0.9 + 0.45 * len(v) for v in by_run.values()) if by_run else 2.5
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, height), squeeze=False)
    colors = {"pass": "#2e7d32", "fail": "#c62828", "not-comparable": "#9e9e9e", "measured": "#1565c0"}
    for ax, run in zip(axes[:, 0], runs):
        rows = by_run.get(run, [])
        labels = [f"{r['metric']}" + (f" ({r['unit']})" if r.get("unit") else "")
                  + (", lower is better" if r.get("better") == "lower" else "") for r in rows]
        if rows and all(r["reference"] for r in rows):
            values = [100.0 * r["measured"] / r["reference"] for r in rows]
            ax.barh(labels, values, color=[colors.get(r["status"], "#616161") for r in rows])
            ax.axvline(100, color="black", linewidth=1)
            for i, r in enumerate(rows):
                limit_pct = 100.0 * r["limit"] / r["reference"]
                ax.plot([limit_pct, limit_pct], [i - 0.4, i + 0.4], color="black", linestyle="--", linewidth=1)
                ax.text(values[i], i, f"  {r['measured']:.4g} / {r['reference']:.4g} {r['status']}",
                        va="center", fontsize=8)
            ax.set_xlabel("% of the published reference (solid: reference, dashed: pass limit)")
            ax.set_xlim(0, max(values + [130.0]) * 1.35)
        elif rows:
            values = [r["measured"] for r in rows]
            ax.barh(labels, values, color=colors["measured"])
            for i, r in enumerate(rows):
                ax.text(values[i], i, f"  {r['measured']:.4g}", va="center", fontsize=8)
            ax.set_xlim(0, max(values) * 1.3 or 1)
            ax.set_xlabel("measured (no published reference)")
        ax.invert_yaxis()
        ax.set_title(run, fontsize=10, loc="left")
    dep = report["deployment"]
    fig.suptitle(f"qwen35-prov bench: {dep['cluster']} replica {dep['replica']} - {report['status'].upper()}",
                 fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ inventory

def deployment_of(inventory: Path | Deployed, replica: int) -> Deployment:
    deployed = inventory if isinstance(inventory, Deployed) else Deployed(inventory)
    plan = deployed.plan
    layout = {r["replica"]: r for r in plan.get("replica_layout", [])}
    if replica not in layout:
        raise UserError(f"--replica {replica}: the plan has replicas {', '.join(map(str, sorted(layout)))}")
    head, launch = deployed.head_launch(replica)
    # where the head's server listens, from its launch (the contract's `host`): as the head itself reaches it
    host = str(launch.get("host") or "0.0.0.0")
    return Deployment(cluster=deployed.cluster, gpu=plan["gpu"],
                      model=str(plan["model"]), precision=plan["precision"], tp_size=int(plan["tp_size"]),
                      mtp=bool(plan["mtp"]), replica=replica, head=head, address=deployed.nodes[head],
                      port=int(layout[replica]["port"]), sglang_version=str(plan.get("sglang_version", "")),
                      listen="127.0.0.1" if host in ("0.0.0.0", "::") else host)


# ------------------------------------------------------------------------------------------------ CLI

def _text_report(report: Mapping[str, Any], out: Path | None) -> str:
    dep = report["deployment"]
    lines = [f"bench: {dep['cluster']} replica {dep['replica']} ({dep['head']}:{dep['port']}): "
             f"{report['status'].upper()}", f"  {report['note']}"]
    lines.append(f"  {'RUN':<11} {'METRIC':<20} {'MEASURED':>12} {'REFERENCE':>10} {'LIMIT':>10}  STATUS")
    for c in report["checks"]:
        def f(v: Any) -> str:
            return "-" if v is None else f"{v:.4g}"
        lines.append(f"  {c['run']:<11} {c['metric']:<20} {f(c['measured']):>12} {f(c['reference']):>10} "
                     f"{f(c['limit']):>10}  {c['status'].upper()}{'  ' + c['detail'] if c['detail'] else ''}")
    for name, run in report["runs"].items():
        if run.get("error"):
            lines.append(f"  {name}: {run['error']}")
    if out:
        lines.append(f"  saved: {out / 'bench.json'}" + (f", {out / 'bench.png'}" if (out / "bench.png").exists() else ""))
    return "\n".join(lines)


def _profiles(value: str | None) -> list[str]:
    if not value or value == "all":
        return list(PROFILES)
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in PROFILES]
    if bad:
        raise UserError(f"--profile {value}: unknown {', '.join(bad)} (choose from {', '.join(PROFILES)} or all)")
    return names


def cmd_bench(args: argparse.Namespace) -> int:
    if not 0 <= args.tolerance < 1:
        raise UserError(f"--tolerance {args.tolerance}: give a fraction between 0 and 1 (0.1 = 10 %)")
    if not 0 <= args.range_ratio <= 1:
        raise UserError(f"--range-ratio {args.range_ratio}: must be between 0 and 1")
    deployed = resolve(args)
    inventory, name = deployed.inventory, deployed.name
    deployment = deployment_of(deployed, args.replica)
    specs = run_specs(_profiles(args.profile), range_ratio=args.range_ratio, num_questions=args.num_questions)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out).resolve() if args.out else deployed.state_dir / "bench" / stamp
    raw = out / "raw"
    run_result = None
    if args.results:
        raw = Path(args.results).resolve()
        if not raw.is_dir():
            raise UserError(f"--results {args.results}: not a folder")
    else:
        run_result = _run_on_head(args, inventory, name, deployment, specs, raw, stamp)
    report = evaluate(deployment, specs, raw, tolerance=args.tolerance, accuracy_tolerance=args.accuracy_tolerance)
    report["results_dir"] = str(raw)
    if run_result is not None:
        report["playbook"] = {"status": run_result.status, "failures": [f.__dict__ for f in run_result.failures],
                              "artifacts": run_result.artifacts}
        if not run_result.ok and report["status"] != "fail":
            report["status"] = "fail"
    out.mkdir(parents=True, exist_ok=True)
    chart_note = None
    if not args.no_chart:
        try:
            write_chart(report, out / "bench.png")
            report["chart"] = str(out / "bench.png")
        except UserError as exc:
            chart_note = str(exc)
            report["chart"] = None
            report["chart_note"] = chart_note
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print_json(report)
    else:
        print(_text_report(report, out))
        if run_result is not None:
            for f in run_result.failures:
                print(f"  FAILED {f.host}: {f.task}: {f.message}")
        if chart_note:
            print(f"  note: no chart: {chart_note}", file=sys.stderr)
    return 1 if report["status"] == "fail" else 0


def _run_on_head(args: argparse.Namespace, inventory: Path, name: str, deployment: Deployment,
                 specs: Sequence[RunSpec], raw: Path, stamp: str):
    inputs: dict[str, str] = {}
    copies: list[dict[str, str]] = []
    for key, given in (("sharegpt", args.sharegpt), ("gsm8k", args.gsm8k_data)):
        if given:
            src = Path(given).expanduser().resolve()
            if not src.is_file():
                raise UserError(f"--{'sharegpt' if key == 'sharegpt' else 'gsm8k-data'} {given}: no such file")
            inputs[key] = f"input-{key}{''.join(src.suffixes[-1:])}"
            copies.append({"src": str(src), "dest": inputs[key]})
    raw.mkdir(parents=True, exist_ok=True)
    runs = [{"name": s.name, "kind": s.kind, "argv": s.argv(deployment.port, inputs, deployment.listen),
             "files": list(s.result_files().values())} for s in specs]
    extravars = {
        "qwen35_bench_host": deployment.head,
        "qwen35_bench_replica": deployment.replica,
        "qwen35_bench_port": deployment.port,
        "qwen35_bench_listen": deployment.listen,
        "qwen35_bench_id": stamp,
        "qwen35_bench_runs": runs,
        "qwen35_bench_inputs": copies,
        "qwen35_bench_fetch_dir": str(raw),
        "qwen35_bench_timeout": int(args.timeout),
    }
    (raw.parent / "runs.json").write_text(json.dumps(extravars, indent=2) + "\n", encoding="utf-8")
    progress = None if args.json else Progress()
    if progress:
        progress.console.print(f"    bench: {', '.join(s.name for s in specs)} on replica {deployment.replica} "
                               f"({deployment.head}, port {deployment.port}); " +
                               "; ".join(" ".join(map(shlex.quote, r["argv"])) for r in runs[:1]) + " ...")
    return run_playbook("bench.yml", inventory, state_dir=state_root() / name, extravars=extravars,
                        progress=progress)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="run SGLang's benchmarks on one replica and compare them with the published results",
        description="Run SGLang's own sglang.bench_serving (random dataset, input/output 1000; concurrency 1 with "
                    "10 prompts = latency, concurrency 100 with 1000 prompts = throughput) and the GSM8K accuracy "
                    "script (200 questions) inside the SGLang container of one replica's head node, then compare "
                    "with the published reference results for the same GPU, model, precision and TP size "
                    "(qwen35_prov/data/reference_results.yaml). Saves bench.json and bench.png; exit 1 when a "
                    "metric misses its reference by more than the tolerance.",
        epilog="Examples: qwen35-prov bench --cluster h200x8 ; qwen35-prov bench --inventory inv --profile latency "
               "--json ; qwen35-prov bench --cluster h200x8 --results old/raw  (compare files already fetched)")
    add_deployment_target(p)
    p.add_argument("--profile", default="all", metavar="{latency,throughput,accuracy,all}",
                   help="which runs, comma separated (default all)")
    p.add_argument("--replica", type=int, default=0, help="the replica to measure (default 0)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="allowed shortfall against the reference for speed metrics, a fraction (default 0.1)")
    p.add_argument("--accuracy-tolerance", type=float, default=DEFAULT_ACCURACY_TOLERANCE,
                   help="allowed GSM8K accuracy drop in accuracy points (default 0.03)")
    p.add_argument("--range-ratio", type=float, default=0.0,
                   help="bench_serving --random-range-ratio: 0.0 (SGLang's default, as the published figures were "
                        "measured) or 1 for fixed 1000/1000 lengths (then not comparable with the reference)")
    p.add_argument("--num-questions", type=int, default=200, help="GSM8K questions (default 200, as published)")
    p.add_argument("--sharegpt", metavar="FILE",
                   help="ShareGPT JSON on this machine for the random dataset's text (air-gapped heads; otherwise "
                        "bench_serving downloads it from the Hugging Face hub)")
    p.add_argument("--gsm8k-data", metavar="FILE",
                   help="GSM8K test.jsonl on this machine (air-gapped heads; otherwise downloaded from GitHub)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds one run may take (default 3600)")
    p.add_argument("--out", help="folder for bench.json, bench.png and raw/ (default $QWEN35_STATE_DIR/NAME/bench/TIME)")
    p.add_argument("--results", metavar="DIR",
                   help="compare result files already fetched (latency.jsonl/.log, throughput.*, accuracy.log); "
                        "runs nothing")
    p.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_bench)
