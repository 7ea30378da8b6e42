"""`qwen35-prov fleet probe`: what each host of a fleet really has, against what the fleet file says.

One SSH command per host (paramiko, in parallel, bounded time) runs a POSIX shell script that prints
sections of command output; `parse_probe_output` turns them into HostFacts with the parsers of
gpu_facts_parse; `compare` lists every disagreement with the fleet file.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .catalog import Catalog, load_catalog
from .cli_options import print_json
from .errors import UserError
from .fleet import Fleet, Host, load_fleet, write_fleet_facts
from .options import PlanOptions
from .gpu_facts_parse import (
    AMD_SMI_LIST, AMD_SMI_STATIC, NVIDIA_QUERY, ROCM_SMI, GpuInfo, Interface, ParseError, count_pci_gpus, match_gpu_kind, merge_amd_list,
    parse_amd_smi_list_json, parse_amd_smi_static_json, parse_df_avail, parse_ip_addr_json, parse_nvidia_query_csv,
    parse_os_release, parse_pci_devices, parse_rocm_smi_json,
)

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_WEIGHTS_DIR = PlanOptions.weights_dir  # the planner's default
MAX_PARALLEL = 32
_BEGIN, _END = "@@qwen35-probe begin ", "@@qwen35-probe end "


def probe_script(weights_dir: str) -> str:
    """The shell script run on a host; each section prints `begin NAME`, its output, `end NAME RC`."""
    wd = shlex.quote(weights_dir)
    return "\n".join([
        "export LC_ALL=C PATH=\"$PATH:/usr/sbin:/sbin:/usr/bin:/bin\"",
        f"sec() {{ n=$1; shift; echo '{_BEGIN}'\"$n\"; \"$@\" 2>/dev/null; rc=$?; echo; echo '{_END}'\"$n $rc\"; }}",
        "tool() { command -v \"$1\" >/dev/null 2>&1 || return 127; \"$@\"; }",
        "sec os-release cat /etc/os-release",
        "sec kernel uname -r",
        "sec architecture uname -m",
        "sec hostname hostname",
        f"sec nvidia-smi tool nvidia-smi {NVIDIA_QUERY}",
        f"sec amd-smi-static tool amd-smi {AMD_SMI_STATIC}",
        f"sec amd-smi-list tool amd-smi {AMD_SMI_LIST}",
        "if ! command -v amd-smi >/dev/null 2>&1; then",
        f"  sec rocm-smi tool rocm-smi {ROCM_SMI}",
        "fi",
        "pci() { for d in /sys/bus/pci/devices/*; do [ -r \"$d/class\" ] || continue;"
        " echo \"${d##*/} $(cat \"$d/vendor\") $(cat \"$d/device\") $(cat \"$d/class\")\"; done; }",
        "sec pci pci",
        f"wd() {{ d={wd}; while [ ! -e \"$d\" ] && [ \"$d\" != / ]; do d=$(dirname \"$d\"); done; echo \"$d\"; "
        "df -B1 --output=avail \"$d\"; }",
        "sec weights-dir wd",
        f"wfs() {{ d={wd}; while [ ! -e \"$d\" ] && [ \"$d\" != / ]; do d=$(dirname \"$d\"); done; "
        "stat -f -c %T \"$d\"; }",
        "sec weights-fs wfs",
        "sec ip tool ip -j addr",
        "sec infiniband ls -1 /sys/class/infiniband",
        "exit 0",
    ]) + "\n"


def split_sections(text: str) -> dict[str, tuple[int, str]]:
    """The script's output as {section: (exit status, output)}."""
    sections: dict[str, tuple[int, str]] = {}
    current, lines = None, []
    for line in text.splitlines():
        if line.startswith(_BEGIN):
            current, lines = line[len(_BEGIN):].strip(), []
        elif line.startswith(_END) and current is not None:
            name, _, rc = line[len(_END):].strip().rpartition(" ")
            if name == current:
                body = "\n".join(lines)
                sections[current] = (int(rc) if rc.lstrip("-").isdigit() else 1,
                                     body[:-1] if body.endswith("\n") else body)
            current = None
        elif current is not None:
            lines.append(line)
    return sections


