"""The storage adapters (rotation/storage.py) against a real Azurite through the real azure-storage and -data SDKs.

Each test uses its own queue, container and table names, so tests share the session's Azurite without colliding.
One test waits for a 15 s lease to expire (Azure's shortest); everything else is quick.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient
from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter
from azure.storage.blob import BlobLeaseClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient

from rotation.errors import InvalidRequest, TransientError
from rotation.storage import (
    MAX_ERROR_CHARS,
    FinalStatus,
    InvalidInput,
    KeyLock,
    Ledger,
    LedgerConflict,
    LedgerEntry,
    LockHeld,
    LockLost,
    RequestExists,
    RotationQueue,
    StorageAccount,
    decode_request,
    encode_request,
    ledger_partition,
    lock_blob_name,
    request_id_for,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "https://kv-prod.vault.azure.net/keys/aoai-cmk"
OTHER_KEY = "https://kv-prod.vault.azure.net/keys/other-cmk"
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def request(**overrides: Any) -> dict[str, Any]:
    message = {
        "request_id": str(uuid.uuid4()),
        "key": KEY,
        "trigger": "KeyNearExpiry",
        "force": False,
        "requested_at": "2025-03-01T12:00:00+00:00",
        "event_version": "0123456789abcdef0123456789abcdef",
    }
    message.update(overrides)
    return message


def entry(request_id: str | None = None, *, key: str = KEY, created_at: datetime = T0, **fields: Any) -> LedgerEntry:
    return LedgerEntry(
        request_id=request_id or str(uuid.uuid4()),
        key=key,
        trigger="http",
        created_at=created_at,
        updated_at=created_at,
        **fields,
    )


@pytest.fixture
def conn(azurite: Any) -> str:
    return str(azurite.connection_string)


@pytest.fixture
def ledger(conn: str) -> Ledger:
    return Ledger.from_connection_string(conn, table_name=unique("ledger"))


@pytest.fixture
def locks(conn: str) -> ContainerClient:
    return ContainerClient.from_connection_string(conn, unique("locks-"))


# --- the queue ---------------------------------------------------------------------------------------------------


def test_enqueued_request_decodes_as_the_functions_queue_trigger_receives_it(conn: str) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, queue_name=name)
    message = request()

    queue.enqueue(message)  # the queue does not exist yet: enqueue creates it

    raw = QueueClient.from_connection_string(conn, name).receive_message()  # no decode policy: the wire text
    assert raw is not None
    assert raw.content != encode_request(message)
    host_decoded = base64.b64decode(raw.content, validate=True).decode("utf-8")  # the host's messageEncoding=base64
    trigger_message = QueueMessageInConverter.decode(
        meta.Datum(host_decoded, "string"),
        trigger_metadata={"Id": meta.Datum(raw.id, "string"), "DequeueCount": meta.Datum(1, "int")},
    )
    assert trigger_message.id == raw.id
    assert decode_request(trigger_message.get_body()) == message


def test_ensure_creates_the_queue_and_its_poison_queue(conn: str) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, queue_name=name)

    queue.ensure()
    queue.ensure()  # idempotent

    names = {q.name for q in QueueServiceClient.from_connection_string(conn).list_queues(name_starts_with=name)}
    assert names == {name, f"{name}-poison"}
    assert queue.poison_queue_name == f"{name}-poison"


def test_a_delayed_request_stays_hidden(conn: str) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, queue_name=name)

    queue.enqueue(request(), visibility_timeout=30)

    client = QueueClient.from_connection_string(conn, name)
    assert client.receive_message() is None
    assert client.get_queue_properties().approximate_message_count == 1


@pytest.mark.parametrize("delay", [-1, 7 * 24 * 3600, 1.5, True])
def test_enqueue_rejects_a_bad_delay(conn: str, delay: Any) -> None:
    queue = RotationQueue.from_connection_string(conn, queue_name=unique("rq-"))
    with pytest.raises(InvalidInput, match="visibility_timeout"):
        queue.enqueue(request(), visibility_timeout=delay)


def test_a_bad_queue_name_is_refused_before_any_io(conn: str) -> None:
    with pytest.raises(InvalidInput, match="'Rotation_Requests'"):
        RotationQueue.from_connection_string(conn, queue_name="Rotation_Requests")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[1, 2]", "JSON object"),
        ('{"request_id": "r1"}', "missing key, trigger, force, requested_at"),
        (encode_request(request())[:-1] + ',"extra":1}', "unknown field(s) extra"),
        (encode_request(request()).replace('"force":false', '"force":"yes"'), "'force'"),
        (encode_request(request()).replace("+00:00", ""), "'requested_at'"),
        (encode_request(request()).replace("https://", "http://"), "not a Key Vault key URL"),
        (encode_request(request()).replace("aoai-cmk", "aoai-cmk/0123abcd"), "names a version"),
        (encode_request(request()).replace('"KeyNearExpiry"', '"Key Near Expiry"'), "'trigger'"),
        (encode_request(request()).replace('"0123456789abcdef0123456789abcdef"', '"v/1"'), "'event_version'"),
        (encode_request(request()).replace('"request_id":"', '"request_id":"a/'), "request id 'a/"),
    ],
)
def test_decode_request_names_what_is_malformed(text: str | bytes, named: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_request(text)
    assert named in str(caught.value)
    assert isinstance(caught.value, InvalidRequest)  # a permanent error: the poison handler marks it failed


def test_decode_accepts_a_null_event_version_and_bytes() -> None:
    message = request(event_version=None)
    assert decode_request(encode_request(message).encode()) == message


# --- the per-key lock --------------------------------------------------------------------------------------------


def test_lock_is_exclusive_until_released(locks: ContainerClient) -> None:
    first = KeyLock(locks, KEY, duration=15)
    second = KeyLock(locks, KEY.replace("aoai-cmk", "AOAI-CMK").replace(".net", ".net:443"), duration=15)
    assert second.blob_name == first.blob_name == "kv-prod.vault.azure.net/aoai-cmk"

    with first:  # the container and blob do not exist yet: acquire creates both
        started = time.monotonic()
        with pytest.raises(LockHeld, match=r"(?i)aoai-cmk") as held:
            second.acquire()
        assert time.monotonic() - started < 5  # refused at once, not after waiting for the lease
        assert isinstance(held.value, TransientError)
        assert first.held and not first.lost
        KeyLock(locks, OTHER_KEY, duration=15).acquire()  # another key has its own lock

    second.acquire()
    assert second.held
    second.release()
    assert not second.held
    KeyLock(locks, KEY, duration=15).acquire()


def test_failed_renewal_is_visible(locks: ContainerClient, caplog: pytest.LogCaptureFixture) -> None:
    lock = KeyLock(locks, KEY, duration=15, renew_every=0.2)
    caplog.set_level(logging.INFO, logger="rotation")
    lock.acquire()
    lock.raise_if_lost()  # still held

    BlobLeaseClient(locks.get_blob_client(lock.blob_name)).break_lease(lease_break_period=0)
    deadline = time.monotonic() + 10
    while not lock.lost and time.monotonic() < deadline:
        time.sleep(0.05)

    assert lock.lost
    with pytest.raises(LockLost, match="aoai-cmk"):
        lock.raise_if_lost()
    lost = [r for r in caplog.records if r.getMessage() == "rotation.lock_lost"]
    assert len(lost) == 1
    assert lost[0].key == KEY  # type: ignore[attr-defined]
    assert "Lease" in lost[0].error  # type: ignore[attr-defined]
    lock.release()  # a broken lease can still be released by its holder
    KeyLock(locks, KEY, duration=15).acquire()


class Relay:
    """A TCP relay between the storage client and Azurite that can cut every connection for a while: a real
    network outage, not a patched client."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split("/")[0].split(":")
        self._target = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._cut = threading.Event()
        self._hang = threading.Event()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._hang.is_set():  # keep the connection open and answer nothing
                self._open.append(client)
                continue
            if self._cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self._target)
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self._cut.set()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._open.clear()

    def hang(self) -> None:
        """From now on, requests reach nothing and get no answer (open connections are cut first)."""
        self._hang.set()
        self.cut()
        self._cut.clear()

    def restore(self) -> None:
        self._cut.clear()
        self._hang.clear()

    def close(self) -> None:
        self.cut()
        self._server.close()


