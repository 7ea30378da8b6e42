"""The model_weights role refuses bad settings before it touches a host (ansible-playbook on localhost).

Only the role's first checks run here (they fail before any task changes anything); the role's full
behaviour on nodes is its Molecule scenarios (roles/model_weights/molecule/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


import weights_script as weights

REPO_ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: true
  gather_subset: [min]
  roles:
    - role: model_weights
"""


def run_role(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "extra.json").write_text(json.dumps({"ansible_python_interpreter": sys.executable, **extra}))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "false", "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    playbook = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run([str(playbook), "-i", "localhost,", str(tmp_path / "play.yml"), "-e",
                           f"@{tmp_path / 'extra.json'}"], capture_output=True, text=True, env=env, timeout=180)


BASE = {"qwen35_model_repo": "Qwen/Qwen3.5-397B-A17B", "model_weights_dir": "/nonexistent/q35w-weights",
        "model_weights_hf_token": ""}


def test_a_branch_is_refused_before_anything_runs_and_the_message_says_how_to_fix_it(tmp_path):
    r = run_role(tmp_path, {**BASE, "qwen35_model_revision": "main"})
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "revision main is not a commit id" in out
    assert "model_weights_allow_unpinned: true" in out
    assert "Install the downloader" not in out       # stopped in the first checks


def test_the_catalogs_null_revision_means_main_and_is_refused_too(tmp_path):
    r = run_role(tmp_path, {**BASE, "qwen35_model_revision": None})
    assert r.returncode != 0 and "revision main is not a commit id" in r.stdout + r.stderr


def test_an_unknown_mode_is_refused_by_the_argument_spec(tmp_path):
    r = run_role(tmp_path, {**BASE, "qwen35_model_revision": "a" * 40, "model_weights_mode": "torrent"})
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "model_weights_mode" in out and "torrent" in out


def test_the_role_ships_the_file_the_toolkit_imports():
    shipped = REPO_ROOT / "roles" / "model_weights" / "files" / "qwen35_weights.py"
    assert weights.SCRIPT == shipped
    assert sys.modules["qwen35_weights"].__file__ == str(shipped)


def test_keys_makes_the_fanout_key_once_and_reports_rrsync(tmp_path):
    host_key = tmp_path / "ssh_host_ed25519_key.pub"
    host_key.write_text("ssh-ed25519 AAAAC3NzaTESTDOUBLEHOSTKEY root@node\n")
    argv = [sys.executable, str(weights.SCRIPT), "keys", "--dir", str(tmp_path / "k"), "--comment", "q35w@test",
            "--host-key", str(host_key), "--rrsync", "/nonexistent/rrsync"]
    first = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    second = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    assert first["created"] is True and second["created"] is False
    assert first["public_key"] == second["public_key"] and first["public_key"].startswith("ssh-ed25519 ")
    assert first["host_key"] == "ssh-ed25519 AAAAC3NzaTESTDOUBLEHOSTKEY" and first["rrsync"] is False
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "k" / "id_ed25519").stat().st_mode & 0o077 == 0
