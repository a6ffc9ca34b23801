"""Network-namespace labs: real reachability, partitions, isolation and teardown.

Needs root and iproute2 (skipped otherwise, with the reason). Every lab is torn down by
its context manager even when a test fails, and each test checks that nothing with the
lab's prefix is left (`ip netns list`, `ip link show`, the registry record).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plumctl.lab import Host, Lab, LabError, available, cleanup_stale, resources
from plumctl.lab import netns as netns_mod

REASON = available()
if REASON is not None:
    pytest.skip(f"network-namespace lab unavailable here: {REASON}", allow_module_level=True)

pytestmark = pytest.mark.timeout(120)

PY = [sys.executable, "-I", "-S", "-c"]  # a fast-starting python for one-liners
NO = 0.5  # how long a check waits before calling traffic blocked
YES = 5.0  # generous time for traffic that should flow

UDP_RECV = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    data, addr = s.recvfrom(100)
    print("got", data.decode(), addr[0], flush=True)
except TimeoutError:
    print("timeout", flush=True)
"""
UDP_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    try:
        s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
    except OSError:
        pass
    time.sleep(0.02)
"""
TCP_SERVE = """
import socket, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
try:
    c, addr = s.accept()
    print("accepted", addr[0], flush=True)
except TimeoutError:
    print("timeout", flush=True)
"""
TCP_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as exc:
    print("failed", type(exc).__name__, exc, flush=True)
    sys.exit(1)
print("connected", flush=True)
"""
SLEEP = "import time; time.sleep(600)"

_ports = itertools.count(7000)


