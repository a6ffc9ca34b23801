"""The sealed format (version 2: an authenticated send stamp) and the replay guard."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plumtree.runtime.crypto import (
    HEADER_LEN,
    OVERHEAD,
    VERSION,
    DecryptError,
    Keyring,
    KeyringError,
)
from plumtree.runtime.replay import ReplayGuard

KEY = Keyring([os.urandom(32)])


def test_the_stamp_and_nonce_come_back_authenticated() -> None:
    sealed = KEY.encrypt(b"hello", b"label", now=1_700_000_000.25)
    assert sealed[0] == VERSION == 2 and len(sealed) == len(b"hello") + OVERHEAD
    opened = KEY.open(sealed, b"label")
    assert opened.plaintext == b"hello" and opened.sent_at == 1_700_000_000.25
    assert opened.nonce == sealed[1 + 8 : HEADER_LEN]
    assert KEY.decrypt(sealed, b"label") == b"hello"  # the old API still answers


def test_a_captured_message_cannot_be_restamped() -> None:
    sealed = bytearray(KEY.encrypt(b"hello", b"", now=1_700_000_000.0))
    sealed[1:9] = (1_800_000_000_000).to_bytes(8, "big")  # moved into the future
    with pytest.raises(DecryptError):
        KEY.open(bytes(sealed))


def test_version_1_messages_are_refused() -> None:
    sealed = bytearray(KEY.encrypt(b"hello"))
    sealed[0] = 1
    with pytest.raises(DecryptError, match="version"):
        KEY.open(bytes(sealed))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_opening_is_total(data: bytes) -> None:
    """Any byte string: a plaintext or DecryptError, never another exception."""
    with contextlib.suppress(DecryptError):
        KEY.open(data, b"x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 40), st.integers(0, 255))
def test_any_flipped_byte_is_refused(plaintext: bytes, where: int, xor: int) -> None:
    sealed = bytearray(KEY.encrypt(plaintext))
    if xor == 0:
        return
    sealed[where % len(sealed)] ^= xor
    with pytest.raises(DecryptError):
        KEY.open(bytes(sealed))


def test_the_guard_refuses_stale_future_and_seen_messages() -> None:
    guard = ReplayGuard(past=30, future=30)
    now = 1000.0
    assert guard.check(now - 1, b"a", now) is None
    assert guard.check(now - 1, b"a", now + 5) == "replay"  # an exact replay in the window
    assert guard.check(now - 31, b"b", now) == "stale"  # sent too long ago
    assert guard.check(now + 31, b"c", now) == "stale"  # from too far ahead
    assert guard.check(now + 29, b"d", now) is None
    # once out of the window, the nonce is forgotten but the stamp is refused anyway
    assert guard.check(now - 1, b"a", now + 40) == "stale"
    assert len(guard) == 1  # only d (stamped ahead) is still remembered


def test_a_full_guard_narrows_its_window_and_never_lets_a_replay_through() -> None:
    guard = ReplayGuard(past=30, future=30, capacity=100)
    now = 1000.0
    for i in range(250):
        assert guard.check(now + i * 0.01, i.to_bytes(4, "big"), now + 2) is None
    assert len(guard) == 100
    # every nonce ever accepted is refused, remembered or below the floor
    verdicts = {guard.check(now + i * 0.01, i.to_bytes(4, "big"), now + 2) for i in range(250)}
    assert verdicts == {"replay", "stale"}
    assert guard.check(now + 2.0, b"new", now + 2) is None  # newer than the floor: fine


def _keyring_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([Keyring.generate()]))
    path.chmod(mode)
    return path


def test_a_keyring_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = _keyring_file(tmp_path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        Keyring.load(path)
    path.chmod(0o640)
    with pytest.raises(KeyringError, match="group or others"):
        Keyring.load(path)
    path.chmod(0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Keyring.load(path)  # (no error)
