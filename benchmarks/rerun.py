#!/usr/bin/env python3
"""Benchmark: a no-op re-run of `up` against a facts-only Ansible run of the same hosts.

    .venv/bin/python benchmarks/rerun.py [--cluster h100x16] [--runs 3] [--destroy]

What it does:
  1. `qwen35-prov up --cluster C --sandbox --json` (creates the sandbox and rolls out; untimed), unless the
     state folder already holds a good rollout of C;
  2. `up` again RUNS times, timed (wall clock of the whole command, planning and inventory included); every run
     must report changed=0 on every host, or the benchmark says so and fails;
  3. a facts-only play (gather_facts, no task) on the same hosts, through the same runner and settings as `up`
     (ansible-runner, pipelining, one multiplexed SSH connection per host), RUNS times, timed the same way: once
     with the runner's strategy (Mitogen, whose start on each host is part of every run) and once with Ansible's
     own (QWEN35_ANSIBLE_STRATEGY=linear: plain SSH, the cheaper facts-only run);
  4. prints ONE JSON object: {"cluster", "hosts", "rerun_s" (median), "facts_only_s" (the faster median of the
     two facts-only runs), "ratio" (rerun_s / facts_only_s), "goal": 15, "facts_only_by_strategy" (median per
     strategy), "changed", "rerun_runs", "facts_only_runs" (per strategy), "slowest_tasks"}: the ten tasks of the
     last re-run that took longest (from ansible-runner's job events), to show where the rest of the time goes.
Progress goes to stderr. State: build/bench-rerun/ (QWEN35_STATE_DIR), so a second call reuses the rollout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from qwen35_prov.runner import STRATEGY_ENV, run_playbook, strategy_env  # noqa: E402

GOAL = 15
FACTS_ONLY = "- name: Facts only\n  hosts: qwen35_nodes\n  gather_facts: true\n  tasks: []\n"


def log(message: str) -> None:
    print(f"[rerun] {message}", file=sys.stderr, flush=True)


def up(cluster: str, env: dict[str, str]) -> tuple[float, dict]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "qwen35_prov", "up", "--cluster", cluster, "--sandbox", "--json"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    try:
        summary = json.loads(proc.stdout)
    except ValueError:
        raise SystemExit(f"up printed no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")
    if proc.returncode != 0:
        raise SystemExit(f"up failed: {json.dumps(summary.get('failures'))[:2000]}")
    return seconds, summary


def slowest_tasks(artifacts: Path, count: int = 10) -> list[dict]:
    """Per task (name), the longest duration on any host, from the run's job events."""
    longest: dict[str, float] = {}
    for path in (artifacts / "job_events").glob("*.json"):
        event = json.loads(path.read_text())
        data = event.get("event_data") or {}
        if event.get("event") in ("runner_on_ok", "runner_on_skipped", "runner_on_failed") and "duration" in data:
            name = data.get("task") or "?"
            longest[name] = max(longest.get(name, 0.0), float(data["duration"]))
    return [{"task": t, "seconds": round(s, 2)} for t, s in sorted(longest.items(), key=lambda x: -x[1])[:count]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cluster", default="h100x16")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--state-dir", default=str(REPO_ROOT / "build" / "bench-rerun"))
    p.add_argument("--destroy", action="store_true", help="remove the sandbox afterwards")
    args = p.parse_args(argv)
    env = {**os.environ, "QWEN35_STATE_DIR": args.state_dir}
    os.environ["QWEN35_STATE_DIR"] = args.state_dir

    log(f"rollout of {args.cluster} on the sandbox (untimed; reused when it is there)")
    _, first = up(args.cluster, env)
    inventory = Path(first["inventory"])
    reruns, changed = [], {}
    for i in range(args.runs):
        seconds, summary = up(args.cluster, env)
        reruns.append(round(seconds, 2))
        changed = {h: c["changed"] for h, c in summary["hosts"].items() if c["changed"]}
        log(f"re-run {i + 1}: {seconds:.1f} s, changed on {changed or 'no host'}")
    last_artifacts = sorted((Path(args.state_dir) / inventory.parent.name / "runner" / "artifacts").iterdir(),
                            key=lambda d: d.stat().st_mtime)[-1]
    facts: dict[str, list[float]] = {}
    chosen = os.environ.get(STRATEGY_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        play = Path(tmp) / "facts-only.yml"
        play.write_text(FACTS_ONLY)
        for strategy in (strategy_env().get("ANSIBLE_STRATEGY", "linear"), "linear"):
            if strategy in facts:
                continue
            facts[strategy] = []
            os.environ[STRATEGY_ENV] = strategy
            for i in range(args.runs):
                started = time.monotonic()
                result = run_playbook(str(play), inventory, state_dir=Path(tmp) / "state")
                facts[strategy].append(round(time.monotonic() - started, 2))
                if not result.ok:
                    raise SystemExit(f"the facts-only run ({strategy}) failed: {result.failures}")
                log(f"facts only, {strategy} {i + 1}: {facts[strategy][-1]:.1f} s")
        os.environ.pop(STRATEGY_ENV)
        if chosen is not None:
            os.environ[STRATEGY_ENV] = chosen
    by_strategy = {strategy: statistics.median(runs) for strategy, runs in facts.items()}
    rerun, facts_only = statistics.median(reruns), min(by_strategy.values())
    print(json.dumps({
        "cluster": args.cluster, "hosts": sorted(first["hosts"]), "rerun_s": rerun, "facts_only_s": facts_only,
        "ratio": round(rerun / facts_only, 1), "goal": GOAL, "facts_only_by_strategy": by_strategy,
        "changed": changed, "rerun_runs": reruns, "facts_only_runs": facts,
        "slowest_tasks": slowest_tasks(last_artifacts)}, indent=2))
    if args.destroy:
        from qwen35_prov.sandbox import destroy

        destroy(inventory.parent.name)
    return 0 if not changed else 1


if __name__ == "__main__":
    sys.exit(main())
