"""The counters count: each detector of ``harness``, the HTTP naming rule and the pure parts of the break-glass
oracles fire on a known problem and stay quiet on its absence. Without this, a fuzz run that reports zeros could be
one whose detectors are blind.

The storage-write detector is checked through a real Azurite request; the others on hand-made log records and
observations, which is all they read.
"""

from __future__ import annotations

import json
import logging
import uuid

from azure.core.exceptions import ServiceResponseError
from azure.storage.queue import QueueClient

from emulator.azurite import ACCOUNT_KEY, Azurite
from emulator.functions_worker import InvocationFailed
from rotation.app import Redeliver
from rotation.redact import redacted
from tests.fuzz.harness import (
    PLANTED,
    PLANTED_FORMS,
    CountingTransport,
    Observation,
    Secrets,
    Tally,
    Write,
    check_secrets,
    judge_trigger,
)
from tests.fuzz.test_cli import safe
from tests.fuzz.test_http import Get, Post, names, names_bad_value
from tests.fuzz.test_rotation_requests import glass_fault

SECRETS = Secrets((("storage AccountKey", ACCOUNT_KEY), *PLANTED))


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "rotation", "msg": message, "levelno": logging.WARNING})
    made.__dict__.update(extra)
    return made


def test_the_counting_transport_counts_writes_and_not_reads(azurite: Azurite) -> None:
    transport = CountingTransport()
    queue = QueueClient.from_connection_string(
        azurite.connection_string, f"fuzz{uuid.uuid4().hex[:8]}", transport=transport
    )
    queue.create_queue()
    queue.send_message("hello")
    queue.peek_messages()
    queue.get_queue_properties()

    assert [(w.method, w.status) for w in transport.writes] == [("PUT", 201), ("POST", 201)]
    assert "hello" in transport.writes[1].body  # the message text, decoded from its XML


def test_every_planted_form_is_a_shape_the_redactor_knows_and_the_scan_finds_it() -> None:
    for form in PLANTED_FORMS:
        assert SECRETS.found([f"x {form}"]), form
        assert not SECRETS.found([redacted(f"x {form}")]), form
    first = PLANTED[0][1]
    assert SECRETS.found([first[:16] + "…"]) == ["planted sig"]  # a secret cut short is still found


def test_a_refused_input_that_writes_is_counted() -> None:
    tally = Tally("self-test")
    seen = Observation(
        records=[record("rotation.event_ignored: refused", event="rotation.event_ignored", why="bad")],
        storage_writes=[Write("POST", "http://azurite/ledger", "{}", 204)],
    )
    judge_trigger(tally, SECRETS, "case", seen, None)
    assert (tally.rejected, tally.counts["rejected_writes"]) == (1, 1)

    quiet = Tally("self-test")
    judge_trigger(quiet, SECRETS, "case", Observation(records=seen.records), None)
    assert (quiet.rejected, quiet.problems()) == (1, {})


def test_an_accepted_input_may_write() -> None:
    tally = Tally("self-test")
    judge_trigger(tally, SECRETS, "case", Observation(storage_writes=[Write("POST", "u", "{}", 201)]), None)
    assert (tally.accepted, tally.accepted_writes, tally.problems()) == (1, 1, {})


def test_exceptions_edge_errors_and_redeliveries_are_counted() -> None:
    tally = Tally("self-test")
    judge_trigger(tally, SECRETS, "a", Observation(), ValueError("boom"))
    judge_trigger(tally, SECRETS, "b", Observation(records=[record("rotation.internal_error: x failed")]), None)
    judge_trigger(tally, SECRETS, "c", Observation(), Redeliver("storage"))
    assert tally.problems() == {"uncaught": 2, "redelivered": 1}

    # A Redeliver caused by a broken connection to storage is storage that was not healthy: listed, not counted.
    try:
        try:
            raise ServiceResponseError("Connection aborted.")
        except ServiceResponseError as exc:
            raise Redeliver("not recorded") from exc
    except Redeliver as redeliver:
        judge_trigger(tally, SECRETS, "d", Observation(), redeliver)
    assert tally.problems() == {"uncaught": 2, "redelivered": 1}
    assert tally.kinds["redelivered: a storage connection fault"] == 1

    # The same, as the worker reports them: the exception's type by name and its traceback.
    chained = "ServiceResponseError: Connection aborted.\n\nThe above exception was the direct cause of ..."
    judge_trigger(tally, SECRETS, "e", Observation(), InvocationFailed("f", "Redeliver", "not recorded", chained))
    judge_trigger(tally, SECRETS, "f", Observation(), InvocationFailed("f", "Redeliver", "lease lost", "Traceback"))
    judge_trigger(tally, SECRETS, "g", Observation(), InvocationFailed("f", "KeyError", "'id'", "Traceback"))
    assert tally.problems() == {"uncaught": 3, "redelivered": 2}
    assert tally.kinds["redelivered: a storage connection fault"] == 2


