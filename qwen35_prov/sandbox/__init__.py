"""The sandbox: a cluster of systemd containers (podman) that stands in for GPU servers.

Python API:
  create(cluster, name=None, gpus_per_node=None, progress=print) -> Path of .sandbox/NAME/fleet.yml
  create_sandbox(...) -> CreateResult(sandbox: Sandbox, created: bool)
  destroy(name) -> bool ; destroy_all() -> [names]
  status(name=None) -> [Sandbox(name, cluster, dir, fleet, network, nodes=[Node(name, state, address, interface)])]
  ensure_image() -> "localhost/qwen35-node:<recipe hash>" ; image_ref() -> the same without building
  ssh_argv(folder, address, *command) -> an OpenSSH command line for a node
  is_sandbox(name) ; standins_for(name, repo) -> SandboxServices (the stand-in services started: the repository's
    commit on the local hub, the hub's URL, the runs' environment) or None; the services' role settings are in
    the sandbox's fleet (`standins:`, written by create) and from there in its inventories
"""

from .image import IMAGE_REPO, ensure_image, image_ref, recipe_hash
from .nodes import (CreateResult, Node, Sandbox, create, create_sandbox, destroy, destroy_all, network_name,
                    node_name, nodes_without_reboot, sandbox_root, ssh_argv, status)
from .podman import CONTAINERS_CONF, REPO_ROOT, podman
from .services import SandboxServices, is_sandbox, standins_for

__all__ = [
    "IMAGE_REPO", "ensure_image", "image_ref", "recipe_hash", "CreateResult", "Node", "Sandbox", "create",
    "create_sandbox", "destroy", "destroy_all", "network_name", "node_name", "nodes_without_reboot", "sandbox_root",
    "ssh_argv", "status",
    "CONTAINERS_CONF", "REPO_ROOT", "podman", "SandboxServices", "is_sandbox", "standins_for",
]