def test_a_storage_outage_shorter_than_the_lease_does_not_lose_the_lock(
    azurite: Any, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay(azurite.endpoints["blob"])
    blob_url = f"http://127.0.0.1:{relay.port}/devstoreaccount1"
    via_relay = azurite.connection_string.replace(azurite.endpoints["blob"] + "/devstoreaccount1", blob_url)
    caplog.set_level(logging.INFO, logger="rotation")
    name = unique("locks-")
    lock = KeyLock.from_connection_string(
        via_relay, KEY, container_name=name, duration=15, renew_every=0.5, retry_total=0
    )
    try:
        lock.acquire()
        relay.cut()
        time.sleep(1.7)  # three renewals fail to reach storage
        relay.restore()
        time.sleep(1.2)  # the next renewal gets through

        failed = [r for r in caplog.records if r.getMessage() == "rotation.lock_renewal_failed"]
        assert len(failed) >= 2
        assert not lock.lost
        with pytest.raises(LockHeld):  # still ours: another worker is refused
            KeyLock.from_connection_string(azurite.connection_string, KEY, container_name=name, duration=15).acquire()
    finally:
        lock.release()
        relay.close()


def test_a_renewal_that_hangs_loses_the_lock_before_the_lease_can_expire(azurite: Any) -> None:
    relay = Relay(azurite.endpoints["blob"])
    via_relay = azurite.connection_string.replace(
        azurite.endpoints["blob"] + "/devstoreaccount1", f"http://127.0.0.1:{relay.port}/devstoreaccount1"
    )
    lock = KeyLock.from_connection_string(
        via_relay, KEY, container_name=unique("locks-"), duration=15, renew_every=1, retry_total=0
    )
    try:
        lock.acquire()
        relay.hang()  # the next renewal blocks inside the storage client, far longer than the lease
        lock.raise_if_lost()  # just renewed: still ours
        deadline = time.monotonic() + 14
        while not lock.lost and time.monotonic() < deadline:
            time.sleep(0.2)
        held_for = time.monotonic() - (deadline - 14)
        assert lock.lost, "a hung renewal must not leave the lock looking held"
        assert held_for < 15  # reported lost before the 15 s lease could have expired
        with pytest.raises(LockLost):
            lock.raise_if_lost()
    finally:
        relay.cut()  # ends the hung connection, so the renewer thread can stop
        relay.restore()
        lock.release()
        relay.close()


_HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from rotation.storage import KeyLock
    lock = KeyLock.from_connection_string(os.environ["STORAGE"], sys.argv[1], container_name=sys.argv[2], duration=15)
    lock.acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def test_a_killed_holders_lease_expires_while_a_renewed_lease_outlives_its_duration(
    conn: str, locks: ContainerClient
) -> None:
    renewed = KeyLock(locks, OTHER_KEY, duration=15, renew_every=3)
    renewed.acquire()
    renewed_at = time.monotonic()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, KEY, locks.container_name],
        cwd=ROOT,
        env={**os.environ, "STORAGE": conn},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        held_at = time.monotonic()
        holder.send_signal(signal.SIGKILL)  # dies without releasing
        holder.wait()

        with pytest.raises(LockHeld):  # another process holds it
            KeyLock(locks, KEY, duration=15).acquire()
        successor = KeyLock(locks, KEY, duration=15)
        while True:
            try:
                successor.acquire()
                break
            except LockHeld:
                assert time.monotonic() - held_at < 25, "the dead holder's lease never expired"
                time.sleep(0.5)
        expired_after = time.monotonic() - held_at
        successor.release()
        assert 12 < expired_after < 25

        assert time.monotonic() - renewed_at > 15  # past the renewed lease's duration ...
        with pytest.raises(LockHeld):  # ... and still held, thanks to renewal
            KeyLock(locks, OTHER_KEY, duration=15).acquire()
        assert not renewed.lost
    finally:
        holder.kill()
        renewed.release()
    KeyLock(locks, OTHER_KEY, duration=15).acquire()


