"""TLS for the tests: certificates they make, a Redis that speaks only TLS, and a
broker with passwords, the shipped ACL and TLS listeners.

Elliptic-curve keys (P-256) so that making them costs milliseconds. The
server certificate names ``127.0.0.1`` and ``localhost``, the addresses the
fixtures bind, so clients verify the host name as they would in production.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from monitor.bus.tool_client import make_client
from monitor.config.model import MqttSettings
from monitor.devtools.embedded import MosquittoServer, RedisServer, free_ports, which_or_explain
from monitor.state.channel import resp_command

ACL_FILE = Path(__file__).resolve().parents[1] / "config" / "mosquitto.acl"
PASSWORDS = {
    "liqmon": "monitor-pw-1",
    "feeder": "feeder-pw-2",
    "acct-1": "account-pw-3",
    "acct-2": "account-pw-4",
}


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM files: the CA, the server's certificate and key, a client's certificate and key."""

    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    hosts: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(directory: Path) -> Certificates:
    """A fresh CA in ``directory`` and a server and a client certificate signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("liqmon test CA")
    ca_cert = _issue("liqmon test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _issue(
        "127.0.0.1", server_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=True
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _issue(
        "liqmon", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Certificates(
        ca_file=_write_cert(directory / "ca.pem", ca_cert),
        server_cert=_write_cert(directory / "server.pem", server_cert),
        server_key=_write_key(directory / "server.key", server_key),
        client_cert=_write_cert(directory / "client.pem", client_cert),
        client_key=_write_key(directory / "client.key", client_key),
    )


class TlsRedisServer(RedisServer):
    """A private ``redis-server`` that speaks only TLS and knows one ACL user.

    The plain port is closed (``--port 0``); the port clients use is the TLS
    port. The ``default`` user is switched off, so every connection must log
    in as ``user`` with ``password``, whose rights are ``acl`` (a rule list as
    ``ACL SETUSER`` takes it). ``auth_clients`` is ``yes`` to require a client
    certificate signed by the CA, ``optional`` or ``no`` otherwise.
    """

    def __init__(
        self,
        workdir: Path,
        certificates: Certificates,
        *,
        user: str,
        password: str,
        acl: Sequence[str],
        auth_clients: str = "yes",
        **kwargs: Any,
    ) -> None:
        super().__init__(workdir, **kwargs)
        self.certificates = certificates
        self.user = user
        self.password = password
        self.acl = list(acl)
        self.auth_clients = auth_clients

    @property
    def url(self) -> str:
        """``rediss://USER:PASSWORD@127.0.0.1:PORT/0``."""
        return f"rediss://{self.user}:{self.password}@{self.host}:{self.port}/0"

    def _command(self, binary: str) -> list[str]:
        certificates = self.certificates
        return [
            *super()._command(binary),
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(certificates.server_cert),
            "--tls-key-file", str(certificates.server_key),
            "--tls-ca-cert-file", str(certificates.ca_file),
            "--tls-auth-clients", self.auth_clients,
            "--user", "default", "off",
            "--user", self.user, "on", f">{self.password}", *self.acl,
        ]  # fmt: skip

    def client_context(self) -> ssl.SSLContext:
        """A TLS context that trusts the CA and presents the client certificate."""
        context = ssl.create_default_context(cafile=self.certificates.ca_file)
        context.load_cert_chain(self.certificates.client_cert, self.certificates.client_key)
        return context

    def _probe(self) -> bool:
        # AUTH as the ACL user, then PING, over TLS (the plain port is closed).
        request = resp_command("AUTH", self.user, self.password) + resp_command("PING")
        with (
            socket.create_connection((self.host, self.port), timeout=0.25) as raw,
            self.client_context().wrap_socket(raw, server_hostname=self.host) as sock,
        ):
            sock.sendall(request)
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
        return data.splitlines()[1] == b"+PONG"


@dataclass(frozen=True, slots=True)
class SecureBroker:
    """Passwords, the shipped ACL, a TLS listener and one that requires a client certificate."""

    server: MosquittoServer
    certificates: Certificates
    tls_port: int
    cert_port: int

    def settings(
        self,
        user: str | None,
        password: str | None = None,
        *,
        client_cert: bool = False,
        **changes: Any,
    ) -> MqttSettings:
        """``user`` (with its password unless given) on the TLS listener, a fresh client id.

        With ``client_cert``, on the listener that requires a client
        certificate, presenting one.
        """
        login = f"{user}:{password or PASSWORDS[user]}@" if user else ""
        certificates = self.certificates
        return MqttSettings(
            url=f"mqtts://{login}127.0.0.1:{self.cert_port if client_cert else self.tls_port}",
            topic_prefix="liqmon",
            ca_file=str(certificates.ca_file),
            cert_file=str(certificates.client_cert) if client_cert else None,
            key_file=str(certificates.client_key) if client_cert else None,
            **{"client_id": f"{user}-{os.urandom(4).hex()}", **changes},
        )

    def client(self, user: str) -> aiomqtt.Client:
        """A TLS client logged in as ``user``, made as ``liqmon watch`` makes its own."""
        settings = self.settings(user)
        return make_client(settings, settings.client_id, persistent=False)


def start_secure_broker(
    fresh_mosquitto: Any, certificates: Certificates, tmp_path: Path
) -> SecureBroker:
    """Mosquitto with a password file, the shipped ACL and two TLS listeners."""
    password_file = tmp_path / "mosquitto.passwd"
    passwd = which_or_explain("mosquitto_passwd")
    for n, (user, password) in enumerate(PASSWORDS.items()):
        create = ["-c"] if n == 0 else []
        subprocess.run([passwd, *create, "-b", str(password_file), user, password], check=True)
    tls_port, cert_port = free_ports(2)
    tls = [
        f"cafile {certificates.ca_file}",
        f"certfile {certificates.server_cert}",
        f"keyfile {certificates.server_key}",
    ]
    server = fresh_mosquitto(
        allow_anonymous=False,
        extra_config=[
            f"password_file {password_file}",
            f"acl_file {ACL_FILE}",
            f"listener {tls_port} 127.0.0.1",
            *tls,
            f"listener {cert_port} 127.0.0.1",
            *tls,
            "require_certificate true",
        ],
    )
    return SecureBroker(server, certificates, tls_port, cert_port)
