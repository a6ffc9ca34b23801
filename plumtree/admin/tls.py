"""The admin API's TLS server context, from a PEM certificate chain and private key."""

from __future__ import annotations

import ssl


class TlsConfigError(ValueError):
    """The certificate or key cannot be used; the message is one line for the operator."""


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context with modern defaults (TLS 1.2 or later, no client certificates)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TlsConfigError(f"--api-cert/--api-key: {exc.filename}: no such file") from None
    except OSError as exc:
        raise TlsConfigError(
            f"--api-cert/--api-key: {exc.filename or cert}: {exc.strerror or exc}"
        ) from None
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"--api-cert {cert} / --api-key {key}: not a matching PEM certificate and key"
            f" ({exc.reason or exc})"
        ) from None
    return context
