"""How the runner runs tasks: Mitogen's linear strategy when mitogen is installed (a dependency), Ansible's own
when QWEN35_ANSIBLE_STRATEGY says so; the same playbook gives the same results either way."""

import sys
from pathlib import Path

import pytest

from qwen35_prov.runner import STRATEGY_ENV, run_playbook, strategy_env

PLAY = """- hosts: localhost
  gather_facts: false
  tasks:
    - name: Run a module on the host
      ansible.builtin.stat:
        path: /etc/hostname
      register: hostname_file
    - name: Report the strategy and what the module saw
      ansible.builtin.set_fact:
        qwen35_report:
          strategy: "{{ lookup('ansible.builtin.config', 'DEFAULT_STRATEGY') }}"
          exists: "{{ hostname_file.stat.exists }}"
"""


def _run(tmp_path):
    playbook = tmp_path / "strategy.yml"
    playbook.write_text(PLAY)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         f"      ansible_python_interpreter: {sys.executable}\n")
    result = run_playbook(str(playbook), inventory, state_dir=tmp_path / "state")
    assert result.ok, result.failures
    return result.facts["localhost"]


@pytest.mark.parametrize("chosen, expected", [(None, "mitogen_linear"), ("linear", "linear")])
def test_the_runner_uses_mitogen_unless_told_otherwise(tmp_path, monkeypatch, chosen, expected):
    if chosen is None:
        monkeypatch.delenv(STRATEGY_ENV, raising=False)
    else:
        monkeypatch.setenv(STRATEGY_ENV, chosen)
    report = _run(tmp_path)
    assert report == {"strategy": expected, "exists": True}


def test_mitogen_strategy_plugins_are_found_from_the_installed_package(monkeypatch):
    monkeypatch.delenv(STRATEGY_ENV, raising=False)
    env = strategy_env()
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()
