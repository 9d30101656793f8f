"""The one shape a rotation request has on the queue (``RotationRequest.to_message`` / ``from_message``), the request id
an Idempotency-Key names (``request_id_for``), and the lock and ledger names a key gets. Pure: no I/O, no Azurite.

``from_message`` reads what arrives on the queue, so anything ``to_message`` would not have written is refused with
``InvalidInput`` (a permanent error: the poison handler fails the request and nothing is retried) naming the problem,
and never with another exception class (``RecursionError``, ``ValueError`` from the URL parser, ``TypeError``).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rotation.errors import InvalidInput, InvalidRequest
from rotation.model import (
    KEY_NAME_PATTERN,
    MAX_IDEMPOTENCY_KEY,
    MAX_MESSAGE_BYTES,
    REQUEST_ID_PATTERN,
    TRACEPARENT_PATTERN,
    KeyRef,
    RotationRequest,
    Trigger,
    event_request_id,
    request_id_for,
)
from rotation.storage.ledger import ledger_partition
from rotation.storage.lock import lock_blob_name

KEY_URL = "https://kv-prod.vault.azure.net/keys/aoai-cmk"
KEY = KeyRef.parse(KEY_URL)
OTHER_KEY = KeyRef.parse("https://kv-prod.vault.azure.net/keys/other-cmk")
VERSION = "0123456789abcdef0123456789abcdef"
REQUIRED = ("request_id", "key", "trigger", "force", "requested_at")


def message(**overrides: Any) -> dict[str, Any]:
    """The fields of a valid message, as ``to_message`` writes them; ``overrides`` replace or add fields."""
    fields: dict[str, Any] = {
        "request_id": "8c6f2f0e-3c52-4d47-9f0e-2d7c1b1f9a10",
        "key": KEY_URL,
        "trigger": "KeyNearExpiry",
        "force": False,
        "requested_at": "2025-03-01T12:00:00+00:00",
        "event_version": VERSION,
        "traceparent": None,
    }
    fields.update(overrides)
    return fields


def body(**overrides: Any) -> str:
    return json.dumps(message(**overrides), separators=(",", ":"), sort_keys=True)


def without(name: str) -> str:
    fields = message()
    del fields[name]
    return json.dumps(fields)


def refused(text: str | bytes) -> InvalidInput:
    """The ``InvalidInput`` that ``from_message`` raises for ``text`` (and no other exception class)."""
    with pytest.raises(InvalidInput) as caught:
        RotationRequest.from_message(text)
    assert isinstance(caught.value, InvalidRequest)  # permanent: the poison handler fails it, nothing retries it
    return caught.value


# --- round trip ---------------------------------------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_HOSTS = st.builds(
    lambda labels, suffix: ".".join([*labels, suffix]),
    st.lists(_LABEL, min_size=1, max_size=3),
    st.sampled_from(["vault.azure.net", "vault.azure.cn", "managedhsm.azure.net", "localhost"]),
)
_PORTS = st.none() | st.integers(min_value=1, max_value=65535)
_KEYS = st.builds(
    lambda host, host_case, port, name: KeyRef.parse(
        f"https://{host.upper() if host_case else host}{'' if port is None else f':{port}'}/keys/{name}"
    ),
    _HOSTS,
    st.booleans(),
    _PORTS,
    st.from_regex(KEY_NAME_PATTERN, fullmatch=True),
)
# The message carries an offset, not a zone, so the property is over fixed offsets: UTC, whole minutes, and whole
# seconds (IANA's historical local mean times). A ZoneInfo time in a DST gap or fold never compares equal to the same
# instant in another zone (PEP 495), so zones would only test datetime's ==. Microsecond offsets: see the test below.
_ZONES = (
    st.just(UTC)
    | st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
    | st.integers(min_value=-(24 * 3600 - 1), max_value=24 * 3600 - 1).map(lambda s: timezone(timedelta(seconds=s)))
)
_REQUESTS = st.builds(
    RotationRequest,
    request_id=st.from_regex(REQUEST_ID_PATTERN, fullmatch=True),
    key=_KEYS,
    trigger=st.sampled_from(Trigger),
    force=st.booleans(),
    requested_at=st.none() | st.datetimes(timezones=_ZONES),
    event_version=st.none() | st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True),
    traceparent=st.none() | st.from_regex(TRACEPARENT_PATTERN, fullmatch=True),
)


@given(_REQUESTS)
@example(RotationRequest(request_id="0", key=KEY, trigger=Trigger.TIMER))
@example(
    RotationRequest(
        request_id="r" * 64,
        key=KeyRef.parse("https://KV-Prod.vault.azure.net:8443/keys/" + "K" * 127),
        trigger=Trigger.KEY_NEW_VERSION_CREATED,
        force=True,
        requested_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-23, minutes=-59))),
        event_version="ABCDEF" + "0" * 26,
    )
)
def test_every_valid_request_survives_the_round_trip(request: RotationRequest) -> None:
    text = request.to_message()

    assert len(text.encode()) <= MAX_MESSAGE_BYTES
    assert RotationRequest.from_message(text) == request
    assert RotationRequest.from_message(text.encode()) == request  # the trigger may hand over bytes
    assert RotationRequest.from_message(text).traceparent == request.traceparent  # telemetry, not identity


def test_the_message_is_compact_sorted_json_of_the_seven_fields() -> None:
    request = RotationRequest(
        request_id="req-1",
        key=KEY,
        trigger=Trigger.KEY_NEAR_EXPIRY,
        requested_at=datetime(2025, 3, 1, 12, tzinfo=UTC),
        event_version=VERSION,
    )

    assert request.to_message() == body(request_id="req-1")


def test_a_null_event_version_and_requested_at_are_accepted_from_text_and_bytes() -> None:
    expected = RotationRequest(
        request_id=message()["request_id"], key=KEY, trigger=Trigger.KEY_NEAR_EXPIRY, event_version=None
    )

    assert RotationRequest.from_message(body(event_version=None, requested_at=None)) == expected
    assert RotationRequest.from_message(body(event_version=None, requested_at=None).encode()) == expected


def test_a_message_of_exactly_the_size_limit_is_accepted() -> None:
    text = body()
    padded = text[:-1] + " " * (MAX_MESSAGE_BYTES - len(text)) + "}"

    assert len(padded.encode()) == MAX_MESSAGE_BYTES
    assert RotationRequest.from_message(padded).key == KEY


def test_an_ipv6_vault_survives_the_round_trip() -> None:
    key = KeyRef.parse("https://[::1]:8443/keys/aoai-cmk")  # accepted: a key in a local vault emulator
    request = RotationRequest(request_id="req-ipv6", key=key, trigger=Trigger.CLI)

    assert RotationRequest.from_message(request.to_message()) == request


def test_a_requested_at_with_a_sub_second_offset_survives_the_round_trip() -> None:
    odd_zone = timezone(timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))  # datetime allows it
    request = RotationRequest(
        request_id="req-odd-offset",
        key=KEY,
        trigger=Trigger.HTTP,
        requested_at=datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=odd_zone),
    )

    assert RotationRequest.from_message(request.to_message()) == request


# --- refusals -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param(body()[:-1] + " " * MAX_MESSAGE_BYTES + "}", f"limit is {MAX_MESSAGE_BYTES}", id="oversize"),
        pytest.param(  # 2,100 characters, 4,200 bytes
            json.dumps(message(request_id="é" * 2100), ensure_ascii=False),
            f"limit is {MAX_MESSAGE_BYTES}",
            id="oversize-in-utf8-bytes",
        ),
        pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
        pytest.param(body().encode()[:-3] + b"\xc3}", "not UTF-8", id="truncated-utf8"),
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param("", "not JSON", id="empty"),
        pytest.param("[1, 2]", "JSON object", id="a-list"),
        pytest.param("null", "JSON object", id="null"),
        pytest.param("[" * 100_000, f"limit is {MAX_MESSAGE_BYTES}", id="100000-brackets"),
        pytest.param("[" * 4000, "not JSON", id="4000-brackets-within-the-size-limit"),
        pytest.param(
            body(force=None).replace('"force":null', '"force":' + "[" * 1500 + "]" * 1500),
            "not JSON",
            id="nested-list-deeper-than-the-parser",
        ),
        pytest.param(
            body(trigger=None).replace('"trigger":null', '"trigger":' + '{"a":' * 500 + "1" + "}" * 500),
            "'trigger'",
            id="nested-object",
        ),
        pytest.param(
            body(force=None).replace('"force":null', '"force":' + "[" * 900 + "]" * 900), "'force'", id="nested-900"
        ),
        pytest.param(body(key="https://[x/keys/k"), "'key'", id="unparseable-key-url"),
        pytest.param(body(key="https://kv.vault.azure.net:99999/keys/k"), "'key'", id="key-url-bad-port"),
        pytest.param(body(key=f"{KEY_URL}/{VERSION}"), "names version", id="versioned-key-url"),
        pytest.param(body(key=KEY_URL.replace("https://", "http://")), "must use https", id="http-key-url"),
        pytest.param(body(key="https://kv.vault.azure.net/secrets/s"), "not a Key Vault key URL", id="a-secret-url"),
        pytest.param(body(key=[KEY_URL]), "'key' must be a key URL", id="key-not-text"),
        pytest.param(body(trigger="Key Near Expiry"), "'trigger'", id="unknown-trigger"),
        pytest.param(body(trigger="keynearexpiry"), "'trigger'", id="trigger-in-the-wrong-case"),
        pytest.param(body(trigger=["http"]), "'trigger'", id="trigger-a-list"),
        pytest.param(body(force="yes"), "'force'", id="force-text"),
        pytest.param(body(force=1), "'force'", id="force-1"),
        pytest.param(body(force=None), "'force'", id="force-null"),
        pytest.param(body(requested_at="2025-03-01T12:00:00"), "'requested_at'", id="requested-at-without-offset"),
        pytest.param(body(requested_at="yesterday"), "'requested_at'", id="requested-at-not-a-time"),
        pytest.param(body(requested_at=1740830400), "'requested_at'", id="requested-at-a-number"),
        pytest.param(body(event_version="ver-1.0"), "'event_version'", id="event-version-ver-1.0"),
        pytest.param(body(event_version="a" * 65), "'event_version'", id="event-version-65-hex"),
        pytest.param(body(event_version="a" * 31), "'event_version'", id="event-version-31-hex"),
        pytest.param(body(event_version="a" * 31 + "\x00"), "'event_version'", id="event-version-with-nul"),
        pytest.param(body(event_version=VERSION + "\n"), "'event_version'", id="event-version-with-newline"),
        pytest.param(body(event_version=1), "'event_version'", id="event-version-a-number"),
        pytest.param(body(traceparent="00-" + "0" * 32 + "-" + "1" * 16 + "-01"), "'traceparent'", id="zero-trace"),
        pytest.param(body(traceparent="01-" + "a" * 32 + "-" + "1" * 16 + "-01"), "'traceparent'", id="version-01"),
        pytest.param(body(traceparent="00-" + "A" * 32 + "-" + "1" * 16 + "-01"), "'traceparent'", id="upper-hex"),
        pytest.param(body(request_id="r" * 65), "request id", id="request-id-too-long"),
        pytest.param(body(request_id=""), "request id", id="request-id-empty"),
        pytest.param(body(request_id="a/b"), "request id 'a/b'", id="request-id-with-slash"),
        pytest.param(body(request_id="-leading-dash"), "request id", id="request-id-leading-dash"),
        pytest.param(body(request_id="abc\n"), "request id", id="request-id-trailing-newline"),
        pytest.param(body(request_id=7), "'request_id' must be text", id="request-id-a-number"),
        pytest.param(body(extra=1), "'extra'", id="unknown-field"),
        pytest.param(body(**{"x" * 3000: 1}), "'xxxxxxxx", id="unknown-field-with-a-huge-name"),
        *(pytest.param(without(name), f"missing ['{name}']", id=f"missing-{name}") for name in REQUIRED),
    ],
)
def test_a_malformed_message_is_refused_naming_the_problem(text: str | bytes, named: str) -> None:
    error = refused(text)

    assert named in str(error)
    assert len(str(error)) < 1000  # a clipped echo, not the whole message


def test_event_version_is_optional() -> None:
    assert RotationRequest.from_message(without("event_version")).event_version is None


def test_the_refusal_names_every_missing_field() -> None:
    error = refused('{"request_id": "r1"}')

    assert "['key', 'trigger', 'force', 'requested_at']" in str(error)


# --- break-glass requests ----------------------------------------------------------------------------------------


def break_glass(**overrides: Any) -> str:
    """A break-glass message as ``to_message`` writes it: forced, with both break-glass fields."""
    return body(**{"force": True, "compromised_version": VERSION, "accept_breakage": False, **overrides})


@pytest.mark.parametrize("accept_breakage", [False, True])
def test_a_break_glass_request_survives_the_round_trip_with_both_fields(accept_breakage: bool) -> None:
    request = RotationRequest(
        request_id="req-bg",
        key=KEY,
        trigger=Trigger.HTTP,
        force=True,
        requested_at=datetime(2025, 3, 1, 12, tzinfo=UTC),
        compromised_version=VERSION.upper(),
        accept_breakage=accept_breakage,
    )

    text = request.to_message()

    assert RotationRequest.from_message(text) == request
    assert json.loads(text)["compromised_version"] == VERSION.upper()
    assert json.loads(text)["accept_breakage"] is accept_breakage


@given(st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True), st.booleans(), st.sampled_from(Trigger), st.none() | _KEYS)
def test_every_break_glass_request_survives_the_round_trip(
    compromised: str, accept_breakage: bool, trigger: Trigger, key: KeyRef | None
) -> None:
    request = RotationRequest(
        request_id="req-bg",
        key=key or KEY,
        trigger=trigger,
        force=True,
        compromised_version=compromised,
        accept_breakage=accept_breakage,
    )

    assert RotationRequest.from_message(request.to_message()) == request


def test_an_ordinary_request_has_no_break_glass_fields_on_the_queue() -> None:
    request = RotationRequest(request_id="req-1", key=KEY, trigger=Trigger.HTTP, force=True)

    fields = json.loads(request.to_message())

    assert "compromised_version" not in fields and "accept_breakage" not in fields
    assert RotationRequest.from_message(body()).compromised_version is None
    assert RotationRequest.from_message(body()).accept_breakage is False


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param(break_glass(compromised_version="v1"), "'compromised_version'", id="not-a-version-id"),
        pytest.param(break_glass(compromised_version="a" * 31), "'compromised_version'", id="31-hex"),
        pytest.param(break_glass(compromised_version="a" * 33), "'compromised_version'", id="33-hex"),
        pytest.param(break_glass(compromised_version="g" * 32), "'compromised_version'", id="not-hex"),
        pytest.param(break_glass(compromised_version=VERSION + "\n"), "'compromised_version'", id="newline"),
        pytest.param(break_glass(compromised_version=7), "'compromised_version'", id="a-number"),
        pytest.param(break_glass(compromised_version=[VERSION]), "'compromised_version'", id="a-list"),
        pytest.param(break_glass(force=False), "always forced: set force to true", id="not-forced"),
        pytest.param(body(accept_breakage=True), "come together, in a break-glass request only", id="breakage-alone"),
        pytest.param(
            body(force=True, accept_breakage=True),
            "come together, in a break-glass request only",
            id="breakage-on-a-forced-request",
        ),
        pytest.param(break_glass(accept_breakage="yes"), "'accept_breakage' must be true or false", id="text"),
        pytest.param(break_glass(accept_breakage=1), "'accept_breakage' must be true or false", id="breakage-1"),
        pytest.param(break_glass(accept_breakage=None), "'accept_breakage' must be true or false", id="null"),
    ],
)
def test_a_malformed_break_glass_message_is_refused_naming_the_problem(text: str, named: str) -> None:
    assert named in str(refused(text))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(body(compromised_version=None), id="null-compromised-version"),
        pytest.param(body(accept_breakage=False), id="accept-breakage-false-alone"),
    ],
)
def test_break_glass_fields_that_to_message_never_writes_are_refused(text: str) -> None:
    refused(text)


# --- request ids for an Idempotency-Key ----------------------------------------------------------------------------


def test_an_idempotency_key_maps_to_one_request_id_per_key() -> None:
    first = request_id_for("client-retry-7", KEY)

    assert first == request_id_for("client-retry-7", KEY)  # the same inputs give the same id
    assert first == request_id_for("client-retry-7", KeyRef.parse(KEY_URL.replace("aoai-cmk", "AOAI-CMK") + "/"))
    assert first == request_id_for("client-retry-7", KeyRef.parse(KEY_URL.replace(".net/", ".net:443/")))
    assert first == request_id_for("client-retry-7", KeyRef.parse(KEY_URL.replace("kv-prod", "KV-Prod")))
    assert uuid.UUID(first).version == 5
    assert first != request_id_for("client-retry-8", KEY)
    assert first != request_id_for("client-retry-7", OTHER_KEY)  # one header sent for two keys names two requests
    assert first != request_id_for("client-retry-7", KeyRef.parse(KEY_URL.replace(".net/", ".net:8443/")))
    assert first == "ff00029a-ce79-54df-a7b0-c4bea3533653"  # pinned: a changed mapping would break retried POSTs


def test_no_idempotency_key_names_an_events_request() -> None:
    """Event ids have a UUID namespace of their own: the header ``event-<id>`` (the old derivation) or the bare event
    id never lands on the event's request."""
    event = event_request_id("00eccf70-95a7-4e7c-8299-2eb17ee9ad64", KEY)

    assert event == event_request_id("00eccf70-95a7-4e7c-8299-2eb17ee9ad64", KEY) and uuid.UUID(event).version == 5
    assert event not in {
        request_id_for(header, KEY)
        for header in ("event-00eccf70-95a7-4e7c-8299-2eb17ee9ad64", "00eccf70-95a7-4e7c-8299-2eb17ee9ad64")
    }
    with pytest.raises(InvalidInput, match="event id"):
        event_request_id("", KEY)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=200))
