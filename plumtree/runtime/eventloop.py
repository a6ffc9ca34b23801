"""Which asyncio event loop a node process runs on: uvloop when installed.

uvloop (libuv) runs the node's socket callbacks and timers with less overhead per
frame than the standard selector loop: about 30% less CPU per delivery on loopback
(``bench/loopback.py``). ``PLUMTREE_EVENT_LOOP=asyncio`` forces the standard loop
(for debugging, or to compare); ``uvloop`` insists on it (an error if missing).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOP_ENV", "loop_factory", "loop_name", "run"]

EVENT_LOOP_ENV = "PLUMTREE_EVENT_LOOP"
_T = TypeVar("_T")


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for ``asyncio.Runner`` (None: the standard loop)."""
    choice = (choice or os.environ.get(EVENT_LOOP_ENV) or "auto").lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"{EVENT_LOOP_ENV}={choice!r}: expected auto, uvloop or asyncio")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError(f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, _T], choice: str | None = None) -> _T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
