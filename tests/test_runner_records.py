"""What a run leaves under the state folder holds no secret: ansible-runner records the whole environment of a
run (HF_TOKEN included) in artifacts/<id>/command, and runner.run_playbook strips it (issue 16)."""

import json
import os
import sys
from pathlib import Path

from qwen35_prov.runner import run_playbook

TOKEN = "hf_TEST_DOUBLE_secret_0123456789"   # a test value, never a real token


def test_no_secret_of_the_environment_stays_in_the_run_records(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)                 # as a user's shell would have it
    playbook = tmp_path / "ping.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n"
                        "  tasks:\n    - ansible.builtin.ping:\n")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         f"      ansible_python_interpreter: {sys.executable}\n")
    state = tmp_path / "state"
    result = run_playbook(str(playbook), inventory, state_dir=state, envvars={"HF_TOKEN": TOKEN})
    assert result.rc == 0 and result.status != "failed", result.failures
    leaks = [str(p) for p in state.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaks == []
    record = json.loads((Path(result.artifacts) / "command").read_text())
    assert "ansible-playbook" in " ".join(record["command"]) and "env" not in record
    assert oct((Path(result.artifacts) / "command").stat().st_mode & 0o777) == "0o600"
    assert os.environ["HF_TOKEN"] == TOKEN                # the caller's environment is left as it was
