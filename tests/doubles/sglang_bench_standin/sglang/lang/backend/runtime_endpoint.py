"""TEST DOUBLE of sglang.lang.backend.runtime_endpoint (SGLang 0.5.23): RuntimeEndpoint(base_url, api_key=None)
reads /get_model_info at construction, sending the key as a bearer token when it has one, like the real class."""

from __future__ import annotations

import json
import urllib.request
from typing import Optional


class RuntimeEndpoint:
    def __init__(self, base_url: str, api_key: Optional[str] = None, verify: Optional[str] = None,
                 chat_template_name: Optional[str] = None):
        self.base_url, self.api_key = base_url, api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        req = urllib.request.Request(f"{base_url}/get_model_info", headers=headers)
        with urllib.request.urlopen(req, timeout=10) as r:
            self.model_info = json.loads(r.read())
        self.model_info["model_path"]
