"""Progress of the long phases (issue 20): the downloader's `progress` reading of a staging dir and of an async
job; the live view turning the role's `Weights progress` reports (ansible-runner's retry events of a real
ansible-playbook run) into bytes, rate and ETA per host, and sglang_server's readiness looks into the journal's
last line, as text or as JSON lines."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import weights_script as W
from qwen35_prov.runner import Progress, run_playbook

SCRIPT = W.SCRIPT
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_ID = "Qwen/Qwen3.5-0.8B"


def test_bytes_on_disk_count_partial_files_and_leave_out_the_bookkeeping(tmp_path):
    stage = W.staging_dir(tmp_path, REPO_ID, COMMIT)
    (stage / "sub").mkdir(parents=True)
    (stage / "model-00001.safetensors").write_bytes(b"x" * 600)
    (stage / "sub" / "model-00002.safetensors.incomplete").write_bytes(b"x" * 150)   # a file half-way
    (stage / W.PROGRESS).write_text("{}\n" * 50)
    (stage / W.HEARTBEAT).write_text("1 2\n")
    job = tmp_path / "j1"
    job.write_text(json.dumps({"started": 1, "finished": 0, "ansible_job_id": "j1"}))
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000, job) == {
        "done_bytes": 750, "total_bytes": 1000, "published": False, "finished": False}
    job.write_text(json.dumps({"rc": 0, "stdout": "{}"}))       # the job wrote its result over the record
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000, job)["finished"] is True
    job.write_text('{"rc": 0, "std')                             # being written
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000, job)["finished"] is False


def test_the_job_file_may_be_named_from_the_home_folder(tmp_path, monkeypatch):
    # Mitogen's strategy reports no results_file: the role names the job file ~/.ansible_async/<jid>, and Mitogen's
    # record says "started" with "finished": 0 until the module's result replaces it
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ansible_async").mkdir()
    (tmp_path / ".ansible_async" / "j2").write_text(json.dumps({"started": 1, "finished": 0, "pid": 7}))
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000, "~/.ansible_async/j2")["finished"] is False
    (tmp_path / ".ansible_async" / "j2").write_text(json.dumps({"rc": 0, "stdout": "{}", "ansible_job_id": "j2"}))
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000, "~/.ansible_async/j2")["finished"] is True


def test_a_published_snapshot_is_all_there_and_nothing_on_disk_is_nothing(tmp_path):
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000)["done_bytes"] == 0
    final = W.snapshot_dir(tmp_path, REPO_ID, COMMIT)
    final.mkdir(parents=True)
    (final / W.MARKER).write_text(json.dumps({"format": "qwen35-weights-marker/1", "files": []}))
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000, tmp_path / "gone")["done_bytes"] == 1000
    assert W.progress(tmp_path, REPO_ID, COMMIT, 1000, tmp_path / "gone")["finished"] is True   # no record left


def test_the_command_line_refuses_a_path_for_a_commit(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "progress", "--root", str(tmp_path), "--repo", REPO_ID,
                        "--commit", "../../etc", "--total-bytes", "1"], capture_output=True, text=True)
    assert r.returncode != 0 and "40-hex commit" in r.stderr
    r = subprocess.run([sys.executable, str(SCRIPT), "progress", "--root", str(tmp_path), "--repo", REPO_ID,
                        "--commit", COMMIT, "--total-bytes", "10"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["done_bytes"] == 0


# A play shaped like the role's report: the task named "Weights progress ..." polls with until/retries; here it
# reads a counter that grows by 400 bytes per look, so each retry event carries a bigger number.
PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Weights progress, bytes on disk every N seconds, N = 1
      ansible.builtin.command:
        argv: [{python}, -c, "{code}", {counter}]
      register: report
      until: (report.stdout | from_json).finished
      retries: 10
      delay: 1
      changed_when: false
"""
CODE = ("import json, sys, pathlib; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) + 400 "
        "if p.exists() else 200; p.write_text(str(n)); done = min(n, 1000); "
        "print(json.dumps({'done_bytes': done, 'total_bytes': 1000, 'finished': done >= 1000}))")


def _run(tmp_path, progress, play_text=None):
    play = tmp_path / "progress.yml"
    play.write_text(play_text or PLAY.format(python=sys.executable, code=CODE, counter=tmp_path / "counter"))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"all:\n  hosts:\n    localhost:\n      ansible_python_interpreter: {sys.executable}\n")
    result = run_playbook(str(play), inventory, state_dir=tmp_path / "state", progress=progress)
    assert result.ok, result.failures


def test_the_live_view_prints_bytes_rate_and_eta_per_host_from_each_report(tmp_path):
    out = io.StringIO()
    _run(tmp_path, Progress(stream=out))
    lines = [line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("weights")]
    assert lines[0] == "weights localhost: 0.00 / 0.00 GB (20 %), -, ETA -"   # one report: no rate yet
    assert [line.split("(")[1].split(")")[0] for line in lines] == ["20 %", "60 %", "100 %"]
    assert "MB/s" in lines[1] and "ETA" in lines[1] and "ETA -" not in lines[1]
    assert lines[-1].endswith("ETA 0 s")


def test_with_json_events_each_report_is_a_json_line(tmp_path):
    out = io.StringIO()
    _run(tmp_path, Progress(stream=out, json_events=True))
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    assert [(e["event"], e["host"], e["done_bytes"], e["total_bytes"]) for e in events] == [
        ("weights_progress", "localhost", 200, 1000), ("weights_progress", "localhost", 600, 1000),
        ("weights_progress", "localhost", 1000, 1000)]
    assert events[0]["bytes_per_s"] is None and events[1]["bytes_per_s"] > 0 and events[2]["eta_s"] == 0


# sglang_server's readiness look: /health's answer and the journal's last line, until 200.
READY_PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Wait for /health (the journal's last line meanwhile) on replica 0
      ansible.builtin.command:
        argv: [{python}, -c, "{code}", {counter}]
      register: look
      until: (look.stdout | from_json).status == 200
      retries: 10
      delay: 1
      changed_when: false
"""
READY_CODE = ("import json, sys, pathlib; p = pathlib.Path(sys.argv[1]); n = int(p.read_text()) + 1 "
              "if p.exists() else 1; p.write_text(str(n)); print(json.dumps({'status': 200 if n >= 3 else 503, "
              "'line': f'Load weight begin. shard {n} of 2'}))")


def test_while_a_head_loads_the_live_view_shows_its_journals_last_line(tmp_path):
    play = READY_PLAY.format(python=sys.executable, code=READY_CODE, counter=tmp_path / "counter")
    out = io.StringIO()
    _run(tmp_path, Progress(stream=out), play)
    lines = [line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("..")]
    assert lines == [".. localhost: replica 0 (503): Load weight begin. shard 1 of 2",
                     ".. localhost: replica 0 (503): Load weight begin. shard 2 of 2"]
    out = io.StringIO()
    (tmp_path / "counter").unlink()
    _run(tmp_path, Progress(stream=out, json_events=True), play)
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    assert [(e["event"], e["host"], e["task"], e["status"]) for e in events] == [
        ("readiness", "localhost", "replica 0", 503)] * 2
