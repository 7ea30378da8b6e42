"""Filters of the sglang_server role: the container command line of a launch and its systemd quoting.

Kept in Python (not Jinja) so the exact argv is easy to test: tests/test_serving_units.py imports this file.
Nothing here decides a recipe: argv and env come from the planner through the inventory, unchanged.
"""

from __future__ import annotations

import json
import re

_SAFE = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def systemd_quote_word(word) -> str:
    """Quote one argument for an Exec*= line so that systemd hands it over unchanged.

    systemd splits Exec lines on whitespace, honours "..." and '...' anywhere in a word, unescapes C escapes,
    expands $VAR/${VAR} (literal: $$) and %-specifiers (literal: %%), and treats a lone ';' as a separator.
    """
    text = str(word)
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
               .replace("%", "%%").replace("$", "$$"))
    if _SAFE.match(text):
        return escaped
    return f'"{escaped}"'


def systemd_exec(argv) -> str:
    """A whole command line (list of arguments) for ExecStart=/ExecStartPre=."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError(f"systemd_exec needs a non-empty list of arguments, got {argv!r}")
    return " ".join(systemd_quote_word(w) for w in argv)


def sglang_server_env(launch_env, network_interface="", ib_hcas=None, extra=None) -> dict:
    """The environment of one launch: the plan's env; NCCL/GLOO interface and InfiniBand HCAs from the
    inventory where the plan's env does not set them already; then the role's extra variables."""
    env = {str(k): str(v) for k, v in (launch_env or {}).items()}
    if network_interface:
        env.setdefault("NCCL_SOCKET_IFNAME", str(network_interface))
        env.setdefault("GLOO_SOCKET_IFNAME", str(network_interface))
    if ib_hcas:
        env.setdefault("NCCL_IB_HCA", ",".join(str(h) for h in ib_hcas))
    for key, value in (extra or {}).items():
        if str(key) in env and env[str(key)] != str(value):
            raise ValueError(f"sglang_server_env sets {key}, which the plan or inventory already sets to "
                             f"{env[str(key)]!r}; change it there instead")
        env[str(key)] = str(value)
    return dict(sorted(env.items()))


def sglang_server_env_conflicts(extra, launch_env) -> list:
    """Keys of the role's extra env that would change a value the plan or inventory set."""
    launch_env = {str(k): str(v) for k, v in (launch_env or {}).items()}
    return sorted(str(k) for k, v in (extra or {}).items() if str(k) in launch_env and launch_env[str(k)] != str(v))


#: SGLang's compile and autotune caches (SGLang 0.5.23 reads these; upstream's agentic recipes set them): kept on
#: the host under the role's cache folder, so a restarted server skips the compilation
CACHE_ENV = {"SGLANG_CACHE_DIR": "sglang", "SGLANG_DG_CACHE_DIR": "deep_gemm", "FLASHINFER_WORKSPACE_BASE": "flashinfer"}


def sglang_server_cache_dirs(cache_dir) -> list:
    """The host folders of the persistent caches (empty when the role keeps none)."""
    return [f"{cache_dir}/{sub}" for sub in CACHE_ENV.values()] if cache_dir else []


#: where the driver's IMEX channel devices are (NVIDIA IMEX guide, "IMEX Channels"; roles/nvidia_driver makes them)
IMEX_CHANNEL_DIR = "/dev/nvidia-caps-imex-channels"


def sglang_server_run_argv(launch, *, docker, name, image, device_args, vendor_args, shm_size, weights_dir,
                           env_file, env, extra_args=(), auth_file="", cache_dir="", imex_channels=()) -> list:
    """`docker run ...` for one launch: the container wrapping, then the image, then the plan's argv unchanged,
    then `--config AUTH_FILE` when the server has API keys (the file is mounted read-only at the same path).
    CACHE_DIR (a host folder) is mounted read-write at the same path and holds the compile caches (CACHE_ENV).
    IMEX_CHANNELS: the IMEX channel devices a multi-node NVLink tray passes in (/dev/nvidia-caps-imex-channels/)."""
    argv = [str(a) for a in launch["argv"]]
    if not argv:
        raise ValueError(f"launch of replica {launch.get('replica')} has an empty argv")
    cmd = [docker, "run", "--rm", "--name", name]
    cmd += [str(a) for a in device_args]
    for channel in imex_channels or ():
        cmd += ["--device", f"{IMEX_CHANNEL_DIR}/channel{int(channel)}"]
    cmd += [str(a) for a in vendor_args]
    cmd += ["--ipc=host", "--shm-size", str(shm_size), "--network", "host"]
    cmd += ["-v", f"{weights_dir}:{weights_dir}:ro", "--env-file", env_file]
    if auth_file:
        cmd += ["-v", f"{auth_file}:{auth_file}:ro"]
    if cache_dir:
        cmd += ["-v", f"{cache_dir}:{cache_dir}"]
        env = {**{key: f"{cache_dir}/{sub}" for key, sub in CACHE_ENV.items()}, **env}
    for key, value in sorted(env.items()):
        cmd += ["-e", f"{key}={value}"]
    cmd += [str(a) for a in extra_args]
    cmd.append(image)
    return cmd + argv + (["--config", auth_file] if auth_file else [])


def sglang_server_auth_config(api_key, admin_api_key) -> str:
    """The --config file of a keyed server: JSON, which is YAML too (SGLang reads it with yaml.safe_load)."""
    keys = {"api-key": api_key, "admin-api-key": admin_api_key}
    return json.dumps({k: v for k, v in keys.items() if v}, indent=1, sort_keys=True) + "\n"


def sglang_server_redact(text, secrets) -> str:
    """TEXT with every non-empty secret replaced (SGLang logs its arguments, the API key included, at start)."""
    text = str(text)
    for secret in secrets or ():
        if secret:
            text = text.replace(str(secret), "<redacted>")
    return text


def sglang_server_wait_argv(dist_init, timeout) -> list:
    """ExecStartPre of a worker: wait (bounded) until the head's dist-init port accepts connections."""
    host, port = dist_init["host"], int(dist_init["port"])
    script = (f'echo "waiting up to {int(timeout)} s for the head of this replica at {host}:{port}"; '
              f"until (exec 3<>/dev/tcp/{host}/{port}) 2>/dev/null; do sleep 2; done; "
              f'echo "the head at {host}:{port} accepts connections"')
    return ["/usr/bin/timeout", str(int(timeout)), "/bin/bash", "-c", script]


def sglang_server_units(launches) -> list:
    """Per launch: its replica, whether it is the head, its unit names as the planner gave them (launch.units;
    watch only on multi-node replicas), and the members its target starts."""
    out = []
    for launch in launches or []:
        units = launch["units"]
        out.append({"replica": launch["replica"], "node_rank": launch["node_rank"], "is_head": bool(launch["is_head"]),
                    "server": units["server"], "watch": units.get("watch"), "target": units["target"],
                    "members": [u for u in (units["server"], units.get("watch")) if u]})
    return out


class FilterModule:
    def filters(self):
        return {
            "systemd_exec": systemd_exec,
            "systemd_quote_word": systemd_quote_word,
            "sglang_server_env": sglang_server_env,
            "sglang_server_auth_config": sglang_server_auth_config,
            "sglang_server_redact": sglang_server_redact,
            "sglang_server_env_conflicts": sglang_server_env_conflicts,
            "sglang_server_run_argv": sglang_server_run_argv,
            "sglang_server_units": sglang_server_units,
            "sglang_server_cache_dirs": sglang_server_cache_dirs,
            "sglang_server_wait_argv": sglang_server_wait_argv,
        }
