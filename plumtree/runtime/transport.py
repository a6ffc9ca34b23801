"""UDP datagrams and length-prefixed TCP frames, with bounded per-peer send queues.

* UDP (SWIM probes and piggybacked gossip): one envelope per datagram.
* TCP (Plumtree and push-pull): one long-lived outbound connection per peer address,
  frames of ``4-byte big-endian length + envelope``. What is sent to a peer during one
  turn of the event loop is coalesced into one envelope per frame and written at the end
  of the turn; while the peer is not connected (or the kernel buffer is full) messages
  wait in a bounded queue (full: the message is dropped and counted). Reconnects back off
  exponentially.

Both directions are asyncio *protocols*, not streams: a frame costs no task switch, no
future and no timer on either side (with streams, the per-message cost on loopback was
dominated by that machinery, ~0.2 ms of CPU per message).

Everything received goes through: size bound, optional AES-GCM and the replay check
(``replay.py``), the total decoder, the cluster-label check, and only then to the node.
Each failure is counted, never raised.

Inbound connections are bounded in number, bytes buffered and time (``tcplimits.py``):
what a stranger who reaches the port can make the node hold is a constant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, cast

from plumtree.core import wire
from plumtree.core.limits import MAX_FRAME_BYTES, MAX_MESSAGES_PER_ENVELOPE
from plumtree.runtime.addresses import format_addr, parse_addr
from plumtree.runtime.crypto import OVERHEAD, DecryptError, Keyring
from plumtree.runtime.replay import ReplayGuard
from plumtree.runtime.tcplimits import TcpLimits

log = logging.getLogger("plumtree.transport")

_LEN = 4
MAX_UDP_RECEIVE = wire.MAX_DATAGRAM_BYTES + OVERHEAD + 64
#: messages per frame before we cut a new one (keeps frames well under the size limit)
FRAME_BATCH = 64

EnvelopeHandler = Callable[[wire.Envelope, str, bool], None]


@dataclass(slots=True)
class TransportStats:
    udp_bytes_sent: int = 0
    udp_bytes_received: int = 0
    tcp_bytes_sent: int = 0
    tcp_bytes_received: int = 0
    datagrams_sent: int = 0
    datagrams_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_dropped: int = 0
    decode_errors: int = 0
    decrypt_errors: int = 0
    label_mismatches: int = 0
    connection_errors: int = 0
    oversize_dropped: int = 0
    #: authenticated messages refused: stamped outside the window / already seen
    replay_stale: int = 0
    replay_replayed: int = 0
    #: inbound connections closed at once: over the total / per-source cap
    refused_limit: int = 0
    refused_source_limit: int = 0
    #: inbound connections the node closed: declared frame too long, over the buffer
    #: budget, frame not complete in time, idle
    closed_oversize: int = 0
    closed_buffer: int = 0
    closed_frame_timeout: int = 0
    closed_idle: int = 0

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


class BindError(OSError):
    """The gossip port could not be bound (busy, or not allowed)."""


class Transport:
    """Owns the UDP socket, the TCP listener and the outbound peer links."""

    def __init__(
        self,
        name: str,
        label: str,
        on_envelope: EnvelopeHandler,
        keyring: Keyring | None = None,
        queue_limit: int = 4096,
        connect_timeout: float = 2.0,
        limits: TcpLimits | None = None,
    ) -> None:
        self.name = name
        self.label = label
        self.keyring = keyring
        self.on_envelope = on_envelope
        self.queue_limit = queue_limit
        self.connect_timeout = connect_timeout
        self.stats = TransportStats()
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._links: dict[str, _Link] = {}
        self._inbound: set[_Inbound] = set()
        self.limits = limits or TcpLimits()
        #: inbound connections per source IP, and bytes of unfinished frames (all of them)
        self._per_source: Counter[str] = Counter()
        self.buffered = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self.replay = ReplayGuard()
        self._aad = label.encode()
        self.bound: tuple[str, int] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Bind TCP and UDP on the same port (port 0: pick a free one for both)."""
        loop = asyncio.get_running_loop()
        attempts = 20 if port == 0 else 1
        last: OSError | None = None
        for _ in range(attempts):
            try:
                server = await loop.create_server(
                    lambda: _Inbound(self), host, port, reuse_address=True
                )
            except OSError as exc:
                raise BindError(
                    exc.errno, f"cannot bind TCP {format_addr(host, port)}: {os_reason(exc)}"
                ) from None
            bound_port = server.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(host, bound_port)
                )
            except OSError as exc:
                server.close()
                await server.wait_closed()
                last = exc
                if port != 0:
                    raise BindError(
                        exc.errno,
                        f"cannot bind UDP {format_addr(host, bound_port)}: {os_reason(exc)}",
                    ) from None
                continue
            self._server = server
            self._udp = udp
            self.bound = (host, bound_port)
            self._sweeper = loop.call_later(self.limits.sweep_interval(), self._sweep)
            return self.bound
        raise BindError(getattr(last, "errno", 0), f"no free port for UDP and TCP on {host}")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for link in list(self._links.values()):
            link.close()
        self._links.clear()
        if self._server is not None:
            self._server.close()
        for inbound in list(self._inbound):
            inbound.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._udp is not None:
            self._udp.close()

    async def drain(self, timeout: float) -> bool:
        """Wait until every peer queue is flushed (or ``timeout``); True if all were."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if all(link.idle() for link in self._links.values()):
                return True
            await asyncio.sleep(0.01)
        return False

    # ------------------------------------------------------------------ sending

    def send_datagram(self, addr: str, messages: list[Any]) -> None:
        if self._udp is None:
            return
        data = self._seal(wire.encode(wire.Envelope(self.label, self.name, messages)))
        if len(data) > MAX_UDP_RECEIVE:
            self.stats.oversize_dropped += 1
            return
        try:
            host, port = parse_addr(addr)
            self._udp.sendto(data, (host, port))
        except (OSError, ValueError):
            self.stats.connection_errors += 1
            return
        self.stats.datagrams_sent += 1
        self.stats.udp_bytes_sent += len(data)

    def send_reliable(self, addr: str, messages: list[Any]) -> None:
        """Queue messages on the TCP link to ``addr`` (created on demand)."""
        link = self._links.get(addr)
        if link is None or link.closed:
            link = self._links[addr] = _Link(self, addr)
        link.put(messages)

    def close_link(self, addr: str) -> None:
        link = self._links.pop(addr, None)
        if link is not None:
            link.close()

    def queue_depth(self) -> int:
        return sum(len(link.queue) for link in self._links.values())

    def _seal(self, data: bytes) -> bytes:
        return self.keyring.encrypt(data, self._aad) if self.keyring else data

    # ------------------------------------------------------------------ receiving

    def _open(self, data: bytes, source: str, reliable: bool) -> None:
        if self.keyring is not None:
            try:
                opened = self.keyring.open(data, self._aad)
            except DecryptError:
                self.stats.decrypt_errors += 1
                return
            verdict = self.replay.check(opened.sent_at, opened.nonce, time.time())
            if verdict is not None:
                if verdict == "stale":
                    self.stats.replay_stale += 1
                else:
                    self.stats.replay_replayed += 1
                log.debug("%s %s from %s", verdict, "frame" if reliable else "datagram", source)
                return
            data = opened.plaintext
        try:
            envelope = wire.decode(data)
        except wire.DecodeError as exc:
            self.stats.decode_errors += 1
            log.debug(
                "undecodable %s from %s: %s", "frame" if reliable else "datagram", source, exc
            )
            return
        if envelope.label != self.label:
            self.stats.label_mismatches += 1
            return
        try:
            self.on_envelope(envelope, source, reliable)
        except Exception:  # a bug in a handler must not kill the socket
            log.exception("error handling a message from %s", envelope.sender)

    def inbound_count(self) -> int:
        return len(self._inbound)

    def _admit(self, conn: _Inbound) -> bool:
        """Count a new inbound connection in, or refuse it (over a cap)."""
        limits, stats = self.limits, self.stats
        if len(self._inbound) >= limits.max_connections:
            stats.refused_limit += 1
            return False
        if self._per_source[conn.host] >= limits.max_connections_per_source:
            stats.refused_source_limit += 1
            return False
        self._inbound.add(conn)
        self._per_source[conn.host] += 1
        return True

    def _release(self, conn: _Inbound) -> None:
        if conn in self._inbound:
            self._inbound.discard(conn)
            self._per_source[conn.host] -= 1
            if self._per_source[conn.host] <= 0:
                del self._per_source[conn.host]
        self.buffered -= conn.counted
        conn.counted = 0

    def _sweep(self) -> None:
        """Close inbound connections whose frame is overdue or that went idle."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        limits, stats = self.limits, self.stats
        for conn in list(self._inbound):
            if conn.frame_since is not None and now - conn.frame_since > limits.frame_timeout:
                stats.closed_frame_timeout += 1
                conn.close()
            elif now - conn.last_data > limits.idle_timeout:
                stats.closed_idle += 1
                conn.close()
        self._sweeper = loop.call_later(limits.sweep_interval(), self._sweep)

    def _datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.stats.datagrams_received += 1
        self.stats.udp_bytes_received += len(data)
        if len(data) > MAX_UDP_RECEIVE:
            self.stats.oversize_dropped += 1
            return
        self._open(data, format_addr(addr[0], addr[1]), reliable=False)