def test_every_printable_ascii_idempotency_key_gives_a_valid_request_id(header: str) -> None:
    request_id = request_id_for(header, KEY)

    assert RotationRequest(request_id=request_id, key=KEY, trigger=Trigger.HTTP).request_id == request_id
    assert request_id == request_id_for(header, KeyRef.parse("https://KV-PROD.vault.azure.net:443/keys/AOAI-CMK"))


@pytest.mark.parametrize(
    ("header", "named"),
    [
        ("", "got 0 characters"),
        ("x" * (MAX_IDEMPOTENCY_KEY + 1), f"got {MAX_IDEMPOTENCY_KEY + 1} characters"),
        ("tab\there", "'\\t' at position 3"),
        ("line\nbreak", "'\\n' at position 4"),
        ("nul\x00", "'\\x00' at position 3"),
        ("é", "'é'"),
        ("del\x7f", "'\\x7f' at position 3"),
    ],
)
def test_a_bad_idempotency_key_is_refused(header: str, named: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        request_id_for(header, KEY)

    assert "Idempotency-Key" in str(caught.value) and named in str(caught.value)


def test_an_idempotency_key_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidInput, match="Idempotency-Key"):
        request_id_for(None, KEY)  # type: ignore[arg-type]


# --- lock and ledger names ----------------------------------------------------------------------------------------


