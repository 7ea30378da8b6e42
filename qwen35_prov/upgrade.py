"""`qwen35-prov upgrade`: a rolling upgrade of the SGLang image (one replica at a time, health gate, rollback)
or of the NVIDIA driver (one host at a time, the fabric manager following), through ansible-runner.

Image: playbooks/upgrade.yml, once: its rolling play moves one replica at a time (Ansible's `serial`, a batch
being one replica's nodes); the first replica that fails is rolled back by the playbook and the upgrade stops
there (later replicas keep the old image). Only when every replica took the new image is it written to the
inventory (group_vars/qwen35_nodes/zz-upgrade.yml, a file the inventory generator carries over), so later
`up`/`validate` runs use it.

Driver: playbooks/drivers.yml with the new nvidia_driver_version, qwen35_drivers_serial=1: one host at a time,
the first failure stops the rest; nothing reboots, the hosts that wait for a reboot are reported. With --reboot:
playbooks/driver-upgrade.yml once per group of replicas that share hosts (drain, stop, upgrade, reboot, check,
start, smoke, undrain), the first failing group stops the rest. Either way the version is pinned in the
inventory only when every host took it.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from . import sandbox
from .cli_options import add_deployment_target, print_json
from .errors import Interrupted, UserError
from .deployment import Deployed, resolve
from .runner import Progress, RunResult, run_playbook

_REF = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$", re.I)
_DRIVER = re.compile(r"^(\d{3})\.\d+(\.\d+)?$")


def _run_env(d: Deployed) -> dict[str, str]:
    """The environment the playbooks run with: a sandbox's stand-in services started, and their secrets."""
    services = sandbox.standins_for(d.name, d.plan["model_repo"])
    return dict(services.env) if services else {}