@dataclass
class HostFacts:
    vendor: str | None = None  # nvidia | amd | None (no GPU tool answered)
    gpu_tool: str | None = None  # nvidia-smi | amd-smi | rocm-smi | pci (counted on the bus only)
    gpus: list[GpuInfo] = field(default_factory=list)
    pci_gpu_count: dict[str, int] = field(default_factory=dict)
    driver_version: str | None = None
    os_id: str | None = None
    os_version: str | None = None
    os_name: str | None = None
    kernel: str | None = None
    architecture: str | None = None   # `uname -m`: x86_64, aarch64 (the Grace CPUs of GB200/GB300 trays)
    hostname: str | None = None
    weights_dir_checked: str | None = None
    weights_filesystem: str | None = None   # `stat -f -c %T` of the weights folder (or its nearest parent)
    disk_free_bytes: int | None = None
    interfaces: list[Interface] = field(default_factory=list)
    ib_hcas: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def gpu_count(self) -> int:
        if self.gpus:
            return len(self.gpus)
        return self.pci_gpu_count.get(self.vendor or "", 0)

    def gpu_kind(self, catalog: Catalog) -> str | None:
        kinds = {match_gpu_kind(g.name, catalog.gpus) for g in self.gpus}
        return kinds.pop() if len(kinds) == 1 else None

    def as_dict(self, catalog: Catalog) -> dict[str, Any]:
        return {
            "vendor": self.vendor, "gpu_tool": self.gpu_tool, "gpu": self.gpu_kind(catalog),
            "gpu_count": self.gpu_count, "gpus": [g.as_dict() for g in self.gpus],
            "driver_version": self.driver_version, "os": self.os_name, "os_id": self.os_id,
            "os_version": self.os_version, "kernel": self.kernel, "architecture": self.architecture,
            "hostname": self.hostname,
            "weights_dir_checked": self.weights_dir_checked, "disk_free_bytes": self.disk_free_bytes,
            "interfaces": [i.as_dict() for i in self.interfaces], "ib_hcas": list(self.ib_hcas),
            "warnings": list(self.warnings),
        }


def parse_probe_output(text: str) -> HostFacts:
    """The facts in the probe script's output. Sections that failed or did not parse become warnings."""
    sections = split_sections(text)
    facts = HostFacts()

    def ok(name: str) -> str | None:
        rc, body = sections.get(name, (127, ""))
        return body if rc == 0 and body.strip() else None

    def attempt(name: str, fn: Callable[[str], Any]) -> Any:
        body = ok(name)
        if body is None:
            return None
        try:
            return fn(body)
        except ParseError as exc:
            facts.warnings.append(str(exc))
            return None

    osr = attempt("os-release", parse_os_release) or {}
    facts.os_id, facts.os_version = osr.get("ID"), osr.get("VERSION_ID")
    facts.os_name = osr.get("PRETTY_NAME") or " ".join(filter(None, [osr.get("NAME"), osr.get("VERSION_ID")])) or None
    facts.kernel = (ok("kernel") or "").strip() or None
    facts.architecture = (ok("architecture") or "").strip() or None
    facts.hostname = (ok("hostname") or "").strip() or None

    nvidia = attempt("nvidia-smi", parse_nvidia_query_csv)
    if sections.get("nvidia-smi", (127, ""))[0] not in (0, 127):
        facts.warnings.append(f"nvidia-smi is installed but failed (exit {sections['nvidia-smi'][0]}): "
                              f"is the driver loaded?")
    amd = attempt("amd-smi-static", parse_amd_smi_static_json)
    if amd:
        listed = attempt("amd-smi-list", parse_amd_smi_list_json)
        amd = merge_amd_list(amd, listed) if listed else amd
    rocm = attempt("rocm-smi", parse_rocm_smi_json)
    if nvidia:
        facts.vendor, facts.gpu_tool, facts.gpus = "nvidia", "nvidia-smi", nvidia
        facts.driver_version = nvidia[0].driver_version
    elif amd:
        facts.vendor, facts.gpu_tool, facts.gpus = "amd", "amd-smi", amd
        facts.driver_version = amd[0].driver_version
    elif rocm:
        facts.vendor, facts.gpu_tool, facts.gpus = "amd", "rocm-smi", rocm[0]
        facts.driver_version = rocm[1]
    pci = attempt("pci", parse_pci_devices) or []
    facts.pci_gpu_count = {v: n for v in ("nvidia", "amd") if (n := count_pci_gpus(pci, v))}
    if facts.vendor is None and facts.pci_gpu_count:
        facts.vendor = max(facts.pci_gpu_count, key=facts.pci_gpu_count.get)
        facts.gpu_tool = "pci"

    wd = ok("weights-dir")
    if wd:
        first, _, rest = wd.partition("\n")
        facts.weights_dir_checked = first.strip() or None
        try:
            facts.disk_free_bytes = parse_df_avail(rest)
        except ParseError as exc:
            facts.warnings.append(str(exc))
    facts.weights_filesystem = (ok("weights-fs") or "").strip() or None
    facts.interfaces = attempt("ip", parse_ip_addr_json) or []
    facts.ib_hcas = sorted((ok("infiniband") or "").split())
    return facts


