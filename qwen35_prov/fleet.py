"""The fleet file: the user's own machines (docs/fleet.md), parsed and validated with line numbers.

Every problem is reported as `FILE:LINE: host NAME: FIELD: what is wrong`, all problems at once.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .catalog import Catalog, load_catalog
from .cluster import MAX_GPUS_PER_NODE, ClusterSpec, parse_cluster
from .errors import UserError
from .options import normal_weights_dir, weights_dir_problem

DEFAULT_SSH_PORT = 22
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
TOP_LEVEL_KEYS = ("defaults", "hosts", "clusters", "standins")
_VARIABLE = re.compile(r"^[a-z_][a-z0-9_]*$")
# Host fields, in the order docs/fleet.md lists them. `facts` is written by `fleet probe --update`.
HOST_FIELDS = (
    "name", "address", "ssh_user", "ssh_port", "ssh_key", "known_hosts", "gpu", "gpu_count",
    "network_interface", "ib_hcas", "weights_dir", "weights_storage", "labels", "facts",
)
#: where the weights folder lives: on the host's own disks, or on a network filesystem (NFS, Lustre) that SGLang
#: reads better by prefetching the checkpoint shards (recipes.yaml deployment rule network-weights-prefetch)
WEIGHTS_STORAGE = ("local", "network")
NOT_IN_DEFAULTS = ("name", "address", "facts")
CLUSTER_FIELDS = ("hosts",)
# Inventory hostnames become file names (host_vars/NAME.yml) and Ansible group members.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9._:%-]+$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")  # Linux IFNAMSIZ - 1
_HCA = re.compile(r"^[A-Za-z0-9_.:-]+$")  # NCCL_IB_HCA also accepts mlx5_0:1 (port)
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # useradd's default NAME_REGEX
_PATH = re.compile(r"^[A-Za-z0-9_./~+@-]+$")     # no spaces, quotes, '$', ';', newlines ...
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+-]{0,128}$")
#: Fleet values reach Ansible's inventory, which templates strings: none may carry template syntax.
_TEMPLATE = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class FleetError(UserError):
    """The fleet file breaks its format. The message lists every problem with its line."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        count = f"{len(problems)} problem(s)" if len(problems) > 1 else "1 problem"
        super().__init__(f"fleet file {path}: {count}:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    gpu: str
    gpu_count: int
    ssh_user: str | None = None
    ssh_port: int = DEFAULT_SSH_PORT
    ssh_key: str | None = None  # relative paths resolved against the fleet file's folder; "~" kept
    known_hosts: str | None = None  # as ssh_key; None: ~/.ssh/known_hosts
    network_interface: str | None = None
    ib_hcas: tuple[str, ...] = ()
    weights_dir: str | None = None
    weights_storage: str = "local"
    labels: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] | None = None
    line: int = 0

    @property
    def ssh_key_local(self) -> str | None:
        return str(Path(self.ssh_key).expanduser()) if self.ssh_key else None

    @property
    def known_hosts_local(self) -> str:
        return str(Path(self.known_hosts or DEFAULT_KNOWN_HOSTS).expanduser())

    def facts_conflict(self) -> str | None:
        """What the host's recorded probe facts contradict in its declaration, if anything."""
        facts = self.facts or {}
        if "gpu_count" not in facts and "gpu" not in facts:
            return None
        seen_kind, seen_count = facts.get("gpu"), facts.get("gpu_count")
        if seen_kind == self.gpu and seen_count == self.gpu_count:
            return None
        seen = f"{seen_count} x {seen_kind or facts.get('gpu_name') or 'no known GPU'}"
        return (f"host {self.name}: its probe facts say {seen}, the fleet says {self.gpu_count} x {self.gpu} "
                f"(fix gpu/gpu_count or the host, then run `qwen35-prov fleet probe --update`)")


@dataclass(frozen=True)
class FleetCluster:
    name: str
    hosts: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class Fleet:
    path: Path
    hosts: tuple[Host, ...]
    clusters: Mapping[str, FleetCluster]
    # a sandbox's fleet only (`sandbox create` writes it): the role settings that point the hosts at the sandbox's
    # stand-in services (TEST DOUBLES); the inventory carries them in group_vars/qwen35_nodes/zz-standins.yml
    standins: Mapping[str, Any] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    @property
    def display_path(self) -> str:
        return str(self.path)


