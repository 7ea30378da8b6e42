"""sglang_router_worker_urls for playbooks that drain replicas without loading the sglang_router role
(driver-upgrade.yml): the role's own filter, loaded from its file, so a drained URL is exactly the one the
gateway was given."""

import importlib.util
from pathlib import Path

_FILE = Path(__file__).resolve().parents[2] / "roles" / "sglang_router" / "filter_plugins" / "sglang_router.py"
_spec = importlib.util.spec_from_file_location("qwen35_sglang_router_filters", _FILE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)


class FilterModule:
    def filters(self):
        return {"sglang_router_worker_urls": _module.sglang_router_worker_urls}
