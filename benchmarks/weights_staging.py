#!/usr/bin/env python3
"""Benchmark: stage a model repository onto N sandbox nodes through a throttled hub, both ways.

    .venv/bin/python benchmarks/weights_staging.py --nodes 4 --size-mb 512 --hub-mbps 50

What it does (see docs/weights.md):
  1. starts a sandbox of N nodes (`qwen35-prov sandbox`, podman systemd containers reachable over SSH);
  2. generates a repository of about SIZE_MB (safetensors shards, index, config, tokenizer) and serves it from
     the local hub (TEST DOUBLE, tests/hub) at the sandbox network's gateway, with ONE bandwidth cap of HUB_MBPS
     megabits per second shared by every connection, like a site's internet uplink;
  3. runs the `model_weights` role with ansible-playbook, untimed, on a small repository first (installs the
     downloader, keys; what a first deployment does once), then times three runs of the role, each on a commit
     no node has yet:
       single_node_s   one node downloads from the hub (mode hub, --limit to the first node)
       per_node_hub_s  every node downloads from the hub (mode hub): N downloads share the uplink
       fanout_s        mode staged: the stager downloads, the others copy in doubling rounds over the
                       cluster network (rsync over SSH), every copy re-hashed before it is published
  4. prints ONE JSON object: {"nodes", "size_mb", "hub_mbps", "single_node_s", "per_node_hub_s", "fanout_s",
     "fanout_over_single", "hub_bytes": {...}, ...}; progress goes to stderr.

Times are wall-clock seconds of the whole role run (ansible-playbook), so Ansible's own work is in all three.
The hub's request log gives the bytes it served in each run: N x the repository for per_node_hub_s, 1 x for
fanout_s. Target at N=4: fanout_s <= 1.3 x single_node_s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from qwen35_prov.sandbox import create_sandbox, destroy, podman  # noqa: E402
from tests.hub import HubStore, LocalHub, downloads_by_file, generate_repo  # noqa: E402

REPO = "Qwen/Qwen3.5-StagingBench"
WARM_REPO = "Qwen/Qwen3.5-StagingWarmup"
HF_HUB_VERSION = "2.4.0"


def log(msg: str) -> None:
    print(f"[weights-bench] {msg}", file=sys.stderr, flush=True)


def gateway(network: str) -> str:
    info = json.loads(podman(["network", "inspect", network]).stdout)[0]
    for subnet in info.get("subnets", []):
        gw = subnet.get("gateway")
        if gw and ":" not in gw:
            return gw
    raise SystemExit(f"network {network} has no IPv4 gateway")


def write_inventory(work: Path, sb) -> Path:
    folder = Path(sb.dir)
    hosts = {n.name: {"ansible_host": n.address} for n in sb.nodes}
    inv = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(folder / "id_ed25519"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={folder / 'known_hosts'} -o StrictHostKeyChecking=yes",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
            "children": {
                "qwen35_nodes": {"hosts": hosts},
                "qwen35_heads": {"hosts": {sb.nodes[0].name: {}}},
            },
        }
    }
    path = work / "inventory.json"
    path.write_text(json.dumps(inv, indent=1))
    return path


PLAYBOOK = """\
- name: Stage the model weights
  hosts: qwen35_nodes
  gather_facts: true
  gather_subset: [min, network]
  roles:
    - role: model_weights
