"""The storage adapters (rotation/storage/) against a real Azurite through the real azure-storage and -data SDKs.

Each test uses its own queue, container and table names, so tests share the session's Azurite without colliding.
Storage outages are real: a TCP relay that cuts or stalls connections, or a closed local port. Two tests wait for a
15 s lease (Azure's shortest); everything else is quick. The codec and the lock and ledger names are pure and are
tested in tests/unit/test_codec.py.
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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import AzureError
from azure.data.tables import TableClient
from azure.functions import meta
from azure.functions.queue import QueueMessageInConverter
from azure.storage.blob import BlobLeaseClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient

from emulator.azurite import ACCOUNT_KEY
from rotation.errors import (
    ConfigError,
    FinalStatus,
    InvalidInput,
    LedgerConflict,
    LockHeld,
    LockLost,
    RequestExists,
    StorageUnavailable,
    TransientError,
)
from rotation.model import KeyRef, RotationRequest, Trigger
from rotation.storage import KeyLock, Ledger, LedgerEntry, LedgerStatus, RotationQueue, StorageAccount
from rotation.storage.ledger import MAX_ACCOUNTS_JSON_CHARS, MAX_ERROR_CHARS, ledger_partition

ROOT = Path(__file__).resolve().parents[2]
KEY_URL = "https://kv-prod.vault.azure.net/keys/aoai-cmk"
KEY = KeyRef.parse(KEY_URL)
KEY_OTHER_SPELLING = KeyRef.parse("https://KV-Prod.vault.azure.net:443/keys/AOAI-CMK/")
OTHER_KEY = KeyRef.parse("https://kv-prod.vault.azure.net/keys/other-cmk")
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SAS_SIGNATURE = "c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def request(**overrides: Any) -> RotationRequest:
    fields: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "key": KEY,
        "trigger": Trigger.KEY_NEAR_EXPIRY,
        "force": False,
        "requested_at": datetime(2025, 3, 1, 12, tzinfo=UTC),
        "event_version": "0123456789abcdef0123456789abcdef",
    }
    fields.update(overrides)
    return RotationRequest(**fields)


def entry(request_id: str | None = None, *, key: KeyRef = KEY, created_at: datetime = T0, **fields: Any) -> LedgerEntry:
    return LedgerEntry(
        request_id=request_id or str(uuid.uuid4()),
        key=key,
        trigger=Trigger.HTTP,
        created_at=created_at,
        updated_at=created_at,
        **fields,
    )


def events_named(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if str(r.msg).split(":")[0] == name]


def connection_string(endpoint: str, credential: str) -> str:
    """A connection string whose three services are all at ``endpoint`` (``http://host:port``)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;{credential};"
        f"BlobEndpoint={endpoint}/devstoreaccount1;QueueEndpoint={endpoint}/devstoreaccount1;"
        f"TableEndpoint={endpoint}/devstoreaccount1;"
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


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wire_text(conn: str, queue_name: str) -> tuple[str, str] | None:
    """The next visible message's (id, body), decoded as the Functions host does (messageEncoding=base64)."""
    raw = QueueClient.from_connection_string(conn, queue_name).receive_message()  # no decode policy: the wire text
    if raw is None:
        return None
    return raw.id, base64.b64decode(raw.content, validate=True).decode("utf-8")


# --- the queue ---------------------------------------------------------------------------------------------------


def test_enqueued_request_decodes_as_the_functions_queue_trigger_receives_it(conn: str) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, name=name)
    sent = request()

    queue.enqueue(sent)  # the queue does not exist yet: enqueue creates it

    received = wire_text(conn, name)
    assert received is not None
    message_id, host_decoded = received
    trigger_message = QueueMessageInConverter.decode(
        meta.Datum(host_decoded, "string"),
        trigger_metadata={"Id": meta.Datum(message_id, "string"), "DequeueCount": meta.Datum(1, "int")},
    )
    assert trigger_message.id == message_id
    assert RotationRequest.from_message(trigger_message.get_body()) == sent