def _print(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(data)
        return
    print(f"\nupgrade: {data['status'].upper()} in {data['seconds']} s")
    for step in data["replicas"] + data.get("groups", []):
        what = (f"replica {step['replica']}" if "replica" in step
                else f"replica{'s' if len(step['replicas']) > 1 else ''} {'+'.join(map(str, step['replicas']))}")
        print(f"  {what:<14} {step['status']:<11} {step.get('detail', '')}")
    if data.get("error"):
        print(f"  FAILED: {data['error']}")
    for line in data.get("journal_tail", []):
        print(f"    | {line}")
    if data.get("persisted"):
        print(f"  pinned in {data['persisted']}")
    if data.get("next"):
        print(f"  next: {data['next']}")


def _upgrade_image(args, d: Deployed, started: float) -> dict[str, Any]:
    inventory = d.inventory
    if not _REF.match(args.image) or args.image.endswith(":"):
        raise UserError(f"--image {args.image!r} is not an image reference (repository:tag or repository@sha256:...)")
    if args.archive and not Path(args.archive).is_file():
        raise UserError(f"--archive {args.archive}: no such file on this machine")
    replicas = d.replicas
    envvars = _run_env(d)
    # the new image brings its own digest and tarball, or none: not the ones the inventory has (an earlier pin, the
    # site's settings, a sandbox's stand-in image); without --archive it is pulled
    archive = str(Path(args.archive).resolve()) if args.archive else ""
    extravars: dict[str, Any] = {"qwen35_image": args.image, "sglang_image_digest": args.digest or "",
                                 "sglang_image_archive": archive}
    if args.ready_timeout:
        # both: the roles' own readiness reads sglang_server_ready_timeout, and the inventory may set that
        # variable (a sandbox's does), over the value upgrade.yml hands to the role
        extravars["qwen35_upgrade_ready_timeout"] = args.ready_timeout
        extravars["sglang_server_ready_timeout"] = args.ready_timeout
    if args.no_drain:
        extravars["qwen35_upgrade_drain"] = False
    progress = None if args.json else Progress()
    data: dict[str, Any] = {"kind": "image", "image": args.image, "inventory": str(inventory), "replicas": []}
    if progress:
        progress.phase(f"replicas {', '.join(map(str, replicas))}, one at a time -> {args.image}")
    try:
        result = run_playbook("upgrade.yml", inventory, state_dir=d.state_dir, progress=progress,
                              extravars=extravars, envvars=envvars)
    except KeyboardInterrupt as stop:
        raise Interrupted(interrupted_message(d, getattr(stop, "result", None), args.image)) from None
    data["replicas"] = replica_steps(result, replicas, args.image)
    if result.ok and all(s["status"] == "upgraded" for s in data["replicas"]):
        data["status"] = "ok"
        # a digest or tarball pinned by an earlier upgrade belongs to the old image: replaced or removed
        data["persisted"] = str(d.pin({"qwen35_image": args.image, "sglang_image_digest": args.digest or "",
                                       "sglang_image_archive": archive}))
        return data
    stopped = next((s for s in data["replicas"] if s["status"] not in ("upgraded", "untouched")), None)
    message = next((f.message for f in result.failures if f.task.startswith("Fail - the new image did not take")), None)
    data["error"] = (message or "; ".join(f"{f.host}: {f.task}: {f.message}" for f in result.failures)
                     or "the run ended without every replica's report (see the artifacts)")
    data["journal_tail"] = [line for r in _reports(result) if r.get("error")
                            for line in (r.get("journal_tail") or "").splitlines()][-15:]
    data["failed_replica"] = stopped["replica"] if stopped else None
    data["status"] = "failed"
    data["artifacts"] = result.artifacts
    return data


def _reports(result: RunResult) -> list[dict[str, Any]]:
    """Every node's report of every replica it finished (upgraded, or rolled back), from the rolling play."""
    return [r for facts in result.facts.values() for r in facts.get("upgrade", [])]


def replica_steps(result: RunResult, replicas: list[int], image: str) -> list[dict[str, Any]]:
    """What the one run of upgrade.yml did to each replica, in replica order: upgraded, rolled back, partially
    changed (a node's play ended mid-replica), unchanged (refused before anything changed) or untouched."""
    reports = _reports(result)
    aftermath = next((f["upgrade_aftermath"] for f in result.facts.values() if "upgrade_aftermath" in f), None)
    begun = {int(b) for facts in result.facts.values() for b in facts.get("upgrade_begun", [])}
    steps: list[dict[str, Any]] = []
    stopped = False
    for replica in replicas:
        mine = [r for r in reports if int(r["replica"]) == replica]
        step: dict[str, Any] = {"replica": replica, "hosts": sorted({r["host"] for r in mine}),
                                "previous_image": next((r["previous_image"] for r in mine), None)}
        if stopped:
            step = {"replica": replica, "status": "untouched", "detail": "still the previous image"}
        elif aftermath and int(aftermath["replica"]) == replica:
            # a node's play ended early (unreachable, or failed outside the rollback's reach): no rollback ran there
            rollback = "; ".join(sorted({r["rollback"] for r in mine if r.get("rollback")}))
            step.update(status="partially changed", detail=left_behind(aftermath, rollback))
        elif replica in begun and not mine:
            # the run ended mid-replica (a node lost) and the controller's play did not report it either
            step.update(status="partially changed", detail=(
                "the run ended while this replica was being upgraded, before any node reported it (see the "
                "failure): it may run the new image, the old one, or none, and may still be drained from the router; "
                "when the nodes answer, run the same upgrade again"))
        elif mine and all(r["ok"] for r in mine):
            step.update(status="upgraded", detail=f"now {image} (was {step['previous_image']})")
        elif mine:
            step.update(status="rolled back", detail="; ".join(sorted({r["rollback"] for r in mine if r.get("rollback")})))
        else:   # the run ended before this replica changed (validation, a node not running it, a node lost before)
            step = {"replica": replica, "status": "unchanged", "detail": "nothing changed (see the failure)"}
        stopped = stopped or step["status"] != "upgraded"
        steps.append(step)
    return steps


def left_behind(aftermath: dict[str, Any], rollback: str) -> str:
    """What an upgrade whose play ended early on some node left, in words: which nodes, the router, what next."""
    replica = aftermath["replica"]
    words = [f"{', '.join(aftermath['unfinished_hosts'])} stopped mid-upgrade (see the failure): replica {replica}'s "
             f"nodes there may run the new image, the old one, or none; no rollback ran on them"]
    if rollback:
        words.append(f"the other nodes: {rollback}")
    if aftermath["drained"] and aftermath["undrained"]:
        words.append("the replica is back in the router (its health checks keep traffic off it until it serves)")
    elif aftermath["drained"]:
        words.append(f"the replica is STILL DRAINED from the router on {aftermath['router_host']} "
                     f"({aftermath['undrain_error'] or 'undrain failed'}): once it serves, run "
                     f"`qwen35-router-ctl undrain {aftermath['url']}` there")
    words.append("when the nodes answer again, run the same upgrade again (it upgrades or rolls back this replica)")
    return "; ".join(words)


def interrupted_message(d: Deployed, partial: RunResult | None, image: str) -> str:
    """What Ctrl-C during the rolling upgrade left, and how to go on (from what the run had reported by then)."""
    reports = _reports(partial) if partial else []
    finished = {int(r["replica"]) for r in reports}
    upgraded = sorted(r for r in finished if all(x["ok"] for x in reports if int(x["replica"]) == r))
    begun = {int(b) for facts in (partial.facts.values() if partial else []) for b in facts.get("upgrade_begun", [])}
    busy = sorted(begun - finished)
    words = [f"interrupted during the rolling upgrade to {image}. Already on {image}: replica(s) "
             f"{', '.join(map(str, upgraded)) or 'none'}"]
    if busy:
        urls = d.endpoints()[-len(d.replicas):]   # the router's endpoint, when there is one, comes first
        url = urls[d.replicas.index(busy[0])].removesuffix("/v1")
        words.append(f"replica {busy[0]} may be drained from the router and half-upgraded (no rollback ran); "
                     f"`qwen35-router-ctl undrain {url}` on the router host puts it back")
    words.append(f"later replicas are untouched and nothing was pinned in {d.pins_file}. To go on: run the same "
                 f"`qwen35-prov upgrade --image {image}` again (replicas already on it restart once more), or check "
                 f"`qwen35-prov status`; the router lists drained replicas with `qwen35-router-ctl status` on its host")
    return "; ".join(words)


def _upgrade_driver(args, d: Deployed, started: float) -> dict[str, Any]:
    m = _DRIVER.match(args.driver_version)
    if not m:
        raise UserError(f"--driver-version {args.driver_version!r}: expected the exact package version, e.g. 580.159.04")
    plan = d.plan
    if plan.get("vendor") != "nvidia":
        raise UserError(f"--driver-version upgrades the NVIDIA driver; this deployment's GPUs are {plan.get('vendor')} "
                        f"({plan.get('gpu')}): pin amdgpu_driver_* in site.yml instead (docs/runbooks/driver-upgrade.md)")
    envvars = _run_env(d)
    pins = {"nvidia_driver_version": args.driver_version, "nvidia_driver_branch": int(m.group(1))}
    extravars: dict[str, Any] = dict(pins)
    progress = None if args.json else Progress()
    data = _driver_by_group(args, d, extravars, envvars, progress)
    if data["status"] == "ok":
        data["persisted"] = str(d.pin(pins))
    return data


def _driver_by_group(args, d: Deployed, extravars: dict[str, Any], envvars: dict[str, str],
                     progress: Progress | None) -> dict[str, Any]:
    """driver-upgrade.yml once per group of replicas that share hosts, the first group that fails stopping the
    rest. With --reboot: drained, stopped, upgraded, rebooted, checked, started, smoke-checked, back in the router.
    Without: drained, the packages changed one host at a time while the servers run on the driver they loaded,
    smoke-checked, back in the router; the hosts that wait for a reboot are reported."""
    inventory, name = d.inventory, d.name
    if args.reboot and sandbox.is_sandbox(name):
        if stuck := sandbox.nodes_without_reboot(name):
            raise UserError(f"sandbox {name}: {', '.join(stuck)} would not come back from a reboot (created by an "
                            f"older qwen35-prov, without a restart policy); destroy and create the sandbox again")
    extravars = {**extravars, **({"nvidia_driver_allow_reboot": True} if args.reboot
                                 else {"nvidia_driver_allow_reboot": False, "qwen35_drivers_serial": 1})}
    if args.no_drain:
        extravars["qwen35_upgrade_drain"] = False
    if args.ready_timeout:
        extravars["sglang_server_ready_timeout"] = args.ready_timeout
    data: dict[str, Any] = {"kind": "driver", "driver_version": args.driver_version, "inventory": str(inventory),
                            "reboot": bool(args.reboot), "replicas": [], "groups": [], "reboot_pending": []}
    todo = d.reboot_groups()
    for i, (replicas, hosts) in enumerate(todo):
        what = f"replica{'s' if len(replicas) > 1 else ''} {'+'.join(map(str, replicas))}"
        if progress:
            progress.phase(f"{what} on {', '.join(hosts)} -> driver {args.driver_version}"
                           + (", reboot" if args.reboot else ", drained, no reboot"))
        result = run_playbook("driver-upgrade.yml", inventory, state_dir=d.state_dir, extravars=extravars,
                              envvars=envvars, limit=",".join(["localhost", *hosts]), progress=progress)
        step = {"replicas": replicas, "hosts": hosts}
        pending = [h for h in hosts if (result.facts.get(h) or {}).get("reboot_pending")]
        data["reboot_pending"] += pending
        if result.ok and all((result.facts.get(h) or {}).get("driver_current") for h in hosts):
            data["groups"].append({**step, "status": "unchanged",
                                   "detail": f"already on {args.driver_version}: kept serving, nothing drained"})
            continue
        if result.ok:
            data["groups"].append({**step, "status": "upgraded", "detail": (
                f"rebooted on {args.driver_version}, ready, smoke-checked, back in service" if args.reboot else
                f"{args.driver_version} installed while drained; serving on the driver it loaded until a reboot"
                f"{' (pending on ' + ', '.join(pending) + ')' if pending else ''}, smoke-checked, back in service")})
            continue
        drained = sorted({u for facts in result.facts.values() for u in facts.get("drained_heads") or []})
        back: list[str] = []
        if drained and not args.reboot:
            # the servers never stopped: back into the router, on the driver they loaded
            undrain = run_playbook("undrain.yml", inventory, state_dir=d.state_dir, envvars=envvars,
                                   extravars={**extravars, "qwen35_undrain_urls": drained}, progress=progress)
            back = list((undrain.facts.get("localhost") or {}).get("undrained") or [])
        still = [u for u in drained if u not in back]
        data["groups"].append({**step, "status": "failed", "detail": (
            f"{what} out of service (drained, units stopped) until this is fixed; running the same command again "
            "resumes (a reboot still pending is done then)" if args.reboot else
            f"{what} kept running on the driver it loaded"
            + (f"; put back into the router ({', '.join(back)})" if back else "")
            + (f"; still drained, undrain with `qwen35-router-ctl undrain URL` on the router host: {', '.join(still)}"
               if still else "")
            + "; running the same command again resumes")})
        data["groups"] += [{"replicas": r, "hosts": h, "status": "untouched", "detail": "still the previous driver"}
                           for r, h in todo[i + 1:]]
        data["status"] = "failed"
        data["error"] = "; ".join(f"{f.host}: {f.task}: {f.message}" for f in result.failures)
        data["artifacts"] = result.artifacts
        return data
    data["status"] = "ok"
    if data["reboot_pending"]:
        data["next"] = (f"{len(data['reboot_pending'])} host(s) run the old kernel module until they reboot (validate "
                        "reports the loaded driver against the new pin until then): `qwen35-prov upgrade "
                        f"--driver-version {args.driver_version} --reboot` reboots one replica at a time, drained "
                        "(docs/runbooks/driver-upgrade.md)")
    return data


def cmd_upgrade(args: argparse.Namespace) -> int:
    if args.reboot and not args.driver_version:
        raise UserError("--reboot goes with --driver-version (an image upgrade needs no reboot)")
    if bool(args.image) == bool(args.driver_version):
        raise UserError("say what to upgrade: --image REF (rolling, one replica at a time) or --driver-version V "
                        "(rolling, one replica at a time)")
    deployed = resolve(args)
    started = time.monotonic()
    data = (_upgrade_image if args.image else _upgrade_driver)(args, deployed, started)
    data["seconds"] = round(time.monotonic() - started, 1)
    _print(data, args.json)
    return 0 if data["status"] == "ok" else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upgrade", help="rolling upgrade of the SGLang image (per replica, rollback on failure) or the driver",
        description="Rolling upgrade. --image: one replica at a time (drained from the router when there is one), "
                    "new image, units re-rendered, restart, readiness and smoke checks; a replica that fails is "
                    "rolled back to its previous image and unit, and the upgrade stops there. The new image is "
                    "pinned in the inventory only after every replica took it. --driver-version: the NVIDIA driver "
                    "(and fabric manager), one replica at a time (replicas sharing a host together), drained from the "
                    "router first; without --reboot the packages change one host at a time under the drained, "
                    "still running replica, which is smoke-checked and put back, and the hosts that need a reboot "
                    "to load the driver are listed; with --reboot the replica is also stopped, its hosts rebooted "
                    "and checked, and it is started again. The first failure stops the rest. docs/upgrade.md",
        epilog="Examples: qwen35-prov upgrade --cluster h200x8 --image lmsysorg/sglang:v0.5.24 ; "
               "qwen35-prov upgrade --inventory inv --driver-version 580.159.04 --json ; "
               "qwen35-prov upgrade --cluster h100x16 --driver-version 580.173.02 --reboot")
    add_deployment_target(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--image", help="the new SGLang image (repository:tag or @sha256 digest; no mutable tags)")
    what.add_argument("--driver-version", help="the new NVIDIA driver package version (e.g. 580.159.04)")
    p.add_argument("--digest", help="with --image: pin the content too (sha256:<64 hex>, the image ID or a registry digest)")
    p.add_argument("--archive", help="with --image: a docker-archive tarball of it on this machine (air-gapped), loaded on each node")
    p.add_argument("--ready-timeout", type=int, help="seconds each replica may take to become ready (default: the inventory's)")
    p.add_argument("--reboot", action="store_true",
                   help="with --driver-version: one replica at a time (replicas sharing a host together), drain it "
                        "from the router, stop it, upgrade and reboot its hosts, check the loaded driver, start it, "
                        "wait for readiness, smoke-check it, put it back")
    p.add_argument("--no-drain", action="store_true", help="do not drain replicas from the router")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_upgrade)
