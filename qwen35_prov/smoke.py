"""`qwen35-prov smoke --url URL`: the smoke checks of a served endpoint, from the controller.

The checks themselves (health, models, chat, thinking on and off, tool call, image) are the collection's
plugins/module_utils/smoke_checks.py, which the sglang_smoke role runs on each replica head through the
qwen35.prov.sglang_smoke module: one set of checks for both. This module reports them.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .cli_options import print_json
from .collection import module_utils
from .errors import UserError

_checks = module_utils("smoke_checks")
CHECKS = _checks.CHECKS


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


def base_url(url: str) -> str:
    """Normalize `http://host:port`, `.../v1` or `.../v1/` to `http://host:port` (no trailing slash)."""
    try:
        return _checks.base_url(url)
    except ValueError:
        raise UserError(f"--url must look like http://HOST:PORT (got {url!r})") from None


def run_smoke(url: str, *, model: str | None = None, image: bool = False, timeout: float = 300,
              max_tokens: int = 2048, skip: Sequence[str] = (), api_key: str | None = None) -> SmokeReport:
    base_url(url)
    try:
        result = _checks.run_checks(url, model=model, image=image, timeout=timeout, max_tokens=max_tokens,
                                    skip=tuple(skip), api_key=api_key)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return SmokeReport(url=result["url"], model=result["model"], checks=[CheckResult(**c) for c in result["checks"]])


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
