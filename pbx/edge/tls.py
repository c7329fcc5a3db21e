"""TLS for SIP (RFC 3261 §26): the server's certificate and its SSL context.

With no certificate in the configuration, a self-signed pair is created under
``<var dir>/tls/`` on first run and reused afterwards. It is generated with the
`cryptography` package (Python's ssl module cannot make certificates) rather
than by running the `openssl` command, which slim container images lack.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from pbx.configuration.server import TlsSettings

log = logging.getLogger("pbx.edge.tls")

SELF_SIGNED_DAYS = 825


def self_signed_pair(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """The certificate and key under ``directory``, created if missing."""
    certificate, key_file = directory / "sip-cert.pem", directory / "sip-key.pem"
    if certificate.is_file() and key_file.is_file():
        return certificate, key_file
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Centralita (self-signed)")])
    alternative: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            alternative.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alternative.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    certificate_data = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key_bytes)
    certificate.write_bytes(certificate_data.public_bytes(serialization.Encoding.PEM))
    log.info("created a self-signed TLS certificate %s (for %s)", certificate, ", ".join(hosts))
    return certificate, key_file


def server_context(settings: TlsSettings, var_dir: Path, hosts: list[str]) -> ssl.SSLContext:
    if settings.certificate is not None and settings.key is not None:
        certificate, key = Path(settings.certificate), Path(settings.key)
    else:
        certificate, key = self_signed_pair(var_dir / "tls", hosts)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    return context
