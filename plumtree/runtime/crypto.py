"""AES-GCM encryption of every datagram and frame, with a keyring (memberlist/serf style).

The primary key (first) encrypts; every key decrypts, so keys can be rotated without a
flag day. A node without a valid key can neither join nor inject: what it sends fails
authentication and is dropped (and counted) before the decoder sees it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = 1 + NONCE_LEN + TAG_LEN


class KeyringError(ValueError):
    """The keyring file or a key in it is unusable."""


class DecryptError(ValueError):
    """No key in the keyring authenticates this message."""


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

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_LEN)
        return bytes([VERSION]) + nonce + self._ciphers[0].encrypt(nonce, plaintext, aad)

    def decrypt(self, data: bytes, aad: bytes = b"") -> bytes:
        from cryptography.exceptions import InvalidTag

        if len(data) < OVERHEAD or data[0] != VERSION:
            raise DecryptError("not an encrypted message")
        nonce, body = data[1 : 1 + NONCE_LEN], data[1 + NONCE_LEN :]
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise DecryptError("no key in the keyring authenticates this message")
