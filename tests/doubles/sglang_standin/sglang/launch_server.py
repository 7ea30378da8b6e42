"""TEST DOUBLE of `python3 -m sglang.launch_server` (SGLang 0.5.23), for qwen35-prov's sandbox tests.

No GPU and no model exist where the tests run, so this stand-in takes the place of the inference engine:
- it parses the same argv with a parser rebuilt from SGLang's own (server_args.json, generated at build
  time) and exits 2 with argparse's message on anything SGLang would reject;
- `--model-path` must be a directory (SGLang would otherwise try the hub, which an air-gapped node lacks);
- the head (`--node-rank 0`) serves `/health`, `/health_generate`, `/v1/models`, `/v1/chat/completions`,
  `/metrics` (with `--enable-metrics`), `/get_model_info`, `/get_server_info` on `--host`/`--port`;
- chat completions have the shapes the cookbook describes: thinking goes to `reasoning_content` when
  `--reasoning-parser` is set and the request did not pass `chat_template_kwargs: {"enable_thinking": false}`
  (without the parser it stays inline, ending in `</think>`); with `tools` and `--tool-call-parser` the
  answer is a parsed `tool_calls` entry with JSON `arguments` (without the parser: raw `<tool_call>` text);
  image parts (data: URIs) are decoded and described;
- multi-node (`--nnodes N`): the head listens on the port of `--dist-init-addr`; every rank > 0 connects
  there, says `RANK r N` and keeps the connection; the head reports healthy only once all N-1 ranks are
  connected. A rank whose head connection drops exits 1. A rank that drops after the group formed breaks
  the head for good (503, like a broken NCCL communicator) until it is restarted.

Environment knobs (test-only): SGLANG_STANDIN_LOAD_SECONDS (simulated weight loading, default 1),
SGLANG_STANDIN_CONNECT_TIMEOUT (how long a rank retries the head, default 300 s).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from ._standin_args import build_parser, load_spec

TAG = "[sglang-standin TEST DOUBLE]"


def log(message: str) -> None:
    print(f"{TAG} {message}", flush=True)


def fail(message: str, status: int = 1) -> "NoReturn":  # noqa: F821
    log(f"error: {message}")
    sys.stdout.flush()
    os._exit(status)


# ---------------------------------------------------------------------------------------------- arguments

def merge_config(argv: list[str]) -> list[str]:
    """`--config FILE` as SGLang reads it: the file's options go before the command line's (which win).
    The stand-in reads JSON, the subset of YAML that the sglang_server role writes."""
    if "--config" not in argv:
        return argv
    i = argv.index("--config")
    if i + 1 >= len(argv):
        fail("--config needs a file", 2)
    path, rest = argv[i + 1], argv[:i] + argv[i + 2:]
    try:
        options = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as exc:
        fail(f"--config {path}: {exc}", 2)
    merged = []
    for key, value in options.items():
        merged += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return merged + rest


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser(load_spec())
    args = parser.parse_args(merge_config(argv))  # exits 2 with argparse's message, exactly like SGLang's parser
    # the few cross-checks ServerArgs makes that matter for a launch command
    if args.nnodes < 1:
        parser.error(f"--nnodes must be at least 1, got {args.nnodes}")
    if not 0 <= args.node_rank < args.nnodes:
        parser.error(f"--node-rank {args.node_rank} is out of range for --nnodes {args.nnodes}")
    if args.nnodes > 1:
        if not args.dist_init_addr:
            parser.error("--dist-init-addr is required with --nnodes > 1")
        host, sep, port = args.dist_init_addr.rpartition(":")
        if not sep or not host or not port.isdigit():
            parser.error(f"--dist-init-addr must be HOST:PORT, got {args.dist_init_addr!r}")
        if args.tp_size % args.nnodes:
            parser.error(f"--tp-size {args.tp_size} is not divisible by --nnodes {args.nnodes}")
    if args.model_loader_extra_config:
        try:
            json.loads(args.model_loader_extra_config)
        except ValueError as exc:
            parser.error(f"--model-loader-extra-config is not JSON: {exc}")
    return args


def dist_init(args: argparse.Namespace) -> tuple[str, int]:
    host, _, port = args.dist_init_addr.rpartition(":")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------------------------- state

class State:
    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args = args
        self.argv = argv
        self.lock = threading.Lock()
        self.loaded = False
        self.ranks: dict[int, socket.socket] = {}
        self.group_formed = False
        self.broken: str | None = None
        self.started = time.time()
        self.requests = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.running = 0

    @property
    def served_name(self) -> str:
        return self.args.served_model_name or self.args.model_path

    def healthy(self) -> tuple[bool, str]:
        with self.lock:
            if self.broken:
                return False, self.broken
            if os.environ.get("SGLANG_STANDIN_REFUSE_HEALTH"):  # TEST DOUBLE switch: an image that never gets healthy
                return False, "refusing health: SGLANG_STANDIN_REFUSE_HEALTH is set (TEST DOUBLE broken variant)"
            if not self.loaded:
                return False, "loading weights"
            missing = self.args.nnodes - 1 - len(self.ranks)
            if missing:
                return False, f"waiting for {missing} of {self.args.nnodes - 1} rank(s) to join"
            return True, "ok"


# ---------------------------------------------------------------------------------------------- multi-node

def serve_dist_init(state: State) -> None:
    """Head: accept rank connections on the dist-init port (all interfaces, like torch's TCPStore)."""
    _, port = dist_init(state.args)
    listener = socket.create_server(("0.0.0.0", port), reuse_port=False)
    log(f"dist-init listening on 0.0.0.0:{port} for {state.args.nnodes - 1} rank(s)")
    while True:
        conn, peer = listener.accept()
        threading.Thread(target=handle_rank, args=(state, conn, peer), daemon=True).start()


def handle_rank(state: State, conn: socket.socket, peer) -> None:
    conn.settimeout(10)
    try:
        line = conn.makefile("r").readline().split()
    except OSError:
        line = []
    if len(line) != 3 or line[0] != "RANK" or not line[1].isdigit():
        conn.close()  # a port probe (e.g. a unit waiting for this port), not a rank
        return
    rank, nnodes = int(line[1]), line[2]
    if nnodes != str(state.args.nnodes) or not 0 < rank < state.args.nnodes:
        log(f"rejecting {peer[0]}: rank {rank} of {nnodes} does not fit --nnodes {state.args.nnodes}")
        conn.sendall(b"ERR bad rank\n")
        conn.close()
        return
    with state.lock:
        old = state.ranks.get(rank)
        state.ranks[rank] = conn
        joined = len(state.ranks)
        if joined == state.args.nnodes - 1:
            state.group_formed = True
    if old is not None:
        old.close()
    conn.sendall(b"OK\n")
    log(f"rank {rank} joined from {peer[0]} ({joined}/{state.args.nnodes - 1})")
    conn.settimeout(None)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    with state.lock:
        if state.ranks.get(rank) is conn:
            del state.ranks[rank]
            if state.group_formed and not state.broken:
                state.broken = f"rank {rank} left the process group; restart the whole replica"
                log(f"rank {rank} connection lost after the group formed: this head is broken until restarted")
            else:
                log(f"rank {rank} left before the group formed")


def run_rank(args: argparse.Namespace) -> None:
    """Rank > 0: join the head's dist-init address and hold the connection; exit 1 when it drops."""
    host, port = dist_init(args)
    deadline = time.monotonic() + float(os.environ.get("SGLANG_STANDIN_CONNECT_TIMEOUT", "300"))
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=5)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                fail(f"rank {args.node_rank}: could not reach the head at {host}:{port}: {exc}")
            time.sleep(1)
    conn.sendall(f"RANK {args.node_rank} {args.nnodes}\n".encode())
    reply = conn.makefile("r").readline().strip()
    if reply != "OK":
        fail(f"rank {args.node_rank}: the head at {host}:{port} refused this rank: {reply or 'closed'}")
    conn.settimeout(None)
    log(f"rank {args.node_rank} joined the head at {host}:{port}")
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    fail(f"rank {args.node_rank}: lost the connection to the head at {host}:{port}")