@pytest.mark.parametrize(("duration", "renew_every"), [(10, None), (61, None), (15, 15), (15, 8), (15, 0)])
def test_lock_timing_outside_azures_limits_is_refused(
    locks: ContainerClient, duration: int, renew_every: float | None
) -> None:
    with pytest.raises(InvalidInput, match=r"duration|renew_every"):
        KeyLock(locks, KEY, duration=duration, renew_every=renew_every)


def test_lock_and_ledger_names_are_table_and_blob_safe() -> None:
    assert lock_blob_name("https://Kv.Vault.Azure.Net:8443/keys/Cmk-1/") == "kv.vault.azure.net:8443/cmk-1"
    partition = ledger_partition("https://kv.vault.azure.net:8443/keys/cmk-1")
    assert not set(partition) & set("/\\#?:=")
    assert partition == ledger_partition("https://KV.vault.azure.net:8443/keys/CMK-1")
    assert partition != ledger_partition("https://kv.vault.azure.net:8443/keys/cmk-2")
    with pytest.raises(InvalidInput, match="names a version"):
        lock_blob_name(KEY + "/0123456789abcdef0123456789abcdef")
    with pytest.raises(InvalidInput, match="not a Key Vault key URL"):
        ledger_partition("https://kv.vault.azure.net/secrets/cmk")


