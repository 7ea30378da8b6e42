"""Site-wide settings (group_vars/all of a site folder) reach generated inventories with the documented
precedence: site < cluster (the plan's group_vars) < host (hosts.yml, host_vars) < command line (-e)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "inventories" / "examples" / "h100x16" / "fleet.yml"
ANSIBLE = Path(sys.executable).parent / "ansible"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwen35_prov", *args], capture_output=True, text=True, cwd=cwd)


def value(inventory: Path, host: str, var: str, *extra: str):
    """What Ansible resolves VAR to for HOST (the debug action runs on the controller, nothing is contacted)."""
    r = subprocess.run([str(ANSIBLE), "-i", str(inventory), host, "-m", "ansible.builtin.debug", "-a", f"var={var}",
                        "-o", *extra], capture_output=True, text=True,
                       env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "0"})
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.split("=>", 1)[1])[var]


def site(tmp_path: Path, text: str) -> Path:
    shutil.copy(FLEET, tmp_path / "fleet.yml")
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "group_vars" / "all" / "site.yml").write_text(text)
    return tmp_path


def test_site_settings_beside_the_fleet_sit_below_cluster_host_and_command_line(tmp_path):
    site(tmp_path, "---\nnvidia_driver_mirror: http://mirror.example/cuda\n"
                   "qwen35_image: site/image:1\nansible_user: siteuser\n")
    r = run("inventory", "--cluster", "h100x16", "--fleet", "fleet.yml", "--out", "inv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    copied = (tmp_path / "inv" / "group_vars" / "all" / "site.yml").read_text()
    assert copied.startswith("# Site-wide settings copied by qwen35-prov from ")
    assert "group_vars/all/site.yml" in json.loads((tmp_path / "inv" / ".qwen35-prov-inventory.json").read_text())[
        "files"]

    inv = tmp_path / "inv"
    assert value(inv, "gpu-01", "nvidia_driver_mirror") == "http://mirror.example/cuda"   # site, nobody else
    assert value(inv, "gpu-01", "qwen35_image") == "lmsysorg/sglang:v0.5.23"              # cluster wins
    assert value(inv, "gpu-01", "ansible_user") == "ubuntu"                               # host wins
    assert value(inv, "gpu-01", "nvidia_driver_mirror", "-e", "nvidia_driver_mirror=http://cli") == "http://cli"


def test_an_explicit_site_folder_and_its_errors(tmp_path):
    shutil.copy(FLEET, tmp_path / "fleet.yml")
    elsewhere = tmp_path / "ops" / "group_vars"
    (elsewhere / "all").mkdir(parents=True)
    (elsewhere / "all" / "pins.yml").write_text("---\nnvidia_driver_version: '580.173.02'\n")
    r = run("inventory", "--cluster", "h100x16", "--fleet", "fleet.yml", "--out", "inv",
            "--site-vars", str(elsewhere), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert value(tmp_path / "inv", "gpu-02", "nvidia_driver_version") == "580.173.02"
    # the header's regenerate command names the folder
    header = (tmp_path / "inv" / "hosts.yml").read_text().replace(" \\\n#     ", " ")
    assert f"--site-vars {elsewhere}" in header

    missing = run("inventory", "--cluster", "h100x16", "--fleet", "fleet.yml", "--out", "inv2",
                  "--site-vars", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "--site-vars nowhere: no such folder" in missing.stderr
    assert "Traceback" not in missing.stderr and not (tmp_path / "inv2").exists()

    (elsewhere / "all" / "pins.yml").write_text("---\n- a list, not settings\n")
    bad = run("inventory", "--cluster", "h100x16", "--fleet", "fleet.yml", "--out", "inv",
              "--site-vars", str(elsewhere), cwd=tmp_path)
    assert bad.returncode == 2 and "pins.yml: site settings must be a mapping" in bad.stderr
    # the inventory written before is untouched
    assert value(tmp_path / "inv", "gpu-02", "nvidia_driver_version") == "580.173.02"


def test_the_shipped_site_file_only_documents_and_adds_nothing(tmp_path):
    shipped = REPO / "group_vars" / "all" / "site.yml"
    assert yaml.safe_load(shipped.read_text()) is None          # every setting commented: the roles' defaults
    shutil.copy(FLEET, tmp_path / "fleet.yml")
    r = run("inventory", "--cluster", "h100x16", "--fleet", "fleet.yml", "--out", "inv",
            "--site-vars", str(REPO / "group_vars"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "inv" / "group_vars" / "all").exists()
    # each commented setting names a variable some role really has, with that role's default
    defaults = {}
    for path in (REPO / "roles").glob("*/defaults/main.yml"):
        defaults.update(yaml.safe_load(path.read_text()) or {})
    commented = [line[2:] for line in shipped.read_text().splitlines()
                 if line.startswith("# ") and ": " in line and line[2:].split(":")[0].isidentifier()
                 and line[2:].split(":")[0] == line[2:].split(":")[0].lower()]
    assert len(commented) >= 15
    for line in commented:
        name, shown = line.split(": ", 1)
        assert name in defaults, name
        assert yaml.safe_load(shown) == defaults[name] or "{{" in str(defaults[name]), (name, shown, defaults[name])
