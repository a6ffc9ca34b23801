"""A lab of "hosts" on this machine, one network namespace each (Linux, root, iproute2).

Every host gets two interfaces inside its namespace, plus its own loopback:

* ``data0`` on the DATA network (gossip). Its other end is a port of one of the lab's
  *side* bridges (``<prefix>s0``, ``<prefix>s1``, ...). Normally every host is on side 0;
  ``partition()`` moves each group's ports onto a side bridge of its own, ``heal()``
  moves them all back. The machine itself has no address on the data network (IPv6 is
  switched off on its side of it, so not even a link-local one).
* ``mgmt0`` on the MANAGEMENT network: one bridge ``<prefix>mg`` that carries the
  machine's address, so the machine reaches every host's admin API whatever the data
  network looks like. Its host ports are bridge-isolated: hosts reach the machine over
  it, never each other, so the data network is the only path between hosts.

Naming (every name starts with the lab's prefix, default ``pl`` + 4 random hex digits;
machine-side names stay <= 15 characters for up to 8-character prefixes):

* namespace of host ``h3``: ``pl3f9a-h3``
* side bridge k of the data network: ``pl3f9as<k>``; management bridge: ``pl3f9amg``
* machine end of host i's data veth: ``pl3f9ad<i>`` (``data0`` inside the namespace)
* machine end of host i's management veth: ``pl3f9am<i>`` (``mgmt0`` inside)

Partition mechanism: no trunk links between bridges. A cut moves ports between side
bridges (``ip link set pl3f9ad2 master pl3f9as1``); heal moves them back to side 0. Any
number of groups works, there is never a bridge loop, and a cut holds even against warm
ARP caches since the frames have no path. ``isolate()`` sets one host's data veth down.

Addressing: a lab takes a *slot* n in 0..63, i.e. a /22 in each of two /16s, so concurrent
labs never share a subnet (the management one would clash on the machine's routing
table otherwise). Host i is ``10.201.<4n + i//250>.<i%250 + 2>`` (data) and
``10.202.<4n + i//250>.<i%250 + 2>`` (management); the machine is ``10.202.<4n>.1``.
A slot that overlaps any route of the machine is never used. Up to 1000 hosts per lab.

Bookkeeping: ``/run/plumctl-lab/<prefix>.json`` records the owner (pid and its start
time, so a recycled pid doesn't count as alive) and the slot. Prefix and slot are picked
under an flock on ``/run/plumctl-lab/.lock``; the record is written before the first
interface exists and removed after the last one is gone. ``cleanup_stale()`` (run by
every ``Lab.up()``) destroys labs whose owner died, killing by pid whatever still runs
in their namespaces, and default-scheme leftovers that have no record at all.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import fnmatch
import functools
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_DIR = Path("/run/plumctl-lab")
NETNS_DIR = Path("/run/netns")  # where `ip netns add` puts its bind mounts
DATA_NET = ipaddress.IPv4Network("10.201.0.0/16")
MGMT_NET = ipaddress.IPv4Network("10.202.0.0/16")
SLOT_PREFIXLEN = 22
SLOTS = 2 ** (SLOT_PREFIXLEN - DATA_NET.prefixlen)  # 64
MAX_HOSTS = 1000  # 4 x 250 addresses per /22, see host_octets()
DATA_IFNAME = "data0"  # interface names inside each namespace
MGMT_IFNAME = "mgmt0"
DEFAULT_PREFIX = "pl"
IP_TIMEOUT = 30.0

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,7}$")
# names made by the default scheme (prefix "pl" + 4 hex): recognizable without a record
_DEFAULT_LINK_RE = re.compile(r"^(pl[0-9a-f]{4})(?:s\d+|mg|d\d+|m\d+)$")
_DEFAULT_NETNS_RE = re.compile(r"^(pl[0-9a-f]{4})-h\d+$")


class LabError(Exception):
    """A lab operation failed; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # "h0", "h1", ...
    netns: str  # "pl3f9a-h0"
    data_ip: str  # address of data0 inside the namespace
    mgmt_ip: str  # address of mgmt0 inside the namespace
    index: int = 0
    data_link: str = ""  # machine end of the data veth (a side-bridge port)
    mgmt_link: str = ""  # machine end of the management veth


# -- running ip -------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


@functools.cache
def _ip_binary() -> str:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "ip"