# --- the ledger --------------------------------------------------------------------------------------------------


def test_a_request_is_found_by_its_id_alone(ledger: Ledger) -> None:
    written = entry(accounts={"/subscriptions/s/acct": {"result": "queued"}}, idempotency_key="retry-1")

    created = ledger.create(written)  # the table does not exist yet: create makes it

    assert created.etag
    found = ledger.get(written.request_id)
    assert found == created
    assert found.created_at == T0 and found.accounts == {"/subscriptions/s/acct": {"result": "queued"}}
    assert ledger.get(str(uuid.uuid4())) is None
    with pytest.raises(InvalidInput, match="request id"):
        ledger.get("../etc")


def test_an_existing_request_id_is_refused_and_get_or_create_returns_it(ledger: Ledger) -> None:
    first = ledger.create(entry("req-1"))

    with pytest.raises(RequestExists, match="req-1"):
        ledger.create(entry("req-1", key=OTHER_KEY))
    again, created = ledger.get_or_create(entry("req-1", created_at=T0 + timedelta(hours=1)))

    assert (again, created) == (first, False)
    fresh, created = ledger.get_or_create(entry("req-2"))
    assert created and ledger.get("req-2") == fresh


def test_get_or_create_completes_a_create_that_stopped_after_the_index_row(conn: str, ledger: Ledger) -> None:
    ledger.ensure()
    table = TableClient.from_connection_string(conn, ledger.table_name)
    table.create_entity({"PartitionKey": "requests", "RowKey": "req-3", "key_partition": ledger_partition(KEY)})
    assert ledger.get("req-3") is None

    stored, created = ledger.get_or_create(entry("req-3"))

    assert created and ledger.get("req-3") == stored


def test_two_writers_racing_on_one_row_cannot_overwrite_each_other(ledger: Ledger) -> None:
    created = ledger.create(entry("race"))
    worker_a = ledger.get("race")
    worker_b = ledger.get("race")
    assert worker_a is not None and worker_b is not None

    running = ledger.transition(worker_a, at=T0 + timedelta(seconds=1), status="running", attempts=1)
    with pytest.raises(LedgerConflict, match="race") as conflict:
        ledger.transition(worker_b, at=T0 + timedelta(seconds=2), status="skipped", reason="UpToDate")

    assert isinstance(conflict.value, TransientError)
    assert ledger.get("race") == running
    assert running.etag != created.etag and running.status == "running" and running.attempts == 1
    done = ledger.transition(
        running,
        at=T0 + timedelta(minutes=5),
        status="succeeded",
        reason="Expiring",
        from_version="a" * 32,
        to_version="b" * 32,
        accounts={"acct": "Succeeded"},
    )
    assert ledger.get("race") == done
    assert done.updated_at == T0 + timedelta(minutes=5) and done.created_at == T0
    with pytest.raises(FinalStatus, match="already succeeded"):
        ledger.transition(done, at=T0 + timedelta(minutes=6), status="running")


