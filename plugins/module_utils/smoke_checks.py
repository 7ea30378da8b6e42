# -*- coding: utf-8 -*-
"""The smoke checks of a served endpoint, written once: the answers have the shapes the SGLang cookbook promises
for Qwen3.5. Run by the qwen35.prov.sglang_smoke module on a replica head (the sglang_smoke role, after `up` and
each upgrade) and by `qwen35-prov smoke --url URL` on the controller (qwen35_prov/smoke.py).

Checks, in order (each is a real request with the standard library's urllib):
- `health`: `GET /health` answers 200;
- `models`: `GET /v1/models` lists the model asked for (else the first one listed is used below);
- `chat`: a chat completion with thinking off answers with non-empty `content`;
- `thinking`: thinking on (the default) gives non-empty `reasoning_content` separate from `content`
  (no `</think>` left inside `content`);
- `thinking-off`: `chat_template_kwargs: {"enable_thinking": false}` gives no `reasoning_content`;
- `tool-call`: with a `tools` list the answer carries a parsed `tool_calls` entry whose `arguments` is JSON;
- `image` (only when asked): a user message with a small PNG as a data URI gets an answer.
Standard library only: it runs on the hosts with their system Python.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib

from urllib.error import HTTPError, URLError
from urllib.parse import urlparse, urlunparse
from urllib.request import Request, urlopen

CHECKS = ("health", "models", "chat", "thinking", "thinking-off", "tool-call", "image")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city, e.g. Paris"}},
            "required": ["city"],
        },
    },
}


class CheckFailed(Exception):
    """A check's expectation was not met; the message says what came back instead."""


def tiny_png(width=8, height=8, rgb=(220, 30, 30)):
    """A small solid-color PNG, built here so the image check needs no file."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def base_url(url):
    """`http://host:port`, `.../v1` or `.../v1/` as `http://host:port` (no trailing slash); ValueError otherwise."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("the URL must look like http://HOST:PORT (got %r)" % url)
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunparse((parsed.scheme, parsed.netloc, path, "", "", ""))


def _short(text, limit=120):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Client:
    def __init__(self, url, timeout, api_key=None):
        self.base = base_url(url)
        self.timeout = timeout
        self.api_key = api_key

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        try:
            with urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except HTTPError as exc:
            return exc.code, exc.read()
        except (URLError, OSError) as exc:
            raise CheckFailed("%s %s%s: %s" % (method, self.base, path, getattr(exc, "reason", exc))) from None

    def json(self, method, path, body=None):
        status, raw = self.request(method, path, body)
        if status != 200:
            raise CheckFailed("%s %s answered %s: %s" % (method, path, status, _short(raw.decode(errors="replace"))))
        try:
            return json.loads(raw)
        except ValueError:
            raise CheckFailed("%s %s did not answer JSON: %s" % (method, path, _short(raw.decode(errors="replace")))) \
                from None


def _message(response):
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise CheckFailed("no choices[0].message in the answer: %s" % _short(json.dumps(response))) from None
    if not isinstance(message, dict):
        raise CheckFailed("choices[0].message is not an object")
    return message


