"""Smoke checks of a served endpoint: the answers have the shapes the SGLang cookbook promises for Qwen3.5.

Checks, in order (each is a real request with the standard library's urllib):
- `health`: `GET /health` answers 200;
- `models`: `GET /v1/models` lists a model (the first one is used for the requests below);
- `chat`: a chat completion with thinking off answers with non-empty `content`;
- `thinking`: thinking on (the default) gives non-empty `reasoning_content` separate from `content`
  (no `</think>` left inside `content`);
- `thinking-off`: `chat_template_kwargs: {"enable_thinking": false}` gives no `reasoning_content`;
- `tool-call`: with a `tools` list the answer carries a parsed `tool_calls` entry whose `arguments` is JSON;
- `image` (only with image=True): a user message with a small PNG as a data URI gets an answer.
"""

from __future__ import annotations

import argparse
import base64
import json
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .cli_options import print_json
from .errors import UserError

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


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    skipped: bool = False


@dataclass
class SmokeReport:
    url: str
    model: str | None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok or c.skipped for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "status": "ok" if self.ok else "failed",
                "checks": [asdict(c) for c in self.checks]}

    def as_text(self) -> str:
        lines = [f"smoke checks of {self.url}" + (f" (model {self.model})" if self.model else "")]
        for c in self.checks:
            mark = "SKIP" if c.skipped else ("PASS" if c.ok else "FAIL")
            lines.append(f"  {mark} {c.name:<13} {c.seconds:6.2f} s  {c.detail}")
        lines.append("all checks passed" if self.ok else
                     f"{sum(not c.ok and not c.skipped for c in self.checks)} check(s) failed")
        return "\n".join(lines)


class CheckFailed(Exception):
    """A check's expectation was not met; the message says what came back instead."""


