"""The admin API over TLS (``--api-cert/--api-key``) and ``plumctl --cacert``, on a real
node process with a certificate made by the test (the ``cryptography`` package)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plumctl import exitcodes
from tests.cli.helpers import plumctl_env
from tests.runtime.adminproc import TOKEN, NodeProc, node_process, rejected


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own trust anchor) and its key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plumtree test node")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "node.crt", directory / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, with a clean environment (plus ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "plumctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**plumctl_env(), **(env or {})},
        check=False,
    )


@pytest.fixture
def tls_node(tmp_path: Path) -> tuple[NodeProc, Path]:  # type: ignore[misc]
    cert, key = make_cert(tmp_path)
    with node_process(
        tmp_path / "node",
        [
            "--api-cert",
            str(cert),
            "--api-key",
            str(key),
            "--token-file",
            str(tmp_path / "node" / "token"),
        ],
        "api_header_timeout = 2",
    ) as node:
        yield node, cert


def test_plumctl_verifies_the_node_with_cacert_and_fails_in_one_line_without(
    tls_node: tuple[NodeProc, Path],
) -> None:
    node, cert = tls_node
    assert node.url.startswith("https://127.0.0.1:"), "the node advertises https"
    members = run(
        "--cacert", str(cert), "--node", node.url, "--token", TOKEN, "members", "-o", "json"
    )
    assert members.returncode == 0, members.stderr
    (me,) = json.loads(members.stdout)["items"]
    assert me["admin_url"] == node.url
    health = run(
        "--node", node.url, "health", "-o", "json", "--interval", "0.2",
        env={"PLUMCTL_CACERT": str(cert), "PLUMCTL_TOKEN": TOKEN},
    )  # fmt: skip
    assert health.returncode in (exitcodes.OK, exitcodes.DEGRADED, exitcodes.FAILED), health.stderr
    assert json.loads(health.stdout)["items"][0]["node"] == "target"
    # per command too, like --node and --token
    peers = run("peers", "--node", node.url, "--token", TOKEN, "--cacert", str(cert), "-o", "json")
    assert peers.returncode == 0, peers.stderr

    unverified = run("--node", node.url, "--token", TOKEN, "members", "-o", "json")
    assert unverified.returncode == exitcodes.UNREACHABLE, unverified
    lines = unverified.stderr.strip().splitlines()
    assert len(lines) == 1 and "TLS error" in lines[0] and node.url in lines[0], lines
    assert unverified.stdout == ""
    wrong_ca, _ = make_cert(cert.parent / "other")
    other = run("--cacert", str(wrong_ca), "--node", node.url, "--token", TOKEN, "members")
    assert other.returncode == exitcodes.UNREACHABLE and "Traceback" not in other.stderr
    missing = run("--cacert", str(cert.parent / "nope.pem"), "--node", node.url, "members")
    assert missing.returncode == exitcodes.USAGE
    (line,) = missing.stderr.strip().splitlines()
    assert "--cacert" in line and "no such file" in line, line
    no_token = run("--cacert", str(cert), "--node", node.url, "members")
    assert no_token.returncode == exitcodes.FAILED and "token" in no_token.stderr


def test_a_silent_tls_client_is_closed_by_the_handshake_deadline(
    tls_node: tuple[NodeProc, Path],
) -> None:
    node, cert = tls_node

    async def silent() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
        start = time.monotonic()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(), 30.0)
        writer.close()
        return time.monotonic() - start

    assert asyncio.run(silent()) < 30.0, "closed by the node, not by the test's own deadline"
    assert rejected(node, verify=ssl.create_default_context(cafile=str(cert)))["open"] <= 1


def test_a_node_refuses_an_unusable_certificate_in_one_line(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    other_cert, _ = make_cert(tmp_path / "other")
    for args in (
        ["--api-cert", str(cert)],
        ["--api-cert", str(other_cert), "--api-key", str(key)],
        ["--api-cert", str(tmp_path / "none.crt"), "--api-key", str(key)],
    ):
        start = run("node", "start", "--bind", "127.0.0.1:0", "--api", "127.0.0.1:0", *args)
        assert start.returncode == exitcodes.USAGE, (args, start.stderr)
        lines = start.stderr.strip().splitlines()
        assert len(lines) == 1 and "--api-" in lines[0] and "Traceback" not in start.stderr, lines