# ---------------------------------------------------------------------------------------------- chat

def _last_user(messages: list) -> tuple[str, list[dict]]:
    text, images = "", []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        images = []
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for part in content:
                if not isinstance(part, dict):
                    raise ValueError("message content parts must be objects")
                if part.get("type") == "text":
                    parts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    images.append(_describe_image((part.get("image_url") or {}).get("url", "")))
            text = " ".join(parts)
    return text, images


def _describe_image(url: str) -> dict:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise ValueError("image_url data URI is not valid base64") from None
        info = {"bytes": len(raw), "format": header[5:].split(";")[0] or "unknown"}
        if raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) >= 24:
            info["width"], info["height"] = struct.unpack(">II", raw[16:24])
        return info
    if url.startswith(("http://", "https://")):
        return {"url": url}
    raise ValueError("image_url.url must be a data: URI or an http(s) URL")


def _fake_arguments(schema: dict, text: str) -> dict:
    props = (schema or {}).get("properties") or {}
    words = [w.strip(".,?!;:'\"") for w in text.split()]
    proper = [w for w in words[1:] if w[:1].isupper()] or ["Paris"]
    out = {}
    for name, prop in props.items():
        kind = (prop or {}).get("type", "string")
        if prop and prop.get("enum"):
            out[name] = prop["enum"][0]
        elif kind == "string":
            out[name] = proper[0]
        elif kind == "integer":
            out[name] = 1
        elif kind == "number":
            out[name] = 1.5
        elif kind == "boolean":
            out[name] = True
        elif kind == "array":
            out[name] = []
        else:
            out[name] = {}
    return out


