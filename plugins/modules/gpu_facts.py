#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: read a host's GPU hardware and driver state into ansible_facts.gpu_facts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gpu_facts
short_description: GPU, NVSwitch, InfiniBand, Secure Boot and init-system facts of a GPU server
description:
  - Reads what a GPU server has and what its driver reports, without changing anything.
  - NVIDIA GPUs through C(nvidia-smi -q -x) (falling back to C(--query-gpu) CSV), the driver version also from
    C(/proc/driver/nvidia/version); AMD GPUs through C(amd-smi static --json) (falling back to C(rocm-smi --json));
    GPUs and NVSwitches also from PCI in C(/sys/bus/pci/devices), which works before any driver is installed.
  - InfiniBand devices from C(/sys/class/infiniband); Secure Boot from C(mokutil --sb-state) or EFI variables;
    whether systemd is the init system from C(/run/systemd/system).
  - Never fails because something is missing; what could not be read is listed in C(problems). Checks against
    a plan live in the role's C(preflight.yml).
options:
  nvidia_smi:
    description: nvidia-smi executable (name on PATH or absolute path).
    type: str
    default: nvidia-smi
  amd_smi:
    description: amd-smi executable (name on PATH or absolute path).
    type: str
    default: amd-smi
  timeout:
    description: seconds allowed for each vendor tool.
    type: int
    default: 60
author: qwen35-prov
"""

RETURN = r"""
ansible_facts:
  description: C(gpu_facts) (see the role README for every key).
  returned: always
  type: dict