# --- comparing with the fleet file -----------------------------------------------------------------------

#: `stat -f -c %T` names of filesystems whose reads cross the network (coreutils' names; fuse mounts unknown)
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "lustre", "smb2", "cifs", "ceph", "glusterfs", "gpfs", "afs", "9p", "beegfs")


def weights_on_network_filesystem(fs_type: str | None) -> bool | None:
    """True/False for a filesystem type `stat -f` names; None when unknown (no answer, or a fuse mount)."""
    if not fs_type or fs_type.startswith("fuse"):
        return None
    return fs_type.lower() in NETWORK_FILESYSTEMS

def compare(host: Host, facts: HostFacts, catalog: Catalog) -> list[str]:
    """Every way the host differs from its fleet entry, as 'HOST: fleet says X, host has Y' lines."""
    problems = []
    want_vendor = catalog.gpu(host.gpu).vendor
    want = f"{host.gpu_count} x {host.gpu.upper()}"
    kind = facts.gpu_kind(catalog)
    if facts.vendor is None:
        problems.append(f"{host.name}: fleet says {want}, host has no GPU that nvidia-smi, amd-smi, rocm-smi "
                        f"or the PCI bus shows")
    elif facts.vendor != want_vendor:
        problems.append(f"{host.name}: fleet says {want} ({want_vendor}), host has {facts.gpu_count} "
                        f"{facts.vendor} GPU(s)")
    elif facts.gpu_tool == "pci":
        if facts.gpu_count != host.gpu_count:
            problems.append(f"{host.name}: fleet says {want}, host has {facts.gpu_count} "
                            f"(counted on the PCI bus; no {want_vendor} GPU tool installed)")
    else:
        names = sorted({g.name for g in facts.gpus})
        if kind != host.gpu:
            problems.append(f"{host.name}: fleet says {want}, host has {facts.gpu_count} x "
                            f"{' / '.join(names)}")
        elif facts.gpu_count != host.gpu_count:
            problems.append(f"{host.name}: fleet says {want}, host has {facts.gpu_count}")
        mig = [str(g.index) for g in facts.gpus if (g.mig_mode or "").lower() == "enabled"]
        if mig:
            problems.append(f"{host.name}: MIG mode is enabled on GPU(s) {', '.join(mig)}; SGLang needs whole "
                            f"GPUs (nvidia-smi -mig 0)")
        cpu = catalog.gpu(host.gpu).host_architecture
        if kind == host.gpu and cpu and facts.architecture and facts.architecture != cpu:
            problems.append(f"{host.name}: a {host.gpu.upper()} host has {cpu} CPUs, this host is {facts.architecture}")
        expected_mib = catalog.gpu(host.gpu).memory_mib
        small = [g for g in facts.gpus if g.memory_mib is not None and g.memory_mib < 0.95 * expected_mib]
        if kind == host.gpu and small:
            problems.append(f"{host.name}: GPU(s) {', '.join(str(g.index) for g in small)} report "
                            f"{small[0].memory_mib} MiB, a {host.gpu} has {expected_mib} MiB")
    on_network = weights_on_network_filesystem(facts.weights_filesystem)
    if on_network is not None and on_network != (host.weights_storage == "network"):
        where = facts.weights_dir_checked or host.weights_dir or DEFAULT_WEIGHTS_DIR
        problems.append(f"{host.name}: fleet says weights_storage {host.weights_storage}, {where} is on "
                        f"{facts.weights_filesystem} ({'a network' if on_network else 'a local'} filesystem); set "
                        f"weights_storage: {'network' if on_network else 'local'}")
    names = {i.name for i in facts.interfaces}
    if host.network_interface and facts.interfaces and host.network_interface not in names:
        problems.append(f"{host.name}: fleet says network_interface {host.network_interface}, host has "
                        f"{', '.join(sorted(names))}")
    missing = [h for h in host.ib_hcas if h.split(":")[0] not in facts.ib_hcas]
    if missing:
        have = ", ".join(facts.ib_hcas) or "none"
        problems.append(f"{host.name}: fleet says ib_hcas {', '.join(host.ib_hcas)}, host has {have}")
    return problems