"""


def run_role(work: Path, inventory: Path, extra: dict, limit: str | None = None) -> float:
    (work / "site.yml").write_text(PLAYBOOK)
    (work / "extra.json").write_text(json.dumps(extra))
    argv = [str(REPO_ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(work / "site.yml"),
            "-e", f"@{work / 'extra.json'}", "--forks", "16"]
    if limit:
        argv += ["--limit", limit]
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"), "ANSIBLE_PIPELINING": "True",
           "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_FORCE_COLOR": "false", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=300s",
           "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"}
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    (work / f"ansible-{int(start)}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise SystemExit(f"ansible-playbook failed (exit {proc.returncode}):\n{tail}")
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--size-mb", type=float, default=512)
    p.add_argument("--hub-mbps", type=float, default=50, help="the hub's total bandwidth cap, megabits per second")
    p.add_argument("--shards", type=int, default=None, help="safetensors shards (default: one per 64 MB, at least 2)")
    p.add_argument("--workers", type=int, default=8, help="model_weights_download_workers")
    p.add_argument("--keep", action="store_true", help="keep the sandbox and the work folder afterwards")
    p.add_argument("--name", default="q35w-bench", help="sandbox name (podman objects q35-NAME*)")
    args = p.parse_args(argv)
    if args.nodes < 2:
        p.error("--nodes must be at least 2")

    work = Path(tempfile.mkdtemp(prefix="q35w-bench-"))
    shards = args.shards or max(2, int(args.size_mb // 64))
    log(f"work folder {work}; generating {args.size_mb:g} MB in {shards} shards")
    hub_root = work / "hub"
    commits = {tag: generate_repo(hub_root, REPO, size_mb=args.size_mb, shards=shards, branch=tag, salt=tag)
               for tag in ("single", "per-node", "fanout")}
    warm = generate_repo(hub_root, WARM_REPO, size_mb=1, shards=2)
    repo_bytes = sum(f.size for f in HubStore(hub_root).listing(REPO, commits["fanout"]).values())
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels),
                    f"huggingface_hub=={HF_HUB_VERSION}"], check=True)

    log(f"starting a sandbox of {args.nodes} nodes")
    result = create_sandbox(f"h100x{8 * args.nodes}", name=args.name, gpus_per_node=8, progress=log)
    sb = result.sandbox
    hub = None
    try:
        gw = gateway(sb.network)
        hub = LocalHub(hub_root, host=gw, port=0, mbps=args.hub_mbps, log_path=work / "hub.jsonl").start()
        log(f"hub {hub.url}, capped at {args.hub_mbps:g} Mbit/s for all connections together")
        inventory = write_inventory(work, sb)
        first = sb.nodes[0].name
        common = {"qwen35_weights_dir": "/var/lib/qwen35-prov/models", "model_weights_hf_endpoint": hub.url,
                  "model_weights_pip_wheelhouse": str(wheels), "model_weights_reserve_gb": 0.1,
                  "model_weights_download_workers": args.workers, "model_weights_hf_token": ""}

        log("warm-up (untimed): install the downloader on every node, fan-out keys")
        hub.set_rate(None)
        run_role(work, inventory, {**common, "qwen35_model_repo": WARM_REPO, "qwen35_model_revision": warm,
                                   "model_weights_mode": "hub"})
        run_role(work, inventory, {**common, "qwen35_model_repo": WARM_REPO, "qwen35_model_revision": warm,
                                   "model_weights_mode": "staged"})
        hub.set_rate(args.hub_mbps)

        figures: dict[str, float] = {}
        hub_bytes: dict[str, int] = {}
        for key, tag, mode, limit in (("single_node_s", "single", "hub", first),
                                      ("per_node_hub_s", "per-node", "hub", None),
                                      ("fanout_s", "fanout", "staged", None)):
            hub.clear()
            log(f"{key}: mode {mode} on {limit or f'all {args.nodes} nodes'}")
            figures[key] = round(run_role(work, inventory, {**common, "qwen35_model_repo": REPO,
                                                            "qwen35_model_revision": commits[tag],
                                                            "model_weights_mode": mode}, limit=limit), 1)
            hub_bytes[key] = sum(d["bytes"] for d in downloads_by_file(hub.requests).values())
            log(f"{key} = {figures[key]} s, hub served {hub_bytes[key] / 1e6:.1f} MB")
    finally:
        if hub is not None:
            hub.stop()
        if not args.keep:
            log(f"destroying sandbox {sb.name}")
            destroy(sb.name)
            subprocess.run(["rm", "-rf", str(work)], check=False)

    out = {
        "nodes": args.nodes,
        "size_mb": args.size_mb,
        "hub_mbps": args.hub_mbps,
        "single_node_s": figures["single_node_s"],
        "per_node_hub_s": figures["per_node_hub_s"],
        "fanout_s": figures["fanout_s"],
        "fanout_over_single": round(figures["fanout_s"] / figures["single_node_s"], 3),
        "per_node_over_single": round(figures["per_node_hub_s"] / figures["single_node_s"], 3),
        "repo_bytes": repo_bytes,
        "hub_bytes": hub_bytes,
        "target_met": figures["fanout_s"] <= 1.3 * figures["single_node_s"],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
