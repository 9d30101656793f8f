"""A certificate authority made fresh at each start, and the server certificate every listener presents.

Clients trust the emulator by pointing ``connection_verify`` (or ``REQUESTS_CA_BUNDLE``) at ``ca_bundle``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class Tls:
    def __init__(self, directory: Path) -> None:
        self._ca = trustme.CA(organization_name="Azure emulator (tests only)")
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.ca_bundle = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_bundle))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context