def fleet_facts(facts: HostFacts, catalog: Catalog) -> dict[str, Any]:
    """What `--update` writes under the host's `facts:` (stable keys, no timestamps)."""
    names = sorted({g.name for g in facts.gpus})
    memories = sorted({g.memory_mib for g in facts.gpus if g.memory_mib is not None})
    return {
        "vendor": facts.vendor,
        "gpu": facts.gpu_kind(catalog),
        "gpu_count": facts.gpu_count,
        "gpu_name": names[0] if len(names) == 1 else (names or None),
        "gpu_memory_mib": memories[0] if len(memories) == 1 else (memories or None),
        "gpu_tool": facts.gpu_tool,
        "driver_version": facts.driver_version,
        "mig_enabled": any((g.mig_mode or "").lower() == "enabled" for g in facts.gpus),
        "os": facts.os_name,
        "kernel": facts.kernel,
        "architecture": facts.architecture,
        "weights_dir_free_gb": round(facts.disk_free_bytes / 1e9, 1) if facts.disk_free_bytes is not None else None,
        "weights_filesystem": facts.weights_filesystem,
        "interfaces": sorted(i.name for i in facts.interfaces),
        "ib_hcas": list(facts.ib_hcas),
    }


# --- running it over SSH ---------------------------------------------------------------------------------

@dataclass
class ProbeResult:
    host: Host
    facts: HostFacts | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.error:
            return "unreachable"
        return "mismatch" if self.problems else "ok"


def _ssh_error(host: Host, exc: BaseException, known_hosts: str | None) -> str:
    import paramiko  # imported where SSH is used: it costs every other command 0.4 s at start

    target = f"{host.ssh_user + '@' if host.ssh_user else ''}{host.address}:{host.ssh_port}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"host key of {target} does not match {known_hosts}: the host was reinstalled or someone is "
                f"in between; check it, then fix the known_hosts line")
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        keyscan = f"ssh-keyscan {'-p ' + str(host.ssh_port) + ' ' if host.ssh_port != 22 else ''}{host.address}"
        return (f"host key of {target} is not in {known_hosts}: add it ({keyscan} >> {known_hosts}) "
                f"after checking it, or pass --insecure-host-keys")
    if isinstance(exc, paramiko.SSHException) and "protocol banner" in str(exc):
        return f"no answer from {target} in time"
    if isinstance(exc, paramiko.AuthenticationException):
        key = f" with key {host.ssh_key}" if host.ssh_key else ""
        return f"SSH login to {target}{key} refused: {exc}"
    if isinstance(exc, FileNotFoundError) and host.ssh_key and exc.filename == host.ssh_key:
        return f"{exc.strerror}: set the right ssh_key for {host.name} in the fleet file"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer from {target} in time"
    if isinstance(exc, OSError):
        return f"cannot connect to {target}: {exc.strerror or exc}"
    return f"SSH to {target} failed: {exc}"


def run_remote(host: Host, script: str, timeout: float, insecure_host_keys: bool = False) -> str:
    """Run the script on the host over SSH within `timeout` seconds; returns stdout."""
    import paramiko  # imported where SSH is used: it costs every other command 0.4 s at start

    # paramiko logs transport-thread tracebacks (banner timeouts, ...); the result line says what happened
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    logging.getLogger("paramiko").propagate = False
    deadline = time.monotonic() + timeout
    if host.ssh_key and not Path(host.ssh_key_local).is_file():
        raise FileNotFoundError(2, f"ssh_key {host.ssh_key} does not exist", host.ssh_key)
    client = paramiko.SSHClient()
    known_hosts = host.known_hosts_local
    if insecure_host_keys:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # accepted for this run, never saved
    else:
        if Path(known_hosts).is_file():
            client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        try:
            client.connect(
                host.address, port=host.ssh_port, username=host.ssh_user or None,
                key_filename=host.ssh_key_local, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                look_for_keys=host.ssh_key is None, allow_agent=host.ssh_key is None,
            )
        except paramiko.SSHException as exc:
            # a host that accepts TCP but never completes the handshake surfaces as one of several
            # SSHExceptions ("Error reading SSH protocol banner", "No existing session") once time is up
            if time.monotonic() >= deadline - 0.5 and not isinstance(exc, paramiko.BadHostKeyException):
                raise TimeoutError("no SSH handshake in time") from exc
            raise
        channel = client.get_transport().open_session(timeout=max(1.0, deadline - time.monotonic()))
        channel.settimeout(0.5)
        channel.exec_command("sh -c " + shlex.quote(script))
        chunks = []
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("probe timed out")
            try:
                data = channel.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            chunks.append(data)
        channel.recv_exit_status()
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        client.close()


