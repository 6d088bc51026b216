"""Throwaway TLS certificates for tests, made by the `openssl` command line (the `cryptography`
package is not installed): a CA, and a server certificate it signs for 127.0.0.1 and localhost.
Keys are RSA 2048, PKCS#8 PEM, unencrypted (what Kafka's PEM key stores read)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from infra.stack.apache_kafka import TlsFiles

DAYS = "2"
SERVER_EXTENSIONS = "\n".join([
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "subjectKeyIdentifier=hash",
    "authorityKeyIdentifier=keyid",
    "",
])


CLIENT_EXTENSIONS = "\n".join([
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=clientAuth",
    "",
])


def unavailable() -> str | None:
    return None if shutil.which("openssl") else "the openssl command is not installed"


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr[-1000:]}")


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    return path


def certificate_authority(folder: Path, name: str = "billing test CA") -> tuple[Path, Path]:
    """A self-signed CA in `folder`: (its certificate, its key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = _key(folder / "ca.key")
    cert = folder / "ca.pem"
    _openssl("req", "-x509", "-new", "-key", key, "-out", cert, "-days", DAYS,
             "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def server_files(folder: Path) -> TlsFiles:
    """A new CA and a certificate it signs for the broker (IP:127.0.0.1, DNS:localhost)."""
    ca, ca_key = certificate_authority(folder)
    key = _key(folder / "server.key")
    request, cert = folder / "server.csr", folder / "server.pem"
    extensions = folder / "server.ext"
    extensions.write_text(SERVER_EXTENSIONS, "utf-8")
    _openssl("req", "-new", "-key", key, "-out", request, "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", DAYS, "-extfile", extensions)
    chain = folder / "server-chain.pem"
    chain.write_text(cert.read_text("ascii") + ca.read_text("ascii"), "ascii")
    return TlsFiles(ca=ca, certificate_chain=chain, private_key=key)


def client_files(folder: Path, name: str = "billing-engine") -> tuple[Path, Path]:
    """A client certificate signed by the CA `server_files` made in `folder`: (certificate,
    private key)."""
    key = _key(folder / f"{name}.key")
    request, cert = folder / f"{name}.csr", folder / f"{name}.pem"
    extensions = folder / "client.ext"
    extensions.write_text(CLIENT_EXTENSIONS, "utf-8")
    _openssl("req", "-new", "-key", key, "-out", request, "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", request, "-CA", folder / "ca.pem", "-CAkey",
             folder / "ca.key", "-CAcreateserial", "-out", cert, "-days", DAYS,
             "-extfile", extensions)
    return cert, key