def _ip(*args: str, netns: str | None = None) -> str:
    """Run one `ip` command; its stdout, or LabError with the command and stderr."""
    argv = [_ip_binary(), *(["-n", netns] if netns else []), *args]
    shown = "ip " + " ".join(argv[1:])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"`{shown}` failed: {exc}") from None
    if proc.returncode != 0:
        raise LabError(f"`{shown}` failed: {_one_line(proc.stderr) or f'exit {proc.returncode}'}")
    return proc.stdout


def _ip_batch(lines: Sequence[str], netns: str | None = None, force: bool = False) -> None:
    """Run many `ip` commands in one process (`ip -batch -`); stops at the first failure
    unless `force`, and the LabError names the failing command."""
    if not lines:
        return
    argv = [_ip_binary(), *(["-n", netns] if netns else []), *(["-force"] if force else [])]
    where = f" -n {netns}" if netns else ""
    try:
        proc = subprocess.run(
            [*argv, "-batch", "-"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"`ip{where} -batch` failed: {exc}") from None
    if proc.returncode == 0 or force:
        return
    failed = re.search(r"Command failed -:(\d+)", proc.stderr)
    detail = _one_line(re.sub(r"Command failed -:\d+", "", proc.stderr)) or "failed"
    if failed and 0 < int(failed.group(1)) <= len(lines):
        raise LabError(f"`ip{where} {lines[int(failed.group(1)) - 1]}` failed: {detail}")
    raise LabError(f"`ip{where} -batch` failed: {detail}")


def _existing_names() -> tuple[list[str], list[str]]:
    """(namespace names, link names) currently on the machine (links of the root netns)."""
    netns = [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]
    links = []
    for line in _ip("-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            links.append(parts[1].strip().split("@")[0])
    return netns, links


def _name_patterns(prefix: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    p = re.escape(prefix)
    return re.compile(rf"^{p}-h\d+$"), re.compile(rf"^{p}(?:s\d+|mg|d\d+|m\d+)$")


def resources(prefix: str) -> list[str]:
    """Namespaces and machine-side links of the lab with this prefix that exist now."""
    ns_re, link_re = _name_patterns(prefix)
    netns, links = _existing_names()
    return [f"netns {n}" for n in netns if ns_re.match(n)] + [
        f"link {name}" for name in links if link_re.match(name)
    ]


# -- processes --------------------------------------------------------------------------


def _proc_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a running, non-zombie pid, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _netns_pids(names: Iterable[str]) -> list[int]:
    """Pids of the processes inside these named namespaces (what `ip netns pids` does)."""
    wanted = set()
    for name in names:
        with contextlib.suppress(OSError):
            st = (NETNS_DIR / name).stat()
            wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # gone, or a zombie
        if (st.st_dev, st.st_ino) in wanted:
            pids.append(int(entry))
    return pids


def _kill_netns_processes(names: Sequence[str]) -> None:
    """SIGKILL, by pid, everything still running inside these namespaces."""
    deadline = time.monotonic() + 5.0
    while pids := _netns_pids(names):
        for pid in pids:
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} inside {', '.join(names)} would not die")
        time.sleep(0.02)


# -- the registry under /run/plumctl-lab --------------------------------------------------


@contextlib.contextmanager
def _registry_lock(timeout: float = 30.0) -> Iterator[None]:
    try:
        STATE_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(STATE_DIR / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise LabError(f"cannot use {STATE_DIR}: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise LabError(f"cannot lock {STATE_DIR / '.lock'}: {exc}") from None
                if time.monotonic() > deadline:
                    raise LabError(
                        f"{STATE_DIR / '.lock'} stayed locked for {timeout:g}s"
                    ) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass(frozen=True, slots=True)
class _Record:
    prefix: str
    pid: int
    start_time: int | None
    slot: int
    hosts: int

    def owner_alive(self) -> bool:
        started = _proc_start_time(self.pid)
        return started is not None and (self.start_time is None or started == self.start_time)


def _records() -> list[_Record]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(STATE_DIR.glob("*.json")):
            try:
                d = json.loads(path.read_text())
                out.append(_Record(d["prefix"], d["pid"], d["start_time"], d["slot"], d["hosts"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # unreadable: leave it alone
    return out


def _recorded_prefixes() -> set[str]:
    try:
        return {path.stem for path in STATE_DIR.glob("*.json")}
    except OSError:
        return set()


def _write_record(rec: _Record) -> None:
    path = STATE_DIR / f"{rec.prefix}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    data = {
        "prefix": rec.prefix,
        "pid": rec.pid,
        "start_time": rec.start_time,
        "slot": rec.slot,
        "hosts": rec.hosts,
        "created": time.time(),
    }
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


def _remove_record(prefix: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{prefix}.json").unlink()


def _destroy(prefix: str) -> None:
    """Kill whatever runs in the lab's namespaces, delete its links and namespaces, then
    its record. Pieces already gone are fine; LabError if something would not go."""
    ns_re, link_re = _name_patterns(prefix)
    bridges = re.compile(rf"^{re.escape(prefix)}(?:s\d+|mg)$")
    for attempt in range(3):
        netns, links = _existing_names()
        my_netns = [n for n in netns if ns_re.match(n)]
        if not my_netns and not any(link_re.match(name) for name in links):
            _remove_record(prefix)
            return
        if attempt:
            time.sleep(0.1 * attempt)
        _kill_netns_processes(my_netns)
        if my_netns:
            # Deleting the namespaces lets the kernel drop all their veths in one batch
            # (much faster than one `link del` each); wait a moment for that. Not long:
            # a namespace lives on while anything references it (say, a TCP SYN queued
            # behind an ARP request nobody answers, for ~3 s), and then the `link del`
            # below is quicker.
            _ip_batch([f"netns del {name}" for name in my_netns], force=True)
            deadline = time.monotonic() + 0.25
            while time.monotonic() < deadline and any(
                link_re.match(name) and not bridges.match(name) for name in _existing_names()[1]
            ):
                time.sleep(0.01)
        my_links = [name for name in _existing_names()[1] if link_re.match(name)]
        my_links.sort(key=lambda name: bool(bridges.match(name)))  # veths, then bridges
        _ip_batch([f"link del {name}" for name in my_links], force=True)
    left = resources(prefix)
    if left:
        raise LabError(f"lab {prefix}: could not remove {', '.join(left)}")
    _remove_record(prefix)


def cleanup_stale(prefix_glob: str = DEFAULT_PREFIX) -> list[str]:
    """Destroy the labs whose prefix matches `prefix_glob` (a shell glob; a plain string
    means "starts with") and whose owner process is dead, plus default-scheme namespaces
    and links that no record claims. Returns the prefixes removed."""
    pattern = prefix_glob if any(c in prefix_glob for c in "*?[") else prefix_glob + "*"
    removed: list[str] = []
    failed: list[str] = []

    def destroy(prefix: str) -> None:
        try:
            _destroy(prefix)
            removed.append(prefix)
        except LabError as exc:
            failed.append(str(exc))

    with _registry_lock():
        for rec in _records():
            if fnmatch.fnmatchcase(rec.prefix, pattern) and not rec.owner_alive():
                destroy(rec.prefix)
        known = _recorded_prefixes()  # unreadable records included: never guess those
        netns, links = _existing_names()
        orphans = {
            m.group(1)
            for name, regex in [(n, _DEFAULT_NETNS_RE) for n in netns]
            + [(n, _DEFAULT_LINK_RE) for n in links]
            if (m := regex.match(name))
        }
        for prefix in sorted(orphans - known):
            if fnmatch.fnmatchcase(prefix, pattern):
                destroy(prefix)
    if failed:
        raise LabError("; ".join(failed))
    return sorted(removed)


def _machine_networks() -> list[ipaddress.IPv4Network]:
    """Destinations of every IPv4 route on the machine (all tables), default excluded."""
    types = {"unicast", "local", "broadcast", "multicast", "anycast", "blackhole"}
    types |= {"unreachable", "prohibit", "throw", "nat"}
    nets = []
    for line in _ip("-o", "-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if words and words[0] in types:
            words = words[1:]
        if not words or words[0] == "default":
            continue
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(words[0], strict=False)
            if net.prefixlen:
                nets.append(net)
    return nets


def _slot_nets(slot: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    size = 2 ** (32 - SLOT_PREFIXLEN)
    return (
        ipaddress.IPv4Network((int(DATA_NET.network_address) + slot * size, SLOT_PREFIXLEN)),
        ipaddress.IPv4Network((int(MGMT_NET.network_address) + slot * size, SLOT_PREFIXLEN)),
    )


def host_address(subnet: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Address:
    """Host `index`'s address in a lab subnet: third octet + index // 250, fourth index % 250 + 2
    (never .0, .1 or .255)."""
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"host index {index} out of range 0..{MAX_HOSTS - 1}")
    return subnet.network_address + (index // 250) * 256 + index % 250 + 2


# -- availability ------------------------------------------------------------------------

_available: list[str | None] = []


def available() -> str | None:
    """None if labs can be built here, else why not (one line). Probes once per process
    by building and removing a namespace with a veth and a bridge."""
    if _available:
        return _available[0]
    reason = _probe()
    _available.append(reason)
    return reason


def _probe() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return f"network namespaces need root (running as uid {os.geteuid()})"
    if not shutil.which("ip") and not shutil.which("ip", path="/usr/sbin:/sbin"):
        return "iproute2's `ip` command is not installed"
    try:
        # under the registry lock: cleanup_stale can't mistake the probe for an orphan,
        # and a crashed probe leaves default-scheme names the next cleanup removes
        with _registry_lock():
            netns, links = _existing_names()
            prefix = _fresh_prefix(_recorded_prefixes(), netns, links)
            ns = f"{prefix}-h0"
            try:
                _ip_batch(
                    [
                        f"netns add {ns}",
                        f"link add {prefix}s0 type bridge",
                        f"link add {prefix}d0 master {prefix}s0 type veth peer name x netns {ns}",
                    ]
                )
            finally:
                _destroy(prefix)
    except LabError as exc:
        return str(exc)
    return None


def _fresh_prefix(taken: set[str], netns: list[str], links: list[str]) -> str:
    for _ in range(100):
        prefix = DEFAULT_PREFIX + secrets.token_hex(2)
        if prefix not in taken and not _prefix_in_use(prefix, netns, links):
            return prefix
    raise LabError("no free lab prefix after 100 tries")


def _prefix_in_use(prefix: str, netns: list[str], links: list[str]) -> bool:
    ns_re, link_re = _name_patterns(prefix)
    return any(ns_re.match(n) for n in netns) or any(link_re.match(n) for n in links)


# -- the lab -----------------------------------------------------------------------------

_live_labs: set[Lab] = set()


@atexit.register
def _down_forgotten_labs() -> None:
    for lab in list(_live_labs):
        if lab.owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                lab.down()


class Lab:
    """Hosts made of network namespaces; see the module docstring for the layout.

    ``with Lab(4) as lab: ...`` builds it (``up()``) and always tears it down
    (``down()``), killing the processes started with ``popen`` first.
    """

    def __init__(
        self,
        hosts: int,
        prefix: str | None = None,
        *,
        slot: int | None = None,
        grace: float = 1.0,
    ) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"a lab has 1..{MAX_HOSTS} hosts, not {hosts}")
        if prefix is not None and not _PREFIX_RE.match(prefix):
            raise ValueError(f"lab prefix {prefix!r}: 2-8 characters, [a-z][a-z0-9]*")
        if slot is not None and not 0 <= slot < SLOTS:
            raise ValueError(f"lab slot {slot} out of range 0..{SLOTS - 1}")
        self.size = hosts
        self.prefix: str = prefix or ""
        self._want_prefix = prefix
        self._want_slot = slot
        self.slot: int | None = None
        self.grace = grace
        self.hosts: list[Host] = []
        self.data_subnet: ipaddress.IPv4Network | None = None
        self.mgmt_subnet: ipaddress.IPv4Network | None = None
        self.mgmt_gateway: str = ""  # the machine's address on the management network
        self.owner_pid = os.getpid()
        self._registered = False
        self._up = False
        self._procs: list[subprocess.Popen[Any]] = []
        self._side: dict[str, int] = {}  # host name -> side bridge index
        self._bridges: set[int] = set()
        self._isolated: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        """Build every namespace, bridge and veth. On failure, remove what was made and
        raise LabError."""
        if self._registered:
            raise LabError(f"lab {self.prefix} is already up")
        try:
            # best effort: a stale lab that won't go keeps its record, so its prefix and
            # slot stay taken and this lab simply uses others
            with contextlib.suppress(LabError):
                cleanup_stale()
            self._register()
            self._build()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                self.down()
            if isinstance(exc, LabError):
                raise LabError(f"lab {self.prefix or '(unnamed)'}: {exc}") from None
            raise
        self._up = True

    def _register(self) -> None:
        with _registry_lock():
            records = _records()
            netns, links = _existing_names()
            taken = _recorded_prefixes()
            if self._want_prefix is not None:
                if self._want_prefix in taken or _prefix_in_use(self._want_prefix, netns, links):
                    raise LabError(f"prefix {self._want_prefix} is in use by another lab")
                prefix = self._want_prefix
            else:
                prefix = _fresh_prefix(taken, netns, links)
            used = {r.slot for r in records}
            routes = _machine_networks()
            candidates = [self._want_slot] if self._want_slot is not None else range(SLOTS)
            for slot in candidates:
                nets = _slot_nets(slot)
                if slot not in used and not any(n.overlaps(r) for n in nets for r in routes):
                    break
            else:
                if self._want_slot is not None:
                    raise LabError(
                        f"slot {self._want_slot} is taken by another lab or overlaps a route"
                    )
                raise LabError(f"no free slot: all {SLOTS} are taken or overlap routes")
            _write_record(
                _Record(prefix, os.getpid(), _proc_start_time(os.getpid()), slot, self.size)
            )
        self.prefix, self.slot, self._registered = prefix, slot, True
        self.owner_pid = os.getpid()
        _live_labs.add(self)
        self.data_subnet, self.mgmt_subnet = _slot_nets(slot)
        self.mgmt_gateway = str(self.mgmt_subnet.network_address + 1)
        p = self.prefix
        self.hosts = [
            Host(
                name=f"h{i}",
                netns=f"{p}-h{i}",
                data_ip=str(host_address(self.data_subnet, i)),
                mgmt_ip=str(host_address(self.mgmt_subnet, i)),
                index=i,
                data_link=f"{p}d{i}",
                mgmt_link=f"{p}m{i}",
            )
            for i in range(self.size)
        ]

    def _build(self) -> None:
        assert self.data_subnet is not None and self.mgmt_subnet is not None
        p, dlen, mlen = self.prefix, self.data_subnet.prefixlen, self.mgmt_subnet.prefixlen
        root = [f"netns add {h.netns}" for h in self.hosts]
        root += [
            f"link add {p}s0 type bridge",
            f"link set {p}s0 up",
            f"link add {p}mg type bridge",
            f"addr add {self.mgmt_gateway}/{mlen} dev {p}mg",
            f"link set {p}mg up",
        ]
        for h in self.hosts:
            root += [
                f"link add {h.data_link} master {p}s0 up type veth"
                f" peer name {DATA_IFNAME} netns {h.netns}",
                f"link add {h.mgmt_link} master {p}mg type veth"
                f" peer name {MGMT_IFNAME} netns {h.netns}",
                f"link set {h.mgmt_link} type bridge_slave isolated on",
                f"link set {h.mgmt_link} up",
            ]
        _ip_batch(root)
        _no_ipv6([f"{p}s0", *(link for h in self.hosts for link in (h.data_link, h.mgmt_link))])
        for h in self.hosts:
            _ip_batch(
                [
                    "link set lo up",
                    f"addr add {h.data_ip}/{dlen} dev {DATA_IFNAME}",
                    f"link set {DATA_IFNAME} up",
                    f"addr add {h.mgmt_ip}/{mlen} dev {MGMT_IFNAME}",
                    f"link set {MGMT_IFNAME} up",
                ],
                netns=h.netns,
            )
        self._side = {h.name: 0 for h in self.hosts}
        self._bridges = {0}
        self._isolated = set()

    def down(self) -> None:
        """Stop the processes started with popen (SIGTERM, then SIGKILL after `grace`),
        kill anything else left in the namespaces, remove every namespace, bridge and
        veth, then the record. Idempotent; LabError only if something would not go."""
        self._up = False
        self._stop_processes()
        if not self._registered:
            return
        _destroy(self.prefix)
        self._registered = False
        _live_labs.discard(self)

    def _stop_processes(self) -> None:
        alive = [p for p in self._procs if p.poll() is None]
        self._procs = []
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for proc in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)

    # -- hosts and processes -----------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._up

    def host(self, host: str | Host) -> Host:
        """This lab's host by name (or the Host itself, checked to belong here)."""
        name = host.name if isinstance(host, Host) else host
        for h in self.hosts:
            if h.name == name and (not isinstance(host, Host) or host.netns == h.netns):
                return h
        raise LabError(f"lab {self.prefix or '(not up)'} has no host {name!r}")

    def _require_up(self) -> None:
        if not self._up:
            raise LabError(f"lab {self.prefix or '(unnamed)'} is not up")

    def command(self, host: str | Host, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside the host's namespace (`ip netns exec`)."""
        return [_ip_binary(), "netns", "exec", self.host(host).netns, *argv]

    def popen(self, host: str | Host, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the host's namespace; down() stops it (by pid)."""
        self._require_up()
        proc: subprocess.Popen[Any] = subprocess.Popen(self.command(host, argv), **kw)
        self._procs.append(proc)
        return proc

    def run(
        self, host: str | Host, argv: Sequence[str], timeout: float | None = 30.0, **kw: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run `argv` inside the host's namespace to completion; output captured as text
        unless `kw` says otherwise. Doesn't raise on a non-zero exit unless check=True."""
        self._require_up()
        kw.setdefault("text", True)
        if not any(k in kw for k in ("stdout", "stderr", "capture_output")):
            kw["capture_output"] = True
        result: subprocess.CompletedProcess[Any] = subprocess.run(
            self.command(host, argv), timeout=timeout, **kw
        )
        return result

    # -- faults ------------------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[str | Host]]) -> None:
        """Split the data network: each group on a side bridge of its own, so hosts talk
        within their group only. Hosts named in no group form one more group together.
        Management reachability and isolate() state are unaffected."""
        self._require_up()
        side: dict[str, int] = {}
        for group in groups:
            names = [self.host(h).name for h in group]
            if not names:
                continue
            k = len(set(side.values()))
            for name in names:
                if name in side:
                    raise LabError(f"partition: host {name} is in more than one group")
                side[name] = k
        rest_side = len(set(side.values()))
        for h in self.hosts:
            side.setdefault(h.name, rest_side)
        self._place(side)

    def heal(self) -> None:
        """One connected data network again: every host back on side 0, isolated ones
        restored."""
        self._require_up()
        self._place({h.name: 0 for h in self.hosts})
        if self._isolated:
            _ip_batch([f"link set {self.host(n).data_link} up" for n in sorted(self._isolated)])
            self._isolated.clear()

    def isolate(self, host: str | Host) -> None:
        """Cut one host's data link (its veth goes down); management stays up."""
        self._require_up()
        h = self.host(host)
        _ip("link", "set", h.data_link, "down")
        self._isolated.add(h.name)

    def restore(self, host: str | Host) -> None:
        """Undo isolate(host)."""
        self._require_up()
        h = self.host(host)
        _ip("link", "set", h.data_link, "up")
        self._isolated.discard(h.name)

    @property
    def isolated(self) -> frozenset[str]:
        return frozenset(self._isolated)

    def sides(self) -> list[list[str]]:
        """The current data-network groups (hosts sharing a side bridge), side 0 first."""
        out: dict[int, list[str]] = {}
        for h in self.hosts:
            out.setdefault(self._side[h.name], []).append(h.name)
        return [out[k] for k in sorted(out)]

    def _place(self, side: dict[str, int]) -> None:
        p = self.prefix
        lines = []
        new = sorted(set(side.values()) - self._bridges)
        for k in new:
            lines += [f"link add {p}s{k} type bridge", f"link set {p}s{k} up"]
        for h in self.hosts:
            if self._side[h.name] != side[h.name]:
                lines.append(f"link set {h.data_link} master {p}s{side[h.name]}")
        try:
            _ip_batch(lines)
        finally:
            # whatever got applied: re-read so the bookkeeping matches the machine
            self._sync_sides()
        _no_ipv6([f"{p}s{k}" for k in new])

    def _sync_sides(self) -> None:
        masters: dict[str, str] = {}
        for line in _ip("-o", "link", "show").splitlines():
            parts = line.split(":", 2)
            if len(parts) < 3:
                continue
            name = parts[1].strip().split("@")[0]
            m = re.search(r"\bmaster (\S+)", parts[2])
            if m:
                masters[name] = m.group(1)
            if re.fullmatch(rf"{re.escape(self.prefix)}s\d+", name):
                self._bridges.add(int(name[len(self.prefix) + 1 :]))
        for h in self.hosts:
            master = masters.get(h.data_link, "")
            if master.startswith(f"{self.prefix}s"):
                self._side[h.name] = int(master[len(self.prefix) + 1 :])


def _no_ipv6(links: Iterable[str]) -> None:
    """No IPv6 on these machine-side links: the machine gets no address at all (not even
    a link-local one) on the data network, and bridge ports need none. Best effort:
    without IPv6 in the kernel there is nothing to switch off."""
    for name in links:
        with contextlib.suppress(OSError):
            Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