def probe_host(host: Host, catalog: Catalog, timeout: float = DEFAULT_TIMEOUT_S,
               insecure_host_keys: bool = False,
               runner: Callable[[Host, str, float, bool], str] = run_remote) -> ProbeResult:
    started = time.monotonic()
    result = ProbeResult(host=host)
    try:
        output = runner(host, probe_script(host.weights_dir or DEFAULT_WEIGHTS_DIR), timeout, insecure_host_keys)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the host's error line
        result.error = _ssh_error(host, exc, host.known_hosts_local)
    else:
        result.facts = parse_probe_output(output)
        result.problems = compare(host, result.facts, catalog)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def probe_fleet(fleet: Fleet, hosts: Sequence[str] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                insecure_host_keys: bool = False, catalog: Catalog | None = None,
                runner: Callable[[Host, str, float, bool], str] = run_remote) -> list[ProbeResult]:
    """Probe hosts in parallel; every host's result within about `timeout` seconds. Fleet order kept."""
    catalog = catalog or load_catalog()
    targets = [h for h in fleet.hosts if not hosts or h.name in hosts]
    if not targets:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(targets))) as pool:
        futures = [pool.submit(probe_host, h, catalog, timeout, insecure_host_keys, runner) for h in targets]
        results = []
        for host, future in zip(targets, futures):
            try:
                results.append(future.result(timeout=timeout + 10))
            except concurrent.futures.TimeoutError:
                results.append(ProbeResult(host=host, error=f"no result from {host.address} in {timeout:g} s"))
        return results


# --- output ----------------------------------------------------------------------------------------------

def _gb(value: int | None) -> str:
    return "?" if value is None else f"{value / 1e9:.0f} GB"


