"""Runs playbooks through ansible-runner, turning its event stream into live progress and a summary."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import collection

#: facts a play sets to report to the CLI: the playbooks' own, and roles' (named with the role's prefix)
REPORT_FACTS = ("qwen35_report", "sglang_router_report")

#: how Ansible runs tasks on the hosts: Mitogen's linear strategy (one Python per host that stays for the whole run,
#: so a task costs no interpreter start and no module upload) where mitogen is installed, else Ansible's own
STRATEGY_ENV = "QWEN35_ANSIBLE_STRATEGY"



class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C while a playbook ran; `result` holds what its events had reported by then."""

    def __init__(self, result: "RunResult") -> None:
        super().__init__()
        self.result = result


@dataclass
class HostCounts:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ok": self.ok, "changed": self.changed, "failed": self.failed + self.unreachable,
                "unreachable": self.unreachable, "skipped": self.skipped}


@dataclass
class Failure:
    host: str
    phase: str
    task: str
    message: str


@dataclass
class RunResult:
    status: str
    rc: int
    hosts: dict[str, HostCounts] = field(default_factory=dict)
    phases: list[tuple[str, float]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _message(res: dict[str, Any]) -> str:
    for key in ("msg", "stderr", "reason", "module_stderr"):
        value = res.get(key)
        if value:
            text = value if isinstance(value, str) else str(value)
            return " ".join(text.strip().split())[:600]
    if res.get("results"):
        failed = [r for r in res["results"] if isinstance(r, dict) and r.get("failed")]
        if failed:
            return _message(failed[0])
    return "failed (no message)"


#: The model_weights task that reports, every few seconds, the bytes on disk of a running download or copy
WEIGHTS_PROGRESS_TASK = "Weights progress"
#: sglang_server's readiness wait: each look reports /health's answer and the unit's last journal line
READINESS_TASK = "Wait for /health"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Prints what happens on which host while it happens: a line per phase, per change and per failure, the
    weights' bytes, rate and ETA per host while they download, and what a replica head's journal says while it
    loads. With json_events those two are JSON lines ({"event": "weights_progress" | "readiness", ...}) for
    machines reading the live view."""

    def __init__(self, stream=None, verbose: bool = False, json_events: bool = False) -> None:
        from rich.console import Console

        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.verbose = verbose
        self.json_events = json_events

    def weights(self, host: str, done: int, total: int, rate: float | None, eta: float | None) -> None:
        if self.json_events:
            self.stream.write(json.dumps({"event": "weights_progress", "host": host, "done_bytes": done,
                                          "total_bytes": total, "bytes_per_s": None if rate is None else round(rate),
                                          "eta_s": None if eta is None else round(eta)}) + "\n")
            self.stream.flush()
            return
        pct = 100.0 * done / total if total else 100.0
        speed = "-" if rate is None else f"{rate / 1e6:.1f} MB/s"
        left = "-" if eta is None else _duration(eta)
        self.console.print(f"    [blue]weights[/] {host}: {done / 1e9:.2f} / {total / 1e9:.2f} GB ({pct:.0f} %), "
                           f"{speed}, ETA {left}")

    def waiting(self, host: str, what: str, status: Any, line: str) -> None:
        if self.json_events:
            self.stream.write(json.dumps({"event": "readiness", "host": host, "task": what, "status": status,
                                          "line": line}) + "\n")
            self.stream.flush()
            return
        from rich.markup import escape

        self.console.print(f"    [dim]..[/] {escape(host)}: {escape(what)} ({escape(str(status))}): {escape(line)}")

    def phase(self, name: str) -> None:
        self.console.print(f"[bold cyan]==>[/] [bold]{name}[/]")

    def phase_done(self, name: str, seconds: float) -> None:
        self.console.print(f"    [dim]{name}: {seconds:.1f} s[/]")

    def task(self, name: str) -> None:
        if self.verbose:
            self.console.print(f"    [dim]- {name}[/]")

    def changed(self, host: str, task: str) -> None:
        self.console.print(f"    [yellow]~[/] {host}: {task}")

    def failed(self, failure: Failure) -> None:
        self.console.print(f"    [bold red]x {failure.host}[/]: {failure.task}: {failure.message}")

    def unreachable(self, host: str, message: str) -> None:
        self.console.print(f"    [bold red]x {host} unreachable[/]: {message}")


class _EventCollector:
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.result = RunResult(status="ok", rc=0)
        self.phase = ""
        self.phase_start = 0.0
        self.task = ""
        self.weights_first: dict[str, tuple[float, int]] = {}   # host -> (when, bytes) of its first report

    def _readiness(self, host: str, task: str, res: dict[str, Any]) -> None:
        try:
            look = json.loads(res.get("stdout") or "")
        except ValueError:
            return
        if self.progress and isinstance(look, dict):
            what = "replica " + task.rsplit("replica ", 1)[-1] if "replica " in task else task
            self.progress.waiting(host, what, look.get("status"), str(look.get("line") or "(no journal line yet)"))

    def _weights(self, host: str, res: dict[str, Any]) -> None:
        try:
            sample = json.loads(res.get("stdout") or "")
            done, total = int(sample["done_bytes"]), int(sample["total_bytes"])
        except (ValueError, TypeError, KeyError):
            return
        now = time.monotonic()
        first_at, first_done = self.weights_first.setdefault(host, (now, done))
        rate = (done - first_done) / (now - first_at) if now > first_at and done > first_done else None
        eta = (total - done) / rate if rate else (0.0 if done >= total else None)
        if self.progress:
            self.progress.weights(host, done, total, rate, eta)

    def _close_phase(self) -> None:
        if self.phase:
            seconds = time.monotonic() - self.phase_start
            self.result.phases.append((self.phase, round(seconds, 1)))
            if self.progress:
                self.progress.phase_done(self.phase, seconds)

    def __call__(self, event: dict[str, Any]) -> bool:
        name = event.get("event")
        data = event.get("event_data", {})
        if name == "playbook_on_play_start":
            self._close_phase()
            self.phase = data.get("play", "") or data.get("name", "")
            self.phase_start = time.monotonic()
            if self.progress:
                self.progress.phase(self.phase)
        elif name == "playbook_on_task_start":
            self.task = data.get("task", "")
            if self.progress:
                self.progress.task(self.task)
        elif name == "runner_retry" and data.get("task", "").startswith(WEIGHTS_PROGRESS_TASK):
            self._weights(data.get("host", "?"), data.get("res", {}) or {})
        elif name == "runner_retry" and data.get("task", "").startswith(READINESS_TASK):
            self._readiness(data.get("host", "?"), data.get("task", ""), data.get("res", {}) or {})
        elif name in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            host = data.get("host", "?")
            if name == "runner_on_ok" and data.get("task", "").startswith(WEIGHTS_PROGRESS_TASK):
                self._weights(host, data.get("res", {}) or {})
            counts = self.result.hosts.setdefault(host, HostCounts())
            res = data.get("res", {}) or {}
            if name == "runner_on_ok":
                counts.ok += 1
                if res.get("changed"):
                    counts.changed += 1
                    if self.progress:
                        self.progress.changed(host, data.get("task", self.task))
                facts = res.get("ansible_facts", {})
                for key in REPORT_FACTS:
                    if isinstance(facts.get(key), dict):
                        self.result.facts.setdefault(host, {}).update(facts[key])
            elif name == "runner_on_skipped":
                counts.skipped += 1
            elif name == "runner_on_failed" and not data.get("ignore_errors"):
                counts.failed += 1
                failure = Failure(host, self.phase, data.get("task", self.task), _message(res))
                self.result.failures.append(failure)
                if self.progress:
                    self.progress.failed(failure)
            elif name == "runner_on_unreachable":
                counts.unreachable += 1
                failure = Failure(host, self.phase, data.get("task", self.task), "unreachable: " + _message(res))
                self.result.failures.append(failure)
                if self.progress:
                    self.progress.unreachable(host, _message(res))
        elif name == "playbook_on_stats":
            self._close_phase()
            self.phase = ""
        return True


def _forget_environment(artifact_dir: Path) -> None:
    """ansible-runner records the run's whole environment (HF_TOKEN and any other secret of the controller's) in
    artifacts/<id>/command; keep only the command line and the folder it ran in."""
    record = artifact_dir / "command"
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and "env" in data:
        data.pop("env")
        fd, tmp = tempfile.mkstemp(dir=artifact_dir, prefix=".command.")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, record)


def strategy_env() -> dict[str, str]:
    """The settings that choose Ansible's strategy: $QWEN35_ANSIBLE_STRATEGY (`linear` turns Mitogen off), else
    mitogen_linear when the mitogen package is importable, else Ansible's default."""
    wanted = os.environ.get(STRATEGY_ENV, "mitogen_linear")
    if not wanted.startswith("mitogen_"):
        return {"ANSIBLE_STRATEGY": wanted}
    try:
        import ansible_mitogen
    except ImportError:
        return {}
    plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return {"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": wanted}


