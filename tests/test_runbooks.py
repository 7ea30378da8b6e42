"""The runbooks use only commands that exist: every `qwen35-prov ...` line in their code blocks parses with the
real command line parser, every playbook they run exists (or is one the CLI itself runs, being written), and every
runbook is listed in the index."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from qwen35_prov.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
RUNBOOKS = REPO / "docs" / "runbooks"
# Playbooks the CLI runs (qwen35_prov/rollout.py) that are being written alongside: named, not yet on disk.
CLI_PLAYBOOKS = set(re.findall(r'"([a-z_]+\.yml)"', (REPO / "qwen35_prov" / "rollout.py").read_text()))


def code_lines(text: str) -> list[str]:
    """Command lines of ```bash blocks, with backslash continuations joined."""
    lines, block, joined = [], False, ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("```"):
            block = not block
            continue
        if not block:
            continue
        joined += stripped.rstrip("\\").strip() + " "
        if not stripped.endswith("\\"):
            lines.append(joined.strip())
            joined = ""
    return lines


def commands(name: str) -> list[list[str]]:
    found = []
    for line in code_lines((RUNBOOKS / name).read_text()):
        for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            part = part.split(" #", 1)[0].strip()
            if part.startswith("qwen35-prov "):
                found.append(shlex.split(part))
    return found


BOOKS = sorted(p.name for p in RUNBOOKS.glob("*.md") if p.name != "README.md")


def test_every_runbook_is_in_the_index():
    index = (RUNBOOKS / "README.md").read_text()
    assert BOOKS and all(f"({name})" in index for name in BOOKS)
    assert len(BOOKS) == 9


@pytest.mark.parametrize("name", BOOKS)
def test_qwen35_prov_commands_parse(name):
    found = commands(name)
    assert found, f"{name} runs no qwen35-prov command"
    parser = build_parser()
    for argv in found:
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exc:  # argparse's error: the runbook names a command or flag that does not exist
            pytest.fail(f"{name}: `{' '.join(argv)}` is refused by the CLI (exit {exc.code})")


@pytest.mark.parametrize("name", BOOKS + ["README.md"])
def test_playbooks_named_exist(name):
    text = (RUNBOOKS / name).read_text()
    for playbook in set(re.findall(r"playbooks/([a-z_]+\.yml)", text)):
        assert (REPO / "playbooks" / playbook).exists() or playbook in CLI_PLAYBOOKS, (name, playbook)