def results_table(results: Sequence[ProbeResult], catalog: Catalog) -> str:
    """A table of every host, then one line per disagreement."""
    header = ("HOST", "STATUS", "FLEET", "FOUND", "DRIVER", "OS", "KERNEL", "DISK FREE")
    rows = [header]
    for r in results:
        want = f"{r.host.gpu_count} x {r.host.gpu.upper()}"
        if r.facts is None:
            rows.append((r.host.name, r.status, want, "-", "-", "-", "-", "-"))
            continue
        f = r.facts
        kind = f.gpu_kind(catalog)
        found = (f"{f.gpu_count} x {kind.upper() if kind else (f.gpus[0].name if f.gpus else f.vendor or 'none')}"
                 if f.gpu_count else "no GPU")
        rows.append((r.host.name, r.status, want, found, f.driver_version or "-", f.os_name or "-",
                     f.kernel or "-", _gb(f.disk_free_bytes)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    details = []
    for r in results:
        if r.error:
            details.append(f"{r.host.name}: {r.error}")
        details.extend(r.problems)
        if r.facts:
            details.extend(f"{r.host.name}: note: {w}" for w in r.facts.warnings)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("ok", "mismatch", "unreachable")}
    summary = f"{len(results)} host(s): {counts['ok']} ok, {counts['mismatch']} mismatch, " \
              f"{counts['unreachable']} unreachable"
    return "\n".join(lines + ([""] + details if details else []) + ["", summary])


def results_to_dict(results: Sequence[ProbeResult], fleet: Fleet, catalog: Catalog) -> dict[str, Any]:
    return {
        "fleet": str(fleet.path),
        "hosts": [
            {
                "name": r.host.name, "address": r.host.address, "status": r.status, "seconds": r.seconds,
                "fleet": {"gpu": r.host.gpu, "gpu_count": r.host.gpu_count},
                "problems": r.problems, "error": r.error,
                "facts": r.facts.as_dict(catalog) if r.facts else None,
            }
            for r in results
        ],
        "summary": {s: sum(1 for r in results if r.status == s) for s in ("ok", "mismatch", "unreachable")},
    }


# --- CLI -------------------------------------------------------------------------------------------------

def cmd_fleet_probe(args) -> int:
    catalog = load_catalog()
    fleet = load_fleet(args.fleet, catalog)
    unknown = [h for h in (args.host or []) if h not in {x.name for x in fleet.hosts}]
    if unknown:
        raise UserError(f"--host {', '.join(unknown)}: not in {args.fleet}; hosts: "
                        f"{', '.join(h.name for h in fleet.hosts)}")
    if args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    results = probe_fleet(fleet, args.host, timeout=args.timeout, insecure_host_keys=args.insecure_host_keys,
                          catalog=catalog)
    if args.update:
        facts = {r.host.name: fleet_facts(r.facts, catalog) for r in results if r.facts is not None}
        if facts:
            write_fleet_facts(args.fleet, facts, catalog)
    if args.json:
        data = results_to_dict(results, fleet, catalog)
        data["updated"] = sorted(r.host.name for r in results if r.facts is not None) if args.update else []
        print_json(data)
    else:
        print(results_table(results, catalog))
        if args.update:
            written = [r.host.name for r in results if r.facts is not None]
            print(f"facts written to {args.fleet} for {len(written)} host(s)"
                  + (f": {', '.join(written)}" if written else ""), file=sys.stderr)
    return 0 if all(r.status == "ok" for r in results) else 1


def register(sub) -> None:
    p = sub.add_parser("fleet", help="work with the fleet file (your machines)",
                       description="Commands on the fleet file (docs/fleet.md).")
    fleet_sub = p.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", parser_class=type(p))
    fleet_sub.required = True
    q = fleet_sub.add_parser(
        "probe", help="connect to every host and compare what it has with the fleet file",
        description="Connect to every host of the fleet over SSH (in parallel, host keys checked against the "
                    "fleet's known_hosts), read its GPUs (nvidia-smi; amd-smi or rocm-smi), driver, OS, kernel, "
                    "free disk under the weights folder and network interfaces, and print what matches the "
                    "fleet file and what does not. Exit status 0 when every host matches, 1 otherwise.",
        epilog="Example: qwen35-prov fleet probe --fleet fleet.yml --update")
    q.add_argument("--fleet", required=True, help="the fleet file")
    q.add_argument("--host", action="append", metavar="NAME", help="probe only this host (repeatable)")
    q.add_argument("--update", action="store_true",
                   help="write what was found under each reachable host's `facts:` in the fleet file")
    q.add_argument("--json", action="store_true", help="print the results as JSON")
    q.add_argument("--insecure-host-keys", action="store_true",
                   help="accept unknown host keys for this run (never saved); for throw-away hosts only")
    q.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds each host may take, connection included (default {DEFAULT_TIMEOUT_S:g})")
    q.set_defaults(func=cmd_fleet_probe)
    v = fleet_sub.add_parser("check", help="validate the fleet file without connecting to any host",
                             description="Parse and validate the fleet file; print its hosts and clusters.")
    v.add_argument("--fleet", required=True, help="the fleet file")
    v.add_argument("--json", action="store_true", help="print the hosts and clusters as JSON")
    v.set_defaults(func=cmd_fleet_check)


def cmd_fleet_check(args) -> int:
    fleet = load_fleet(args.fleet)
    if args.json:
        print_json({
            "fleet": str(fleet.path),
            "hosts": [{"name": h.name, "address": h.address, "gpu": h.gpu, "gpu_count": h.gpu_count,
                       "ssh_user": h.ssh_user, "ssh_port": h.ssh_port, "network_interface": h.network_interface,
                       "ib_hcas": list(h.ib_hcas), "weights_dir": h.weights_dir,
                       "weights_storage": h.weights_storage, "labels": dict(h.labels),
                       "facts": h.facts} for h in fleet.hosts],
            "clusters": {c.name: list(c.hosts) for c in fleet.clusters.values()},
        })
    else:
        print(f"{fleet.path}: {len(fleet.hosts)} host(s), {len(fleet.clusters)} cluster(s): valid")
        for h in fleet.hosts:
            conflict = h.facts_conflict()
            print(f"  {h.name:<16} {h.address:<20} {h.gpu_count} x {h.gpu}"
                  + (f"   ! {conflict}" if conflict else ""))
        for c in fleet.clusters.values():
            print(f"  cluster {c.name}: {', '.join(c.hosts)}")
    return 0
