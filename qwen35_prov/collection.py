"""Where the Ansible collection qwen35.prov (roles, playbooks, plugins) is, installed or in a checkout.

Installed from the wheel, the collection lies beside this package as site-packages/ansible_collections/qwen35/prov,
where Ansible finds collections by itself. In a git checkout the repository root is the collection; Ansible finds
it through a link, .cache/collections/ansible_collections/qwen35/prov -> the checkout, made here when missing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from .errors import UserError

NAMESPACE, NAME = "qwen35", "prov"

_PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def _is_collection(path: Path) -> bool:
    return (path / "galaxy.yml").is_file() or (path / "MANIFEST.json").is_file() or (
        (path / "playbooks").is_dir() and (path / "roles").is_dir())


def root() -> Path:
    """The collection's folder: the checkout this package runs from, else the one installed beside it."""
    checkout = _PACKAGE_PARENT
    if (checkout / "galaxy.yml").is_file() and (checkout / "roles").is_dir():
        return checkout
    installed = _PACKAGE_PARENT / "ansible_collections" / NAMESPACE / NAME
    if _is_collection(installed):
        return installed
    raise UserError(f"the Ansible collection {NAMESPACE}.{NAME} is not installed beside the qwen35_prov package "
                    f"(looked for {installed}); reinstall qwen35-prov from its wheel")


def module_utils(name: str) -> ModuleType:
    """The collection's plugins/module_utils/NAME.py as a Python module, for the package's own use: Python that
    the Ansible modules and filters run and this package needs too (the GPU tools' parser, the smoke checks) is
    written once there.
    Loaded by path, so neither a checkout nor an installed wheel needs anything on sys.path."""
    qualified = f"qwen35_prov._collection_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    path = root() / "plugins" / "module_utils" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(qualified, path) if path.is_file() else None
    if spec is None or spec.loader is None:
        raise UserError(f"the collection {NAMESPACE}.{NAME} has no plugins/module_utils/{name}.py; reinstall qwen35-prov")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


def search_path() -> Path:
    """A folder for ANSIBLE_COLLECTIONS_PATH under which Ansible finds qwen35.prov (ansible_collections/qwen35/prov)."""
    here = root()
    if here.parts[-3:] == ("ansible_collections", NAMESPACE, NAME):
        return here.parents[2]
    base = here / ".cache" / "collections"
    link = base / "ansible_collections" / NAMESPACE / NAME
    if not link.is_dir() or link.resolve() != here:
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{NAME}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(here, link.parent))
        os.replace(tmp, link)
    return base


def ansible_env() -> dict[str, str]:
    """The environment an ansible-playbook needs to find this collection's roles and plugins."""
    paths = [str(search_path())]
    if os.environ.get("ANSIBLE_COLLECTIONS_PATH"):
        paths.append(os.environ["ANSIBLE_COLLECTIONS_PATH"])
    return {"ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(paths), "ANSIBLE_ROLES_PATH": str(root() / "roles")}


def playbook_ref(name: str) -> str:
    """How a user runs one of the collection's playbooks: qwen35.prov.NAME where it is installed, else its path."""
    here = root()
    if here.parts[-3:] == ("ansible_collections", NAMESPACE, NAME):
        return f"{NAMESPACE}.{NAME}.{name}"
    path = here / "playbooks" / f"{name}.yml"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