def test_errors_are_redacted_and_truncated(ledger: Ledger) -> None:
    secret_error = (
        "upload failed: DefaultEndpointsProtocol=https;AccountName=x;AccountKey=c2VjcmV0a2V5;EndpointSuffix=core; "
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2lnbmF0dXJl; url ?sv=2024&sig=abcdef "
    ) + "x" * 10_000
    created = ledger.create(entry("err"))

    failed = ledger.transition(created, at=T0, status="failed", error=secret_error)

    stored = ledger.get("err")
    assert stored is not None and stored.error == failed.error
    assert len(stored.error) <= MAX_ERROR_CHARS
    assert stored.error.startswith("upload failed") and stored.error.endswith("[truncated]")
    for secret in ("c2VjcmV0a2V5", "eyJhbGciOiJSUzI1NiJ9", "c2lnbmF0dXJl", "abcdef"):
        assert secret not in stored.error


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"status": "done"}, "status 'done'"),
        ({"attempts": -1}, "attempts"),
        ({"accounts": {"acct": object()}}, "accounts"),
        ({"created_at": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"idempotency_key": "line\nbreak"}, "Idempotency-Key"),
        ({"key": "kv-prod/aoai-cmk"}, "not a Key Vault key URL"),
    ],
)
def test_bad_ledger_fields_are_refused(ledger: Ledger, fields: dict[str, Any], named: str) -> None:
    created_at = fields.pop("created_at", T0)
    with pytest.raises(InvalidInput, match=named.replace("(", r"\(")):
        ledger.create(entry(created_at=created_at, **fields))


def test_list_requests_is_newest_first_per_key_or_for_all(ledger: Ledger) -> None:
    assert ledger.list_requests() == []  # no table yet
    for minutes, request_id, key in [(1, "r-old", KEY), (3, "r-new", KEY), (2, "r-other", OTHER_KEY)]:
        ledger.create(entry(request_id, key=key, created_at=T0 + timedelta(minutes=minutes)))

    assert [e.request_id for e in ledger.list_requests(KEY)] == ["r-new", "r-old"]
    assert [e.request_id for e in ledger.list_requests()] == ["r-new", "r-other", "r-old"]
    assert [e.request_id for e in ledger.list_requests(limit=1)] == ["r-new"]
    with pytest.raises(InvalidInput, match="limit"):
        ledger.list_requests(limit=0)


# --- Idempotency-Key ---------------------------------------------------------------------------------------------


def test_an_idempotency_key_maps_to_one_request_id_per_key() -> None:
    first = request_id_for("client-retry-7", KEY)

    assert first == request_id_for("client-retry-7", KEY.replace("aoai-cmk", "AOAI-CMK") + "/")
    assert uuid.UUID(first).version == 5
    assert first != request_id_for("client-retry-8", KEY)
    assert first != request_id_for("client-retry-7", OTHER_KEY)
    assert first == "ff00029a-ce79-54df-a7b0-c4bea3533653"  # pinned: a changed mapping would break retried POSTs


@pytest.mark.parametrize(
    ("header", "named"),
    [("", "got 0 characters"), ("x" * 201, "got 201 characters"), ("tab\there", "'\\t' at position 3"), ("é", "'é'")],
)
def test_a_bad_idempotency_key_is_refused(header: str, named: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        request_id_for(header, KEY)
    assert "Idempotency-Key" in str(caught.value) and named in str(caught.value)


# --- where the account is ----------------------------------------------------------------------------------------


def test_a_connection_string_setting_reaches_azurite_and_stays_out_of_repr(conn: str) -> None:
    account = StorageAccount.from_settings({"AzureWebJobsStorage": conn})

    assert "AccountKey" not in repr(account) and account.credential is None
    ledger = account.ledger(table_name=unique("ledger"))
    stored = ledger.create(entry("via-settings"))
    assert ledger.get("via-settings") == stored
    with account.key_lock(KEY, duration=15) as lock:
        assert lock.held


def test_identity_settings_derive_each_service_url() -> None:
    account = StorageAccount.from_settings(
        {
            "AzureWebJobsStorage__accountName": "rotationstate",
            "AzureWebJobsStorage__tableServiceUri": "https://tables.example.net/",
            "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
        }
    )

    assert account.blob_url == "https://rotationstate.blob.core.windows.net"
    assert account.queue_url == "https://rotationstate.queue.core.windows.net"
    assert account.table_url == "https://tables.example.net"
    assert account.client_id == "00000000-0000-0000-0000-000000000001"
    assert StorageAccount.from_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"}).connection_string


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "AzureWebJobsStorage__accountName"),
        ({"AzureWebJobsStorage__accountName": "Bad_Name"}, "'Bad_Name'"),
        ({"AzureWebJobsStorage__blobServiceUri": "http://x"}, "blob service"),
    ],
)
def test_missing_or_bad_storage_settings_are_named(settings: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        StorageAccount.from_settings(settings)
