"""Where the app's state lives: the storage account behind ``AzureWebJobsStorage``, as the Functions host reads it.

``AzureWebJobsStorage`` is a connection string (``UseDevelopmentStorage=true`` means local Azurite), or it is absent
and the identity-based form is used: ``AzureWebJobsStorage__accountName`` (public-cloud URLs are derived), or
``__blobServiceUri``, ``__queueServiceUri`` and ``__tableServiceUri``; ``__clientId`` picks a user-assigned identity.

The settings are checked with the clients that will use them, once, when the app starts: a malformed value is a
``ConfigError`` naming the setting, never an SDK error at the first request, and never echoing the connection string.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from azure.data.tables import TableServiceClient
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from rotation.config import AZURE_CLOUD, parse_cloud
from rotation.errors import ConfigError
from rotation.model import KeyRef
from rotation.redact import clipped
from rotation.storage.evidence import EVIDENCE_TABLE, VersionEvidence
from rotation.storage.ledger import LEDGER_TABLE, Ledger
from rotation.storage.lock import LOCKS_CONTAINER, MAX_LEASE, KeyLock
from rotation.storage.queue import RotationQueue

STORAGE = "AzureWebJobsStorage"
# Azurite's documented, public development account: "UseDevelopmentStorage=true" means exactly this.
_DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_CONNECTION_FIELDS = {
    name.lower(): name
    for name in (
        "DefaultEndpointsProtocol",
        "AccountName",
        "AccountKey",
        "SharedAccessSignature",
        "EndpointSuffix",
        "BlobEndpoint",
        "QueueEndpoint",
        "TableEndpoint",
        "FileEndpoint",
        "BlobSecondaryEndpoint",
        "QueueSecondaryEndpoint",
        "TableSecondaryEndpoint",
    )
}  # the SDKs read the names in any case
_ENDPOINTS = ("BlobEndpoint", "QueueEndpoint", "TableEndpoint")
_FIELD_NAME = re.compile(r"[A-Za-z]{1,32}")
_MAX_SETTING_CHARS = 4096


@dataclass(frozen=True)
class StorageAccount:
    """The three storage services the app uses; build it with ``from_settings(os.environ)``."""

    queues: QueueServiceClient = field(repr=False)
    tables: TableServiceClient = field(repr=False)
    blobs: BlobServiceClient = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], *, name: str = STORAGE, **client_kwargs: Any) -> StorageAccount:
        """The account the Functions host's settings name; ``ConfigError`` naming the setting when they are not
        usable. ``client_kwargs`` go to every client (retry options, a transport)."""
        conn = settings.get(name, "").strip()
        if conn:
            if conn.replace(" ", "").lower() == "usedevelopmentstorage=true":
                conn = _DEVELOPMENT_STORAGE
            _check_connection_string(name, conn)
            return _built(
                name,
                lambda: cls(
                    QueueServiceClient.from_connection_string(conn, **client_kwargs),
                    TableServiceClient.from_connection_string(conn, **client_kwargs),
                    BlobServiceClient.from_connection_string(conn, **client_kwargs),
                ),
            )
        account = settings.get(f"{name}__accountName", "").strip()
        if account and _ACCOUNT_NAME.fullmatch(account) is None:
            raise ConfigError(
                f"{name}__accountName {clipped(account, 40)} is not a storage account name "
                "(3-24 lower-case letters and digits)"
            )
        urls: dict[str, str] = {}
        storage_suffix = parse_cloud(settings.get(AZURE_CLOUD, "").strip() or None).storage_suffix
        for service in ("blob", "queue", "table"):
            setting = f"{name}__{service}ServiceUri"
            url = settings.get(setting, "").strip() or (
                f"https://{account}.{service}.{storage_suffix}" if account else ""
            )
            if not url:
                raise ConfigError(
                    f"no storage account configured for the {service} service: set {name} to a connection string, "
                    f"or {name}__accountName (or {setting} as an https:// URL) for managed identity"
                )
            _check_endpoint(setting, url, https_only=True)
            urls[service] = url.rstrip("/")
        credential = DefaultAzureCredential(
            managed_identity_client_id=settings.get(f"{name}__clientId", "").strip() or None
        )
        return _built(
            name,
            lambda: cls(
                QueueServiceClient(urls["queue"], credential=credential, **client_kwargs),
                TableServiceClient(urls["table"], credential=credential, **client_kwargs),
                BlobServiceClient(urls["blob"], credential=credential, **client_kwargs),
            ),
        )

    def rotation_queue(self) -> RotationQueue:
        return RotationQueue(self.queues)

    def ledger(self, *, table_name: str = LEDGER_TABLE) -> Ledger:
        return Ledger(self.tables.get_table_client(table_name))

    def evidence(self, *, table_name: str = EVIDENCE_TABLE) -> VersionEvidence:
        return VersionEvidence(self.tables.get_table_client(table_name))

    def key_lock(self, key: KeyRef, *, duration: int = MAX_LEASE, renew_every: float | None = None) -> KeyLock:
        return KeyLock(
            self.blobs.get_container_client(LOCKS_CONTAINER), key, duration=duration, renew_every=renew_every
        )


def _built(name: str, build: Any) -> StorageAccount:
    """``build()``, with anything the SDK raises for the setting turned into a ``ConfigError`` naming it."""
    try:
        account: StorageAccount = build()
    except Exception as exc:  # each SDK raises its own class for a malformed setting
        raise ConfigError(
            f"{name} cannot be used by the storage SDK ({type(exc).__name__}); check the setting's format"
        ) from exc
    return account


def _check_connection_string(name: str, conn: str) -> None:
    """The fields a storage connection string must have, named without echoing any value."""
    how = f"copy it from the storage account's Access keys page, or use {name}__accountName with managed identity"
    if len(conn) > _MAX_SETTING_CHARS:
        raise ConfigError(f"{name} has {len(conn)} characters; a storage connection string has far fewer ({how})")
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in conn.split(";"))):
        field_name, equals, value = part.partition("=")
        if not equals or field_name.lower() not in _CONNECTION_FIELDS:
            # A field's name is echoed only when it looks like one: a pasted key is not a name.
            named = equals and _FIELD_NAME.fullmatch(field_name) is not None
            shown = f"the unknown field {field_name!r}" if named else "a part that is not a known 'Name=value' field"
            raise ConfigError(f"{name} is not a storage connection string: it has {shown} ({how})")
        fields[_CONNECTION_FIELDS[field_name.lower()]] = value
    if not fields.get("AccountKey") and not fields.get("SharedAccessSignature"):
        raise ConfigError(f"{name} has neither AccountKey nor SharedAccessSignature ({how})")
    if "AccountKey" in fields:
        try:
            b64decode(fields["AccountKey"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"{name} has an AccountKey that is not base64 ({how})") from exc
    if not fields.get("AccountName") and not all(fields.get(e) for e in _ENDPOINTS):
        raise ConfigError(f"{name} names no AccountName and not every one of {', '.join(_ENDPOINTS)} ({how})")
    if fields.get("DefaultEndpointsProtocol", "https") not in ("http", "https"):
        raise ConfigError(f"{name} has DefaultEndpointsProtocol other than http or https ({how})")
    for endpoint in _ENDPOINTS:
        if endpoint in fields:
            _check_endpoint(f"{name} ({endpoint})", fields[endpoint], https_only=False)


def _check_endpoint(where: str, url: str, *, https_only: bool) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{where} is not a URL ({exc})") from exc
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname or parts.query or parts.username is not None:
        raise ConfigError(
            f"{where} must be an {' or '.join(schemes)} URL of a storage service without credentials or query, "
            f"such as https://<account>.queue.core.windows.net"
        )
