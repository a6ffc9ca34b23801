"""Live keyring changes (``plumctl keys``): install, use, remove, kept across restarts.

A change is planned on a copy of the key list (:func:`plan`, pure), written to the
node's keyring file (a temporary file in the same directory, mode 0600, fsync, rename,
fsync of the directory) and only then swapped into the live :class:`Keyring` the
transport seals and opens with. So a change the node confirmed survives a restart, and
one it refused or could not write left both the file and the running keyring as they
were. Changes are serialised by a lock; the file is written in a thread so the node
keeps gossiping meanwhile.

Rotation without a rejected frame is an order the cluster follows (``plumctl keys``
checks it): install NEW everywhere (every node still seals with OLD and now opens NEW
too), use NEW everywhere (every node can already open it), remove OLD (nobody seals with
it any more).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from plumtree.runtime.crypto import Keyring, encode_key, fingerprint

log = logging.getLogger("plumtree.keys")

#: What ``POST /v1/keys/{op}`` accepts.
OPS = ("install", "use", "remove")


class KeyConflict(Exception):
    """The change contradicts the keyring (HTTP 409): ``error`` and ``detail`` say why."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail


@dataclass(frozen=True, slots=True)
class KeyChange:
    """The outcome of one change: did the keyring change, and is it in the file."""

    changed: bool
    persisted: bool


def plan(keys: tuple[bytes, ...], op: str, key: bytes) -> list[bytes]:
    """The key list (primary first) after ``op``; installing a present key or removing an
    absent one changes nothing (a retried fan-out is harmless). KeyConflict: refused."""
    if op == "install":
        return list(keys) if key in keys else [*keys, key]
    if op == "use":
        if key not in keys:
            raise KeyConflict("key not installed", "install it first: plumctl keys install KEY")
        return [key, *(k for k in keys if k != key)]
    if op == "remove":
        if keys and key == keys[0]:
            raise KeyConflict(
                "cannot remove the primary key", "make another key primary first: plumctl keys use"
            )
        return [k for k in keys if k != key]
    raise ValueError(f"unknown keyring operation {op!r} (known: {', '.join(OPS)})")


def write_keyring_file(path: str | Path, keys: list[bytes]) -> None:
    """Replace the keyring file atomically: readers see the old file or the new one,
    a crash leaves one of them, and the file is only ever readable by its owner."""
    target = Path(path)
    data = (json.dumps([encode_key(k) for k in keys], indent=2) + "\n").encode()
    # mkstemp: a fresh name (nodes sharing a directory never clobber each other's
    # temporary file) created with mode 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # (mkstemp's mode already; said again for the reader)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a machine crash
    finally:
        os.close(dir_fd)


class KeyManager:
    """The node's live keyring and the file it came from (None: memory only)."""

    def __init__(self, keyring: Keyring, path: str | None) -> None:
        self.keyring = keyring
        self.path = path
        self._lock = asyncio.Lock()

    async def change(self, op: str, key: bytes) -> KeyChange:
        """Apply ``op`` to the keyring: file first, then the live keyring.

        Raises KeyConflict (refused), ValueError (unknown op) or OSError (the file could
        not be written: nothing changed).
        """
        async with self._lock:
            keys = self.keyring.keys
            new = plan(keys, op, key)
            persisted = self.path is not None
            if new == list(keys):
                return KeyChange(False, persisted)
            if self.path is not None:
                await asyncio.to_thread(write_keyring_file, self.path, new)
            self.keyring.replace(new)
        log.info(
            "keyring: %s key %s; primary %s, %d key%s%s",
            op,
            fingerprint(key),
            fingerprint(new[0]),
            len(new),
            "" if len(new) == 1 else "s",
            f", saved to {self.path}" if self.path else ", in memory only (no keyring file)",
            extra={"fields": {"op": op, "key": fingerprint(key), "keys": len(new)}},
        )
        return KeyChange(True, persisted)