def _listener(
    lab: Lab, host: str, ip: str, script: str, wait: float
) -> tuple[subprocess.Popen[str], int]:
    port = next(_ports)
    proc = lab.popen(
        host, [*PY, script, ip, str(port), str(wait)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "ready", f"listener in {host} did not start: {line!r}"
    return proc, port


def udp(lab: Lab, src: str, dst: str, *, expect: bool, ip: str | None = None) -> bool:
    """Does a datagram from src reach dst's data address (from src's data address)?"""
    to = ip or lab.host(dst).data_ip
    recv, port = _listener(lab, dst, to, UDP_RECV, YES if expect else NO)
    lab.run(src, [*PY, UDP_SEND, to, str(port)], check=True)
    out, _ = recv.communicate(timeout=YES + 5)
    if out.startswith("got"):
        assert out.split()[2] == lab.host(src).data_ip, out
        return True
    return False


def tcp(lab: Lab, src: str, dst: str, *, expect: bool, ip: str | None = None) -> bool:
    """Does a TCP connect from src to dst (data address unless `ip`) succeed?"""
    to = ip or lab.host(dst).data_ip
    wait = YES if expect else NO
    server, port = _listener(lab, dst, to, TCP_SERVE, wait + 5)
    client = lab.run(src, [*PY, TCP_CONNECT, to, str(port), str(wait)], timeout=wait + 10)
    server.kill()
    server.communicate()
    return client.returncode == 0


def mgmt_reachable(lab: Lab, host: str) -> bool:
    """Can this test process (the machine) connect to a server on the host's mgmt address?"""
    ip = lab.host(host).mgmt_ip
    server, port = _listener(lab, host, ip, TCP_SERVE, YES)
    try:
        with socket.create_connection((ip, port), timeout=YES):
            pass
        out, _ = server.communicate(timeout=YES)
        return out.startswith("accepted")
    except OSError:
        return False
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def assert_gone(prefix: str) -> None:
    assert prefix
    assert resources(prefix) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    assert prefix not in netns.stdout
    assert prefix not in links.stdout
    assert not (netns_mod.STATE_DIR / f"{prefix}.json").exists()


def pid_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def lab4() -> Iterator[Lab]:
    lab = Lab(4)
    with lab:
        yield lab
    assert_gone(lab.prefix)


def test_hosts_reach_each_other_and_the_machine_reaches_management(lab4: Lab) -> None:
    lab = lab4
    assert [h.name for h in lab.hosts] == ["h0", "h1", "h2", "h3"]
    assert lab.data_subnet is not None and lab.mgmt_subnet is not None
    for h in lab.hosts:
        assert h.netns.startswith(lab.prefix) and h.data_link.startswith(lab.prefix)
        assert len(h.data_link) <= 15 and len(h.mgmt_link) <= 15
        assert ipaddress.ip_address(h.data_ip) in lab.data_subnet
        assert ipaddress.ip_address(h.mgmt_ip) in lab.mgmt_subnet
    assert lab.hosts[0].data_ip.endswith(".2") and lab.hosts[3].mgmt_ip.endswith(".5")

    # each namespace has its own loopback and exactly its two addresses
    addrs = lab.run("h2", ["ip", "-o", "-4", "addr", "show"], check=True).stdout
    assert (
        "127.0.0.1/8" in addrs and lab.hosts[2].data_ip in addrs and lab.hosts[2].mgmt_ip in addrs
    )
    assert lab.hosts[1].data_ip not in addrs

    assert udp(lab, "h0", "h1", expect=True)
    assert udp(lab, "h3", "h2", expect=True)
    assert tcp(lab, "h1", "h0", expect=True)
    assert tcp(lab, "h2", "h3", expect=True)
    for h in lab.hosts:
        assert mgmt_reachable(lab, h.name)

    # the machine has no address on the data network (not even IPv6 link-local) ...
    machine = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    assert not any(f" {h.data_ip}/" in machine for h in lab.hosts)
    side0 = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", f"{lab.prefix}s0"], capture_output=True, text=True
    )
    assert side0.returncode == 0 and side0.stdout.strip() == ""
    # ... and hosts don't reach each other over the management network
    assert not tcp(lab, "h0", "h1", expect=False, ip=lab.hosts[1].mgmt_ip)


def test_partition_blocks_udp_and_tcp_between_groups_and_heal_restores(lab4: Lab) -> None:
    lab = lab4
    assert udp(lab, "h0", "h2", expect=True)  # warm ARP caches: the cut must still hold

    lab.partition([["h0", "h1"], ["h2", "h3"]])
    assert lab.sides() == [["h0", "h1"], ["h2", "h3"]]
    assert udp(lab, "h0", "h1", expect=True)
    assert tcp(lab, "h1", "h0", expect=True)
    assert udp(lab, "h3", "h2", expect=True)
    assert not udp(lab, "h0", "h2", expect=False)
    assert not udp(lab, "h3", "h1", expect=False)
    assert not tcp(lab, "h0", "h2", expect=False)
    assert not tcp(lab, "h3", "h1", expect=False)
    for h in lab.hosts:
        assert mgmt_reachable(lab, h.name)

    lab.heal()
    assert lab.sides() == [["h0", "h1", "h2", "h3"]]
    assert udp(lab, "h0", "h2", expect=True)
    assert tcp(lab, "h0", "h2", expect=True)
    assert tcp(lab, "h3", "h1", expect=True)

    # another cut reuses the side bridges; hosts named nowhere form one group together
    lab.partition([[lab.hosts[2]]])
    assert lab.sides() == [["h2"], ["h0", "h1", "h3"]]
    assert udp(lab, "h0", "h3", expect=True)
    assert not udp(lab, "h1", "h2", expect=False)
    lab.heal()
    assert udp(lab, "h1", "h2", expect=True)


def test_isolate_cuts_one_host_and_restore_brings_it_back(lab4: Lab) -> None:
    lab = lab4
    lab.isolate("h1")
    assert lab.isolated == {"h1"}
    assert not udp(lab, "h0", "h1", expect=False)
    assert not tcp(lab, "h1", "h2", expect=False)
    assert udp(lab, "h0", "h2", expect=True)
    assert mgmt_reachable(lab, "h1")

    lab.restore("h1")
    assert lab.isolated == frozenset()
    assert udp(lab, "h0", "h1", expect=True)
    assert tcp(lab, "h1", "h2", expect=True)

    # heal() restores isolated hosts too; isolation survives a partition
    lab.isolate("h3")
    lab.partition([["h0", "h3"]])
    assert not udp(lab, "h0", "h3", expect=False)
    lab.heal()
    assert udp(lab, "h0", "h3", expect=True)


def test_down_kills_processes_and_removes_everything_when_the_body_raises() -> None:
    lab = Lab(2, grace=0.3)
    stubborn = polite = parent = None
    with pytest.raises(RuntimeError, match="boom"), lab:
        ignore_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
        stubborn = lab.popen("h0", [*PY, ignore_term], stdout=subprocess.PIPE, text=True)
        polite = lab.popen(
            "h1", [*PY, "print('ready', flush=True); " + SLEEP], stdout=subprocess.PIPE, text=True
        )
        spawn = f"import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', {SLEEP!r}]); print(c.pid, flush=True); c.wait()"
        parent = lab.popen("h1", [*PY, spawn], stdout=subprocess.PIPE, text=True)
        assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == "ready"
        assert polite.stdout is not None and polite.stdout.readline().strip() == "ready"
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        assert pid_running(grandchild)
        raise RuntimeError("boom")
    assert stubborn is not None and polite is not None and parent is not None
    assert stubborn.returncode == -signal.SIGKILL  # ignored SIGTERM: killed after the grace
    assert polite.returncode == -signal.SIGTERM
    assert parent.returncode == -signal.SIGTERM
    assert wait_dead(grandchild)  # not started by popen: killed as a leftover of the netns
    assert_gone(lab.prefix)
    assert not lab.is_up
    lab.down()  # idempotent
    with pytest.raises(LabError, match="not up"):
        lab.popen("h0", ["true"])


def test_two_labs_at_once_do_not_collide() -> None:
    a, b = Lab(2), Lab(2)
    try:
        errors: list[BaseException] = []

        def up(lab: Lab) -> None:
            try:
                lab.up()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=up, args=(lab,)) for lab in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert a.prefix != b.prefix and a.slot != b.slot
        assert a.data_subnet is not None and b.data_subnet is not None
        assert a.mgmt_subnet is not None and b.mgmt_subnet is not None
        assert not a.data_subnet.overlaps(b.data_subnet)
        assert not a.mgmt_subnet.overlaps(b.mgmt_subnet)
        assert not {h.netns for h in a.hosts} & {h.netns for h in b.hosts}
        for lab in (a, b):
            assert udp(lab, "h0", "h1", expect=True)
            assert tcp(lab, "h1", "h0", expect=True)
            assert mgmt_reachable(lab, "h1")
        # separate networks: no route from one lab's host to the other's
        crossed = a.run("h0", [*PY, TCP_CONNECT, b.hosts[1].data_ip, "7", str(NO)])
        assert crossed.returncode == 1 and "unreachable" in crossed.stdout.lower()
        a.partition([["h0"], ["h1"]])
        assert udp(b, "h0", "h1", expect=True)  # b is not affected by a's partition
    finally:
        a.down()
        b.down()
    assert_gone(a.prefix)
    assert_gone(b.prefix)