def test_a_secret_anywhere_is_counted_once_per_case() -> None:
    secret = PLANTED_FORMS[1]
    for seen in (
        Observation(records=[record("rotation.event_ignored: fine", why=f"id {secret}")]),  # an extra field
        Observation(records=[record(f"rotation.x: {secret}")]),
        Observation(storage_writes=[Write("POST", "u", f'{{"idempotency_key": "{secret}"}}', 201)]),
        Observation(outcome_events=[{"data": {"error": secret}}]),
        Observation(shown=[f"error: {secret}"]),
    ):
        tally = Tally("self-test")
        check_secrets(tally, SECRETS, "case", seen)
        assert tally.problems() == {"secret_hits": 1}, seen
    clean = Tally("self-test")
    check_secrets(clean, SECRETS, "case", Observation(shown=[redacted(f"error: {secret}")]))
    assert clean.problems() == {}


def test_the_naming_rule() -> None:
    assert names("request id 'abc\\x00def' is not valid", "abc\x00def")
    assert names("key URL 'https://h/keys/k?sig=<redacted>' must not carry a query", "https://h/keys/k?sig=abc")
    assert not names("the request id is not valid", "zzzzzzzz")
    assert names_bad_value(Get("no-such-id"), "RequestNotFound", "no rotation request 'no-such-id' in the ledger")
    assert not names_bad_value(Get("no-such-id"), "RequestNotFound", "no such rotation request")
    assert not names_bad_value(Get("x"), "SomethingElse", "x")


def test_the_break_glass_naming_rules() -> None:
    version = "a" * 32

    def post(**fields: object) -> Post:
        return Post(json.dumps(fields).encode(), None, fields)

    assert names_bad_value(post(key="k", compromised_version="xyz"), "InvalidField", "compromised_version must be ...")
    assert not names_bad_value(post(key="k", compromised_version=version), "InvalidField", "compromised_version ...")
    assert names_bad_value(post(key="k", compromised_version=version, force=True), "InvalidField", "send no force")
    assert names_bad_value(post(key="k", accept_breakage=True), "InvalidField", "name its compromised_version")
    assert names_bad_value(post(key="k", accept_breakage="yes"), "InvalidField", "accept_breakage must be true")
    bad = post(key="k", compromised_version=version, confirmation="123")
    assert names_bad_value(bad, "InvalidConfirmation", 'confirmation "123" is not a token this service issued')
    assert not names_bad_value(bad, "InvalidConfirmation", "the confirmation is not a token this service issued")
    missing = post(key="k", compromised_version=version)
    assert names_bad_value(missing, "VersionNotFound", f"key k has no version {version}")
    assert not names_bad_value(missing, "VersionNotFound", "no such version")
    assert not names_bad_value(missing, "KeyBlocked", "no new version can be created")


def test_the_codec_oracle_finds_the_field_at_fault() -> None:
    version = "a" * 32
    base = {"request_id": "r", "key": "k", "trigger": "http", "force": True, "requested_at": None}
    assert glass_fault(base) is None
    assert glass_fault({**base, "compromised_version": version, "accept_breakage": False}) is None
    assert glass_fault({**base, "compromised_version": version}) == "accept_breakage"
    assert glass_fault({**base, "accept_breakage": False}) == "compromised_version"
    assert glass_fault({**base, "compromised_version": None, "accept_breakage": True}) == "compromised_version"
    assert glass_fault({**base, "compromised_version": "xyz", "accept_breakage": True}) == "compromised_version"
    assert glass_fault({**base, "compromised_version": version, "accept_breakage": 1}) == "accept_breakage"
    assert glass_fault({**base, "force": False, "compromised_version": version, "accept_breakage": True}) == "force"


def test_a_break_glass_argument_list_is_made_unable_to_write() -> None:
    argv = ["break-glass", "--key", "k", "--version", "v", "--yes", "--y", "--ye=1", "--accept"]
    assert safe(argv) == ["break-glass", "--key", "k", "--version", "v", "--accept"]
    assert safe(argv, keep_yes=True) == argv
    assert safe(["rotate", "--key", "k", "--yes"]) == ["rotate", "--key", "k", "--yes", "--dry-run"]