def tiny_png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (220, 30, 30)) -> bytes:
    """A small solid-color PNG, built here so the image check needs no file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def base_url(url: str) -> str:
    """Normalize `http://host:port`, `.../v1` or `.../v1/` to `http://host:port` (no trailing slash)."""
    parsed = urllib.parse.urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"--url must look like http://HOST:PORT (got {url!r})")
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urllib.parse.urlunparse((parsed.scheme, parsed.netloc, path, "", "", ""))


class Client:
    def __init__(self, url: str, timeout: float, api_key: str | None = None):
        self.base = base_url(url)
        self.timeout = timeout
        self.api_key = api_key

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CheckFailed(f"{method} {self.base}{path}: {reason}") from None

    def json(self, method: str, path: str, body: dict | None = None) -> Any:
        status, raw = self.request(method, path, body)
        if status != 200:
            raise CheckFailed(f"{method} {path} answered {status}: {_short(raw.decode(errors='replace'))}")
        try:
            return json.loads(raw)
        except ValueError:
            raise CheckFailed(f"{method} {path} did not answer JSON: {_short(raw.decode(errors='replace'))}") from None


def _short(text: Any, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _message(response: Any) -> dict:
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise CheckFailed(f"no choices[0].message in the answer: {_short(json.dumps(response))}") from None
    if not isinstance(message, dict):
        raise CheckFailed("choices[0].message is not an object")
    return message


class Smoke:
    def __init__(self, client: Client, *, model: str | None, max_tokens: int):
        self.client = client
        self.model = model
        self.max_tokens = max_tokens

    def chat(self, content: Any, **extra: Any) -> dict:
        body = {"model": self.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_tokens, "temperature": 0, **extra}
        return self.client.json("POST", "/v1/chat/completions", body)

    # each check returns a one-line description of what it saw, or raises CheckFailed

    def health(self) -> str:
        status, raw = self.client.request("GET", "/health")
        if status != 200:
            raise CheckFailed(f"/health answered {status}: {_short(raw.decode(errors='replace'))}")
        return "/health answered 200"

    def models(self) -> str:
        data = self.client.json("GET", "/v1/models")
        ids = [m.get("id") for m in (data.get("data") or []) if isinstance(m, dict)] if isinstance(data, dict) else []
        if not ids:
            raise CheckFailed(f"/v1/models lists no model: {_short(json.dumps(data))}")
        if self.model is None:
            self.model = ids[0]
        elif self.model not in ids:
            raise CheckFailed(f"model {self.model!r} is not served; /v1/models lists {ids}")
        return f"serves {', '.join(ids)}"

    def chat_plain(self) -> str:
        message = _message(self.chat("Say hello in one short sentence.",
                                     chat_template_kwargs={"enable_thinking": False}))
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise CheckFailed(f"empty content: {_short(json.dumps(message))}")
        return f"content: {_short(content, 60)!r}"

    def thinking(self) -> str:
        message = _message(self.chat("What is 17 + 25? Answer with the number only."))
        reasoning, content = message.get("reasoning_content"), message.get("content")
        if not isinstance(reasoning, str) or not reasoning.strip():
            hint = " (is --reasoning-parser set?)" if isinstance(content, str) and "</think>" in content else ""
            raise CheckFailed(f"no reasoning_content{hint}: {_short(json.dumps(message))}")
        if not isinstance(content, str) or not content.strip():
            raise CheckFailed(f"reasoning_content but empty content (max_tokens {self.max_tokens} too small?): "
                              f"{_short(json.dumps(message))}")
        if "</think>" in content or content.strip() == reasoning.strip():
            raise CheckFailed(f"thinking is not separated from the answer: content {_short(content, 60)!r}")
        return f"reasoning {len(reasoning)} chars, content {_short(content, 40)!r}"

    def thinking_off(self) -> str:
        message = _message(self.chat("What is 17 + 25? Answer with the number only.",
                                     chat_template_kwargs={"enable_thinking": False}))
        reasoning, content = message.get("reasoning_content"), message.get("content")
        if reasoning:
            raise CheckFailed(f"reasoning_content despite enable_thinking=false: {_short(reasoning, 60)!r}")
        if not isinstance(content, str) or not content.strip() or "</think>" in content:
            raise CheckFailed(f"expected a plain answer: {_short(json.dumps(message))}")
        return f"no reasoning_content, content {_short(content, 40)!r}"

    def tool_call(self) -> str:
        message = _message(self.chat("What is the weather like in Paris right now? Use the tool.",
                                     tools=[WEATHER_TOOL], tool_choice="auto",
                                     chat_template_kwargs={"enable_thinking": False}))
        calls = message.get("tool_calls")
        if not isinstance(calls, list) or not calls:
            hint = " (is --tool-call-parser set?)" if "<tool_call>" in str(message.get("content")) else ""
            raise CheckFailed(f"no parsed tool_calls{hint}: {_short(json.dumps(message))}")
        function = calls[0].get("function") or {}
        if function.get("name") != "get_weather":
            raise CheckFailed(f"tool call names {function.get('name')!r}, expected 'get_weather'")
        raw = function.get("arguments")
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise CheckFailed(f"tool call arguments are not a JSON object: {raw!r}")
        if not isinstance(arguments.get("city"), str) or not arguments["city"]:
            raise CheckFailed(f"tool call arguments lack the required 'city': {raw}")
        return f"get_weather({raw})"

    def image(self) -> str:
        uri = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
        message = _message(self.chat([{"type": "image_url", "image_url": {"url": uri}},
                                      {"type": "text", "text": "What color is this image? One word."}],
                                     chat_template_kwargs={"enable_thinking": False}))
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise CheckFailed(f"empty answer to an image: {_short(json.dumps(message))}")
        return f"content: {_short(content, 60)!r}"


def run_smoke(url: str, *, model: str | None = None, image: bool = False, timeout: float = 300,
              max_tokens: int = 2048, skip: Sequence[str] = (), api_key: str | None = None) -> SmokeReport:
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise UserError(f"unknown check(s) to skip: {', '.join(unknown)}; checks: {', '.join(CHECKS)}")
    smoke = Smoke(Client(url, timeout, api_key), model=model, max_tokens=max_tokens)
    report = SmokeReport(url=smoke.client.base, model=model)
    steps: list[tuple[str, Callable[[], str]]] = [
        ("health", smoke.health), ("models", smoke.models), ("chat", smoke.chat_plain),
        ("thinking", smoke.thinking), ("thinking-off", smoke.thinking_off), ("tool-call", smoke.tool_call),
    ]
    if image:
        steps.append(("image", smoke.image))
    for name, step in steps:
        if name in skip:
            report.checks.append(CheckResult(name, ok=True, detail="skipped on request", skipped=True))
            continue
        started = time.monotonic()
        try:
            detail, ok = step(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        report.checks.append(CheckResult(name, ok, detail, round(time.monotonic() - started, 3)))
        if not ok and name in ("health", "models"):
            break  # nothing else can work
    report.model = smoke.model
    return report


# ---------------------------------------------------------------------------------------------- CLI

def cmd_smoke(args: argparse.Namespace) -> int:
    api_key = args.api_key
    if args.api_key_file:
        try:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--api-key-file {args.api_key_file}: {exc.strerror}") from None
    report = run_smoke(args.url, model=args.model, image=args.image, timeout=args.timeout,
                       max_tokens=args.max_tokens, skip=args.skip or (), api_key=api_key or None)
    if args.json:
        print_json(report.as_dict())
    else:
        print(report.as_text())
    return 0 if report.ok else 1


def register(sub) -> None:
    p = sub.add_parser(
        "smoke", help="check a served endpoint: chat, thinking on/off, tool calls, optional image",
        description="Send the cookbook's smoke requests to an OpenAI-compatible SGLang endpoint and check the "
                    "answers: a chat completion; thinking on gives reasoning_content separate from content; "
                    "chat_template_kwargs enable_thinking=false gives none; a tool call comes back parsed in "
                    "tool_calls with JSON arguments; --image adds an image input. Exit 0 when all pass, 1 when "
                    "any fails.",
        epilog="Example: qwen35-prov smoke --url http://10.0.0.11:30000 --json")
    p.add_argument("--url", required=True, help="the replica's endpoint, e.g. http://HOST:30000 (a /v1 suffix is fine)")
    p.add_argument("--model", help="model name to request (default: the first one /v1/models lists)")
    p.add_argument("--image", action="store_true", help="also send an image (the model's vision path)")
    p.add_argument("--skip", action="append", choices=CHECKS, metavar="CHECK",
                   help=f"skip a check (repeatable): {', '.join(CHECKS)}")
    p.add_argument("--timeout", type=float, default=300, help="seconds per request (default 300)")
    p.add_argument("--max-tokens", type=int, default=2048, help="max_tokens per request (default 2048: room to think)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key-file", help="file holding the API key (a deployment of `up`: the path "
                                            "`status --json` gives as api_key_file)")
    key.add_argument("--api-key", help="the API key itself (visible in ps and shell history: prefer --api-key-file)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_smoke)