class Smoke:
    """Each check returns a one-line description of what it saw, or raises CheckFailed."""

    def __init__(self, client, model=None, max_tokens=2048):
        self.client = client
        self.model = model or None
        self.max_tokens = max_tokens

    def chat(self, content, **extra):
        body = {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_tokens, "temperature": 0}
        body.update(extra)
        return self.client.json("POST", "/v1/chat/completions", body)

    def health(self):
        status, raw = self.client.request("GET", "/health")
        if status != 200:
            raise CheckFailed("/health answered %s: %s" % (status, _short(raw.decode(errors="replace"))))
        return "/health answered 200"

    def models(self):
        data = self.client.json("GET", "/v1/models")
        ids = [m.get("id") for m in (data.get("data") or []) if isinstance(m, dict)] if isinstance(data, dict) else []
        if not ids:
            raise CheckFailed("/v1/models lists no model: %s" % _short(json.dumps(data)))
        if self.model is None:
            self.model = ids[0]
        elif self.model not in ids:
            raise CheckFailed("model %r is not served; /v1/models lists %s" % (self.model, ids))
        return "serves " + ", ".join(ids)

    def chat_plain(self):
        message = _message(self.chat("Say hello in one short sentence.",
                                     chat_template_kwargs={"enable_thinking": False}))
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise CheckFailed("empty content: %s" % _short(json.dumps(message)))
        return "content: %r" % _short(content, 60)

    def thinking(self):
        message = _message(self.chat("What is 17 + 25? Answer with the number only."))
        reasoning, content = message.get("reasoning_content"), message.get("content")
        if not isinstance(reasoning, str) or not reasoning.strip():
            hint = " (is --reasoning-parser set?)" if isinstance(content, str) and "</think>" in content else ""
            raise CheckFailed("no reasoning_content%s: %s" % (hint, _short(json.dumps(message))))
        if not isinstance(content, str) or not content.strip():
            raise CheckFailed("reasoning_content but empty content (max_tokens %d too small?): %s"
                              % (self.max_tokens, _short(json.dumps(message))))
        if "</think>" in content or content.strip() == reasoning.strip():
            raise CheckFailed("thinking is not separated from the answer: content %r" % _short(content, 60))
        return "reasoning %d chars, content %r" % (len(reasoning), _short(content, 40))

    def thinking_off(self):
        message = _message(self.chat("What is 17 + 25? Answer with the number only.",
                                     chat_template_kwargs={"enable_thinking": False}))
        reasoning, content = message.get("reasoning_content"), message.get("content")
        if reasoning:
            raise CheckFailed("reasoning_content despite enable_thinking=false: %r" % _short(reasoning, 60))
        if not isinstance(content, str) or not content.strip() or "</think>" in content:
            raise CheckFailed("expected a plain answer: %s" % _short(json.dumps(message)))
        return "no reasoning_content, content %r" % _short(content, 40)

    def tool_call(self):
        message = _message(self.chat("What is the weather like in Paris right now? Use the tool.",
                                     tools=[WEATHER_TOOL], tool_choice="auto",
                                     chat_template_kwargs={"enable_thinking": False}))
        calls = message.get("tool_calls")
        if not isinstance(calls, list) or not calls:
            hint = " (is --tool-call-parser set?)" if "<tool_call>" in str(message.get("content")) else ""
            raise CheckFailed("no parsed tool_calls%s: %s" % (hint, _short(json.dumps(message))))
        function = calls[0].get("function") or {}
        if function.get("name") != "get_weather":
            raise CheckFailed("tool call names %r, expected 'get_weather'" % function.get("name"))
        raw = function.get("arguments")
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise CheckFailed("tool call arguments are not a JSON object: %r" % raw)
        if not isinstance(arguments.get("city"), str) or not arguments["city"]:
            raise CheckFailed("tool call arguments lack the required 'city': %s" % raw)
        return "get_weather(%s)" % raw

    def image(self):
        uri = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
        message = _message(self.chat([{"type": "image_url", "image_url": {"url": uri}},
                                      {"type": "text", "text": "What color is this image? One word."}],
                                     chat_template_kwargs={"enable_thinking": False}))
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise CheckFailed("empty answer to an image: %s" % _short(json.dumps(message)))
        return "content: %r" % _short(content, 60)


def run_checks(url, model=None, image=False, timeout=300, max_tokens=2048, skip=(), api_key=None):
    """Run the checks in order: {"url", "model", "ok", "checks": [{name, ok, detail, seconds, skipped}]}.
    ValueError for a malformed URL or an unknown check name in `skip`."""
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ValueError("unknown check(s) to skip: %s; checks: %s" % (", ".join(unknown), ", ".join(CHECKS)))
    smoke = Smoke(Client(url, timeout, api_key), model=model, max_tokens=max_tokens)
    steps = [("health", smoke.health), ("models", smoke.models), ("chat", smoke.chat_plain),
             ("thinking", smoke.thinking), ("thinking-off", smoke.thinking_off), ("tool-call", smoke.tool_call)]
    if image:
        steps.append(("image", smoke.image))
    checks = []
    for name, step in steps:
        if name in skip:
            checks.append({"name": name, "ok": True, "detail": "skipped on request", "seconds": 0.0, "skipped": True})
            continue
        started = time.monotonic()
        try:
            detail, ok = step(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        checks.append({"name": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3),
                       "skipped": False})
        if not ok and name in ("health", "models"):
            break  # nothing else can work
    return {"url": smoke.client.base, "model": smoke.model, "ok": all(c["ok"] for c in checks), "checks": checks}
