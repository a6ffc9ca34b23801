"""``host:port`` strings as they travel in membership state (IPv6 in brackets)."""

from __future__ import annotations


class AddressError(ValueError):
    """Not a ``host:port`` address."""


def parse_addr(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``"10.0.0.1:7946"`` / ``"[::1]:7946"`` / ``"host"`` (with a default port)."""
    text = text.strip()
    if not text:
        raise AddressError("empty address")
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"{text!r}: missing ']' in IPv6 address")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise AddressError(f"{text!r}: expected ':port' after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:
        host, port_text = text, None  # bare IPv6
    else:
        host, port_text = text, None
    if port_text is None or port_text == "":
        if default_port is None:
            raise AddressError(f"{text!r}: missing port (expected host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f"{text!r}: port must be a number 0-65535")
    if not host:
        raise AddressError(f"{text!r}: missing host")
    return host, int(port_text)


def format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