"""

import glob
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.qwen35.prov.plugins.module_utils.gpu_parse import (
    AMD_SMI_STATIC_ARGS, NVIDIA_QUERY_ARGS, ROCM_SMI_ARGS, ParseError, parse_amd_smi_static, parse_nvidia_query_csv,
    parse_nvidia_smi_xml, parse_rocm_smi_json,
)

SCHEMA = 1
NVIDIA_PCI_VENDOR = "0x10de"
AMD_PCI_VENDOR = "0x1002"
# PCI class codes (upper 16 bits of the 24-bit class): VGA, 3D controller, display other, processing accelerator.
GPU_PCI_CLASSES = {"0x0300", "0x0302", "0x0380", "0x1200"}
NVSWITCH_PCI_CLASS = "0x0680"  # "Bridge: other" is how NVSwitch chips show up on HGX baseboards
SECURE_BOOT_EFIVAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


# ----------------------------------------------------------------------------- parsers (pure, unit-tested)

def driver_branch(version):
    """'580.159.04' -> 580."""
    m = re.match(r"(\d+)\.", version or "")
    return int(m.group(1)) if m else None


def parse_proc_driver_version(text):
    """/proc/driver/nvidia/version -> (version, 'open'|'proprietary')."""
    m = re.search(r"NVRM version:.*?Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text or "")
    if not m:
        return None, None
    flavor = "open" if "Open Kernel Module" in text else "proprietary"
    return m.group(1), flavor


def scan_pci(root="/sys/bus/pci/devices"):
    counts = {"nvidia_gpus": 0, "amd_gpus": 0, "nvswitches": 0}
    for dev in glob.glob(os.path.join(root, "*")):
        vendor = _read(os.path.join(dev, "vendor"))
        cls = (_read(os.path.join(dev, "class")) or "")[:6]
        if vendor == NVIDIA_PCI_VENDOR and cls in GPU_PCI_CLASSES:
            counts["nvidia_gpus"] += 1
        elif vendor == NVIDIA_PCI_VENDOR and cls == NVSWITCH_PCI_CLASS:
            counts["nvswitches"] += 1
        elif vendor == AMD_PCI_VENDOR and cls in GPU_PCI_CLASSES:
            counts["amd_gpus"] += 1
    return counts


def scan_infiniband(root="/sys/class/infiniband"):
    devices = []
    for dev in sorted(glob.glob(os.path.join(root, "*"))):
        ports = []
        for port in sorted(glob.glob(os.path.join(dev, "ports", "*")), key=lambda p: int(os.path.basename(p) or 0)
                           if os.path.basename(p).isdigit() else 0):
            ports.append({"port": int(os.path.basename(port)) if os.path.basename(port).isdigit() else os.path.basename(port),
                          "state": _read(os.path.join(port, "state")),
                          "link_layer": _read(os.path.join(port, "link_layer")),
                          "rate": _read(os.path.join(port, "rate"))})
        devices.append({"name": os.path.basename(dev), "ports": ports})
    return devices


def parse_mokutil(text):
    t = (text or "").lower()
    if "secureboot enabled" in t:
        return "enabled"
    if "secureboot disabled" in t:
        return "disabled"
    if "not support" in t or "efi variables are not supported" in t:
        return "not-efi"
    return "unknown"


def secure_boot_from_efivars(efi_root="/sys/firmware/efi"):
    if not os.path.isdir(efi_root):
        return "not-efi"
    var = os.path.join(efi_root, "efivars", SECURE_BOOT_EFIVAR)
    try:
        with open(var, "rb") as f:
            data = f.read()
    except OSError:
        return "unknown"
    # 4 bytes of attributes, then one byte of value
    return "enabled" if len(data) >= 5 and data[4] == 1 else "disabled"


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def nvswitch_facts(pci_nvswitches, gpus):
    """Where the fabric manager must run: the OS that sees the NVSwitches on its PCI bus. GPUs also report a
    fabric state in a VM whose switches the host manages (shared NVSwitch virtualization): on a fabric,
    yet no switch (and no fabric manager) here."""
    fabric = [g["fabric_state"] for g in gpus if g.get("fabric_state")]
    return {"nvswitch_count": pci_nvswitches, "nvswitch_present": pci_nvswitches > 0,
            "nvswitch_fabric": bool(fabric), "fabric_state": fabric[0] if fabric else None}


def summarize(vendor, tool, gpus, driver_version, extra):
    names = []
    for g in gpus:
        if g["name"] and g["name"] not in names:
            names.append(g["name"])
    mems = [g["memory_mib"] for g in gpus if g.get("memory_mib")]
    facts = {
        "schema": SCHEMA,
        "vendor": vendor,
        "count": len(gpus),
        "count_source": tool,
        "models": names,
        "model": names[0] if len(names) == 1 else (", ".join(names) if names else None),
        "memory_mib": min(mems) if mems else None,
        "gpus": gpus,
        "driver_version": driver_version,
        "driver_branch": driver_branch(driver_version),
        "mig_enabled": any((g.get("mig_mode") or "").lower() == "enabled" for g in gpus),
        "persistence_enabled": bool(gpus) and all((g.get("persistence_mode") or "").lower() == "enabled"
                                                  for g in gpus),
    }
    facts.update(extra)
    return facts


# ----------------------------------------------------------------------------- the module

def gather(module):
    problems = []
    timeout = module.params["timeout"]
    timeout_bin = module.get_bin_path("timeout")

    def run(argv):
        exe = argv[0] if os.path.isabs(argv[0]) else module.get_bin_path(argv[0])
        if not exe or not os.access(exe, os.X_OK):
            return None, None
        prefix = [timeout_bin, str(timeout)] if timeout_bin else []
        rc, out, err = module.run_command(prefix + [exe] + argv[1:], check_rc=False, environ_update={"LC_ALL": "C"})
        if rc != 0:
            last = ((err or out or "").strip().splitlines() or [""])[-1]
            why = "timed out after %ds" % timeout if rc == 124 and timeout_bin else "exited %d: %s" % (rc, last)
            problems.append("%s %s" % (" ".join(argv), why))
            return exe, None
        return exe, out

    pci = scan_pci()
    ib = scan_infiniband()
    proc_version, flavor = parse_proc_driver_version(_read("/proc/driver/nvidia/version"))
    mokutil_path = module.get_bin_path("mokutil")
    if mokutil_path:
        rc, out, err = module.run_command([mokutil_path, "--sb-state"], check_rc=False)
        secure_boot = parse_mokutil(out + err)
        if secure_boot == "unknown":
            secure_boot = secure_boot_from_efivars()
    else:
        secure_boot = secure_boot_from_efivars()
    tools = {}
    common = {
        "pci": pci,
        **nvswitch_facts(pci["nvswitches"], []),
        "infiniband": ib,
        "infiniband_devices": [d["name"] for d in ib],
        "secure_boot": secure_boot,
        "systemd": os.path.isdir("/run/systemd/system"),
        "devices": {p: os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dri")},
        "kernel_module_flavor": flavor,
        "nvidia_smi_driver_version": None,
        "proc_driver_version": proc_version,
        "tools": tools,
        "problems": problems,
    }

    # NVIDIA
    exe, out = run([module.params["nvidia_smi"], "-q", "-x"])
    tools["nvidia-smi"] = exe
    parsed = None
    if out:
        try:
            parsed = parse_nvidia_smi_xml(out)
        except ParseError as e:
            problems.append("%s; trying --query-gpu" % e)
    if exe and (parsed is None or not parsed["gpus"]):
        _, out = run([module.params["nvidia_smi"]] + list(NVIDIA_QUERY_ARGS))
        if out:
            try:
                parsed = parse_nvidia_query_csv(out)
            except ParseError as e:
                problems.append(str(e))
    if parsed and parsed["gpus"]:
        extra = dict(common, cuda_version=parsed.get("cuda_version"),
                     nvidia_smi_driver_version=parsed["driver_version"], **nvswitch_facts(pci["nvswitches"], parsed["gpus"]))
        return summarize("nvidia", "nvidia-smi", parsed["gpus"], parsed["driver_version"] or proc_version, extra)

    # AMD
    exe, out = run([module.params["amd_smi"]] + list(AMD_SMI_STATIC_ARGS))
    tools["amd-smi"] = exe
    parsed = None
    if out:
        try:
            parsed = parse_amd_smi_static(out)
        except ParseError as e:
            problems.append(str(e))
    if not (parsed and parsed["gpus"]):
        exe2, out = run(["rocm-smi"] + list(ROCM_SMI_ARGS))
        tools["rocm-smi"] = exe2
        if out:
            try:
                parsed = parse_rocm_smi_json(out)
            except ParseError as e:
                problems.append(str(e))
    if parsed and parsed["gpus"]:
        drv = parsed["driver_version"] or _read("/sys/module/amdgpu/version")
        extra = dict(common, cuda_version=None)
        return summarize("amd", "amd-smi" if tools.get("amd-smi") else "rocm-smi", parsed["gpus"], drv, extra)

    # No vendor tool answered: what PCI shows (a host before its driver is installed, or one without GPUs).
    if pci["nvidia_gpus"]:
        vendor, count = "nvidia", pci["nvidia_gpus"]
    elif pci["amd_gpus"]:
        vendor, count = "amd", pci["amd_gpus"]
    else:
        vendor, count = "none", 0
    extra = dict(common, cuda_version=None)
    facts = summarize(vendor, "pci" if count else None, [], proc_version, extra)
    facts["count"] = count
    return facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            nvidia_smi=dict(type="str", default="nvidia-smi"),
            amd_smi=dict(type="str", default="amd-smi"),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    module.exit_json(changed=False, ansible_facts={"gpu_facts": gather(module)})


if __name__ == "__main__":
    main()