def run_playbook(playbook: str, inventory: Path, *, state_dir: Path, extravars: dict[str, Any] | None = None,
                 check: bool = False, tags: str | None = None, limit: str | None = None,
                 progress: Progress | None = None, envvars: dict[str, str] | None = None) -> RunResult:
    import ansible_runner

    private = state_dir / "runner"
    private.mkdir(parents=True, exist_ok=True)
    collector = _EventCollector(progress)
    cmdline = []
    if check:
        cmdline += ["--check", "--diff"]
    if tags:
        cmdline += ["--tags", tags]
    env = {
        **collection.ansible_env(),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_FORCE_COLOR": "False",
        "ANSIBLE_NOCOLOR": "True",
        # one SSH round trip per task (no temporary files on the host) over one multiplexed connection per host
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=120s",
        # the roles read facts as ansible_facts.X only; copying every fact into a top-level ansible_X variable costs
        # each task on each host a pass over all facts (ansible-core plans this default for a later release)
        "ANSIBLE_INJECT_FACT_VARS": "False",
        # the ansible-playbook of this interpreter's environment, also when that is not on PATH
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **strategy_env(),
        **(envvars or {}),
    }
    # Extra variables go to a 0600 file, never onto a command line where `ps` shows them.
    env_dir = private / "env"
    env_dir.mkdir(exist_ok=True)
    extravars_file = env_dir / "extravars"
    extravars_file.unlink(missing_ok=True)
    if extravars:
        fd = os.open(extravars_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(extravars, out)
    playbooks = collection.root() / "playbooks"
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(playbooks),
            playbook=str(playbooks / playbook),
            inventory=str(inventory),
            envvars=env,
            cmdline=" ".join(cmdline) or None,
            limit=limit,
            quiet=True,
            forks=50,  # every node of a multi-node replica at once (rendezvous, readiness)
            event_handler=collector,
            rotate_artifacts=5,
            suppress_env_files=True,
        )
    except KeyboardInterrupt:
        collector.result.status = "interrupted"
        raise RunInterrupted(collector.result) from None
    _forget_environment(Path(runner.config.artifact_dir))
    result = collector.result
    result.rc = runner.rc
    result.artifacts = str(runner.config.artifact_dir)
    if runner.rc != 0 or runner.status != "successful" or result.failures:
        result.status = "failed"
    if result.status == "failed" and not result.failures:
        stdout = (Path(runner.config.artifact_dir) / "stdout")
        tail = stdout.read_text(errors="replace").strip().splitlines()[-5:] if stdout.exists() else []
        result.failures.append(Failure("-", collector.phase or "ansible", "ansible-playbook",
                                       " / ".join(tail) or f"exit status {runner.rc}"))
    return result


def summarize(result: RunResult, endpoints: list[str]) -> dict[str, Any]:
    return {
        "status": result.status,
        "endpoints": endpoints,
        "hosts": {h: c.as_dict() for h, c in sorted(result.hosts.items())},
        "phases": [{"name": n, "seconds": s} for n, s in result.phases],
        "failures": [f.__dict__ for f in result.failures],
        "artifacts": result.artifacts,
    }