CHILD_LAB = f"""
import sys, time
from plumctl.lab import Lab
lab = Lab(2)
lab.up()
# not on our pipes: the test waits for this process's exit, not for EOF
p = lab.popen("h0", [sys.executable, "-c", {SLEEP!r}], stdout=-3, stderr=-3)
print(lab.prefix, p.pid, flush=True)
time.sleep(600)
"""


def test_cleanup_stale_removes_the_lab_of_a_dead_owner() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_LAB], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    prefix = ""
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert len(line) == 2, child.communicate(timeout=10)
        prefix, node_pid = line[0], int(line[1])
        assert resources(prefix)
        with Lab(1) as live:
            assert prefix not in cleanup_stale()  # its owner still lives
            child.kill()
            child.wait()
            assert resources(prefix) and pid_running(node_pid)
            removed = cleanup_stale()
            # (another process's Lab.up() may have cleaned it first: it is gone either way)
            assert prefix in removed or not resources(prefix)
            assert live.prefix not in removed  # a live lab is left alone
            assert resources(live.prefix)
            assert mgmt_reachable(live, "h0")
        assert_gone(prefix)
        assert_gone(live.prefix)
        assert wait_dead(node_pid)  # what ran in the dead lab was killed
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        if prefix:
            cleanup_stale(prefix)


@pytest.mark.parametrize("by", ["cleanup_stale", "next_lab_up"])
def test_unrecorded_leftovers_of_the_naming_scheme_are_removed(by: str) -> None:
    # what a lab killed before writing its record, or a probe killed mid-way, would leave
    prefix = netns_mod._fresh_prefix(set(), *netns_mod._existing_names())
    try:
        netns_mod._ip_batch(
            [
                f"netns add {prefix}-h0",
                f"link add {prefix}s0 type bridge",
                f"link add {prefix}d0 master {prefix}s0 type veth peer name data0 netns {prefix}-h0",
            ]
        )
        assert len(resources(prefix)) == 3
        if by == "cleanup_stale":
            assert prefix in cleanup_stale()
        else:
            with Lab(1) as lab:
                assert lab.prefix != prefix
                assert_gone(prefix)
            assert_gone(lab.prefix)
        assert_gone(prefix)
    finally:
        with contextlib.suppress(LabError):
            netns_mod._destroy(prefix)


def test_probe_reports_why_labs_are_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns_mod._probe() == "network namespaces need root (running as uid 1000)"


def test_failed_up_tears_down_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns_mod, "MGMT_IFNAME", "a-name-longer-than-15")
    lab = Lab(2)
    with pytest.raises(LabError) as info:
        lab.up()
    message = str(info.value)
    assert "\n" not in message and "a-name-longer-than-15" in message and "ip " in message
    assert lab.prefix and not lab.is_up
    assert_gone(lab.prefix)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Lab(0)
    with pytest.raises(ValueError):
        Lab(2, prefix="Bad-prefix")
    with pytest.raises(ValueError):
        Lab(2, prefix="waytoolong")
    with pytest.raises(LabError, match="not up"):
        Lab(2).partition([["h0"]])
    with Lab(2) as lab:
        with pytest.raises(LabError, match="more than one group"):
            lab.partition([["h0"], ["h0", "h1"]])
        with pytest.raises(LabError, match="no host 'h7'"):
            lab.isolate("h7")
        with pytest.raises(LabError, match="no host"):
            lab.host(Host("h0", "other-h0", "10.0.0.1", "10.0.0.2"))
        with pytest.raises(LabError, match="already up"):
            lab.up()
        assert lab.sides() == [["h0", "h1"]]
    assert_gone(lab.prefix)
