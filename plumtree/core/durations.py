"""The one duration grammar of the config file and the command line.

A duration is a number of seconds (``0.5``, ``30``) or a string of one or more
``<number><unit>`` groups, largest unit first, each unit at most once: ``250ms``,
``1.5s``, ``1m30s``, ``2h``, ``1d12h``. A bare number in a string (``"0.5"``) is seconds
too. Units: ``d``, ``h``, ``m``, ``s``, ``ms``. The TOML loader (``graft_timeout =
"1m30s"``) and every CLI option taking a time (``--timeout 1m30s``) call :func:`seconds`,
so the two never disagree.
"""

from __future__ import annotations

import math
import re

#: units largest first; the order a string must follow
_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_GROUPS = re.compile(r"\s*".join(rf"(?:(?P<{u}>{_NUMBER})\s*{u})?" for u, _ in _UNITS))
_PLAIN = re.compile(_NUMBER)

#: what an error message shows as the accepted forms
EXAMPLES = "seconds, or a string like 250ms, 1.5s, 1m30s, 2h"


def seconds(value: object) -> float:
    """Seconds in ``value`` (a number or a duration string); ValueError if it is neither.

    The result is finite and >= 0; range checks (``> 0``) are the caller's.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration ({EXAMPLES}), got {value!r}")
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        result = _parse(value.strip())
    else:
        raise ValueError(f"expected a duration ({EXAMPLES}), got {value!r}")
    if not math.isfinite(result) or result < 0:
        raise ValueError(f"expected a duration >= 0, got {value!r}")
    return result


def _parse(text: str) -> float:
    if _PLAIN.fullmatch(text):
        return float(text)
    m = _GROUPS.fullmatch(text) if text else None
    # "250ms": the m group fails to match fully there, the regex backtracks into ms
    if m is None or not any(m.groupdict().values()):
        raise ValueError(f"expected a duration ({EXAMPLES}), got {text!r}")
    return sum(float(v) * scale for (u, scale) in _UNITS if (v := m.group(u)) is not None)


def prometheus(value: float) -> str:
    """``value`` seconds as a Prometheus duration (whole milliseconds): 90.0 -> ``1m30s``."""
    ms = round(value * 1000)
    parts = []
    for unit, scale in _UNITS:
        step = round(scale * 1000)
        count, ms = divmod(ms, step)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