# --- YAML with line numbers -------------------------------------------------------------------------------

class _LineDict(dict):
    line: int = 0
    lines: dict

    def line_of(self, key: Any) -> int:
        return self.lines.get(key, self.line)


class _LineList(list):
    line: int = 0
    lines: list


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and list item, and refuses duplicate keys and
    aliases (a few hundred bytes of nested aliases expand to gigabytes: the "billion laughs")."""

    duplicates: list[tuple[int, Any, int]]

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a fleet file; "
                                              "write the value out", event.start_mark)
        return super().compose_node(parent, index)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    result = _LineDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark) from None
        if key in result:
            loader.duplicates.append((line, key, result.lines[key]))
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _LineList:
    result = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _load_yaml(text: str, path: str) -> Any:
    loader = _LineLoader(text)
    loader.duplicates = []
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        raise FleetError(path, [f"{where}: not valid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise FleetError(path, [f"{path}: not valid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise FleetError(path, [f"{path}:{line}: key {key!r} given twice (first on line {first})"
                                for line, key, first in loader.duplicates])
    return doc


# --- validation -------------------------------------------------------------------------------------------

class _Problems:
    def __init__(self, path: str):
        self.path = path
        self.items: list[str] = []

    def add(self, line: int, where: str, message: str) -> None:
        self.items.append(f"{self.path}:{line}: {where}: {message}" if where else f"{self.path}:{line}: {message}")


def _suggest(word: Any, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolve_path(value: str, base: Path) -> str:
    if value.startswith("~") or value.startswith("/"):
        return value
    return str((base / value).resolve())


def _check_field(problems: _Problems, where: str, line: int, key: str, value: Any, catalog: Catalog,
                 base: Path) -> Any:
    """Validate one host field; returns the normalised value, or None after recording a problem."""
    field_where = f"{where}: {key}"

    def bad(message: str) -> None:
        problems.add(line, field_where, message)

    unsafe = _unsafe_text(value)
    if unsafe:
        return bad(unsafe)

    if key in ("name", "address", "ssh_user", "ssh_key", "known_hosts", "network_interface", "weights_dir", "gpu"):
        if not isinstance(value, str) or not value.strip():
            hint = " (quote it)" if isinstance(value, (int, float, bool)) else ""
            return bad(f"expected a non-empty string, got {value!r}{hint}")
        value = value.strip()
    if key == "name" and not _NAME.match(value):
        return bad(f"{value!r} is not a usable inventory hostname (letters, digits, '.', '_', '-'; "
                   f"starting with a letter or digit)")
    if key == "address" and (not _ADDRESS.match(value) or value.startswith("-")):
        return bad(f"{value!r} is not a host name or IP address")
    if key == "ssh_user" and not _USER.match(value):
        return bad(f"{value!r} is not a user name (lower-case letters, digits, '_' and '-', starting with a letter "
                   f"or '_', at most 32)")
    if key == "gpu":
        kind = value.lower()
        if kind not in catalog.gpus:
            return bad(f"unknown GPU kind {value!r}{_suggest(kind, list(catalog.gpus))}; "
                       f"known: {', '.join(catalog.gpus)}")
        return kind
    if key == "gpu_count":
        if not _is_int(value) or not 1 <= value <= MAX_GPUS_PER_NODE:
            return bad(f"expected a whole number from 1 to {MAX_GPUS_PER_NODE}, got {value!r}")
    if key == "ssh_port":
        if not _is_int(value) or not 1 <= value <= 65535:
            return bad(f"expected a port number from 1 to 65535, got {value!r}")
    if key in ("ssh_key", "known_hosts"):
        if not _PATH.match(value) or value.startswith("-"):
            return bad(f"{value!r}: a path of letters, digits and . _ / ~ + @ - only")
        return _resolve_path(value, base)
    if key == "network_interface" and not _IFNAME.match(value):
        return bad(f"{value!r} is not a network interface name (at most 15 characters, no spaces or '/')")
    if key == "weights_storage":
        if value not in WEIGHTS_STORAGE:
            return bad(f"expected one of {', '.join(WEIGHTS_STORAGE)}, got {value!r}")
        return value
    if key == "weights_dir":
        problem = weights_dir_problem(value)
        return bad(f"{value!r} {problem}") if problem else normal_weights_dir(value)
    if key == "ib_hcas":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) and _HCA.match(v) for v in value):
            return bad(f"expected a list of InfiniBand device names such as [mlx5_0, mlx5_1], got {value!r}")
        return tuple(value)
    if key == "labels":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value) or any(
                isinstance(v, (dict, list)) for v in value.values()):
            return bad(f"expected a mapping of label to plain value, such as {{rack: r1}}, got {value!r}")
        wrong = [k for k, v in value.items() if not _LABEL_KEY.match(k)
                 or not (isinstance(v, (int, float, bool)) or (isinstance(v, str) and _LABEL_VALUE.match(v)))]
        if wrong:
            return bad(f"label {wrong[0]!r}: names of letters, digits, '_', '.' and '-'; values numbers or up to "
                       f"128 of letters, digits and _ . : / @ + -")
        return {k: value[k] for k in value}
    if key == "facts":
        if not isinstance(value, dict):
            return bad("expected a mapping (written by `qwen35-prov fleet probe --update`)")
        return _plain(value)
    return value


def _normal_address(address: str) -> str:
    """One spelling per address: IPs as `ipaddress` writes them (::0:1 == ::1), names lower-case without the dot."""
    try:
        return str(ipaddress.ip_address(address.split("%")[0])) + ("%" + address.split("%")[1] if "%" in address else "")
    except ValueError:
        return address.lower().rstrip(".")


def _unsafe_text(value: Any) -> str | None:
    """Why VALUE (or a string inside it) cannot go into an inventory as data, or None."""
    if isinstance(value, dict):
        return next((why for k, v in value.items() for why in (_unsafe_text(k), _unsafe_text(v)) if why), None)
    if isinstance(value, (list, tuple)):
        return next((why for v in value for why in [_unsafe_text(v)] if why), None)
    if isinstance(value, str):
        if _TEMPLATE.search(value):
            return f"{value!r} holds template syntax ({{{{ }}}}, {{% %}} or {{# #}}); fleet values are data"
        if _CONTROL.search(value):
            return f"{value!r} holds a control character (newline, tab, ...)"
    return None


def _plain(value: Any) -> Any:
    """Drop the line-number wrappers (for data kept as written)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _check_keys(problems: _Problems, raw: _LineDict, where: str, allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            problems.add(raw.line_of(key), where, f"unknown field {key!r}{_suggest(key, allowed)}; "
                                                  f"allowed: {', '.join(allowed)}")


def parse_fleet(text: str, path: str | Path = "fleet.yml", catalog: Catalog | None = None) -> Fleet:
    """Parse and validate a fleet file's text. Raises FleetError listing every problem."""
    catalog = catalog or load_catalog()
    path = Path(path)
    shown = str(path)
    base = path.parent.resolve() if str(path.parent) else Path.cwd()
    doc = _load_yaml(text, shown)
    problems = _Problems(shown)
    if doc is None:
        raise FleetError(shown, [f"{shown}:1: the file is empty; it needs a `hosts:` list (see docs/fleet.md)"])
    if not isinstance(doc, _LineDict):
        raise FleetError(shown, [f"{shown}:1: expected a mapping with `hosts:` (and optional `defaults:`, "
                                 f"`clusters:`), got a {type(doc).__name__}"])
    _check_keys(problems, doc, "top level", TOP_LEVEL_KEYS)

    defaults: dict[str, Any] = {}
    raw_defaults = doc.get("defaults")
    if raw_defaults is not None:
        if not isinstance(raw_defaults, _LineDict):
            problems.add(doc.line_of("defaults"), "defaults", "expected a mapping of host fields")
        else:
            for key, value in raw_defaults.items():
                line = raw_defaults.line_of(key)
                if key in NOT_IN_DEFAULTS:
                    problems.add(line, f"defaults: {key}", "is per host; it cannot be a default")
                elif key not in HOST_FIELDS:
                    problems.add(line, "defaults", f"unknown field {key!r}{_suggest(key, HOST_FIELDS)}; "
                                                   f"allowed: {', '.join(f for f in HOST_FIELDS if f not in NOT_IN_DEFAULTS)}")
                else:
                    checked = _check_field(problems, "defaults", line, key, value, catalog, base)
                    if checked is not None:
                        defaults[key] = checked

    hosts: list[Host] = []
    raw_hosts = doc.get("hosts")
    if raw_hosts is None:
        problems.add(doc.line, "hosts", "missing: list your machines under `hosts:` (see docs/fleet.md)")
        raw_hosts = _LineList()
        raw_hosts.lines = []
    elif not isinstance(raw_hosts, _LineList) or not raw_hosts:
        problems.add(doc.line_of("hosts"), "hosts", "expected a non-empty list of hosts")
        raw_hosts = _LineList()
        raw_hosts.lines = []
    seen_names: dict[str, int] = {}
    seen_endpoints: dict[tuple[str, int], tuple[str, int]] = {}
    for i, raw in enumerate(raw_hosts):
        line = raw_hosts.lines[i]
        if not isinstance(raw, _LineDict):
            problems.add(line, f"hosts[{i}]", f"expected a mapping with name, address, gpu, gpu_count; got {raw!r}")
            continue
        name = raw.get("name")
        where = f"host {name}" if isinstance(name, str) and name else f"hosts[{i}]"
        before = len(problems.items)
        _check_keys(problems, raw, where, HOST_FIELDS)
        values: dict[str, Any] = dict(defaults)
        for key, value in raw.items():
            if key in HOST_FIELDS:
                checked = _check_field(problems, where, raw.line_of(key), key, value, catalog, base)
                if checked is not None:
                    values[key] = checked
        for key in ("name", "address", "gpu", "gpu_count"):
            if key not in raw:
                problems.add(raw.line, where, f"missing required field {key!r}")
        if len(problems.items) != before:
            continue
        host = Host(
            name=values["name"], address=values["address"], gpu=values["gpu"], gpu_count=values["gpu_count"],
            ssh_user=values.get("ssh_user"), ssh_port=values.get("ssh_port", DEFAULT_SSH_PORT),
            ssh_key=values.get("ssh_key"), known_hosts=values.get("known_hosts"),
            network_interface=values.get("network_interface"), ib_hcas=tuple(values.get("ib_hcas", ())),
            weights_dir=values.get("weights_dir"), weights_storage=values.get("weights_storage", "local"),
            labels=values.get("labels", {}), facts=values.get("facts"),
            line=raw.line,
        )
        if host.name.lower() in seen_names:   # host names are case-insensitive (DNS, inventories)
            problems.add(raw.line_of("name"), where, f"name {host.name!r} is already used on line "
                                                     f"{seen_names[host.name.lower()]}")
            continue
        endpoint = (_normal_address(host.address), host.ssh_port)
        if endpoint in seen_endpoints:
            other, other_line = seen_endpoints[endpoint]
            problems.add(raw.line_of("address"), where,
                         f"address {host.address} port {host.ssh_port} is also host {other}'s (line {other_line})")
            continue
        seen_names[host.name.lower()] = raw.line_of("name")
        seen_endpoints[endpoint] = (host.name, raw.line)
        hosts.append(host)

    clusters: dict[str, FleetCluster] = {}
    raw_clusters = doc.get("clusters")
    if raw_clusters is not None:
        if not isinstance(raw_clusters, _LineDict):
            problems.add(doc.line_of("clusters"), "clusters", "expected a mapping of cluster name to {hosts: [...]}")
        else:
            by_name = {h.name: h for h in hosts}
            for cname, raw in raw_clusters.items():
                line = raw_clusters.line_of(cname)
                where = f"cluster {cname}"
                if not isinstance(cname, str) or not _NAME.match(cname):
                    problems.add(line, where, "a cluster name uses letters, digits, '.', '_', '-'")
                    continue
                if not isinstance(raw, _LineDict):
                    problems.add(line, where, "expected a mapping with `hosts: [names]`")
                    continue
                _check_keys(problems, raw, where, CLUSTER_FIELDS)
                members = raw.get("hosts")
                if not isinstance(members, _LineList) or not members:
                    problems.add(raw.line_of("hosts"), f"{where}: hosts", "expected a non-empty list of host names")
                    continue
                ok = True
                for j, member in enumerate(members):
                    mline = members.lines[j]
                    if not isinstance(member, str) or member not in by_name:
                        # a host that failed validation above is already reported
                        if not (isinstance(member, str) and any(f"host {member}:" in p for p in problems.items)):
                            problems.add(mline, f"{where}: hosts", f"no host named {member!r} in the fleet"
                                                                   f"{_suggest(member, list(by_name))}")
                        ok = False
                    elif members.count(member) > 1 and members.index(member) != j:
                        problems.add(mline, f"{where}: hosts", f"host {member} is listed twice")
                        ok = False
                if not ok:
                    continue
                kinds = sorted({(by_name[m].gpu, by_name[m].gpu_count) for m in members})
                if len(kinds) > 1:
                    shape = ", ".join(f"{m} {by_name[m].gpu_count} x {by_name[m].gpu}" for m in members)
                    problems.add(raw.line_of("hosts"), f"{where}: hosts",
                                 f"every host of a cluster needs the same GPU kind and count; got {shape}")
                    continue
                clusters[cname] = FleetCluster(name=cname, hosts=tuple(members), line=line)

    standins = doc.get("standins")
    if standins is not None and not (isinstance(standins, dict) and all(isinstance(k, str) and _VARIABLE.match(k)
                                                                        for k in standins)):
        problems.add(doc.line_of("standins"), "standins", "expected a mapping of role variable names to values "
                                                          "(written by `qwen35-prov sandbox create`)")
        standins = None
    elif standins is not None and (unsafe := _unsafe_text(standins)):
        problems.add(doc.line_of("standins"), "standins", unsafe)
        standins = None

    if problems.items:
        raise FleetError(shown, problems.items)
    return Fleet(path=path, hosts=tuple(hosts), clusters=clusters, standins=_plain(standins or {}))


def load_fleet(path: str | Path, catalog: Catalog | None = None) -> Fleet:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"fleet file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"fleet file {path} is a folder; pass the YAML file") from None
    except OSError as exc:
        raise UserError(f"fleet file {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"fleet file {path} is not UTF-8 text") from None
    return parse_fleet(text, path, catalog)


# --- picking the hosts of a cluster -----------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """The hosts a cluster runs on, in node order (node 0 first), and its spec."""

    name: str  # the fleet cluster's name, or the spec's canonical name (h100x16)
    spec: ClusterSpec
    hosts: tuple[Host, ...]
    named: bool  # True when --cluster named a cluster of the fleet


def select_hosts(fleet: Fleet, cluster: str, catalog: Catalog | None = None,
                 gpus_per_node: int | None = None) -> Selection:
    """A named fleet cluster, or the first hosts (fleet order) with the spec's GPU kind and GPUs per node."""
    catalog = catalog or load_catalog()
    where = fleet.display_path
    if cluster in fleet.clusters:
        named = fleet.clusters[cluster]
        hosts = tuple(fleet.host(n) for n in named.hosts)
        first = hosts[0]
        if gpus_per_node is not None and gpus_per_node != first.gpu_count:
            raise UserError(
                f"--gpus-per-node {gpus_per_node}: fleet cluster {cluster!r} has {first.gpu_count} GPUs per host")
        for host in hosts:
            conflict = host.facts_conflict()
            if conflict:
                raise UserError(f"fleet cluster {cluster!r} in {where}: {conflict}")
        spec = ClusterSpec(gpu=catalog.gpu(first.gpu), gpu_count=first.gpu_count * len(hosts),
                           gpus_per_node=first.gpu_count)
        return Selection(name=cluster, spec=spec, hosts=hosts, named=True)

    try:
        spec = parse_cluster(cluster, catalog, gpus_per_node)
    except UserError as exc:
        names = ", ".join(fleet.clusters) or "none"
        raise UserError(f"{exc} (clusters named in {where}: {names})") from None
    kind, per_node, needed = spec.gpu.id, spec.gpus_per_node, spec.node_count
    fitting = [h for h in fleet.hosts if h.gpu == kind and h.gpu_count == per_node]
    usable = [h for h in fitting if not h.facts_conflict()]
    if len(usable) >= needed:
        return Selection(name=spec.name, spec=spec, hosts=tuple(usable[:needed]), named=False)

    have = f"{len(usable)} ({', '.join(h.name for h in usable)})" if usable else "none"
    reasons = [f"{where} cannot hold {spec.name}: it needs {needed} host(s) with {per_node} x {kind}, "
               f"the fleet has {have}"]
    contradicted = [h.name for h in fitting if h.facts_conflict()]
    if contradicted:
        reasons.append(f"left out because their probe facts disagree: {', '.join(contradicted)}")
    other_counts = sorted({h.gpu_count for h in fleet.hosts if h.gpu == kind and h.gpu_count != per_node})
    if other_counts:
        usable_counts = [c for c in other_counts if spec.gpu_count % c == 0]
        hint = (f"; pass --gpus-per-node {usable_counts[-1]}" if usable_counts and gpus_per_node is None else "")
        reasons.append(f"{kind} hosts with other GPU counts: "
                       + ", ".join(f"{h.name} ({h.gpu_count})" for h in fleet.hosts
                                   if h.gpu == kind and h.gpu_count != per_node) + hint)
    raise UserError("; ".join(reasons))


# --- writing probe facts back (keeps comments and layout) ---------------------------------------------------

FACTS_COMMENT = "# facts: written by `qwen35-prov fleet probe --update`; edits here are overwritten"


def _last_leaf_end(node: yaml.Node) -> int:
    """Character index just past the last scalar of a node (block collections end later, at the next token)."""
    if isinstance(node, yaml.ScalarNode):
        return node.end_mark.index
    if isinstance(node, yaml.MappingNode):
        return max((_last_leaf_end(v) for _, v in node.value), default=node.end_mark.index) \
            if node.value else node.end_mark.index
    if isinstance(node, yaml.SequenceNode):
        return _last_leaf_end(node.value[-1]) if node.value else node.end_mark.index
    return node.end_mark.index


def _line_end(text: str, index: int) -> int:
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _facts_block(facts: Mapping[str, Any], indent: int) -> str:
    body = yaml.safe_dump({"facts": dict(facts)}, sort_keys=False, default_flow_style=False, width=10_000)
    return "".join(" " * indent + line + "\n" for line in body.splitlines())


def update_facts_text(text: str, facts_by_host: Mapping[str, Mapping[str, Any]]) -> str:
    """The fleet text with each named host's `facts:` replaced or added; everything else kept as written."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    hosts_node = None
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "hosts" and isinstance(value, yaml.SequenceNode):
                hosts_node = value
    if hosts_node is None:
        raise UserError("the fleet file has no `hosts:` list to write facts into")
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), applied back to front
    for host_node in hosts_node.value:
        if not isinstance(host_node, yaml.MappingNode):
            continue
        fields = {k.value: (k, v) for k, v in host_node.value if isinstance(k, yaml.ScalarNode)}
        name_node = fields.get("name", (None, None))[1]
        if not isinstance(name_node, yaml.ScalarNode) or name_node.value not in facts_by_host:
            continue
        facts = facts_by_host[name_node.value]
        if host_node.flow_style:
            return _rewrite_whole(text, facts_by_host)
        first_key = host_node.value[0][0]
        indent = first_key.start_mark.column
        if "facts" in fields:
            key_node, value_node = fields["facts"]
            if getattr(value_node, "flow_style", False) and not isinstance(value_node, yaml.ScalarNode):
                end = _line_end(text, value_node.end_mark.index)
            else:
                end = _line_end(text, _last_leaf_end(value_node))
            start = key_node.start_mark.index - key_node.start_mark.column
            if key_node is first_key:  # "- facts:" as the first key: keep the dash, replace after it
                start = key_node.start_mark.index
                block = _facts_block(facts, indent)[indent:]
            else:
                block = _facts_block(facts, indent)
            edits.append((start, end, block))
        else:
            at = _line_end(text, _last_leaf_end(host_node))
            edits.append((at, at, " " * indent + FACTS_COMMENT + "\n" + _facts_block(facts, indent)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _rewrite_whole(text: str, facts_by_host: Mapping[str, Mapping[str, Any]]) -> str:
    """Fallback for flow-style hosts: load, set facts, dump (comments are lost)."""
    doc = _plain(yaml.load(text, Loader=_LineLoader))
    for host in doc.get("hosts", []):
        if isinstance(host, dict) and host.get("name") in facts_by_host:
            host["facts"] = dict(facts_by_host[host["name"]])
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=10_000)


def write_fleet_facts(path: str | Path, facts_by_host: Mapping[str, Mapping[str, Any]],
                      catalog: Catalog | None = None) -> Fleet:
    """Write probe facts into the fleet file atomically; the result must still be a valid fleet file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    new_text = update_facts_text(text, facts_by_host)
    fleet = parse_fleet(new_text, path, catalog)  # never write a file that no longer parses
    for name, facts in facts_by_host.items():
        if dict(fleet.host(name).facts or {}) != _plain(dict(facts)):
            raise UserError(f"internal error: facts of {name} did not round-trip; {path} left unchanged")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_text)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return fleet