def os_reason(exc: OSError) -> str:
    """``Address already in use``, not asyncio's wordy wrapper around it."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, transport: Transport) -> None:
        self.owner = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.owner._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and friends
        self.owner.stats.connection_errors += 1


class _Inbound(asyncio.Protocol):
    """One accepted TCP connection: cut the byte stream into frames, open each one."""

    def __init__(self, owner: Transport) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.limit = MAX_FRAME_BYTES + (OVERHEAD if owner.keyring else 0)
        self.transport: asyncio.Transport | None = None
        self.source = "?"
        self.host = "?"
        self.loop = asyncio.get_running_loop()
        self.last_data = self.loop.time()
        #: when the unfinished frame in ``buffer`` began (None: no frame under way)
        self.frame_since: float | None = None
        #: ``len(buffer)`` as counted in the owner's ``buffered``
        self.counted = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        peer = transport.get_extra_info("peername")
        self.source = format_addr(peer[0], peer[1]) if peer else "?"
        self.host = str(peer[0]) if peer else "?"
        if not self.owner._admit(self):
            transport.abort()  # over a cap: nothing read, nothing buffered
            return
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return  # refused or closed: whatever still arrives is not ours to keep
        self.last_data = self.loop.time()
        buffer = self.buffer
        buffer += data
        owner = self.owner
        stats = owner.stats
        start = 0
        available = len(buffer)
        while available - start >= _LEN:
            size = int.from_bytes(buffer[start : start + _LEN], "big")
            if size > self.limit:
                stats.oversize_dropped += 1
                stats.decode_errors += 1
                stats.closed_oversize += 1
                self.close()  # cannot resync a stream after a bogus length: drop it
                return
            end = start + _LEN + size
            if available < end:
                break
            frame = bytes(memoryview(buffer)[start + _LEN : end])
            start = end
            stats.frames_received += 1
            stats.tcp_bytes_received += size + _LEN
            owner._open(frame, self.source, reliable=True)
            if self.transport is None:  # closed while handling the frame
                return
        if start:
            del buffer[:start]
            self.frame_since = None
        left = len(buffer)
        if left and self.frame_since is None:
            self.frame_since = self.last_data
        owner.buffered += left - self.counted
        self.counted = left
        if owner.buffered > owner.limits.max_buffered_bytes:
            stats.closed_buffer += 1
            self.close()  # the budget is shared: the connection that overflows it goes

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._forget()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # (at once: we never write on an inbound connection)
            self.transport = None
        self._forget()

    def _forget(self) -> None:
        self.buffer = bytearray()  # (clear() keeps the allocation)
        self.frame_since = None
        self.owner._release(self)


class _Link(asyncio.Protocol):
    """One outbound TCP connection with its bounded queue.

    ``put`` queues and, once per turn of the event loop, ``_flush`` writes everything
    queued straight to the socket's transport (coalesced into frames). The queue only
    builds up while connecting, reconnecting, or while the transport is paused because the
    peer does not read fast enough (asyncio's write buffer is above its high-water mark):
    memory stays bounded by ``queue_limit`` messages plus that buffer.
    """

    BACKOFF_MIN = 0.05
    BACKOFF_MAX = 2.0
    #: give up (drop the queue, forget the link) after failing to connect for this long
    GIVE_UP_AFTER = 30.0
    #: close a connection nothing was sent on for this long; a new link is made on demand
    IDLE_AFTER = 60.0

    def __init__(self, owner: Transport, addr: str) -> None:
        self.owner = owner
        self.addr = addr
        self.queue: deque[Any] = deque()
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.flush_scheduled = False
        self.connecting: asyncio.Task[None] | None = None
        self.last_used = self.loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None
        self._connect()

    # ------------------------------------------------------------------ sending

    def put(self, messages: list[Any]) -> None:
        room = self.owner.queue_limit - len(self.queue)
        if len(messages) > room:
            self.owner.stats.frames_dropped += len(messages) - max(room, 0)
            messages = messages[: max(room, 0)]
        if not messages:
            return
        self.queue.extend(messages)
        self.last_used = self.loop.time()
        if self.transport is None:
            self._connect()  # no-op while a connection attempt is under way
        elif not self.paused and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or self.paused or self.closed:
            return
        stats = self.owner.stats
        queue = self.queue
        while queue and not self.paused:
            batch = [queue.popleft() for _ in range(min(len(queue), FRAME_BATCH))]
            for frame in self._frames(batch):
                transport.write(len(frame).to_bytes(_LEN, "big") + frame)
                stats.frames_sent += 1
                stats.tcp_bytes_sent += len(frame) + _LEN
            if self.transport is None:  # the write failed and closed the connection
                break

    def idle(self) -> bool:
        """Nothing queued and nothing left in the socket's write buffer."""
        if self.queue:
            return False
        transport = self.transport
        return transport is None or transport.get_write_buffer_size() == 0

    def close(self) -> None:
        self.closed = True
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._forget()

    def _forget(self) -> None:
        if self.owner._links.get(self.addr) is self:
            del self.owner._links[self.addr]

    # ------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport
        self.paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if exc is not None:
            self.owner.stats.connection_errors += 1
        if not self.closed and self.queue:
            self._connect()  # more to send: reconnect (with backoff on failure)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.queue and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def data_received(self, data: bytes) -> None:
        pass  # peers never answer on our outbound connection

    # ------------------------------------------------------------------ connecting

    def _connect(self) -> None:
        if self.connecting is None and not self.closed:
            self.connecting = self.loop.create_task(self._connect_loop(), name=f"link {self.addr}")

    async def _connect_loop(self) -> None:
        stats = self.owner.stats
        backoff = self.BACKOFF_MIN
        failing_since: float | None = None
        try:
            while not self.closed and self.transport is None:
                try:
                    host, port = parse_addr(self.addr)
                    await asyncio.wait_for(
                        self.loop.create_connection(lambda: self, host, port),
                        self.owner.connect_timeout,
                    )
                except (OSError, TimeoutError, ValueError):
                    stats.connection_errors += 1
                    now = self.loop.time()
                    failing_since = failing_since or now
                    if now - failing_since > self.GIVE_UP_AFTER:
                        stats.frames_dropped += len(self.queue)
                        self.queue.clear()
                        self.closed = True
                        self._forget()
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.BACKOFF_MAX)
        except asyncio.CancelledError:
            return
        finally:
            self.connecting = None
        if self.closed:
            return
        self._arm_idle()
        if self.queue and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _arm_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = self.loop.call_later(self.IDLE_AFTER, self._check_idle)

    def _check_idle(self) -> None:
        self.idle_timer = None
        if self.closed:
            return
        idle_for = self.loop.time() - self.last_used
        if idle_for >= self.IDLE_AFTER and not self.queue and self.idle():
            self.close()  # a new link is made on demand
        else:
            self.idle_timer = self.loop.call_later(
                max(0.0, self.IDLE_AFTER - idle_for), self._check_idle
            )

    def _frames(self, batch: list[Any]) -> list[bytes]:
        owner = self.owner
        frames: list[bytes] = []
        pending = [batch]
        while pending:
            chunk = pending.pop()
            data = owner._seal(wire.encode(wire.Envelope(owner.label, owner.name, chunk)))
            if len(data) > MAX_FRAME_BYTES and len(chunk) > 1:
                half = len(chunk) // 2
                pending += [chunk[half:], chunk[:half]]
                continue
            if len(data) > MAX_FRAME_BYTES:
                owner.stats.oversize_dropped += 1
                continue
            frames.append(data)
        assert len(batch) <= MAX_MESSAGES_PER_ENVELOPE
        return frames
