"""`qwen35-prov up / status / validate / down / preflight`: the rollout through ansible-runner."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import sandbox
from .catalog import load_catalog
from .cli_options import add_deployment_target, add_plan_options, add_site_vars_option, plan_options_from, print_json
from .deployment import Deployed, inventory_dir, resolve, state_root
from .errors import UserError
from .fleet import load_fleet
from .inventory import plan_for_fleet, write_inventory
from .keys import api_key_file, secrets_dir
from .options import PlanOptions
from .planner import plan
from .revision import choose_revision
from .runner import Progress, RunResult, run_playbook, summarize


def _print_summary(kind: str, result: RunResult, endpoints: list[str], started: float, as_json: bool,
                   extra: dict[str, Any] | None = None) -> None:
    data = {**summarize(result, endpoints), "seconds": round(time.monotonic() - started, 1), **(extra or {})}
    if as_json:
        print_json(data)
        return
    out = sys.stdout
    print(f"\n{kind}: {result.status.upper()} in {data['seconds']} s", file=out)
    for host, counts in data["hosts"].items():
        print(f"  {host:<28} ok={counts['ok']:<4} changed={counts['changed']:<4} failed={counts['failed']}", file=out)
    if data["phases"]:
        print("  time per phase: " + ", ".join(f"{p['name']} {p['seconds']} s" for p in data["phases"]), file=out)
    for f in data["failures"]:
        print(f"  FAILED {f['host']} [{f['phase']}] {f['task']}: {f['message']}", file=out)
    for url in endpoints:
        print(f"  endpoint: {url}", file=out)


def _lock_revision(args: argparse.Namespace, options, fleet: Path, inventory: Path, weights_dir_given: bool,
                   hub_env: dict[str, str]):
    """The commit this `up` deploys (qwen35_prov/revision.py), for the repository the plan serves."""
    catalog = load_catalog()
    the_plan = plan_for_fleet(args.cluster, load_fleet(fleet, catalog), options, args.gpus_per_node,
                              weights_dir_given, catalog)[1]
    return choose_revision(the_plan.repo, given=args.revision, update=args.update_revision,
                           catalog_pin=the_plan.model.revision, inventory=inventory, hub=hub_env)


def cmd_up(args: argparse.Namespace) -> int:
    if bool(args.sandbox) == bool(args.fleet):
        raise UserError("say where to deploy: --fleet FILE (your machines) or --sandbox (local containers)")
    started = time.monotonic()
    progress = Progress(verbose=args.verbose, json_events=args.json)
    weights_dir_given = args.weights_dir is not None
    if not weights_dir_given:
        args.weights_dir = PlanOptions().weights_dir  # the fleet's weights_dir wins over this default
    options = plan_options_from(args)
    envvars: dict[str, str] = {}
    if args.sandbox:
        progress.phase(f"sandbox {args.cluster}")
        fleet = sandbox.create(args.cluster, gpus_per_node=args.gpus_per_node,
                               progress=lambda m: progress.console.print(f"    {m}"))
        name = Path(fleet).parent.name
    else:
        fleet, name = Path(args.fleet), args.cluster
    hub_env: dict[str, str] = {}
    services = sandbox.standins_for(name, plan(args.cluster, options, gpus_per_node=args.gpus_per_node).repo,
                                    lambda m: progress.console.print(f"    {m}")) if args.sandbox else None
    if services:
        envvars.update(services.env)
        # the controller asks the stand-in hub (TEST DOUBLE) for the commit, as it asks the real one elsewhere
        hub_env = {"HF_ENDPOINT": services.hub_url, **services.env}
    revision = _lock_revision(args, options, fleet, inventory_dir(name), weights_dir_given, hub_env)
    options = replace(options, revision=revision.commit)
    progress.console.print(f"    revision: {revision.commit} ({revision.describe()})")
    with contextlib.ExitStack() as scratch:
        target = inventory_dir(name)
        if args.check:
            # a dry run changes no file: the plan's inventory goes to a scratch copy of the stored one (its
            # upgrade pins included), removed afterwards
            folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix=f"qwen35-{name}-check-")))
            if target.is_dir():
                shutil.copytree(target, folder / "inventory", symlinks=True)
            if secrets_dir(target).is_dir():  # the keys the deployment has, read, not made again
                (folder / "secrets").symlink_to(secrets_dir(target))
            target = folder / "inventory"
        inventory = write_inventory(args.cluster, fleet, target, options, gpus_per_node=args.gpus_per_node,
                                    weights_dir_given=weights_dir_given, site_vars=args.site_vars)
        progress.console.print(f"    inventory: {inventory}" + (" (dry run: a scratch copy; the stored one is not "
                                                                  "changed)" if args.check else ""))
        result = run_playbook("up.yml", inventory, state_dir=state_root() / name, envvars=envvars,
                              check=args.check, tags=args.tags, progress=progress)
        endpoints = Deployed(inventory, name).endpoints()
    extra = {"inventory": str(inventory), "check": bool(args.check),
             "revision": {"commit": revision.commit, "source": revision.source}}
    if args.sandbox:
        extra["note"] = ("sandbox: the endpoint is served by the TEST DOUBLE of the inference engine "
                         "(tests/doubles/sglang_standin), not SGLang; no GPU exists here")
    _print_summary("up", result, endpoints, started, args.json, extra)
    if args.sandbox and not args.json and result.ok:
        print(f"  note: {extra['note']}")
    return 0 if result.ok else 1


def _run_read(args: argparse.Namespace, playbook: str,
              options: dict[str, Any] | None = None) -> tuple[RunResult, Deployed, float]:
    deployed = resolve(args)
    started = time.monotonic()
    progress = None if args.json else Progress()
    extravars, envvars = dict(options or {}), {}
    services = sandbox.standins_for(deployed.name, deployed.plan["model_repo"])
    if services:
        envvars = services.env
    result = run_playbook(playbook, deployed.inventory, state_dir=deployed.state_dir, extravars=extravars,
                          envvars=envvars, progress=progress)
    return result, deployed, started


def _report_rows(result: RunResult, key: str) -> list[dict[str, Any]]:
    rows = []
    for host, facts in sorted(result.facts.items()):
        for row in facts.get(key, []):
            rows.append({"host": host, **row})
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    result, deployed, started = _run_read(args, "status.yml")
    rows = _report_rows(result, "status")
    key_file = api_key_file(deployed.inventory, deployed.keyed)
    if args.json:
        print_json({"status": result.status, "endpoints": deployed.endpoints(),
                    "api_key_file": str(key_file) if key_file else None, "nodes": rows,
                    "failures": [f.__dict__ for f in result.failures]})
    else:
        print(f"{'NODE':<24} {'UNIT':<34} {'STATE':<10} {'HEALTH':<8} GPU MEMORY USED/TOTAL (MiB)")
        for r in rows:
            memory = " ".join(f"{g['index']}:{g['used_mib']}/{g['total_mib']}" for g in r.get("gpu_memory") or [])
            print(f"{r['host']:<24} {r['unit']:<34} {r['state']:<10} {r.get('health', '-'):<8} {memory or 'unavailable'}")
        print(f"API key: {key_file} (send it as Authorization: Bearer)" if key_file
              else "API key: none (deployed with --no-api-key: anyone who reaches a port may use the API)")
        for f in result.failures:
            print(f"FAILED {f.host}: {f.task}: {f.message}", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_validate(args: argparse.Namespace) -> int:
    result, _, started = _run_read(args, "verify.yml", {"qwen35_validate_deep": bool(args.deep)})
    rows = _report_rows(result, "checks")
    result.failures = [f for f in result.failures if f.task != "Every check passed"]  # the rows say it
    passed = result.ok and rows and all(r["ok"] for r in rows)
    if args.json:
        print_json({"status": "ok" if passed else "failed", "checks": rows,
                    "failures": [f.__dict__ for f in result.failures]})
    else:
        for r in rows:
            print(f"{'PASS' if r['ok'] else 'FAIL'}  {r['host']:<24} {r['check']:<28} {r.get('detail', '')}")
        for f in result.failures:
            print(f"FAIL  {f.host:<24} {f.task}: {f.message}")
        print(f"validate: {sum(r['ok'] for r in rows)} passed, {sum(not r['ok'] for r in rows) + len(result.failures)} failed")
    return 0 if passed else 1


def cmd_down(args: argparse.Namespace) -> int:
    deployed = resolve(args)
    started = time.monotonic()
    progress = None if args.json else Progress()
    result = run_playbook("down.yml", deployed.inventory, state_dir=deployed.state_dir,
                          extravars={"qwen35_purge_weights": bool(args.purge_weights)}, progress=progress)
    _print_summary("down", result, [], started, args.json, {"purge_weights": bool(args.purge_weights)})
    return 0 if result.ok else 1


def cmd_preflight(args: argparse.Namespace) -> int:
    if not args.nccl:
        raise UserError("choose a preflight: --nccl (all-reduce bandwidth across each replica's GPUs)")
    result, _, started = _run_read(args, "preflight.yml")
    _print_summary("preflight", result, [], started, args.json)
    return 0 if result.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up", help="plan, write the inventory and roll the whole deployment out",
        description="Plan the deployment, write its inventory under $QWEN35_STATE_DIR (default ./.qwen35-prov), "
                    "and run playbooks/up.yml through ansible-runner: validate, facts and preflight, drivers, "
                    "container runtime, image, weights, server, readiness, smoke. Live progress per host and phase; "
                    "a summary with every replica's endpoint at the end.",
        epilog="Examples: qwen35-prov up --cluster h100x16 --sandbox ; qwen35-prov up --cluster prod --fleet fleet.yml --check")
    p.add_argument("--cluster", required=True, help="<gpu>x<count>, or a cluster named in the fleet file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--fleet", help="your machines (docs/fleet.md)")
    where.add_argument("--sandbox", action="store_true",
                       help="local systemd containers (created if missing); GPUs and the engine are test doubles")
    add_plan_options(p)
    p.set_defaults(weights_dir=None)
    p.add_argument("--update-revision", action="store_true",
                   help="resolve the model's branch head through the hub again and lock the new commit (without it: "
                        "--revision, else the commit locked by an earlier up, else the catalog's pin, else resolved)")
    add_site_vars_option(p)
    p.add_argument("--check", action="store_true", help="dry run: Ansible check mode with diff, changes nothing")
    p.add_argument("--tags", help="run only these phases (Ansible tags, comma separated)")
    p.add_argument("--verbose", action="store_true", help="print every task as it starts")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (status, hosts, endpoints, phases)")
    p.set_defaults(func=cmd_up)

    for name, func, text in (
            ("status", cmd_status, "per node: unit state, health, GPU memory in use"),
            ("validate", cmd_validate, "one check per line per node; exit 0 only when all pass"),
            ("down", cmd_down, "stop and disable the SGLang units (weights stay unless --purge-weights)"),
            ("preflight", cmd_preflight, "checks before serving: --nccl runs the all-reduce bandwidth check")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        add_deployment_target(p)
        if name == "down":
            p.add_argument("--purge-weights", action="store_true", help="also delete the model weights")
        if name == "validate":
            p.add_argument("--deep", action="store_true",
                           help="hash every byte of the weights (default: sizes and stat against the completion "
                                "marker, and the content of any file changed since it was verified)")
        if name == "preflight":
            p.add_argument("--nccl", action="store_true", help="all-reduce bus bandwidth across each replica")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
