"""The wheel carries the Ansible collection qwen35.prov (this repository's root) as
ansible_collections/qwen35/prov/, where Ansible finds collections on the Python path by itself. Everything else
is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: What the collection is made of (galaxy.yml's build_ignore says the same from the other side).
COLLECTION = ["galaxy.yml", "README.md", "LICENSE", "CHANGELOG.md", "meta", "group_vars", "playbooks", "plugins", "roles", "docs"]
SKIPPED_DIRS = {"molecule", "__pycache__"}


def collection_files(root: Path = ROOT):
    for entry in COLLECTION:
        path = root / entry
        if path.is_file():
            yield path.relative_to(root)
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                rel = file.relative_to(root)
                if file.is_file() and not SKIPPED_DIRS.intersection(rel.parts) and file.suffix != ".pyc":
                    yield rel


class BuildPyWithCollection(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs the checkout itself as the collection (qwen35_prov/collection.py)
        target = Path(self.build_lib) / "ansible_collections" / "qwen35" / "prov"
        shutil.rmtree(target, ignore_errors=True)  # build/lib outlives a build: no file removed since may ship
        for rel in collection_files():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, target / rel)


setup(cmdclass={"build_py": BuildPyWithCollection})
