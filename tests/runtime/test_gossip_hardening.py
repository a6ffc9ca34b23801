"""The gossip port under attack, on real node processes: memory stays bounded, slow and
idle connections are closed on time, replays are refused, the cluster keeps delivering.

Attackers come from other loopback source addresses (127.0.0.2 and up stand for other
hosts; the nodes talk from 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx

from plumtree.core import wire
from plumtree.core.ids import parse_id
from plumtree.core.limits import MAX_FRAME_BYTES
from plumtree.core.messages import Gossip, Ping, Suspect
from plumtree.runtime.addresses import parse_addr
from plumtree.runtime.crypto import Keyring
from tests.ledger import Load, delivery_log, metric, node_procs, settled, wait_until

MiB = 1 << 20
#: what the attacked node may grow by (RSS high-water mark over its RSS before): the
#: shared budget of unfinished frames (16 MiB here) plus reads, allocator slack and the
#: load; without the bounds the attack below makes it hold 40 x 4 MiB
GROWTH_BOUND = 64 * MiB
FRAME_TIMEOUT = 3.0
IDLE_TIMEOUT = 5.0
#: a timeout fires within one sweep (a quarter of it, at most 1 s) after it expires;
#: the rest is this machine being busy
SLACK = 2.5


def config(directory: Path, node: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "node.toml"
    path.write_text(
        'profile = "local"\n'
        f"{node}\n"
        "[transport]\n"
        "max_connections_per_source = 8\n"
        f"max_buffered_bytes = {16 * MiB}\n"
        f"frame_timeout = {FRAME_TIMEOUT}\n"
        f"idle_timeout = {IDLE_TIMEOUT}\n"
    )
    return path


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def connect(addr: str, source: str) -> socket.socket:
    host, port = parse_addr(addr)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(10)
    s.connect((host, port))
    return s


def flood(sock: socket.socket, declared: int, send: int) -> None:
    """Declare a frame of ``declared`` bytes and send ``send`` of them (never finish)."""
    with contextlib.suppress(OSError):
        sock.sendall(declared.to_bytes(4, "big"))
        chunk = b"\0" * 65536
        for _ in range(send // len(chunk)):
            sock.sendall(chunk)


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the node closed ``sock`` (None: still open after ``seconds``)."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:  # reset
            return time.monotonic() - start
    return None


def test_connection_floods_huge_frames_and_slow_peers_leave_memory_bounded(
    tmp_path: Path,
) -> None:
    """Before: 25 connections each declaring an 8 MB frame held +200 MB until the attacker
    closed them; no cap, no timeout."""
    with node_procs(tmp_path / "c", 3, config(tmp_path)) as c:
        target = c.procs[1]
        before = memory(target.pid)
        load = Load(c.urls, rate=20, targets={0, 2}).start()
        # 4 "hosts" x 10 connections, each declaring an 8 MB frame and sending 4 MiB of it
        socks = [connect(target.gossip_addr, f"127.0.0.{2 + i // 10}") for i in range(40)]
        threads = [
            threading.Thread(target=flood, args=(s, MAX_FRAME_BYTES, 4 * MiB)) for s in socks
        ]
        try:
            for t in threads:
                t.start()
            # meanwhile: one frame trickling a byte at a time, and one silent connection
            slow = connect(target.gossip_addr, "127.0.0.7")
            slow.sendall((1000).to_bytes(4, "big"))
            silent = connect(target.gossip_addr, "127.0.0.8")
            slow_started = silent_started = time.monotonic()
            slow_closed: float | None = None
            while slow_closed is None and time.monotonic() - slow_started < FRAME_TIMEOUT + SLACK:
                with contextlib.suppress(OSError):
                    slow.sendall(b"x")
                slow_closed = closed_within(slow, 0.3)
            slow_closed = time.monotonic() - slow_started if slow_closed is not None else None
            silent_closed = closed_within(silent, IDLE_TIMEOUT + SLACK)
            silent_closed = time.monotonic() - silent_started if silent_closed is not None else None
            for t in threads:
                t.join(60)
            after = memory(target.pid)
            acked = load.stop()
        finally:
            for s in [*socks, slow, silent]:
                s.close()
        growth = after["VmHWM"] - before["VmRSS"]
        text = c.get(1, "/metrics").text
        refused = metric(text, "plumtree_transport_connections_refused_total")
        by_buffer = metric(text, "plumtree_transport_connections_closed_total", reason="buffer")
        print(
            f"RSS {before['VmRSS'] / MiB:.0f} MiB before, peak {after['VmHWM'] / MiB:.0f} MiB"
            f" (+{growth / MiB:.0f}); refused {refused:.0f}, closed over the budget"
            f" {by_buffer:.0f}; trickle closed after {slow_closed} s, silent after"
            f" {silent_closed} s"
        )
        assert growth < GROWTH_BOUND
        assert refused == 8  # 2 over the per-source cap from each of the 4 flooding hosts
        assert by_buffer >= 20  # 32 x 4 MiB admitted, 16 MiB budget
        assert slow_closed is not None and FRAME_TIMEOUT <= slow_closed <= FRAME_TIMEOUT + SLACK
        assert silent_closed is not None and silent_closed <= IDLE_TIMEOUT + SLACK
        assert metric(text, "plumtree_transport_connections_closed_total", reason="idle") >= 1
        assert metric(text, "plumtree_transport_inbound_buffered_bytes") <= 16 * MiB
        # the cluster kept delivering through it all, exactly once
        assert len(acked) > 50
        for book in settled(c, acked, timeout=30):
            assert not book.missing and not book.duplicates, str(book)


def test_replayed_encrypted_frames_and_datagrams_are_refused(tmp_path: Path) -> None:
    """Before: with a keyring, a captured frame replayed 60 s later was accepted (SWIM
    messages and Grafts took effect again)."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps([Keyring.generate()]))
    os.chmod(keys, 0o600)
    key = Keyring.load(keys)
    with node_procs(tmp_path / "c", 3, config(tmp_path, f'[node]\nkeyring = "{keys}"')) as c:
        n0, n1, n2 = (p.name for p in c.procs)
        assert all(c.json(i, "/v1/status")["encrypted"] for i in range(3))
        msg_id = httpx.post(c.urls[0] + "/v1/broadcast", content=b"once", timeout=5).json()["id"]
        wait_until(lambda: all(len(delivery_log(u)) == 1 for u in c.urls), 15)
        epoch = c.json(0, "/v1/status")["epoch"]
        host, port = parse_addr(c.procs[1].gossip_addr)

        def seal(messages: list[object], now: float) -> bytes:
            return key.encrypt(wire.encode(wire.Envelope("", n0, messages)), b"", now=now)

        def incarnation() -> int:
            members = c.json(1, "/v1/members")["items"]
            (n2_row,) = [m for m in members if m["name"] == n2]
            assert n2_row["state"] == "alive"
            return int(n2_row["incarnation"])

        def push(frame: bytes | None = None, datagram: bytes | None = None) -> None:
            if frame is not None:
                with socket.create_connection((host, port), timeout=5) as s:
                    s.sendall(len(frame).to_bytes(4, "big") + frame)
                    time.sleep(0.2)
            if datagram is not None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.sendto(datagram, (host, port))
            time.sleep(0.5)

        def counts() -> tuple[float, float, float]:
            text = c.get(1, "/metrics").text
            return (
                metric(text, "plumtree_transport_replays_dropped_total", reason="stale"),
                metric(text, "plumtree_transport_replays_dropped_total", reason="replay"),
                metric(text, "plumtree_messages_duplicate_total"),
            )

        inc = incarnation()
        suspicions = metric(c.get(1, "/metrics").text, "swim_suspicions_total")
        # a Suspect of n2 as n0 sent it a minute ago (the stamp is authenticated: a capture
        # cannot be moved in time): not applied
        push(datagram=seal([Suspect(n2, inc, n0)], time.time() - 60))
        assert counts()[:2] == (1, 0)
        assert incarnation() == inc, "n2 was never suspected, so never had to refute"
        assert metric(c.get(1, "/metrics").text, "swim_suspicions_total") == suspicions
        # the broadcast's Gossip frame and a Ping: the first copy goes through (the
        # tree counts the Gossip a duplicate), the replay of the same bytes does not
        gossip = seal([Gossip(parse_id(msg_id), 0, n0, epoch, b"once")], time.time())
        ping = seal([Ping(424242, n1)], time.time())
        stale, replayed, duplicates = counts()
        push(frame=gossip, datagram=ping)
        assert counts() == (stale, replayed, duplicates + 1)
        push(frame=gossip, datagram=ping)
        assert counts() == (stale, replayed + 2, duplicates + 1)
        # the same Gossip captured 60 s ago
        push(frame=seal([Gossip(parse_id(msg_id), 0, n0, epoch, b"once")], time.time() - 60))
        assert counts() == (stale + 1, replayed + 2, duplicates + 1)
        assert [len(delivery_log(u)) for u in c.urls] == [1, 1, 1]
        assert incarnation() == inc