def test_lock_and_ledger_names_are_blob_and_table_safe() -> None:
    key = KeyRef.parse("https://Kv.Vault.Azure.Net:8443/keys/Cmk-1/")

    assert lock_blob_name(key) == "kv.vault.azure.net:8443/cmk-1"
    partition = ledger_partition(key)
    assert not set(partition) & set("/\\#?:=+")
    assert partition != "requests"  # the index rows' partition
    assert partition == ledger_partition(KeyRef.parse("https://KV.vault.azure.net:8443/keys/CMK-1"))
    assert partition != ledger_partition(KeyRef.parse("https://kv.vault.azure.net:8443/keys/cmk-2"))
    assert partition != ledger_partition(KeyRef.parse("https://kv.vault.azure.net/keys/cmk-1"))


def test_two_spellings_of_a_key_share_a_lock_and_a_partition() -> None:
    spellings = [KEY_URL, KEY_URL.replace("aoai-cmk", "AOAI-CMK"), KEY_URL.replace(".net/", ".net:443/") + "/"]
    keys = [KeyRef.parse(text) for text in spellings]

    assert {lock_blob_name(k) for k in keys} == {"kv-prod.vault.azure.net/aoai-cmk"}
    assert len({ledger_partition(k) for k in keys}) == 1
    assert lock_blob_name(OTHER_KEY) != lock_blob_name(KEY)


@given(_KEYS)
def test_every_key_has_a_table_safe_partition(key: KeyRef) -> None:
    partition = ledger_partition(key)

    assert partition.replace("-", "").replace("_", "").isalnum() and partition.isascii()
    assert len(partition) <= 1024  # a PartitionKey holds at most 1 KiB
    assert partition != "requests"
