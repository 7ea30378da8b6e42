#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the smoke checks of one served SGLang endpoint, run where the module runs."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sglang_smoke
short_description: Smoke-check an OpenAI-compatible SGLang endpoint serving Qwen3.5
description:
  - Sends the SGLang cookbook's smoke requests and checks the answers, in order - C(/health) answers 200;
    C(/v1/models) lists the model; a chat completion with thinking off has content; thinking on gives
    C(reasoning_content) separate from C(content); C(enable_thinking=false) gives none; a tool call comes back
    parsed in C(tool_calls) with JSON arguments; optionally an image gets an answer.
  - The same checks as C(qwen35-prov smoke --url URL) (both use the collection's module_utils/smoke_checks.py).
  - Changes nothing; skipped in check mode (it sends requests).
options:
  url:
    description: The endpoint, C(http://HOST:PORT) (a C(/v1) suffix is fine).
    type: str
    required: true
  api_key:
    description: Bearer token when the server has an API key.
    type: str
    default: ""
  model:
    description: Model to ask; empty means the first one C(/v1/models) lists.
    type: str
    default: ""
  thinking:
    description: Check thinking on and off (needs the server's C(--reasoning-parser)).
    type: bool
    default: true
  tool_calls:
    description: Check a tool call (needs the server's C(--tool-call-parser)).
    type: bool
    default: true
  image:
    description: Also send an image.
    type: bool
    default: false
  timeout:
    description: Seconds per request.
    type: int
    default: 300
  max_tokens:
    description: max_tokens per request (room to think before the answer).
    type: int
    default: 2048
  label:
    description: What to call the endpoint in the failure message (default the URL).
    type: str
    default: ""
author: qwen35-prov
"""

RETURN = r"""
model:
  description: The model that was asked.
  returned: always
  type: str
checks:
  description: One entry per check - name, ok, detail, seconds, skipped.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.qwen35.prov.plugins.module_utils.smoke_checks import run_checks


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            api_key=dict(type="str", default="", no_log=True),
            model=dict(type="str", default=""),
            thinking=dict(type="bool", default=True),
            tool_calls=dict(type="bool", default=True),
            image=dict(type="bool", default=False),
            timeout=dict(type="int", default=300),
            max_tokens=dict(type="int", default=2048),
            label=dict(type="str", default=""),
        ),
        supports_check_mode=False,
    )
    p = module.params
    skip = ([] if p["thinking"] else ["thinking", "thinking-off"]) + ([] if p["tool_calls"] else ["tool-call"])
    try:
        result = run_checks(p["url"], model=p["model"] or None, image=p["image"], timeout=p["timeout"],
                            max_tokens=p["max_tokens"], skip=skip, api_key=p["api_key"] or None)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    failed = [c for c in result["checks"] if not c["ok"]]
    if failed:
        module.fail_json(msg="%s: %s" % (p["label"] or result["url"],
                                         "; ".join("%s: %s" % (c["name"], c["detail"]) for c in failed)),
                         model=result["model"], checks=result["checks"])
    module.exit_json(changed=False, model=result["model"], checks=result["checks"])


if __name__ == "__main__":
    main()