def _thinking_enabled(args: argparse.Namespace, body: dict) -> bool:
    defaults = {}
    if args.default_chat_template_kwargs:
        defaults = dict(args.default_chat_template_kwargs)
    kwargs = {**defaults, **(body.get("chat_template_kwargs") or {})}
    return kwargs.get("enable_thinking", True) is not False  # Qwen3.5 thinks unless told not to


def chat_completion(state: State, body: dict) -> dict:
    args = state.args
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    if body.get("stream"):
        raise ValueError("stream=true is not implemented by the test double")
    text, images = _last_user(messages)
    thinking = _thinking_enabled(args, body)
    tools = body.get("tools") or []
    tool_choice = body.get("tool_choice", "auto")
    message: dict = {"role": "assistant", "content": None, "reasoning_content": None, "tool_calls": None}
    finish = "stop"

    answer = f"Stand-in answer: you wrote {len(text.split())} word(s)."
    if images:
        shapes = ", ".join(f"{i.get('width', '?')}x{i.get('height', '?')} {i.get('format', 'image')}" if "url" not in i
                           else i["url"] for i in images)
        answer = f"Stand-in answer: {len(images)} image(s) ({shapes}) and {len(text.split())} word(s)."
    content: str | None = answer
    if tools and tool_choice != "none":
        chosen = tools[0]
        if isinstance(tool_choice, dict):
            wanted = (tool_choice.get("function") or {}).get("name")
            chosen = next((t for t in tools if (t.get("function") or {}).get("name") == wanted), None)
            if chosen is None:
                raise ValueError(f"tool_choice names an unknown function {wanted!r}")
        function = chosen.get("function") or {}
        name = function.get("name")
        if not name:
            raise ValueError("every tool needs function.name")
        arguments = _fake_arguments(function.get("parameters") or {}, text)
        if args.tool_call_parser:
            message["tool_calls"] = [{
                "id": f"call_{uuid.uuid4().hex[:24]}", "index": 0, "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }]
            content = None
            finish = "tool_calls"
        else:  # what the model emits when nobody parses it (Qwen3-Coder XML)
            params = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in arguments.items())
            content = f"<tool_call>\n<function={name}>\n{params}</function>\n</tool_call>"
    if thinking:
        reasoning = f"The user asked something in {len(text.split())} word(s); a short answer will do."
        if args.reasoning_parser:
            message["reasoning_content"] = reasoning
        else:
            content = f"{reasoning}\n</think>\n\n{content or ''}"
    message["content"] = content

    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict)) + 8
    completion_tokens = len(str(content or "").split()) + len(str(message["reasoning_content"] or "").split())
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError("max_tokens must be a positive integer")
    with state.lock:
        state.requests += 1
        state.prompt_tokens += prompt_tokens
        state.generation_tokens += completion_tokens
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": state.served_name,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish,
                     "matched_stop": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def metrics_text(state: State) -> str:
    labels = f'model_name="{state.served_name}"'
    ok, _ = state.healthy()
    with state.lock:
        rows = [
            ("sglang:num_requests_total", "counter", "Number of requests processed.", state.requests),
            ("sglang:prompt_tokens_total", "counter", "Number of prefill tokens processed.", state.prompt_tokens),
            ("sglang:generation_tokens_total", "counter", "Number of generation tokens processed.",
             state.generation_tokens),
            ("sglang:num_running_reqs", "gauge", "The number of running requests.", state.running),
            ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue.", 0),
            ("sglang:token_usage", "gauge", "The token usage.", 0.0),
            ("sglang:standin_ranks_connected", "gauge", "TEST DOUBLE: ranks connected to this head.",
             len(state.ranks)),
            ("sglang:standin_healthy", "gauge", "TEST DOUBLE: 1 when /health answers 200.", int(ok)),
        ]
    out = []
    for name, kind, help_text, value in rows:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------- HTTP