def test_ensure_creates_the_queue_and_its_poison_queue(conn: str) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, name=name)

    queue.ensure()
    queue.ensure()  # idempotent

    names = {q.name for q in QueueServiceClient.from_connection_string(conn).list_queues(name_starts_with=name)}
    assert names == {name, f"{name}-poison"}


def test_a_delayed_request_stays_hidden(conn: str) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, name=name)

    queue.enqueue(request(), delay=30)

    client = QueueClient.from_connection_string(conn, name)
    assert client.receive_message() is None
    assert client.get_queue_properties().approximate_message_count == 1


@pytest.mark.parametrize("delay", [-1, 7 * 24 * 3600])
def test_a_delay_outside_the_messages_lifetime_is_refused_before_any_io(conn: str, delay: int) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, name=name)

    with pytest.raises(ValueError, match="delay"):
        queue.enqueue(request(), delay=delay)
    with pytest.raises(ValueError, match="delay"):
        queue.defer_poison(request(), delay=delay)

    assert not list(QueueServiceClient.from_connection_string(conn).list_queues(name_starts_with=name))


def test_defer_poison_puts_the_request_back_on_the_poison_queue_hidden_for_the_delay(conn: str) -> None:
    name = unique("rq-")
    queue = RotationQueue.from_connection_string(conn, name=name)
    deferred = request(force=True, event_version=None)

    queue.defer_poison(deferred, delay=2)  # neither queue exists yet: it creates them
    sent_at = time.monotonic()

    poison = QueueClient.from_connection_string(conn, f"{name}-poison")
    assert poison.get_queue_properties().approximate_message_count == 1
    assert wire_text(conn, f"{name}-poison") is None  # hidden
    assert wire_text(conn, name) is None  # and not on the requests queue
    assert QueueClient.from_connection_string(conn, name).get_queue_properties().approximate_message_count == 0
    time.sleep(max(0.0, sent_at + 2.5 - time.monotonic()))
    received = wire_text(conn, f"{name}-poison")
    assert received is not None, "the deferred request never became visible"
    assert RotationRequest.from_message(received[1]) == deferred  # base64 on the wire, as the host reads it


# --- the per-key lock --------------------------------------------------------------------------------------------


def test_lock_is_exclusive_until_released(locks: ContainerClient) -> None:
    first = KeyLock(locks, KEY, duration=15)
    second = KeyLock(locks, KEY_OTHER_SPELLING, duration=15)
    assert second.blob_name == first.blob_name == "kv-prod.vault.azure.net/aoai-cmk"

    with first:  # the container and blob do not exist yet: acquire creates both
        started = time.monotonic()
        with pytest.raises(LockHeld, match=r"(?i)aoai-cmk") as held:
            second.acquire()
        assert time.monotonic() - started < 5  # refused at once, not after waiting for the lease
        assert isinstance(held.value, TransientError)
        assert first.held and not first.lost and not second.held
        other = KeyLock(locks, OTHER_KEY, duration=15)
        other.acquire()  # another key has its own lock
        other.release()

    second.acquire()
    assert second.held
    second.release()
    assert not second.held
    with KeyLock(locks, KEY, duration=15) as third:
        assert third.held


def test_busy_is_true_while_another_lock_holds_the_key(locks: ContainerClient) -> None:
    holder = KeyLock(locks, KEY, duration=15)
    observer = KeyLock(locks, KEY_OTHER_SPELLING, duration=15)
    assert not observer.busy()  # neither the container nor the blob exists yet

    holder.acquire()
    try:
        assert observer.busy() and holder.busy()
        assert not observer.held  # a read: it takes nothing
        assert not KeyLock(locks, OTHER_KEY, duration=15).busy()
    finally:
        holder.release()

    assert not observer.busy()
    with observer:  # busy() left the lease free to take
        assert holder.busy()
    BlobLeaseClient(locks.get_blob_client(holder.blob_name)).acquire(lease_duration=15)
    assert holder.busy()  # held by anyone, not only by a KeyLock
    BlobLeaseClient(locks.get_blob_client(holder.blob_name)).break_lease(lease_break_period=0)
    assert not holder.busy()  # a broken lease is free


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
    lost = events_named(caplog, "rotation.lock_lost")
    assert len(lost) == 1
    assert lost[0].key == KEY.id  # type: ignore[attr-defined]
    assert "Lease" in lost[0].error  # type: ignore[attr-defined]
    assert KEY.id in lost[0].getMessage()  # the text alone says which key
    lock.release()  # a broken lease can still be released by its holder
    with KeyLock(locks, KEY, duration=15) as successor:
        assert successor.held


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


