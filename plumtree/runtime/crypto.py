"""AES-GCM encryption of every datagram and frame, with a keyring (memberlist/serf style).

The primary key (first) encrypts; every key decrypts, so keys can be rotated without a
flag day. A node without a valid key can neither join nor inject: what it sends fails
authentication and is dropped (and counted) before the decoder sees it.

Sealed layout (version 2): ``version (1) | sent at, ms since the epoch (8, big-endian) |
nonce (12) | ciphertext + tag (16)``. The version byte and the timestamp are authenticated
(they are part of the AAD), so a holder of no key cannot move a captured message in time;
the receiver refuses one sent too long ago, or already seen (``runtime/replay.py``).
Version 1 (no timestamp) is no longer accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: 2: a send timestamp in the authenticated header (replay protection)
VERSION = 2
STAMP_LEN = 8
NONCE_LEN = 12
TAG_LEN = 16
HEADER_LEN = 1 + STAMP_LEN + NONCE_LEN
OVERHEAD = HEADER_LEN + TAG_LEN
_MAX_STAMP = 2**64 - 1


class KeyringError(ValueError):
    """The keyring file or a key in it is unusable."""


class DecryptError(ValueError):
    """No key in the keyring authenticates this message."""


@dataclass(frozen=True, slots=True)
class Opened:
    """An authenticated message: its plaintext, when its sender sealed it, its nonce."""

    plaintext: bytes
    sent_at: float  # unix seconds, by the sender's clock
    nonce: bytes


#: AES key sizes, as memberlist accepts them
KEY_SIZES = (16, 24, 32)


def decode_key(text: str) -> bytes:
    """A key as operators write it (standard base64 of 16, 24 or 32 bytes), or KeyringError."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise KeyringError("not a base64 key") from None
    _check_size(key)
    return key


def _check_size(key: bytes) -> None:
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"key of {len(key)} bytes: AES keys are 16, 24 or 32 bytes")


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def fingerprint(key: bytes) -> str:
    """What logs show of a key: 8 hex digits of its SHA-256, never the key."""
    return hashlib.sha256(key).hexdigest()[:8]


class Keyring:
    """AES-128/192/256-GCM keys; ``keys[0]`` is the primary.

    ``replace`` swaps the whole list at once (live rotation, ``plumctl keys``): a frame
    is sealed or opened with either the old list or the new one, never a mix.
    """

    def __init__(self, keys: list[bytes]) -> None:
        self._keys: tuple[bytes, ...] = ()
        self._ciphers: list[AESGCM] = []
        self.replace(keys)

    def replace(self, keys: list[bytes]) -> None:
        """Make ``keys`` the keyring (primary first); KeyringError leaves it unchanged."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise KeyringError("keyring is empty")
        for key in keys:
            _check_size(key)
        ciphers = [AESGCM(k) for k in keys]
        self._keys, self._ciphers = tuple(keys), ciphers

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every key, primary first."""
        return self._keys

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @classmethod
    def load(cls, path: str | Path) -> Keyring:
        """A JSON list of base64 keys (serf's keyring format), primary first."""
        p = Path(path)
        check_private(p)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise KeyringError(f"{p}: no such keyring file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KeyringError(f"{p}: not a JSON list of base64 keys ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
            raise KeyringError(f"{p}: expected a JSON list of base64 strings")
        try:
            keys = [base64.b64decode(k, validate=True) for k in data]
        except ValueError:
            raise KeyringError(f"{p}: a key is not valid base64") from None
        return cls(keys)

    @staticmethod
    def generate() -> str:
        """A new random AES-256 key, base64 (like ``serf keygen``)."""
        return encode_key(os.urandom(32))

    def encrypt(self, plaintext: bytes, aad: bytes = b"", now: float | None = None) -> bytes:
        """Seal with the primary key, stamped ``now`` (unix seconds; default: the clock)."""
        stamp = int((time.time() if now is None else now) * 1000)
        nonce = os.urandom(NONCE_LEN)
        head = bytes([VERSION]) + min(max(stamp, 0), _MAX_STAMP).to_bytes(STAMP_LEN, "big")
        return head + nonce + self._ciphers[0].encrypt(nonce, plaintext, aad + head)

    def decrypt(self, data: bytes, aad: bytes = b"") -> bytes:
        return self.open(data, aad).plaintext

    def open(self, data: bytes, aad: bytes = b"") -> Opened:
        """Authenticate and decrypt; DecryptError for anything else (never another error)."""
        from cryptography.exceptions import InvalidTag

        if len(data) < OVERHEAD or data[0] != VERSION:
            raise DecryptError("not an encrypted message (or not of this version)")
        head = bytes(data[: 1 + STAMP_LEN])
        nonce, body = bytes(data[1 + STAMP_LEN : HEADER_LEN]), data[HEADER_LEN:]
        for cipher in self._ciphers:
            try:
                plaintext = cipher.decrypt(nonce, body, aad + head)
            except InvalidTag:
                continue
            return Opened(plaintext, int.from_bytes(head[1:], "big") / 1000, nonce)
        raise DecryptError("no key in the keyring authenticates this message")


def check_private(path: Path) -> None:
    """Refuse a keyring file that group or others may read or write (keys at rest)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyringError(f"{path}: no such keyring file") from None
    except OSError as exc:
        raise KeyringError(f"{path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(
            f"{path}: keyring readable by group or others (mode {stat.S_IMODE(mode):04o}):"
            f" run chmod 600 {path}"
        )
