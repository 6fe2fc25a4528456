"""A self-signed TLS certificate for the demo (``govern keys tls``).

Production deployments bring their own certificate (an internal CA or a public one); this one
lets psql ``sslmode=require`` and pgjdbc ``ssl=true&sslmode=require`` encrypt the API key and
the rows of a demo without any other tool. ``require`` encrypts but does not verify the server;
``verify-full`` needs a certificate the client trusts (pass this one as ``sslrootcert``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

__all__ = ["write_self_signed"]


def write_self_signed(directory: Path, hosts: list[str], days: int = 365) -> tuple[Path, Path]:
    """Write ``tls.crt`` and ``tls.key`` (mode 0600; EC P-256) valid for ``hosts``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "govern")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path