def locks_via_relay(azurite: Any, relay: Relay, container: str) -> ContainerClient:
    via_relay = azurite.connection_string.replace(
        azurite.endpoints["blob"] + "/devstoreaccount1", f"http://127.0.0.1:{relay.port}/devstoreaccount1"
    )
    return ContainerClient.from_connection_string(via_relay, container, retry_total=0)


def test_a_storage_outage_shorter_than_the_lease_does_not_lose_the_lock(
    azurite: Any, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay(azurite.endpoints["blob"])
    caplog.set_level(logging.INFO, logger="rotation")
    name = unique("locks-")
    lock = KeyLock(locks_via_relay(azurite, relay, name), KEY, duration=15, renew_every=0.5)
    try:
        lock.acquire()
        relay.cut()
        time.sleep(1.7)  # three renewals fail to reach storage
        relay.restore()
        time.sleep(1.2)  # the next renewal gets through

        assert len(events_named(caplog, "rotation.lock_renewal_failed")) >= 2
        assert not lock.lost
        with pytest.raises(LockHeld):  # still ours: another worker is refused
            KeyLock(ContainerClient.from_connection_string(azurite.connection_string, name), KEY, duration=15).acquire()
    finally:
        lock.release()
        relay.close()


def test_a_renewal_that_hangs_loses_the_lock_before_the_lease_can_expire(azurite: Any) -> None:
    relay = Relay(azurite.endpoints["blob"])
    lock = KeyLock(locks_via_relay(azurite, relay, unique("locks-")), KEY, duration=15, renew_every=1)
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
    from azure.storage.blob import ContainerClient
    from rotation.model import KeyRef
    from rotation.storage import KeyLock
    locks = ContainerClient.from_connection_string(os.environ["STORAGE"], sys.argv[2])
    lock = KeyLock(locks, KeyRef.parse(sys.argv[1]), duration=15)
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
        [sys.executable, "-c", _HOLDER, KEY.id, locks.container_name],
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
        assert KeyLock(locks, KEY, duration=15).busy()
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
        assert not KeyLock(locks, KEY, duration=15).busy()

        assert time.monotonic() - renewed_at > 15  # past the renewed lease's duration ...
        with pytest.raises(LockHeld):  # ... and still held, thanks to renewal
            KeyLock(locks, OTHER_KEY, duration=15).acquire()
        assert not renewed.lost
    finally:
        holder.kill()
        renewed.release()
    with KeyLock(locks, OTHER_KEY, duration=15) as after:
        assert after.held


@pytest.mark.parametrize(("duration", "renew_every"), [(10, None), (61, None), (15, 15), (15, 8), (15, 0)])
def test_lock_timing_outside_azures_limits_is_refused(
    locks: ContainerClient, duration: int, renew_every: float | None
) -> None:
    with pytest.raises(ValueError, match=r"duration|renew_every"):
        KeyLock(locks, KEY, duration=duration, renew_every=renew_every)


# --- the ledger --------------------------------------------------------------------------------------------------


def test_a_request_is_found_by_its_id_alone(ledger: Ledger) -> None:
    written = entry(accounts={"/subscriptions/s/acct": {"result": "queued"}}, idempotency_key="retry-1")

    created = ledger.create(written)  # the table does not exist yet: create makes it

    assert created.etag
    found = ledger.get(written.request_id)
    assert found == created
    assert found.created_at == T0 and found.accounts == {"/subscriptions/s/acct": {"result": "queued"}}
    assert found.key == KEY and found.trigger is Trigger.HTTP and found.status is LedgerStatus.QUEUED
    assert found.idempotency_key == "retry-1"
    assert ledger.get(str(uuid.uuid4())) is None
    with pytest.raises(InvalidInput, match="request id"):
        ledger.get("../etc")


def test_a_row_written_for_a_request_keeps_its_fields(ledger: Ledger) -> None:
    asked = request(trigger=Trigger.HTTP, force=True)

    stored = ledger.create(LedgerEntry.for_request(asked, at=T0, idempotency_key="client-7"))

    found = ledger.get(asked.request_id)
    assert found == stored
    assert found.describes(asked)
    assert found.describes(request(request_id=asked.request_id, key=KEY_OTHER_SPELLING))
    assert not found.describes(request(request_id=asked.request_id, key=OTHER_KEY))  # a forged message reusing an id
    assert (found.key, found.trigger, found.force, found.idempotency_key) == (KEY, Trigger.HTTP, True, "client-7")
    assert (found.created_at, found.updated_at, found.status) == (T0, T0, LedgerStatus.QUEUED)


def test_an_existing_request_id_is_refused_and_get_or_create_returns_it(ledger: Ledger) -> None:
    first = ledger.create(entry("req-1"))

    with pytest.raises(RequestExists, match="req-1"):
        ledger.create(entry("req-1", key=OTHER_KEY))
    again, created = ledger.get_or_create(entry("req-1", created_at=T0 + timedelta(hours=1)))

    assert (again, created) == (first, False)
    fresh, created = ledger.get_or_create(entry("req-2"))
    assert created and ledger.get("req-2") == fresh
    taken, created = ledger.get_or_create(entry("req-1", key=OTHER_KEY))  # the id belongs to another key ...
    assert (taken, created) == (first, False)  # ... so the caller gets that key's row, which it can tell apart
    assert not taken.describes(request(request_id="req-1", key=OTHER_KEY))
    assert [e.request_id for e in ledger.list_requests(OTHER_KEY)] == []  # nothing was written for the other key


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

    running = ledger.transition(worker_a, at=T0 + timedelta(seconds=1), status=LedgerStatus.RUNNING, attempts=1)
    with pytest.raises(LedgerConflict, match="race") as conflict:
        ledger.transition(worker_b, at=T0 + timedelta(seconds=2), status=LedgerStatus.SKIPPED, reason="UpToDate")

    assert isinstance(conflict.value, TransientError)
    assert ledger.get("race") == running
    assert running.etag != created.etag and running.status is LedgerStatus.RUNNING and running.attempts == 1
    done = ledger.transition(
        running,
        at=T0 + timedelta(minutes=5),
        status=LedgerStatus.SUCCEEDED,
        reason="Expiring",
        from_version="a" * 32,
        to_version="b" * 32,
        accounts={"acct": "Succeeded"},
    )
    assert ledger.get("race") == done
    assert done.updated_at == T0 + timedelta(minutes=5) and done.created_at == T0
    with pytest.raises(FinalStatus, match="already succeeded"):
        ledger.transition(done, at=T0 + timedelta(minutes=6), status=LedgerStatus.RUNNING)


def test_errors_are_redacted_and_truncated(ledger: Ledger) -> None:
    secret_error = (
        "upload failed: DefaultEndpointsProtocol=https;AccountName=x;AccountKey=c2VjcmV0a2V5;EndpointSuffix=core; "
        "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3b3JrZXIifQ.c2lnbmF0dXJl; url ?sv=2024&sig=abcdef "
    ) + "x" * 10_000
    created = ledger.create(entry("err"))

    failed = ledger.transition(created, at=T0, status=LedgerStatus.FAILED, error=secret_error)

    stored = ledger.get("err")
    assert stored is not None and stored.error == failed.error
    assert len(stored.error) <= MAX_ERROR_CHARS
    assert stored.error.startswith("upload failed") and stored.error.endswith("[truncated]")
    for secret in ("c2VjcmV0a2V5", "eyJhbGciOiJSUzI1NiJ9", "c2lnbmF0dXJl", "abcdef"):
        assert secret not in stored.error


def test_accounts_too_large_for_a_table_property_are_refused_before_any_write(ledger: Ledger) -> None:
    too_large = {f"/subscriptions/s/accounts/a{i}": "x" * 1000 for i in range(MAX_ACCOUNTS_JSON_CHARS // 1000)}

    with pytest.raises(ValueError, match="accounts"):
        ledger.create(entry("big", accounts=too_large))

    assert ledger.get("big") is None  # not even the index row


def test_list_requests_is_newest_first_per_key_or_for_all(ledger: Ledger) -> None:
    assert ledger.list_requests() == []  # no table yet
    for minutes, request_id, key in [(1, "r-old", KEY), (3, "r-new", KEY), (2, "r-other", OTHER_KEY)]:
        ledger.create(entry(request_id, key=key, created_at=T0 + timedelta(minutes=minutes)))

    assert [e.request_id for e in ledger.list_requests(KEY)] == ["r-new", "r-old"]
    assert [e.request_id for e in ledger.list_requests(KEY_OTHER_SPELLING)] == ["r-new", "r-old"]
    assert [e.request_id for e in ledger.list_requests()] == ["r-new", "r-other", "r-old"]
    assert [e.request_id for e in ledger.list_requests(limit=1)] == ["r-new"]


def test_unfinished_returns_queued_and_running_rows_nobody_updated_since_the_cutoff(ledger: Ledger) -> None:
    cutoff = T0 + timedelta(minutes=10)
    assert ledger.unfinished(updated_before=cutoff) == []  # no table yet

    def row(
        request_id: str, *, key: KeyRef = KEY, created: int = 0, then: LedgerStatus | None = None, at: int = 1
    ) -> None:
        created_row = ledger.create(entry(request_id, key=key, created_at=T0 + timedelta(minutes=created)))
        if then is not None:
            ledger.transition(created_row, at=T0 + timedelta(minutes=at), status=then)

    row("queued-old")
    row("running-old", created=1, then=LedgerStatus.RUNNING, at=2)
    row("queued-other-key", key=OTHER_KEY, created=3)
    row("succeeded-old", then=LedgerStatus.SUCCEEDED)
    row("failed-old", then=LedgerStatus.FAILED)
    row("skipped-old", then=LedgerStatus.SKIPPED)
    row("queued-new", created=20)
    row("running-renewed", then=LedgerStatus.RUNNING, at=15)  # created before the cutoff, updated after it
    row("queued-at-cutoff", created=10)  # updated exactly at the cutoff: not before it

    stale = ledger.unfinished(updated_before=cutoff)

    assert [e.request_id for e in stale] == ["queued-other-key", "running-old", "queued-old"]  # newest first
    assert {e.status for e in stale} == {LedgerStatus.QUEUED, LedgerStatus.RUNNING}
    assert all(e.updated_at < cutoff and e.etag for e in stale)
    assert [e.request_id for e in ledger.unfinished(updated_before=cutoff, limit=1)] == ["queued-other-key"]
    assert ledger.unfinished(updated_before=T0) == []


def test_last_forced_is_the_newest_forced_request_for_the_key_since_a_time(ledger: Ledger) -> None:
    assert ledger.last_forced(KEY, since=T0) is None  # no table yet
    ledger.create(entry("forced-first", created_at=T0, force=True))
    latest = ledger.create(entry("forced-latest", created_at=T0 + timedelta(minutes=2), force=True))
    ledger.transition(latest, at=T0 + timedelta(minutes=3), status=LedgerStatus.SUCCEEDED)  # finished still counts
    ledger.create(entry("not-forced", created_at=T0 + timedelta(minutes=5)))
    ledger.create(entry("forced-other-key", key=OTHER_KEY, created_at=T0 + timedelta(minutes=10), force=True))

    found = ledger.last_forced(KEY, since=T0)

    assert found is not None and found.request_id == "forced-latest" and found.force
    assert found == ledger.get("forced-latest")
    assert ledger.last_forced(KEY_OTHER_SPELLING, since=T0) == found  # two spellings, one key
    assert ledger.last_forced(KEY, since=T0 + timedelta(minutes=2)) == found  # created exactly at `since` counts
    # One second later, not one microsecond: Azurite compares times in milliseconds (Azure in 100 ns ticks).
    assert ledger.last_forced(KEY, since=T0 + timedelta(minutes=2, seconds=1)) is None
    assert ledger.last_forced(KEY, since=T0 - timedelta(days=1)) == found
    other = ledger.last_forced(OTHER_KEY, since=T0)
    assert other is not None and other.request_id == "forced-other-key"


# --- when storage cannot be reached or refuses -------------------------------------------------------------------

Operation = Callable[[StorageAccount], object]
_STALE = entry("stale", etag="W/\"datetime'2025-03-01T12%3A00%3A00.1234560Z'\"")
OPERATIONS: dict[str, Operation] = {
    "enqueue": lambda a: RotationQueue(a.queues, name=unique("rq-")).enqueue(request()),
    "defer_poison": lambda a: RotationQueue(a.queues, name=unique("rq-")).defer_poison(request(), delay=5),
    "ensure the queues": lambda a: RotationQueue(a.queues, name=unique("rq-")).ensure(),
    "ledger create": lambda a: a.ledger(table_name=unique("ledger")).create(entry()),
    "ledger get_or_create": lambda a: a.ledger(table_name=unique("ledger")).get_or_create(entry()),
    "ledger get": lambda a: a.ledger(table_name=unique("ledger")).get("req-1"),
    "ledger transition": lambda a: a.ledger(table_name=unique("ledger")).transition(
        _STALE, at=T0, status=LedgerStatus.RUNNING
    ),
    "ledger list_requests": lambda a: a.ledger(table_name=unique("ledger")).list_requests(KEY),
    "ledger unfinished": lambda a: a.ledger(table_name=unique("ledger")).unfinished(updated_before=T0),
    "ledger last_forced": lambda a: a.ledger(table_name=unique("ledger")).last_forced(KEY, since=T0),
    "ledger ensure": lambda a: a.ledger(table_name=unique("ledger")).ensure(),
    "lock acquire": lambda a: a.key_lock(KEY, duration=15).acquire(),
    "lock busy": lambda a: a.key_lock(KEY, duration=15).busy(),
}


def assert_unavailable(operation: Operation, account: StorageAccount, secrets: tuple[str, ...]) -> StorageUnavailable:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        operation(account)

    assert time.monotonic() - started < 5  # retry_total=0 reached the client: no azure-core retries
    error = caught.value
    assert isinstance(error, TransientError)
    assert isinstance(error.__cause__, AzureError)  # chained, for the traceback
    assert "AzureWebJobsStorage" in str(error)
    for secret in ("AccountKey", *secrets):
        assert secret not in str(error)
    return error


@pytest.mark.parametrize("operation", OPERATIONS.values(), ids=OPERATIONS.keys())
@pytest.mark.parametrize(
    "credential",
    [
        f"AccountKey={ACCOUNT_KEY}",
        f"SharedAccessSignature=sv=2024-08-04&ss=bqt&srt=sco&sp=rwdlacup&sig={SAS_SIGNATURE}",
    ],
    ids=["account-key", "sas"],
)
def test_unreachable_storage_raises_storage_unavailable_without_secrets(
    closed_port: int, credential: str, operation: Operation
) -> None:
    settings = {"AzureWebJobsStorage": connection_string(f"http://127.0.0.1:{closed_port}", credential)}
    account = StorageAccount.from_settings(settings, retry_total=0)

    error = assert_unavailable(operation, account, (ACCOUNT_KEY, SAS_SIGNATURE, "sig=c2"))

    assert "ServiceRequestError" in str(error)  # says what happened: the connection failed


def test_a_failed_acquire_leaves_the_lock_not_held(closed_port: int) -> None:
    settings = {
        "AzureWebJobsStorage": connection_string(f"http://127.0.0.1:{closed_port}", f"AccountKey={ACCOUNT_KEY}")
    }
    lock = StorageAccount.from_settings(settings, retry_total=0).key_lock(KEY, duration=15)

    with pytest.raises(StorageUnavailable):
        lock.acquire()

    assert not lock.held and not lock.lost
    lock.release()  # harmless


@pytest.mark.parametrize("operation", ["enqueue", "ledger get", "ledger create", "lock acquire", "lock busy"])
def test_storage_refusing_the_credential_raises_storage_unavailable_without_secrets(conn: str, operation: str) -> None:
    wrong_key = base64.b64encode(b"not the account key".ljust(64, b"!")).decode()
    account = StorageAccount.from_settings({"AzureWebJobsStorage": conn.replace(ACCOUNT_KEY, wrong_key)}, retry_total=0)

    assert_unavailable(OPERATIONS[operation], account, (ACCOUNT_KEY, wrong_key))


# --- where the account is ----------------------------------------------------------------------------------------


def test_a_connection_string_setting_reaches_azurite_and_stays_out_of_repr(conn: str) -> None:
    account = StorageAccount.from_settings({"AzureWebJobsStorage": conn})

    assert "AccountKey" not in repr(account) and ACCOUNT_KEY not in repr(account)
    ledger = account.ledger(table_name=unique("ledger"))
    stored = ledger.create(entry("via-settings"))
    assert ledger.get("via-settings") == stored
    name = unique("rq-")
    RotationQueue(account.queues, name=name).enqueue(request())
    assert QueueClient.from_connection_string(conn, name).get_queue_properties().approximate_message_count == 1
    key = KeyRef.parse(f"https://kv-prod.vault.azure.net/keys/{unique('k-')}")
    with account.key_lock(key, duration=15) as lock:
        assert lock.held and account.key_lock(key, duration=15).busy()


def test_identity_settings_derive_each_service_url() -> None:
    account = StorageAccount.from_settings(
        {
            "AzureWebJobsStorage__accountName": "rotationstate",
            "AzureWebJobsStorage__tableServiceUri": "https://tables.example.net/",
            "AzureWebJobsStorage__clientId": "00000000-0000-0000-0000-000000000001",
        }
    )

    assert account.blobs.url.rstrip("/") == "https://rotationstate.blob.core.windows.net"
    assert account.queues.url.rstrip("/") == "https://rotationstate.queue.core.windows.net"
    assert account.tables.url.rstrip("/") == "https://tables.example.net"


def test_use_development_storage_means_azurites_default_ports() -> None:
    account = StorageAccount.from_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})

    assert account.blobs.url.rstrip("/") == "http://127.0.0.1:10000/devstoreaccount1"
    assert account.queues.url.rstrip("/") == "http://127.0.0.1:10001/devstoreaccount1"
    assert account.tables.url.rstrip("/") == "http://127.0.0.1:10002/devstoreaccount1"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "AzureWebJobsStorage__accountName"),
        ({"AzureWebJobsStorage__accountName": "Bad_Name"}, "Bad_Name"),
        ({"AzureWebJobsStorage__blobServiceUri": "http://x"}, "AzureWebJobsStorage__blobServiceUri"),
    ],
)
def test_missing_or_bad_identity_settings_are_named(settings: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        StorageAccount.from_settings(settings)


def test_a_blank_connection_string_falls_back_to_the_identity_settings() -> None:
    settings = {"AzureWebJobsStorage": "  ", "AzureWebJobsStorage__accountName": "rotationstate"}

    assert StorageAccount.from_settings(settings).queues.account_name == "rotationstate"


_GOOD = (
    f"DefaultEndpointsProtocol=https;AccountName=rotationstate;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)
_SAS_QUERY = f"sv=2024-08-04&ss=b&srt=sco&sp=rwdlac&sig={SAS_SIGNATURE}"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        pytest.param({"AzureWebJobsStorage": "this is not a connection string"}, "Name=value", id="garbage"),
        pytest.param({"AzureWebJobsStorage": ACCOUNT_KEY}, "not a storage connection string", id="the-bare-key"),
        pytest.param({"AzureWebJobsStorage": _GOOD + ";oops"}, "Name=value", id="field-without-equals"),
        pytest.param({"AzureWebJobsStorage": _GOOD + ";Colour=blue"}, "Colour", id="unknown-field"),
        pytest.param(
            {"AzureWebJobsStorage": _GOOD.replace(ACCOUNT_KEY, ACCOUNT_KEY[:-4] + "*!*!")},
            "base64",
            id="key-not-base64",
        ),
        pytest.param(
            {"AzureWebJobsStorage": _GOOD.replace(f"AccountKey={ACCOUNT_KEY}", "AccountKey=")},
            "neither AccountKey nor SharedAccessSignature",
            id="empty-key",
        ),
        pytest.param(
            {"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=rotationstate"},
            "neither AccountKey nor SharedAccessSignature",
            id="no-key-or-sas",
        ),
        pytest.param(
            {"AzureWebJobsStorage": f"AccountKey={ACCOUNT_KEY};BlobEndpoint=https://b.example.net"},
            "AccountName",
            id="no-account-name-or-endpoints",
        ),
        pytest.param(
            {"AzureWebJobsStorage": _GOOD.replace("https", "ftp", 1)}, "DefaultEndpointsProtocol", id="ftp-protocol"
        ),
        pytest.param({"AzureWebJobsStorage": _GOOD + ";BlobEndpoint=https://[x"}, "BlobEndpoint", id="endpoint-[x"),
        pytest.param(
            {"AzureWebJobsStorage": _GOOD + ";QueueEndpoint=https://q.example.net:99999"},
            "QueueEndpoint",
            id="endpoint-bad-port",
        ),
        pytest.param(
            {"AzureWebJobsStorage": _GOOD + f";TableEndpoint=https://t.example.net/?{_SAS_QUERY}"},
            "TableEndpoint",
            id="endpoint-with-query",
        ),
        pytest.param({"AzureWebJobsStorage": _GOOD + ";" + "x" * 5000}, "characters", id="too-long"),
        pytest.param(
            {
                "AzureWebJobsStorage__accountName": "rotationstate",
                "AzureWebJobsStorage__blobServiceUri": "http://rotationstate.blob.core.windows.net",
            },
            "AzureWebJobsStorage__blobServiceUri",
            id="service-uri-http",
        ),
        pytest.param(
            {
                "AzureWebJobsStorage__accountName": "rotationstate",
                "AzureWebJobsStorage__queueServiceUri": f"https://rotationstate.queue.core.windows.net/?{_SAS_QUERY}",
            },
            "AzureWebJobsStorage__queueServiceUri",
            id="service-uri-with-query",
        ),
        pytest.param(
            {"AzureWebJobsStorage__tableServiceUri": "https://[x", "AzureWebJobsStorage__accountName": "rotationstate"},
            "AzureWebJobsStorage__tableServiceUri",
            id="service-uri-[x",
        ),
    ],
)
def test_a_malformed_storage_setting_is_refused_naming_it_without_echoing_secrets(
    settings: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        StorageAccount.from_settings(settings)

    error = caught.value
    assert "AzureWebJobsStorage" in str(error) and named in str(error)
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None:  # what a logged traceback would show
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for shown in map(str, chain):
        for value in settings.values():
            assert value not in shown or len(value) < 12  # never the whole setting
        for secret in (ACCOUNT_KEY, ACCOUNT_KEY[:16], SAS_SIGNATURE):
            assert secret not in shown