OPEN_PATHS = ("/health", "/ready", "/metrics")          # SGLang 0.5.23 (sglang/srt/utils/auth.py)
ADMIN_OPTIONAL_PATHS = ("/update_weights_from_disk", "/release_memory_occupation", "/start_profile")


def authorized(args: argparse.Namespace, path: str, header: str | None) -> bool:
    """SGLang's rule: /health, /ready and /metrics are open; admin endpoints take the admin key when one is set
    (else the API key); every other endpoint takes the API key when one is set."""
    if path.startswith(OPEN_PATHS):
        return True
    if path in ADMIN_OPTIONAL_PATHS and args.admin_api_key:
        expected = args.admin_api_key
    elif args.api_key:
        expected = args.api_key
    else:
        return True
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token, expected)


def make_handler(state: State):
    class Handler(BaseHTTPRequestHandler):
        server_version = f"sglang-standin/{__version__}"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # one line per request in the journal
            log(f"http {self.address_string()} {fmt % a}")

        def _send(self, status: int, payload, content_type: str = "application/json") -> None:
            body = payload if isinstance(payload, bytes) else (
                payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"object": "error", "message": message, "type": "BadRequestError"
                                if status == 400 else "ServiceUnavailable", "code": status})

        def _refused(self, path: str) -> bool:
            if authorized(state.args, path, self.headers.get("Authorization")):
                return False
            self._send(401, {"error": "Unauthorized"})
            return True

        def do_GET(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            if self._refused(path):
                return None
            ok, why = state.healthy()
            if path in ("/health", "/health_generate"):
                return self._send(200, b"") if ok else self._error(503, why)
            if path == "/v1/models":
                if not ok:
                    return self._error(503, why)
                return self._send(200, {"object": "list", "data": [{
                    "id": state.served_name, "object": "model", "created": int(state.started), "owned_by": "sglang",
                    "root": state.served_name, "max_model_len": state.args.context_length}]})
            if path == "/metrics":
                if not state.args.enable_metrics:
                    return self._error(404, "metrics are off (start with --enable-metrics)")
                return self._send(200, metrics_text(state), "text/plain; version=0.0.4")
            if path == "/get_model_info":
                return self._send(200, {"model_path": state.args.model_path, "tokenizer_path": state.args.model_path,
                                        "is_generation": True, "served_model_name": state.served_name})
            if path in ("/get_server_info", "/server_info"):
                info = {k: v for k, v in vars(state.args).items() if _is_json(v) and "api_key" not in k}
                info["version"] = __version__
                info["standin"] = {"test_double": True, "argv": state.argv, "healthy": ok, "status": why,
                                   "ranks_connected": sorted(state.ranks)}
                return self._send(200, info)
            return self._error(404, f"no route {path}")

        def do_POST(self):  # noqa: N802
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self._refused(path):
                return None
            if path in ADMIN_OPTIONAL_PATHS:
                return self._send(200, {"success": True, "message": "TEST DOUBLE: nothing was changed"})
            if path != "/v1/chat/completions":
                return self._error(404, f"no route {path}")
            ok, why = state.healthy()
            if not ok:
                return self._error(503, why)
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request body must be a JSON object")
                with state.lock:
                    state.running += 1
                try:
                    result = chat_completion(state, body)
                finally:
                    with state.lock:
                        state.running -= 1
            except ValueError as exc:
                return self._error(400, str(exc))
            return self._send(200, result)

    return Handler


def _is_json(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def serve_head(state: State) -> None:
    args = state.args
    if args.nnodes > 1:
        threading.Thread(target=serve_dist_init, args=(state,), daemon=True).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log(f"HTTP on {args.host}:{args.port}, model {state.served_name}, tp {args.tp_size}, nnodes {args.nnodes}")
    time.sleep(float(os.environ.get("SGLANG_STANDIN_LOAD_SECONDS", "1")))
    with state.lock:
        state.loaded = True
    log(f"weights 'loaded' from {args.model_path}")
    last = None
    while True:
        ok, why = state.healthy()
        if why != last:
            log("ready: /health answers 200" if ok else f"not ready: {why}")
            last = why
        time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    log(f"argv {json.dumps(['python3', '-m', 'sglang.launch_server', *argv])}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (log("stopping on signal"), os._exit(0)))
    if not os.path.isdir(args.model_path):
        fail(f"--model-path {args.model_path} is not a directory (is the weights folder mounted?)")
    if args.node_rank > 0:
        run_rank(args)
    else:
        serve_head(State(args, argv))


if __name__ == "__main__":
    main()
